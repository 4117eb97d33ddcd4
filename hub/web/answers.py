"""Turn a submitted annotator form into an hgen.v1.Answer (or a skip / can't tell), refusing anything malformed.

The answer's kind comes from the task (its H-DNN kind), never from the form: a form naming another kind is
refused, so nothing that its sample's aggregator cannot aggregate is stored. Box and region coordinates arrive
in the image's own pixels (the browser scales back from the display size). Time to answer is what the page
measured from showing the task to the click, bounded by what the hub saw (assignment to arrival), so a client
cannot claim more time than it had.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hgen.hub.aggregators import get_aggregator
from hgen.hub.errors import InvalidRequestError
from hgen.hub.kb.store import Task
from hgen.hub.web.forms import AnswerForm
from hgen.hub.web.views import AnswerView, check_class, get_view, view_for_label
from hgen.protos import hub_pb2
from hgen.protos.kinds import kind_of_wire

__all__ = ["Release", "check_class", "latency", "parse"]


@dataclass(frozen=True)
class Release:
    """The annotator gave the task back without a label."""

    kind: str
    latency_s: float


def answer_view(task: Task) -> AnswerView:
    """The view the task's H-DNN kind names; for a kind this hub has no descriptor of (accepted because its request
    named an aggregator), the view asking for what that aggregator aggregates."""
    kind = kind_of_wire(task.hdnn_kind)
    return get_view(kind.view) if kind is not None else view_for_label(get_aggregator(task.aggregator).label)


def latency(elapsed_ms: str, server_elapsed_s: float) -> float:
    try:
        client = float(elapsed_ms) / 1000.0
    except ValueError:
        client = -1.0
    if not math.isfinite(client):
        client = -1.0
    return client if 0.0 < client <= server_elapsed_s + 1.0 else max(0.0, server_elapsed_s)


def parse(form: AnswerForm, task: Task, annotator: str, num_classes: int,
          server_elapsed_s: float) -> hub_pb2.Answer | Release:
    seconds = latency(form.elapsed_ms, server_elapsed_s)
    if form.release is not None:
        return Release(form.release, seconds)
    view = answer_view(task)
    if form.kind is not None and form.kind != view.name:
        raise InvalidRequestError(f"this task asks for {view.name}, not {form.kind}; nothing was stored")
    if form.nothing is not None and not view.allows_nothing:
        raise InvalidRequestError(f"a {view.name} task has no 'nothing here' answer (skip or can't tell instead)")
    answer = hub_pb2.Answer(task_id=task.task_id, sample_id=task.sample_id, annotator_id=annotator,
                            latency_s=seconds, simulated=False)
    view.fill(answer, form, task, num_classes)
    return answer
