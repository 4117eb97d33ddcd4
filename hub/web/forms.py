"""Every form the web UI accepts, as a strict model: known fields only, each sent once, bounded in length, depth
and number size, no NUL character (PostgreSQL refuses to store or even compare one: a login name with %00 was a 500).
Anything else is an InvalidRequestError (400) before a route touches the knowledge base.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from werkzeug.datastructures import MultiDict

from hgen.hub.errors import InvalidRequestError
from hgen.runtime.config import StrictModel, format_validation_error

M = TypeVar("M", bound=BaseModel)
IGNORED = ("csrf_token",)  # checked before any route runs
MAX_SHAPES = 100
MAX_COORD = 1 << 20  # larger than any image the hub accepts (hgen.hub.images.MAX_SIDE)
Text = Annotated[str, Field(max_length=256)]
Secret = Annotated[str, Field(max_length=1024)]


class LoginForm(StrictModel):
    username: Text = ""
    password: Secret = ""


class JoinForm(StrictModel):
    token: Text = ""
    password: Secret = ""


class InviteForm(StrictModel):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    role: Literal["annotator", "operator"] = "annotator"
    replace: Literal["", "1"] = ""  # "1": reset an existing account (its password, role and sessions)


class AnnotatorActionForm(StrictModel):
    annotator: Annotated[str, Field(min_length=1, max_length=128)]
    action: Literal["pause", "resume"]


class RetrainForm(StrictModel):
    model: Annotated[str, Field(max_length=128)] = ""
    research: Literal["", "0", "1"] = ""


class RollbackForm(StrictModel):
    model: Annotated[str, Field(max_length=128)] = ""
    to: Annotated[str, Field(max_length=64)] = ""  # empty: the version the deployed one replaced


class GoldForm(StrictModel):
    class_id: Annotated[int, Field(ge=0, lt=1 << 31)]


class RetireGoldForm(StrictModel):
    sample_id: Annotated[str, Field(min_length=1, max_length=64)]


class AnswerForm(StrictModel):
    """The annotator page's form; `kind` is only checked against the task's (which alone decides the answer)."""

    release: Literal["skip", "cant_tell"] | None = None
    kind: Annotated[str, Field(max_length=32, pattern=r"^[a-z_]+$")] | None = None  # a view name (hub.web.views)
    class_id: Annotated[int, Field(ge=0, lt=1 << 31)] | None = None
    elapsed_ms: Annotated[str, Field(max_length=32)] = ""
    shapes: Annotated[str, Field(max_length=64 * 1024)] = "[]"
    nothing: Literal["1"] | None = None  # "nothing here" (views that allow it: boxes, regions)


class Shape(BaseModel):
    """A box or region in the image's pixels, as the page's JSON sends it."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
    x_min: Annotated[float, Field(ge=0, le=MAX_COORD)]
    y_min: Annotated[float, Field(ge=0, le=MAX_COORD)]
    x_max: Annotated[float, Field(ge=0, le=MAX_COORD)]
    y_max: Annotated[float, Field(ge=0, le=MAX_COORD)]
    class_id: Annotated[int, Field(ge=0, lt=1 << 31)] | None = None


SHAPES = TypeAdapter(Annotated[list[Shape], Field(min_length=1, max_length=MAX_SHAPES)])


def parse_form(model: type[M], form: MultiDict[str, str]) -> M:
    """The form as `model`: unknown or repeated fields, wrong kinds and out-of-range values are refused."""
    data = {}
    for key in form.keys():
        if key in IGNORED:
            continue
        values = form.getlist(key)
        if len(values) != 1:
            raise InvalidRequestError(f"field {key[:40]!r} was sent {len(values)} times")
        if "\x00" in key or "\x00" in values[0]:
            raise InvalidRequestError(f"field {key[:40]!r} contains a NUL character")
        data[key] = values[0]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequestError(_short(exc)) from None


def parse_shapes(text: str) -> list[Shape]:
    """JSON list of 1..MAX_SHAPES shapes; pydantic's parser bounds nesting depth and number size."""
    try:
        return SHAPES.validate_json(text)
    except ValidationError as exc:
        raise InvalidRequestError(f"draw 1..{MAX_SHAPES} shapes with numeric x_min, y_min, x_max, y_max "
                                  f"(or answer skip / can't tell): {_short(exc)}") from None


def _short(exc: ValidationError) -> str:
    return "; ".join(format_validation_error(exc).splitlines()[:5])[:400]


class ExportForm(StrictModel):
    model: Annotated[str, Field(min_length=1, max_length=128)]
    min_agreement: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
