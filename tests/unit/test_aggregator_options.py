"""Aggregator options live with their aggregator (hub.yaml `aggregator_options.<name>`, checked against its Config by
key path); the old top-level `dawid_skene_history` still works, moved there with a deprecation warning."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from hgen.hub.aggregators import aggregator_names, get_aggregator
from hgen.hub.aggregators.dawid_skene import DawidSkeneConfig
from hgen.hub.config import HubConfig, HubConfigDeprecationWarning, parse_hub_config
from hgen.hub.errors import HubConfigError
from hgen.hub.service import HubService
from hgen.hub.testing.samples import make_request, make_sample
from hgen.protos import hub_pb2

NEW_KEY = "aggregator_options.dawid_skene.history"
DEVICE = "cam-1"


def refusal(data: dict) -> str:
    with pytest.raises(HubConfigError) as raised:
        parse_hub_config(data)
    return str(raised.value)


def dawid_skene_history(config: HubConfig) -> int:
    """What the hub's dawid_skene asks of the knowledge base, built as the service builds it."""
    return get_aggregator("dawid_skene", config.aggregator_config("dawid_skene")).history_size


def test_the_old_key_is_moved_to_the_aggregator_with_a_warning_naming_the_new_key() -> None:
    with pytest.warns(DeprecationWarning, match=NEW_KEY):
        old = parse_hub_config({"dawid_skene_history": 42})
    new = parse_hub_config({"aggregator_options": {"dawid_skene": {"history": 42}}})
    assert old == new  # same behaviour: nothing reads the old key any more
    assert old.aggregator_config("dawid_skene") == DawidSkeneConfig(history=42)
    assert dawid_skene_history(old) == 42


def test_the_old_key_keeps_other_options_of_the_aggregator() -> None:
    with pytest.warns(HubConfigDeprecationWarning):
        config = parse_hub_config({"dawid_skene_history": 0, "aggregator_options": {"dawid_skene": {}}})
    assert config.aggregator_options == {"dawid_skene": {"history": 0}} and dawid_skene_history(config) == 0


def test_the_new_key_sets_the_history_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = parse_hub_config({"aggregator_options": {"dawid_skene": {"history": 7}}})
        default = parse_hub_config({})
    assert dawid_skene_history(config) == 7
    assert dawid_skene_history(default) == DawidSkeneConfig().history == 600
    assert default.aggregator_config("majority").model_fields == {}


def test_setting_both_keys_is_refused_naming_both() -> None:
    message = refusal({"dawid_skene_history": 5, "aggregator_options": {"dawid_skene": {"history": 7}}})
    assert "dawid_skene_history" in message and NEW_KEY in message


def test_an_unknown_aggregator_is_refused_by_key_path_with_the_valid_names() -> None:
    message = refusal({"aggregator_options": {"dawid_skeen": {"history": 5}}})
    assert "aggregator_options.dawid_skeen: unknown aggregator" in message
    assert all(name in message for name in aggregator_names())


def test_an_unknown_or_invalid_option_is_refused_by_key_path() -> None:
    message = refusal({"aggregator_options": {"dawid_skene": {"histroy": 5}, "majority": {"history": 5}}})
    assert "aggregator_options.dawid_skene.histroy: unknown option; valid: history" in message
    assert "aggregator_options.majority.history: unknown option" in message  # majority takes no options
    assert f"{NEW_KEY}: Input should be greater than or equal to 0" in refusal(
        {"aggregator_options": {"dawid_skene": {"history": -1}}})


def test_check_config_shows_the_operator_the_deprecation(tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text(f"dawid_skene_history: 42\nknowledge_base: {{url: 'sqlite:///{tmp_path / 'hub.db'}'}}\n")
    done = subprocess.run([sys.executable, "-m", "hgen.hub.cli", "check-config", "--config", str(path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "dawid_skene_history is deprecated" in done.stderr and NEW_KEY in done.stderr
    assert '"history": 42' in done.stdout


def crowd_answers(samples: int) -> list[dict[str, int]]:
    """Two experts who give the true class (sample index mod 4) and two who answer at random: the history from
    which Dawid-Skene learns whom to trust."""
    rng = np.random.default_rng(0)
    answers = []
    for t in range(samples):
        answers.append({"e1": t % 4, "e2": t % 4, "s1": int(rng.integers(0, 4)), "s2": int(rng.integers(0, 4))})
    return answers


def answer_everything(service: HubService, answers: dict[str, dict[str, int]]) -> list[hub_pb2.SampleReply]:
    """Each annotator answers each task it is given with its class for that sample until nobody is given one."""
    api, replies = service.annotators, []
    annotators = sorted({who for per_sample in answers.values() for who in per_sample})
    for who in annotators:
        api.register(who)
    while tasks := [t for t in (api.next_task(who) for who in annotators) if t is not None]:
        for task in tasks:
            reply = api.submit_answer(hub_pb2.Answer(task_id=task.task_id, sample_id=task.sample_id, operations=1,
                                                     annotator_id=task.annotator_id,
                                                     class_id=answers[task.sample_id][task.annotator_id]))
            replies += [reply] if reply is not None else []
    return replies


@pytest.mark.parametrize(("history", "expected"), [(0, 1), (600, 2)])
def test_dawid_skene_uses_the_configured_history(tmp_path: Path, history: int, expected: int) -> None:
    # Two random answerers outvote an expert on the last sample: with no history Dawid-Skene cannot tell who is
    # reliable and follows the votes (1); with the history it follows the expert (2).
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = parse_hub_config({"devices": [DEVICE], "knowledge_base": {"url": url},
                               "aggregator_options": {"dawid_skene": {"history": history}}})
    service = HubService.from_config(config)
    try:
        past = [make_sample(DEVICE, confidence=0.4) for _ in range(40)]
        service.submit(make_request(DEVICE, past, m=4, aggregator="majority"), "grpc")
        assert len(answer_everything(service, {s.sample_id: a for s, a in zip(past, crowd_answers(40))})) == 40
        last = make_sample(DEVICE, confidence=0.4)
        service.submit(make_request(DEVICE, [last], m=3, aggregator="dawid_skene"), "grpc")
        [reply] = answer_everything(service, {last.sample_id: {"s1": 1, "s2": 1, "e1": 2}})
    finally:
        service.close()
    assert reply.aggregated.aggregator == "dawid_skene" and reply.aggregated.class_id == expected


def test_an_aggregator_takes_its_validated_config() -> None:
    assert get_aggregator("dawid_skene", DawidSkeneConfig(history=3)).history_size == 3
    assert get_aggregator("dawid_skene").history_size == 600
    assert all(get_aggregator(name).history_size == 0 for name in aggregator_names() if name != "dawid_skene")
