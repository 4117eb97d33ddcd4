"""What a retrain reads must be what the deployed model means: the data set's classes in the bundle's order at its
input size; an image that cannot be read is left out, not a reason to fail every later retrain; boxes on a
letterboxed model's images are mapped into its input as the compile maps them."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hgen.edge_agent.testing import make_keys, null_bundle
from hgen.hub.errors import RetrainError
from hgen.hub.retrain.data import human_set, to_input
from hgen.hub.retrain.pipeline import check_same_classes
from hgen.hub.retrain.records import LabelledSample
from hgen.protos import hub_pb2
from hgen.runtime.bundle.manifest import MANIFEST_NAME, parse_manifest


def sample(sample_id: str, image: bytes, image_format: int = hub_pb2.IMAGE_FORMAT_RAW_U8) -> LabelledSample:
    return LabelledSample(sample_id, 1, image_format, 4, 4, 1, image)


def test_an_unreadable_image_is_left_out_and_said(caplog: pytest.LogCaptureFixture) -> None:
    good = np.full((4, 4, 1), 100, np.uint8).tobytes()
    with caplog.at_level(logging.WARNING):
        kept = human_set([sample("a", good), sample("gone", b""), sample("junk", b"not a png", hub_pb2.IMAGE_FORMAT_PNG),
                          sample("b", good)], (4, 4, 1), 3)
    assert kept.sample_ids == ("a", "b") and kept.x.shape == (2, 4, 4, 1)
    assert "2 human-labelled images cannot be read and are left out of the retrain (first: sample gone: no stored " \
           "image (its file is missing, or retention removed it" in caplog.text
    with pytest.raises(RetrainError, match="none of the 1 human-labelled images can be read"):
        human_set([sample("gone", b"")], (4, 4, 1), 3)


def test_a_data_set_naming_other_classes_or_sizes_than_the_bundle_is_refused(tmp_path: Path) -> None:
    bundle = null_bundle(tmp_path / "b", make_keys(tmp_path / "keys"), classes=3, labels=("cat", "dog", "fox"))
    manifest = parse_manifest((bundle / MANIFEST_NAME).read_bytes())
    model = SimpleNamespace(name="pets", dataset="folder:pets")
    check_same_classes(model, SimpleNamespace(labels=("cat", "dog", "fox"), input_shape=(28, 28, 1)), manifest)
    renamed = SimpleNamespace(labels=("ant", "cat", "dog", "fox"), input_shape=(28, 28, 1))  # a folder added
    with pytest.raises(RetrainError, match=r"has the classes \['ant', 'cat', 'dog', 'fox'\], the deployed bundle "
                                           r"\['cat', 'dog', 'fox'\]"):
        check_same_classes(model, renamed, manifest)
    with pytest.raises(RetrainError, match=r"images are \(32, 32, 3\), the deployed model takes \(28, 28, 1\)"):
        check_same_classes(model, SimpleNamespace(labels=("cat", "dog", "fox"), input_shape=(32, 32, 3)), manifest)


def test_boxes_on_a_letterboxed_model_are_mapped_into_its_input() -> None:
    pre = SimpleNamespace(resize="letterbox", width=32, height=32)
    rows = np.array([[0.0, 0.0, 1.0, 1.0, 2.0]])  # the whole of a 64 x 32 image
    mapped = to_input(rows, 64, 32, SimpleNamespace(preprocess=pre))
    assert mapped[0].tolist() == [0.0, 0.25, 1.0, 0.75, 2.0]  # the image fills 32 x 16, 8 px down
    stretched = SimpleNamespace(preprocess=SimpleNamespace(resize="stretch", width=32, height=32))
    assert to_input(rows, 64, 32, stretched) is rows


def test_a_paused_annotators_answers_leave_the_training_set_until_they_are_resumed(tmp_path: Path) -> None:
    """Pausing someone who failed gold stopped their tasks, but their earlier answers stayed in every retrain."""
    from hgen.hub.config import parse_hub_config
    from hgen.hub.retrain.records import RetrainStore
    from hgen.hub.service import HubService
    from hgen.hub.testing.samples import make_request, make_sample

    config = parse_hub_config({"devices": ["cam"], "knowledge_base": {"url": f"sqlite:///{tmp_path / 'hub.db'}"}})
    service = HubService.from_config(config)
    try:
        samples = [make_sample("cam", top=1) for _ in range(4)]  # of the model lenet5
        service.submit(make_request("cam", samples, m=1), "grpc")
        for person in ("good", "bad", "good", "bad"):
            service.annotators.register(person)
            task = service.annotators.next_task(person)
            assert task is not None
            service.annotators.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id=person, class_id=1,
                                                            operations=1, latency_s=2.0))
        store = RetrainStore(service.kb)
        assert len(store.labelled_samples("lenet5", float("inf"))) == 4
        service.gold.pause("bad", "gold accuracy 20% on 5 gold tasks is below 60%")
        assert len(store.labelled_samples("lenet5", float("inf"))) == 2 and store.new_label_count("lenet5") == 2
        service.gold.resume("bad")
        assert len(store.labelled_samples("lenet5", float("inf"))) == 4
    finally:
        service.close()


def test_a_retrain_reads_at_most_the_newest_labels(tmp_path: Path) -> None:
    """Each retrain decoded every label ever given at once; retrain.max_labels bounds it, keeping the newest."""
    from hgen.hub.config import parse_hub_config
    from hgen.hub.kb.store import KnowledgeBase
    from hgen.hub.retrain.records import RetrainStore
    from hgen.hub.service import HubService
    from hgen.hub.testing.clock import Clock
    from hgen.hub.testing.samples import make_request, make_sample

    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = parse_hub_config({"devices": ["cam"], "knowledge_base": {"url": url}})
    assert config.retrain.max_labels == 20_000
    clock = Clock()
    service = HubService(config, KnowledgeBase.open(url, clock=clock), clock=clock)
    try:
        samples = [make_sample("cam", top=1) for _ in range(5)]
        service.submit(make_request("cam", samples, m=1, now=clock.now), "grpc")
        service.annotators.register("p")
        answered = []
        for _ in range(5):
            clock.now += 1.0
            task = service.annotators.next_task("p")
            assert task is not None
            answered.append(task.sample_id)
            service.annotators.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id="p", class_id=1,
                                                            operations=1, latency_s=1.0))
        store = RetrainStore(service.kb)
        newest = store.labelled_samples("lenet5", float("inf"), newest=2)
        assert [s.sample_id for s in newest] == sorted(answered[-2:])
        assert len(store.labelled_samples("lenet5", float("inf"))) == 5
    finally:
        service.close()
