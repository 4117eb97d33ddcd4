"""Audit faults in gold tasks: a gold sample is stored with the kind and aggregator a device's sample of the same kind
gets on this hub (the kind registry's default, the configured aggregator), not hard-coded ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from hgen.hub.config import parse_hub_config
from hgen.hub.gold import GoldBook
from hgen.hub.kb.models import Sample
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.service import HubService
from hgen.hub.testing.samples import make_request, make_sample, png_image
from hgen.protos.kinds import wire_kind
from hgen.runtime.hdnn import DEFAULT_KIND, get_kind


def stored(kb: KnowledgeBase, sample_id: str) -> tuple[str, int]:
    with kb.session() as s:
        row = s.get(Sample, sample_id)
        return row.aggregator, row.hdnn_kind


@pytest.mark.parametrize("aggregator", ["dawid_skene", "majority"])
def test_gold_samples_get_what_a_device_sample_of_the_default_kind_gets(tmp_path: Path, aggregator: str) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = parse_hub_config({"aggregator": aggregator, "devices": ["cam-1"], "knowledge_base": {"url": url}})
    service = HubService(config, KnowledgeBase.open(url))
    try:
        gold = service.gold.add(png_image(seed=1), 2, config.num_classes, config.limits)
        device = make_sample("cam-1", confidence=0.4)
        assert service.submit(make_request("cam-1", [device], m=1), "grpc").accepted == [device.sample_id]
        assert stored(service.kb, gold) == stored(service.kb, device.sample_id) == (aggregator, wire_kind(DEFAULT_KIND))
    finally:
        service.close()


def test_gold_without_a_configured_aggregator_takes_the_kinds_own(tmp_path: Path) -> None:
    kb = KnowledgeBase.open(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        config = parse_hub_config({})
        book = GoldBook(kb, config.gold)
        sample_id = book.add(png_image(seed=2), 1, config.num_classes, config.limits)
        assert stored(kb, sample_id) == (get_kind(DEFAULT_KIND).aggregator, wire_kind(DEFAULT_KIND))
        assert get_kind(DEFAULT_KIND).label == "class_id"  # gold truth is a class: the default kind must ask for one
    finally:
        kb.close()


def test_gold_falls_once_in_each_run_of_tasks_at_a_random_place(tmp_path: Path) -> None:
    """The first task was always gold, then every 1/share-th: a careful cheat knew which ones to answer well."""
    from hgen.hub.testing.samples import make_request, make_sample

    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = parse_hub_config({"devices": ["cam-1"], "knowledge_base": {"url": url},
                               "gold": {"share": 0.25, "min_answers": 100}})
    service = HubService(config, KnowledgeBase.open(url))
    draws = iter([0.9, 0.9, 0.9, 0.0, 0.3, 0.0, 0.9, 0.9] + [0.9] * 8)  # 0.9 never picks a place before the last
    service.gold.draw = lambda: next(draws)
    try:
        for seed in range(4):
            service.gold.add(png_image(seed=seed + 10), 2, config.num_classes, config.limits)
        service.annotators.register("ann")
        service.submit(make_request("cam-1", [make_sample("cam-1", confidence=0.4) for _ in range(12)], m=1), "grpc")
        kinds = []
        for _ in range(8):
            task = service.annotators.next_task("ann")
            assert task is not None
            kinds.append("gold" if service.gold.truth(task.sample_id) is not None else "device")
            service.annotators.release(task.task_id, "ann", "skip", latency_s=1.0)
        assert kinds == ["device", "device", "device", "gold", "device", "gold", "device", "device"]
    finally:
        service.close()
