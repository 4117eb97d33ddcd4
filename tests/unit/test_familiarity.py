"""The familiarity check (issue 18): a frame unlike the training images goes to people whatever the model's
confidence, the hub weights such frames as sent by the gate, and a published retrain widens the ranges by the field
images it learned. The statistics are checked on real images (scikit-learn's digits) under the field conditions."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from hgen.compiler.data import load_dataset
from hgen.edge_agent.agent import Agent
from hgen.edge_agent.config import GateConfig, parse_agent_config
from hgen.edge_agent.gating import Decision, Gate
from hgen.edge_agent.results import Result
from hgen.edge_agent.testing import make_keys, null_bundle
from hgen.hub.retrain.field import importance_weights, learned_familiarity
from hgen.runtime.bundle.manifest import Manifest
from hgen.runtime.errors import InvalidInputError
from hgen.runtime.familiarity import (Familiarity, StatRange, asked_unfamiliar, fit_familiarity, image_stats,
                                     unfamiliar_frames)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="module")
def familiarity(digits) -> Familiarity:
    return fit_familiarity(digits.train.x, 0.001)


def test_training_like_images_are_familiar_and_shifted_fields_are_not(digits, familiarity) -> None:
    clean = digits.test.x
    assert familiarity.unfamiliar(clean).mean() < 0.02
    rng = np.random.default_rng(0)
    noisy = clean + rng.normal(0.0, np.sqrt(0.2), clean.shape)  # the paper's noise field (variance 0.2)
    dark = np.clip(clean, 0.0, 1.0) ** 2.5 * 0.3  # low light: gamma and a weak sensor
    assert familiarity.unfamiliar(noisy).mean() > 0.95 and familiarity.unfamiliar(dark).mean() > 0.9


def test_statistics_are_the_documented_ones() -> None:
    x = np.zeros((1, 3, 3, 2))
    x[0, 1, 1] = (1.0, 0.0)  # one bright pixel in one channel: grey 0.5 at the centre
    stats = image_stats(x)
    assert stats["brightness"][0] == pytest.approx(1 / 18)
    assert stats["contrast"][0] == pytest.approx(np.std(x))
    assert stats["detail"][0] == pytest.approx(2.0)  # |4 x 0.5|, one interior pixel
    with pytest.raises(InvalidInputError):
        image_stats(np.zeros((1, 2, 5, 1)))


def test_widening_learns_the_field_and_keeps_the_training_range(digits, familiarity) -> None:
    rng = np.random.default_rng(1)
    noisy = digits.test.x + rng.normal(0.0, np.sqrt(0.2), digits.test.x.shape)
    learned = familiarity.widened(noisy[:150])
    assert learned.unfamiliar(noisy[150:]).mean() < 0.1 < familiarity.unfamiliar(noisy[150:]).mean()
    assert not learned.unfamiliar(digits.test.x).mean() > familiarity.unfamiliar(digits.test.x).mean()
    assert familiarity.widened(noisy[:0]) is familiarity


def test_ranges_are_validated_and_old_manifests_have_no_check(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        StatRange(low=1.0, high=0.0)
    with pytest.raises(ValidationError):
        Familiarity.model_validate({"brightness": {"low": 0, "high": 1}, "contrast": {"low": 0, "high": 1},
                                    "detail": {"low": 0, "high": 1}, "sharpness": {"low": 0, "high": 1}})
    keys = make_keys(tmp_path / "keys")
    old = Manifest.model_validate_json((null_bundle(tmp_path / "old", keys) / "manifest.json").read_bytes())
    assert old.familiarity is None and not unfamiliar_frames(None, np.zeros((4, 3, 3, 1))).any()


def test_a_confident_unfamiliar_frame_is_escalated_by_its_own_draw_and_takes_no_audit_draw() -> None:
    always = Gate(GateConfig(audit_share=0.5, unfamiliar_share=1.0, seed=1))
    twin = Gate(GateConfig(audit_share=0.5, unfamiliar_share=1.0, seed=1))
    assert always.decide(0.99, 0.5, 0.0, unfamiliar=True) is Decision.ESCALATE
    twin.decide(0.99, 0.5, 0.0, unfamiliar=True)  # both took the unfamiliar draw: the audit draws stay in step
    assert [always.decide(0.99, 0.5, float(i)) for i in range(1, 20)] == [twin.decide(0.99, 0.5, float(i))
                                                                           for i in range(1, 20)]
    drawn = Gate(GateConfig(audit_share=0.5, unfamiliar_share=0.2, seed=3))
    decisions = [drawn.decide(0.99, 0.5, 0.0, unfamiliar=True) for _ in range(500)]
    assert set(decisions) == {Decision.ESCALATE, Decision.CONFIDENT}  # never an audit
    assert 0.14 < decisions.count(Decision.ESCALATE) / 500 < 0.26
    never = Gate(GateConfig(unfamiliar_share=0.0))
    assert never.decide(0.99, 0.5, 0.0, unfamiliar=True) is Decision.CONFIDENT
    assert never.decide(0.1, 0.5, 0.0, unfamiliar=True) is Decision.ESCALATE  # under tau: always asked


def test_the_hub_weights_an_unfamiliar_frame_by_the_devices_share() -> None:
    confidence, tau = np.array([0.3, 0.9, 0.9, 0.3]), np.array([0.5, 0.5, 0.5, 0.5])
    unlike = np.array([False, True, False, True])
    assert importance_weights(confidence, tau, 0.05).tolist() == [1, 20, 20, 1]
    assert importance_weights(confidence, tau, 0.05, unlike).tolist() == [1, 1, 20, 1]  # share 1: each asked
    assert importance_weights(confidence, tau, 0.05, unlike, 0.2).tolist() == [1, 5, 20, 1]


def test_a_measured_device_asks_about_the_drawn_share_of_unfamiliar_frames() -> None:
    flags = np.ones(4000, bool)
    flags[:1000] = False
    asked = asked_unfamiliar(flags, 0.2, seed=0)
    assert not asked[:1000].any() and 0.17 < asked[1000:].mean() < 0.23
    assert (asked == asked_unfamiliar(flags, 0.2, seed=0)).all() and asked_unfamiliar(flags, 1.0).sum() == 3000


def test_a_published_retrain_widens_the_manifest_by_what_it_learned(tmp_path: Path, digits, familiarity) -> None:
    keys = make_keys(tmp_path / "keys")
    manifest = Manifest.model_validate_json(
        (null_bundle(tmp_path / "b", keys, familiarity=familiarity.model_dump()) / "manifest.json").read_bytes())
    field = np.clip(digits.test.x * 0.2, 0, 1)
    learned = learned_familiarity(manifest, field)
    assert learned.familiarity is not None and learned.familiarity.brightness.low < manifest.familiarity.brightness.low
    bare = manifest.model_copy(update={"familiarity": None})
    assert learned_familiarity(bare, field) is bare


def test_the_agent_asks_people_about_frames_unlike_its_training_images(tmp_path: Path) -> None:
    """The null engine (deterministic logits) with tau 0: only the familiarity check can escalate a frame."""
    rng = np.random.default_rng(2)
    smooth = [cv2.GaussianBlur(rng.uniform(60, 200, (28, 28)).astype(np.uint8), (7, 7), 3) for _ in range(200)]
    ranges = fit_familiarity(np.stack(smooth)[..., None] / 255.0, 0.0)
    keys = make_keys(tmp_path / "keys")
    bundle = null_bundle(tmp_path / "bundle", keys, tau=0.0, familiarity=ranges.model_dump())
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a-familiar.png"), smooth[0])
    cv2.imwrite(str(folder / "b-noisy.png"), rng.integers(0, 256, (28, 28), dtype=np.uint8))
    cv2.imwrite(str(folder / "c-dark.png"), (smooth[1] // 8).astype(np.uint8))
    results: list[Result] = []
    config = parse_agent_config({"device_id": "cam-1", "bundle": {"path": str(bundle),
                                                                  "public_key": str(keys.public_pem)},
                                 "source": {"kind": "images", "uri": str(folder)},
                                 "gate": {"unfamiliar_share": 1.0},  # every unfamiliar frame drawn
                                 "outbox": {"path": str(tmp_path / "outbox.sqlite")}})
    with Agent(config, callbacks=[results.append]) as agent:
        assert agent.wait(10)
        snapshot = agent.telemetry.snapshot()
    assert [r.decision for r in results] == ["confident", "escalate", "escalate"]
    assert snapshot["frames_unfamiliar"] == 2


def test_the_compilers_hdnn_metrics_count_unfamiliar_frames_as_asked() -> None:
    from hgen.compiler.metrics.hdnn import ask_crowd, evaluate_hdnn
    from hgen.hub.crowd import SimulatedCrowd

    logits = np.array([[1.5, 0.0], [1.5, 0.0], [0.1, 0.0]])  # two confident (wrong for the second), one unsure
    labels = np.array([0, 1, 0])
    answers = ask_crowd(SimulatedCrowd.uniform(3, 1.0, 2, seed=0), logits, labels, 3, 1.0)
    plain = evaluate_hdnn(logits, labels, answers, tau=0.7, temperature=1.0, fusion_lambda=1.0)
    checked = evaluate_hdnn(logits, labels, answers, tau=0.7, temperature=1.0, fusion_lambda=1.0,
                            unfamiliar=np.array([0, 1, 0], bool))
    assert plain.share_to_people == pytest.approx(1 / 3) and checked.share_to_people == pytest.approx(2 / 3)
    assert checked.accuracy_fused == 1.0 > plain.accuracy_fused and checked.labour > plain.labour
