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
from hgen.protos import hub_pb2
from hgen.protos.kinds import wire_kind
from hgen.runtime.hdnn import DEFAULT_KIND, get_kind


def answer(service: HubService, task, class_id: int) -> None:
    service.annotators.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id=task.annotator_id,
                                                    class_id=class_id, operations=1, latency_s=1.0, simulated=True))


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
            answer(service, task, 2)
        assert kinds == ["device", "device", "device", "gold", "device", "gold", "device", "device"]
    finally:
        service.close()


def gold_hub(tmp_path: Path, gold: dict, device_samples: int, gold_samples: int) -> HubService:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = parse_hub_config({"devices": ["cam-1"], "knowledge_base": {"url": url}, "gold": gold})
    service = HubService(config, KnowledgeBase.open(url))
    for seed in range(gold_samples):
        service.gold.add(png_image(seed=seed + 10), 2, config.num_classes, config.limits)
    service.annotators.register("ann")
    samples = [make_sample("cam-1", confidence=0.4) for _ in range(device_samples)]
    service.submit(make_request("cam-1", samples, m=1), "grpc")
    return service


def test_a_gold_task_given_back_is_owed_and_rated_a_miss(tmp_path: Path) -> None:
    """A skipped gold task was neither rated nor owed: a cheat who could tell gold apart declined it unchecked."""
    service = gold_hub(tmp_path, {"share": 0.25, "min_answers": 3, "pause_below": 0.6}, 12, 4)
    service.gold.draw = lambda: 0.0  # gold first in each run
    try:
        kinds = []
        for _ in range(3):
            task = service.annotators.next_task("ann")
            is_gold = service.gold.truth(task.sample_id) is not None
            kinds.append("gold" if is_gold else "device")
            if is_gold:
                service.annotators.release(task.task_id, "ann", "skip", latency_s=1.0)
            else:
                answer(service, task, 0)
        assert kinds == ["gold", "gold", "gold"]  # each gold given back is owed: the next task is gold again
        rating = service.gold.rating("ann")
        assert (rating.correct, rating.answered, rating.declined, rating.accuracy) == (0, 0, 3, 0.0)
        assert "3 not answered: given back or timed out" in (rating.paused_reason or "")
        assert service.annotators.next_task("ann") is None  # paused
    finally:
        service.close()


def test_someone_who_has_seen_every_gold_sample_is_checked_again(tmp_path: Path) -> None:
    """With every gold sample seen, gold stopped: a long-working annotator went unchecked for good."""
    service = gold_hub(tmp_path, {"share": 0.5, "min_answers": 100}, 12, 2)
    service.gold.draw = lambda: 0.0
    try:
        gold_given = []
        for _ in range(8):
            task = service.annotators.next_task("ann")
            assert task is not None
            if service.gold.truth(task.sample_id) is not None:
                gold_given.append(task.sample_id)
            answer(service, task, 2)
        assert len(gold_given) == 4 and len(set(gold_given)) == 2
        assert gold_given[2] == gold_given[0] and gold_given[3] == gold_given[1]  # the one seen longest ago first
        rating = service.gold.rating("ann")
        assert (rating.correct, rating.answered, rating.declined) == (4, 4, 0)
    finally:
        service.close()


def test_a_gold_sample_held_open_is_not_given_again(tmp_path: Path) -> None:
    service = gold_hub(tmp_path, {"share": 0.5, "min_answers": 100}, 0, 1)
    service.gold.draw = lambda: 0.0
    try:
        first = service.gold.assign("ann")
        assert first is not None
        assert service.gold.assign("ann") is None  # the only gold sample is open with them
        answer(service, first, 2)
        again = service.gold.assign("ann")
        assert again is not None and again.sample_id == first.sample_id and again.task_id != first.task_id
    finally:
        service.close()


def test_a_gold_task_left_to_time_out_is_owed_and_rated_a_miss(tmp_path: Path) -> None:
    """Holding a gold task past the assignment timeout, instead of skipping it, left it neither owed nor rated."""
    service = gold_hub(tmp_path, {"share": 0.25, "min_answers": 2, "pause_below": 0.6}, 12, 4)
    service.gold.draw = lambda: 0.0
    try:
        for _ in range(2):
            task = service.annotators.next_task("ann")
            assert service.gold.truth(task.sample_id) is not None  # owed: gold again
            assert service.kb.expire_assignments(-1.0) == 1  # held past the timeout, never answered
        rating = service.gold.rating("ann")
        assert (rating.answered, rating.declined) == (0, 2)
        assert service.annotators.next_task("ann") is None  # paused when the next gold fell due
        assert "2 not answered: given back or timed out" in (service.gold.paused_reason("ann") or "")
    finally:
        service.close()


def test_gold_guesses_take_the_shape_of_the_devices_doubted_samples(tmp_path: Path) -> None:
    """Invented guesses put the top over a device's tau on half the gold pages, where a doubted device frame rarely
    is: a careful cheat could pick gold out by the top percentage. Gold now borrows a recent device sample's shape."""
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = parse_hub_config({"devices": ["cam-1"], "knowledge_base": {"url": url}})
    service = HubService(config, KnowledgeBase.open(url))
    try:
        tops = {0.22, 0.27, 0.31}
        samples = [make_sample("cam-1", confidence=top, top=i % 10) for i, top in enumerate(sorted(tops) * 3)]
        service.submit(make_request("cam-1", samples, m=1), "grpc")
        gold_tops, on_truth = [], 0
        for seed in range(40):
            sample_id = service.gold.add(png_image(seed=seed + 10), 2, config.num_classes, config.limits)
            with service.kb.session() as s:
                probs = list(hub_pb2.ModelOutput.FromString(s.get(Sample, sample_id).model_output).class_probabilities)
            gold_tops.append(round(max(probs), 6))
            on_truth += probs.index(max(probs)) == 2
        assert set(gold_tops) <= {round(t, 6) for t in tops}, gold_tops  # no page stands out by its top guess
        assert 8 <= on_truth <= 32  # the true class on top about half the time, as before
    finally:
        service.close()
