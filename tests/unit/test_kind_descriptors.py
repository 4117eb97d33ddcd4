"""Issue 21: every registered H-DNN kind has all its parts, each found through its descriptor, and no plugin names a
kind that is not registered. A new kind that misses a file (agent adapter, retrain plugin, web view, aggregator,
wire enum) fails here, not on a device."""

from __future__ import annotations

import pytest

from hgen.edge_agent.kinds import adapter_for, adapter_names
from hgen.hub.aggregators import default_aggregator, get_aggregator
from hgen.hub.config import ModelConfig
from hgen.hub.retrain.kinds import get_retrain_kind, retrain_kind_names
from hgen.hub.web.views import get_view, view_names
from hgen.protos import hub_pb2
from hgen.protos.kinds import kind_of_wire, wire_kind, wire_kinds
from hgen.runtime.errors import UnknownChoiceError
from hgen.runtime.hdnn import DEFAULT_KIND, get_kind, kind_names

KINDS = kind_names()
LABELS = {field.name for field in hub_pb2.Answer.DESCRIPTOR.oneofs_by_name["label"].fields}
MATH = ("confidence", "predict", "fuse", "output_channels", "difficulty")


def test_the_paper_kinds_are_registered_and_the_default_is_one() -> None:
    assert {"cnn", "yolo", "faster_rcnn"} <= set(KINDS) and DEFAULT_KIND in KINDS


@pytest.mark.parametrize("name", KINDS)
def test_descriptor_math_and_facts(name: str) -> None:
    kind = get_kind(name)
    assert kind.name == name
    assert all(callable(getattr(kind, method, None)) for method in MATH), f"{name} lacks part of the math"
    assert kind.label in LABELS, f"{name}'s label {kind.label!r} is not an Answer label ({sorted(LABELS)})"
    assert isinstance(kind.retrain_threshold, int) and kind.retrain_threshold >= 1
    assert kind.output_channels(3) >= 3


@pytest.mark.parametrize("name", KINDS)
def test_wire_enum_resolves_both_ways(name: str) -> None:
    value = wire_kind(name)
    assert hub_pb2.HdnnKind.Name(value) == get_kind(name).proto_enum and value != hub_pb2.HDNN_KIND_UNSPECIFIED
    assert kind_of_wire(value) is get_kind(name)
    assert value in wire_kinds(lambda kind: kind.name == name)


def test_no_two_kinds_share_a_wire_enum_and_unclaimed_values_have_no_kind() -> None:
    values = [wire_kind(name) for name in KINDS]
    assert len(set(values)) == len(values)
    unclaimed = set(hub_pb2.HdnnKind.values()) - set(values) - {hub_pb2.HDNN_KIND_UNSPECIFIED}
    assert all(kind_of_wire(value) is None for value in unclaimed)
    assert kind_of_wire(hub_pb2.HDNN_KIND_UNSPECIFIED) is get_kind(DEFAULT_KIND)  # older devices send no kind


@pytest.mark.parametrize("name", KINDS)
def test_agent_plugin(name: str) -> None:
    adapter = adapter_for(name)
    assert adapter.name == name
    for method in ("answer_fields", "model_output", "fuse_answers", "fused_fields", "late_fields", "answer_key"):
        assert callable(getattr(adapter, method, None)), f"agent plugin of {name} lacks {method}"


@pytest.mark.parametrize("name", KINDS)
def test_retrain_plugin(name: str) -> None:
    plugin = get_retrain_kind(name)
    assert plugin.name == name and plugin.metric and isinstance(plugin.supports_research, bool)
    for method in ("load_data", "human", "enhance", "score"):
        assert callable(getattr(plugin, method, None)), f"retrain plugin of {name} lacks {method}"


@pytest.mark.parametrize("name", KINDS)
def test_web_view_asks_for_what_the_default_aggregator_takes(name: str) -> None:
    kind = get_kind(name)
    view = get_view(kind.view)
    assert view.name == kind.view and view.label == kind.label
    assert get_aggregator(kind.aggregator).label == kind.label
    chosen = default_aggregator(kind, "majority")  # the hub's default configured aggregator
    assert get_aggregator(chosen).label == kind.label


@pytest.mark.parametrize("name", KINDS)
def test_hub_model_config_takes_the_kind_and_its_threshold(name: str) -> None:
    config = ModelConfig(name="m", keras_model="m.keras", bundle="b", kind=name)
    assert config.threshold == get_kind(name).retrain_threshold


def test_hub_model_config_refuses_an_unregistered_kind_by_key_path() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="kind") as caught:
        ModelConfig(name="m", keras_model="m.keras", bundle="b", kind="ssd")
    assert "cnn" in str(caught.value) and "yolo" in str(caught.value)  # the valid choices are named


def test_every_plugin_names_a_registered_kind() -> None:
    assert set(adapter_names()) == set(KINDS)
    assert set(retrain_kind_names()) == set(KINDS)
    assert {get_kind(name).view for name in KINDS} <= set(view_names())


def test_unknown_kind_is_a_typed_error_listing_the_choices() -> None:
    with pytest.raises(UnknownChoiceError, match="cnn"):
        adapter_for("ssd")
    with pytest.raises(UnknownChoiceError, match="yolo"):
        wire_kind("ssd")


def test_research_is_refused_for_kinds_whose_retrain_plugin_says_so(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from hgen.hub.config import parse_hub_config
    from hgen.hub.errors import RetrainError
    from hgen.hub.kb.store import KnowledgeBase
    from hgen.hub.retrain import HubPublisher, RetrainPipeline, RetrainStore

    models = [{"name": name, "keras_model": "m.keras", "bundle": "b", "kind": name, "compile_config": "c.yaml"}
              for name in KINDS]
    config = parse_hub_config({"retrain": {"store_dir": str(tmp_path), "models": models}})
    kb = KnowledgeBase.open(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        pipeline = RetrainPipeline(config.retrain, RetrainStore(kb), HubPublisher(kb))
        searchable = [name for name in KINDS if get_retrain_kind(name).supports_research]
        assert "cnn" in searchable and "yolo" not in searchable
        for name in set(KINDS) - set(searchable):
            with pytest.raises(RetrainError, match=f"re-search covers {', '.join(searchable)} models; '{name}'"):
                pipeline.check_research(name)
    finally:
        kb.close()
