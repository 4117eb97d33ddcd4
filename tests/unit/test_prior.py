"""The runtime class prior (SMART, issue 22): re-weighting, smoothing, window estimate and change detection in the
runtime, and the agent's hook before the gate and the fusion (null engine; off is bit-identical)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from hgen.edge_agent.agent import Agent, Waiting
from hgen.edge_agent.config import parse_agent_config
from hgen.edge_agent.errors import AgentConfigError
from hgen.edge_agent.results import Result, ResultStatus
from hgen.edge_agent.sources import Frame
from hgen.edge_agent.testing import make_keys, null_bundle
from hgen.protos import hub_pb2
from hgen.runtime.calibration import softmax
from hgen.runtime.errors import InvalidInputError
from hgen.runtime.prior import PriorEstimator, PriorSettings, l1_distance, reweight, shift_logits

# --- runtime math --------------------------------------------------------------------------------------------


def test_shifted_logits_give_the_reweighted_probabilities() -> None:
    rng = np.random.default_rng(0)
    logits, prior = rng.normal(size=(50, 10)) * 3, rng.dirichlet(np.ones(10)) + 1e-3
    probs = softmax(logits, 0.8)
    expected = probs * prior / (probs * prior).sum(axis=1, keepdims=True)
    assert np.allclose(reweight(probs, prior), expected)
    assert np.allclose(softmax(shift_logits(logits, prior, 0.8), 0.8), expected)
    assert shift_logits(logits.astype(np.float32), prior, 0.8).dtype == np.float32
    uniform = np.full(10, 0.1)
    assert np.allclose(reweight(probs, uniform), probs)


def test_bad_priors_and_settings_are_typed_errors() -> None:
    with pytest.raises(InvalidInputError):
        reweight(np.full((1, 3), 1 / 3), np.array([0.5, 0.5, 0.0]))  # a zero would silence a class for good
    with pytest.raises(InvalidInputError):
        shift_logits(np.zeros((1, 3)), np.ones(4), 1.0)
    with pytest.raises(InvalidInputError):
        PriorSettings(smoothing=0.0)
    with pytest.raises(InvalidInputError):
        PriorEstimator(3).observe(3)


def test_prior_is_uniform_until_a_window_is_full_then_the_smoothed_mix() -> None:
    estimator = PriorEstimator(4, PriorSettings(window=10, smoothing=0.2))
    for label in [0] * 7 + [1] * 2:
        estimator.observe(label)
    assert not estimator.ready and np.allclose(estimator.prior(), 0.25)
    estimator.observe(1)
    assert np.allclose(estimator.prior(), 0.8 * np.array([0.7, 0.3, 0, 0]) + 0.05)
    assert estimator.prior().min() == pytest.approx(0.2 / 4)  # unseen classes keep smoothing / K
    for _ in range(10):  # the window slides: only the last 10 labels count
        estimator.observe(3)
    assert np.allclose(estimator.prior(), 0.8 * np.array([0, 0, 0, 1]) + 0.05)


def test_a_mix_close_to_the_training_mix_leaves_the_model_alone() -> None:
    estimator = PriorEstimator(4, PriorSettings(window=20, threshold=0.5))
    for label in [1] * 4 + [2] * 4 + [3] * 4 + [0] * 8:  # L1 to uniform 0.3: a confident-answer bias, not a skew
        estimator.observe(label)
    assert estimator.ready and not estimator.skewed() and np.allclose(estimator.prior(), 0.25)
    for label in [0] * 6:  # the window now holds 14 of class 0: L1 0.9 > 0.5
        estimator.observe(label)
    assert estimator.skewed() and estimator.prior()[0] > 0.5


def test_a_switch_of_mix_is_detected_at_the_first_window_after_it_and_noise_is_not() -> None:
    rng = np.random.default_rng(1)
    settings = PriorSettings(window=200, threshold=0.5)
    estimator = PriorEstimator(10, settings)
    before = np.array([0.4, 0.2, 0.2] + [0.2 / 7] * 7)
    after = np.array([0.2 / 7] * 7 + [0.4, 0.2, 0.2])
    for label in rng.choice(10, size=2000, p=before):  # ten windows of the same mix: sampling noise only
        assert estimator.observe(int(label)) is None
    changes = [c for c in (estimator.observe(int(label)) for label in rng.choice(10, size=400, p=after)) if c]
    assert [c.observed for c in changes] == [2200]  # the first window after the switch, once
    assert changes[0].distance == pytest.approx(l1_distance(changes[0].before, changes[0].after))
    assert changes[0].distance > 1.0
    assert estimator.changes == changes


# --- the agent's hook (null engine) ----------------------------------------------------------------------


def agent_config(tmp: Path, bundle: Path, public_key: Path, **extra: object):
    return parse_agent_config({"device_id": "cam-1", "bundle": {"path": str(bundle), "public_key": str(public_key)},
                               "source": {"kind": "images", "uri": str(tmp)},
                               "outbox": {"path": str(tmp / f"outbox-{len(extra)}.sqlite")},
                               "gate": {"tau": 0.0, "audit_share": 0.0}, **extra})


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    keys = make_keys(tmp_path / "keys")
    yield tmp_path, null_bundle(tmp_path / "bundle", keys), keys.public_pem


@contextmanager
def stopped(agent: Agent) -> Iterator[Agent]:
    """The agent without its threads (frames are fed to `process_frame` directly), stopped afterwards."""
    try:
        yield agent
    finally:
        agent.stop()


def frames(count: int, seed: int = 0) -> list[Frame]:
    rng = np.random.default_rng(seed)
    return [Frame(i, rng.integers(0, 256, (28, 28), dtype=np.uint8), float(i)) for i in range(count)]


def test_off_is_bit_identical_and_on_reweights_before_the_gate(setup) -> None:
    tmp, bundle, public_key = setup
    stream = frames(60)
    with stopped(Agent(agent_config(tmp, bundle, public_key))) as plain:
        assert plain.prior is None
        baseline = [plain.process_frame(f) for f in stream]
        raw = [plain.model.infer(_input(plain, f))[0] for f in stream]
    for frame_result, logits in zip(baseline, raw):  # off: exactly today's confidence and label
        probs = softmax(logits[None], plain.model.params.temperature)[0]
        assert frame_result.confidence == float(probs.max()) and frame_result.label == int(probs.argmax())
    config = agent_config(tmp, bundle, public_key, prior={"enabled": True, "window": 20})
    with stopped(Agent(config)) as adapted:
        assert adapted.prior is not None
        for frame, logits, before in zip(stream, raw, baseline):
            prior = adapted.prior.prior()
            result = adapted.process_frame(frame)
            if frame.index < 20:  # cold: no window yet, the same bits as without the prior
                assert (result.confidence, result.label) == (before.confidence, before.label)
                continue
            expected = reweight(softmax(logits[None], adapted.model.params.temperature), prior)[0]
            assert result.confidence == pytest.approx(float(expected.max()), abs=1e-6)
            assert result.label == int(expected.argmax())
        assert adapted.prior.prior().max() > 0.1  # the confident answers' mix, not uniform any more


def _input(agent: Agent, frame: Frame) -> np.ndarray:
    from hgen.edge_agent.model import preprocess

    return preprocess(frame.image, agent.model.manifest.input)[0][None]


def test_people_answers_teach_the_prior_and_status_reports_prior_and_changes(setup) -> None:
    tmp, bundle, public_key = setup
    config = agent_config(tmp, bundle, public_key, prior={"enabled": True, "window": 10, "threshold": 0.5})
    with stopped(Agent(config)) as agent:
        logits = np.zeros(10, np.float32)
        for i, label in enumerate([2] * 20 + [7] * 20):  # people say 2 for two windows, then 7 for two
            sample_id = f"s-{i}"
            pending = Result(i, sample_id, 0.0, ResultStatus.PENDING, "escalate", label=0, model_label=0)
            agent._waiting[sample_id] = Waiting(pending, logits, "cnn", agent.model.params, float("inf"))
            agent._on_reply(hub_pb2.SampleReply(sample_id=sample_id, status=hub_pb2.REPLY_STATUS_ANSWERED,
                                                answers=[hub_pb2.Answer(annotator_id=f"p{k}", class_id=label)
                                                         for k in range(3)]))
        status = agent.telemetry.device_status("cam-1", agent.model.name, agent.model.version)
    assert status.metrics["prior_changes"] == 1.0 and status.metrics["prior_last_change_l1"] == pytest.approx(2.0)
    assert status.metrics["prior.7"] == pytest.approx(0.9 + 0.01) and status.metrics["prior.2"] == pytest.approx(0.01)
    assert status.metrics["prior_observed"] == 40.0


def test_prior_stays_off_for_detection_and_says_so(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    bundle = null_bundle(tmp_path / "bundle", keys, kind="yolo", classes=3)
    config = agent_config(tmp_path, bundle, keys.public_pem, prior={"enabled": True, "window": 10})
    config = config.model_copy(update={"bundle": config.bundle.model_copy(
        update={"engine_options": {"null": {"output_shape": (1, 4, 4, 8)}}})})
    with stopped(Agent(config)) as agent:
        for frame in frames(12):
            agent.process_frame(frame)
        assert agent.prior is not None and agent.prior.prior() is None
        assert "no class probabilities" in agent.telemetry.problems["prior"]


def test_prior_config_is_checked_by_key_path(setup) -> None:
    tmp, bundle, public_key = setup
    with pytest.raises(AgentConfigError, match="prior.window"):
        agent_config(tmp, bundle, public_key, prior={"enabled": True, "window": 1})
    with pytest.raises(AgentConfigError, match="prior.threshold"):
        agent_config(tmp, bundle, public_key, prior={"threshold": 3})
