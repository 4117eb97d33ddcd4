"""Strict configuration models: unknown keys are rejected and every error is reported by its key path.

Modelled on Frigate's detector configs: pydantic with `extra="forbid"`, a title on every field.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from hgen.runtime.errors import ConfigError
from hgen.runtime.registry import Registry

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for configuration: frozen, no unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def format_validation_error(error: ValidationError, prefix: str = "", model: type[BaseModel] | None = None) -> str:
    """One line per problem, `key.path: message`, so an operator can find each mistake at once; with `model`, an
    unknown key names the key it most likely meant (`nmae` -> `name`)."""
    lines = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "<root>"
        if prefix:
            path = f"{prefix}.{path}" if path != "<root>" else prefix
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key" + _did_you_mean(model, item["loc"])
        lines.append(f"{path}: {message}")
    return "\n".join(lines)


def did_you_mean(key: str, known: Sequence[str]) -> str:
    """" (did you mean 'x'?)" for the known key closest to a misspelt one, or "" when none is close."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _did_you_mean(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> str:
    return did_you_mean(str(loc[-1]), _keys_at(model, loc[:-1])) if model is not None and loc else ""


def _keys_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names of the (nested) model at `loc`; [] where the path leaves models (a dict of options)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue  # a list index: the element model is already `current`
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        current = _model_in(field.annotation)
    return list(current.model_fields) if isinstance(current, type) and issubclass(current, BaseModel) else []


def _model_in(annotation: Any) -> Any:
    """The model an annotation holds: itself, or the element of a list/tuple/optional of models."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def parse_config(model: type[M], data: Mapping[str, Any] | None, *, source: str = "config",
                 error: type[Exception] = ConfigError) -> M:
    """Validate `data` against `model`; raise `error` listing every problem by key path."""
    try:
        return model.model_validate(dict(data or {}))
    except ValidationError as exc:
        raise error(f"invalid {source}:\n{format_validation_error(exc, model=model)}") from None


def load_config_file(model: type[M], path: str | Path, *, error: type[Exception] = ConfigError) -> M:
    """Read a YAML (or JSON) file and validate it strictly."""
    return parse_config(model, read_config_mapping(path, error=error), source=str(path), error=error)


def read_config_mapping(path: str | Path, *, error: type[Exception] = ConfigError) -> dict[str, Any]:
    """A YAML (or JSON) file's top-level mapping, not yet validated: for a caller that lays other values (command
    line flags) over it before `parse_config`."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise error(f"cannot read config {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"config {path} is not valid YAML: {exc}") from None
    if data is not None and not isinstance(data, Mapping):
        raise error(f"config {path} must be a mapping at the top level, got {type(data).__name__}")
    return dict(data or {})


def backend_option_problems(registry: Registry[Any], options: Mapping[str, Mapping[str, Any]], *,
                            each_key: bool = False) -> list[str]:
    """`name.key: message` for each backend name `registry` lacks or option its backend's `Config` refuses, with the
    valid choices: per-backend options in a config (engine_options, aggregator_options) are checked at load, by key
    path. `each_key`: check each given key on its own, for options whose other fields come from elsewhere (the
    tvm engine's shapes come from the bundle)."""
    problems = []
    for name, values in options.items():
        if name not in registry:
            problems.append(f"{name}: unknown {registry.kind}; valid choices: {', '.join(registry.names())}")
            continue
        model: type[BaseModel] = registry.get(name).Config
        problems += _each_key_problems(model, values, name) if each_key else _whole_problems(model, values, name)
    return problems


def _unknown_option(model: type[BaseModel]) -> str:
    return f"unknown option; valid: {', '.join(model.model_fields) or '(none: it takes no options)'}"


def _whole_problems(model: type[BaseModel], values: Mapping[str, Any], name: str) -> list[str]:
    try:
        model.model_validate(values)
    except ValidationError as exc:
        return [line.removesuffix("unknown key") + _unknown_option(model) if line.endswith(": unknown key") else line
                for line in format_validation_error(exc, name).splitlines()]
    return []


def _each_key_problems(model: type[BaseModel], values: Mapping[str, Any], name: str) -> list[str]:
    problems = []
    for key, value in values.items():
        field = model.model_fields.get(key)
        if field is None:
            problems.append(f"{name}.{key}: {_unknown_option(model)}")
            continue
        annotation = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
        try:
            TypeAdapter(annotation).validate_python(value)
        except ValidationError as exc:
            problems += format_validation_error(exc, f"{name}.{key}").splitlines()
    return problems


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) is Literal:  # the valid values, not the word "Literal"
        return " | ".join(repr(value) for value in get_args(annotation))
    text = getattr(annotation, "__name__", None) or str(annotation)
    return re.sub(r"\b(?:[a-z_]\w*\.)+(\w+)", r"\1", text).replace("NoneType", "None")  # Path, not pathlib.Path


def reference_rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key path, type, default, title) for every field, nested config sections flattened with dots, and the
    fields of a list's items under `key[].` (`key[kind=NAME].` per kind of a list of several kinds).

    The README's configuration reference is generated from these rows, so it cannot drift from the code.
    """
    rows: list[tuple[str, str, str, str]] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(reference_rows(annotation, f"{path}."))
            continue
        if field.is_required():
            default = "required"
        else:
            value = field.get_default(call_default_factory=True)
            default = "" if value is None else repr(value.model_dump() if isinstance(value, BaseModel) else value)
        optional = _optional_model(annotation)
        if optional is not None:  # a section that may be left out: say so, then its keys (they were not listed)
            rows.append((path, "section, optional", default, field.title or ""))
            rows.extend(reference_rows(optional, f"{path}."))
            continue
        items = _item_models(annotation)
        rows.append((path, "list" if items else _type_name(annotation), default, field.title or ""))
        for item in items:
            fields = reference_rows(item, f"{path}[{_kind_of(item) if len(items) > 1 else ''}].")
            rows.extend(sorted(fields, key=lambda row: not row[0].endswith(".kind")))  # an item's kind first
    return rows


def _optional_model(annotation: Any) -> type[BaseModel] | None:
    """The config model of a `Model | None` field."""
    if get_origin(annotation) not in (Union, UnionType) or type(None) not in get_args(annotation):
        return None
    models = _models_in(annotation)
    return models[0] if len(models) == 1 and len(get_args(annotation)) == 2 else None


def _item_models(annotation: Any) -> list[type[BaseModel]]:
    """The config models a tuple or list field holds (several for a union of kinds)."""
    if get_origin(annotation) not in (tuple, list):
        return []
    args = [arg for arg in get_args(annotation) if arg is not Ellipsis]
    return _models_in(args[0]) if len(args) == 1 else []


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if get_origin(annotation) is Annotated:
        return _models_in(get_args(annotation)[0])
    if get_origin(annotation) in (Union, UnionType):
        return [model for arg in get_args(annotation) for model in _models_in(arg)]
    return [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []


def _kind_of(model: type[BaseModel]) -> str:
    """`kind=NAME` for a model whose `kind` is one literal, else the model's name."""
    field = model.model_fields.get("kind")
    values = get_args(field.annotation) if field is not None else ()
    return f"kind={values[0]}" if len(values) == 1 else model.__name__


def reference_markdown(model: type[BaseModel]) -> str:
    """A Markdown table of `reference_rows`."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for path, kind, default, title in reference_rows(model):
        cells = [f"`{path}`", kind, f"`{default}`" if default else "", title]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def regenerate(target: Path, markers: tuple[str, str], render: Callable[[], str], *, check: bool) -> int:
    """Rewrite the part of a docs file between its two marker lines with `render()` (a generated reference, kept
    next to hand-written text); with `check`, only say whether it is stale. Returns the exit code (1: stale)."""
    start, end = markers
    text = target.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{target} lacks the markers {start} ... {end}")
    head, _, rest = text.partition(start)
    new = head + render() + rest.partition(end)[2]
    if check:
        if new != text:
            print(f"{target.name} is stale: regenerate it", file=sys.stderr)
        return int(new != text)
    target.write_text(new)
    return 0
