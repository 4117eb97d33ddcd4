"""The annotator's page: one task at a time (the same one again on reload or from another session, up to
tasks.max_open_per_annotator), its image, and the answer. The answer's kind is the task's. A sample whose deadline
is nearer than tasks.min_time_to_answer_s is not handed out: it would close under the person, refusing the answer.
A paused person's answer or skip is refused (409, saying so) before anything is looked up; a task id in the URL with
a NUL character is bad input (400), which PostgreSQL could not even look up."""

from __future__ import annotations

import hashlib
from typing import Any

import cv2
import numpy as np
from flask import Flask, Response, redirect, render_template, request, url_for

from hgen.hub.errors import (BadInputError, ImageDecodeError, InvalidRequestError, SampleImageMissingError,
                             TaskClosedError, TaskImageUnavailableError, UnknownTaskError)
from hgen.hub.gold import decoy_probabilities
from hgen.hub.images import RAW_CHANNELS
from hgen.hub.kb.store import Task
from hgen.hub.web import answers
from hgen.hub.web.context import WebContext, require_user
from hgen.hub.web.display import display_size
from hgen.hub.web.forms import AnswerForm, parse_form
from hgen.protos import hub_pb2

MAX_TASK_ID = 64
FILTER_ABOVE = 12  # classes: above this a class choice gets a type-to-filter box and number keys pick the guesses


def register(app: Flask, ctx: WebContext) -> None:
    @app.get("/annotate")
    def annotate() -> Any:
        user = require_user(ctx).annotator_id
        paused = ctx.api.paused_reason(user)
        if paused is not None:
            return render_template("annotate.html", paused=paused, task=None)
        task = ctx.api.next_task(user, min_time_s=ctx.config.tasks.min_time_to_answer_s)
        if task is None:
            return render_template("annotate.html", paused=None, task=None)
        return render_template("annotate.html", paused=None, task=task, view=answers.answer_view(task),
                               display=display_size(task.image.width, task.image.height),
                               classes=list(enumerate(ctx.class_names)), guesses=guesses(task, ctx.class_names),
                               many_classes=len(ctx.class_names) > FILTER_ABOVE)

    @app.get("/task/<task_id>/image")
    def task_image(task_id: str) -> Any:
        user = require_user(ctx).annotator_id
        try:
            found = ctx.hub.service.kb.open_task(task_key(task_id), user)
        except SampleImageMissingError:  # logged where it was first met; the answer and skip still work
            raise TaskImageUnavailableError("this task's image cannot be read now: skip it, or try again") from None
        if found is None:
            raise UnknownTaskError("this task is not yours, or it is already closed")
        return image_response(found[0].image)

    @app.post("/task/<task_id>/answer")
    def answer(task_id: str) -> Any:
        user = require_user(ctx).annotator_id
        form = parse_form(AnswerForm, request.form)
        key = task_key(task_id)
        ctx.api.check_active(user)  # a paused person's open tasks went to others: say why, not "not yours"
        found = ctx.hub.service.kb.open_task(key, user, with_image=False)  # an image lost since: the answer stands
        if found is None:
            raise not_open(ctx, key, user)
        task, assigned_at = found
        kb = ctx.hub.service.kb  # timed on the clock that wrote `assigned_at` (a simulated one in tests)
        parsed = answers.parse(form, task, user, ctx.config.num_classes, kb.clock() - assigned_at)
        if isinstance(parsed, answers.Release):
            ctx.api.release(task.task_id, user, parsed.kind, parsed.latency_s)
        else:
            ctx.api.submit_answer(parsed)
        return redirect(url_for("annotate"), 303)


def task_key(task_id: str) -> str:
    """The URL's task id, clipped to a task id's length (`url_key`)."""
    return url_key(task_id, "task id")


def url_key(value: str, what: str, length: int = MAX_TASK_ID) -> str:
    """An id from a URL path, clipped to an id's length; a NUL in it is bad input (400), refused before the
    knowledge base (PostgreSQL refuses to look such a key up)."""
    if "\x00" in value:
        raise InvalidRequestError(f"a {what} has no NUL character")
    return value[:length]


def not_open(ctx: WebContext, task_id: str, user: str) -> BadInputError:
    """Why an answer cannot go to this task: someone else's (403), or the person's own, closed meanwhile (409: the
    second of two tabs or a double click, which lost to the first, or a timeout)."""
    state = ctx.hub.service.kb.task_state(task_id, user)
    if state is None:
        return UnknownTaskError("this task is not yours, or it is already closed; nothing was changed")
    return TaskClosedError(f"this task is already {state}; nothing was changed")


def guesses(task: Task, names: tuple[str, ...]) -> list[tuple[int, str]]:
    """The model's top three among the classes people answer in (`names`: a hub that does not know its classes
    takes a device's vector of another length, and a class past num_classes is no answer anyone can give) as
    (class id, name), in class-id order and without their probabilities: the page offers them as quick answers,
    and neither a rank nor a percentage invites people to confirm the model instead of looking. A sample without
    probabilities (a gold one stored before gold had decoys) gets a stable decoy when its view shows guesses, so no
    page stands out as gold."""
    probs = list(task.model_output.class_probabilities)[:len(names)]
    if not probs and answers.answer_view(task).shows_guesses:
        seed = int.from_bytes(hashlib.sha256(task.sample_id.encode()).digest()[:8], "big")
        probs = decoy_probabilities(len(names), seed % len(names), seed)
    top = sorted(range(len(probs)), key=lambda i: -probs[i])[:3]
    return [(i, names[i]) for i in sorted(top)]


def image_response(image: hub_pb2.Image) -> Response:
    if image.format == hub_pb2.IMAGE_FORMAT_JPEG:
        return Response(image.data, mimetype="image/jpeg")
    if image.format == hub_pb2.IMAGE_FORMAT_PNG:
        return Response(image.data, mimetype="image/png")
    channels = image.channels or 1
    if image.channels not in RAW_CHANNELS or len(image.data) != image.height * image.width * channels:
        raise ImageDecodeError("this task's image cannot be shown (stored before channel checks); skip it")
    pixels = np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, channels)
    ok, png = cv2.imencode(".png", pixels)
    if not ok:
        raise ImageDecodeError("this task's image cannot be shown; skip it")
    return Response(png.tobytes(), mimetype="image/png")
