"""The configuration reference (docs/configuration.md) is generated from the config models and must match them."""

import importlib.util
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from hgen.runtime.config import StrictModel, reference_rows

TOOL = Path(__file__).resolve().parents[2] / "tools" / "docs" / "config_reference.py"


class Inner(StrictModel):
    port: int = Field(1883, title="Broker port")


class Outer(StrictModel):
    name: str = Field(title="Name")
    inner: Inner = Field(default_factory=Inner, title="Inner")


def test_rows_flatten_nested_sections_with_defaults_and_titles():
    assert reference_rows(Outer) == [("name", "str", "required", "Name"), ("inner.port", "int", "1883", "Broker port")]


class WithOptional(StrictModel):
    tls: Inner | None = Field(None, title="TLS")
    where: Path | None = Field(None, title="Where")


def test_an_optional_section_lists_its_keys_and_types_read_without_module_paths():
    """`mqtt.access` and the `tls` sections were listed by their class's dotted name only, so their keys went
    undocumented."""
    assert reference_rows(WithOptional) == [("tls", "section, optional", "", "TLS"),
                                            ("tls.port", "int", "1883", "Broker port"),
                                            ("where", "Path | None", "", "Where")]


class FileOut(StrictModel):
    kind: Literal["file"] = Field(title="Kind")
    path: str = Field(title="Where")


class TopicOut(StrictModel):
    kind: Literal["topic"] = Field(title="Kind")
    qos: Literal[0, 1] = Field(1, title="QoS")


class Lists(StrictModel):
    inners: tuple[Inner, ...] = Field((), title="Inners")
    outs: tuple[Annotated[FileOut | TopicOut, Field(discriminator="kind")], ...] = Field((), title="Outputs")


def test_rows_document_the_items_of_lists_per_kind_and_literal_values():
    assert reference_rows(Lists) == [
        ("inners", "list", "()", "Inners"), ("inners[].port", "int", "1883", "Broker port"),
        ("outs", "list", "()", "Outputs"),
        ("outs[kind=file].kind", "'file'", "required", "Kind"), ("outs[kind=file].path", "str", "required", "Where"),
        ("outs[kind=topic].kind", "'topic'", "required", "Kind"), ("outs[kind=topic].qos", "0 | 1", "1", "QoS")]


def test_configuration_reference_is_up_to_date():
    spec = importlib.util.spec_from_file_location("config_reference", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["--check"]) == 0, "docs/configuration.md is stale: run `python tools/docs/config_reference.py`"
