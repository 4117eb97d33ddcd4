"""Audit faults in the knowledge base: an insert that loses a race to another hub is still ignored, but any other
broken constraint (a foreign key to a missing row) is a typed error, never hidden (real SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event

from hgen.hub.errors import KnowledgeBaseError, KnowledgeBaseIntegrityError
from hgen.hub.kb.models import Annotator, Batch, Sample
from hgen.hub.kb.store import KnowledgeBase, NewSample
from hgen.hub.testing.fixtures import kb_url, pg_url  # noqa: F401 (pytest fixtures)
from hgen.hub.testing.samples import make_request, make_sample

DEVICE = "cam-1"


@pytest.fixture
def kb(kb_url: str, tmp_path: Path) -> Iterator[KnowledgeBase]:
    opened = KnowledgeBase.open(kb_url, image_dir=tmp_path / "img")
    opened.register_devices([DEVICE])
    yield opened
    opened.close()


def new_sample(request, device_id: str = DEVICE) -> NewSample:  # type: ignore[no-untyped-def]
    sample = make_sample(device_id)
    return NewSample(sample, request.batch_id, 1, "majority", 1e12, 1.0, 1.0, "grpc")


def test_a_batch_of_an_unknown_device_is_an_error_not_silently_missing(kb: KnowledgeBase) -> None:
    request = make_request("ghost", [make_sample("ghost")], m=1)
    with pytest.raises(KnowledgeBaseIntegrityError, match="batches") as raised:
        kb.ensure_batch(request, 1, 1e12, 0.0)
    assert isinstance(raised.value, KnowledgeBaseError)
    assert kb.count(Batch) == 0


def test_a_sample_breaking_a_foreign_key_is_an_error_not_a_duplicate(kb: KnowledgeBase) -> None:
    request = make_request(DEVICE, [], m=1)
    kb.ensure_batch(request, 1, 1e12, 0.0)
    kb.ensure_batch(request, 1, 1e12, 0.0)  # the batch is there: ignored, as before
    assert kb.add_sample(new_sample(request)) == "accepted"
    with pytest.raises(KnowledgeBaseIntegrityError, match="samples"):
        kb.add_sample(new_sample(request, device_id="ghost"))  # its device is not registered
    assert kb.count(Sample) == 1


def test_inserts_that_lose_a_race_to_another_hub_are_ignored(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    """Between one hub's check and its insert, another hub commits the same rows (PostgreSQL: SQLite's immediate
    transactions make writers queue, so the race cannot happen there)."""
    ours, theirs = (KnowledgeBase.open(pg_url, image_dir=tmp_path / "img") for _ in range(2))
    theirs.register_devices([DEVICE])
    request = make_request(DEVICE, [], m=1)
    sample = new_sample(request)
    raced: list[str] = []

    def other_hub_first(_mapper, _connection, row) -> None:  # type: ignore[no-untyped-def]
        if type(row).__name__ in raced:
            return
        raced.append(type(row).__name__)  # before theirs inserts, so their own insert does not race again
        if isinstance(row, Annotator):
            theirs.register_annotator(row.id)
        elif isinstance(row, Batch):
            theirs.ensure_batch(request, 1, 1e12, 0.0)
        else:  # the same sample in their own batch: their labour reservation must not wait for our batch row
            other = make_request(DEVICE, [], m=1)
            theirs.ensure_batch(other, 1, 1e12, 0.0)
            assert theirs.add_sample(NewSample(sample.sample, other.batch_id, 1, "majority", 1e12, 1.0, 1.0,
                                               "grpc")) == "accepted"

    models = (Annotator, Batch, Sample)
    for model in models:
        event.listen(model, "before_insert", other_hub_first)
    try:
        ours.register_annotator("ann")
        ours.ensure_batch(request, 1, 1e12, 0.0)
        assert ours.add_sample(sample) == "duplicate"
        assert raced == ["Annotator", "Batch", "Sample"]
        assert ours.count(Annotator) == 1 and ours.count(Batch) == 2 and ours.count(Sample) == 1
    finally:
        for model in models:
            event.remove(model, "before_insert", other_hub_first)
        ours.close()
        theirs.close()
