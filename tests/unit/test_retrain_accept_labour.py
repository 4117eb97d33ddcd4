"""Without a known labour demand, a new version may not win the fused check by asking people more: every frame sent
to people scores as the people's accuracy, so a retrained model at chance with temperature 403 (every frame under
tau) beat the deployed one with people. The labour people give today is all a field team agreed to."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hgen.hub.retrain.accept import Acceptance, Gate, check_fused, check_labour, compare_labour, expected_labour
from hgen.hub.retrain.field import FieldSet
from hgen.hub.testing.models import DeployedModel, deploy_lenet, retrain_section
from hgen.runtime.labour import DifficultyEstimator

# Eq. 13's labour of one frame people are asked about, the hub's difficulty estimate, 3 people
ASKED = float(DifficultyEstimator().difficulty(np.array([[0.5, 0.5]]))[0]) * 3 / 12


def identity_model() -> Any:
    """A real Keras model whose logits are its inputs: crafted outputs."""
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, use_bias=False)])
    model.layers[0].set_weights([np.eye(2, dtype=np.float32)])
    return model


def field_of(logits: list[list[float]], weights: list[int]) -> FieldSet:
    return FieldSet(np.array(logits, np.float32), np.zeros(len(logits), np.int64), np.array(weights, np.int64))


def passed() -> Acceptance:
    return Acceptance(True, 0.5, 0.5, 40, 0.8, 0.8, 500)


def test_labour_is_counted_at_each_version_s_gate_and_weighted_like_the_field() -> None:
    model = identity_model()
    field = field_of([[4.0, 0.0], [4.0, 0.0], [0.2, 0.0], [3.0, 0.0]], [1, 20, 1, 20])  # one unsure frame of 42
    labour = compare_labour("cnn", Gate(model, 1.0, 0.8), Gate(model, 403.0, 0.8), field, noise_se=0.0)
    assert labour.current_share == pytest.approx(1 / 42) and labour.new_share == pytest.approx(1.0)
    assert labour.current == pytest.approx(ASKED / 42) and labour.new == pytest.approx(ASKED)
    same = compare_labour("cnn", Gate(model, 1.0, 0.8), Gate(model, 1.0, 0.8), field, noise_se=1.0)
    assert same.current == same.new and same.margin == 0.0  # the same gate frame by frame: no noise


def test_a_version_that_asks_people_about_every_frame_is_refused_though_it_wins_the_fused_check() -> None:
    model = identity_model()
    field = field_of([[4.0, 0.0]] * 30 + [[0.0, 4.0]] * 70, [1] * 100)  # sure of everything, right on 30 %
    labour = compare_labour("cnn", Gate(model, 1.0, 0.8), Gate(model, 403.0, 0.8), field, noise_se=1.0)
    fused = check_fused(passed(), 0.30, 0.95, tolerance=0.005)
    assert fused.accepted  # the fault: people's accuracy for every frame beats the deployed model
    verdict = check_labour(fused, labour, tolerance=0.005)
    assert not verdict.accepted
    assert "may ask people no more than the deployed one" in verdict.reason
    assert "share of frames sent to people 0.0% -> 100.0%" in verdict.reason and "labour_demand" in verdict.reason
    assert (verdict.current_labour, verdict.new_labour) == (0.0, pytest.approx(ASKED))


def test_as_much_labour_or_less_passes_and_more_within_the_tolerance_or_noise_too() -> None:
    model = identity_model()
    field = field_of([[4.0, 0.0]] * 90 + [[0.2, 0.0]] * 10, [1] * 100)  # 10 % unsure
    asks_less = compare_labour("cnn", Gate(model, 1.0, 0.8), Gate(model, 1.0, 0.5), field, noise_se=1.0)
    assert asks_less.new == 0.0 and check_labour(passed(), asks_less, tolerance=0.0).accepted
    a_little_more = compare_labour("cnn", Gate(model, 1.0, 0.5), Gate(model, 1.0, 0.8), field, noise_se=0.0)
    assert a_little_more.new == pytest.approx(0.1 * ASKED)  # 10 % more frames: refused unless allowed
    assert not check_labour(passed(), a_little_more, tolerance=0.0).accepted
    assert check_labour(passed(), a_little_more, tolerance=0.1 * ASKED + 1e-9).accepted
    few = field_of([[4.0, 0.0]] * 18 + [[0.2, 0.0]] * 2, [1] * 20)  # the same 10 % on 20 frames: within noise
    noisy = compare_labour("cnn", Gate(model, 1.0, 0.5), Gate(model, 1.0, 0.8), few, noise_se=2.0)
    assert noisy.margin > noisy.new and check_labour(passed(), noisy, tolerance=0.0).accepted
    earlier = replace(passed(), accepted=False, reason="held-out human accuracy fell")
    refused = check_labour(earlier, a_little_more, tolerance=0.0)
    assert refused.reason.startswith("held-out human accuracy fell; without a labour demand")


# --- through the pipeline's acceptance step ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> DeployedModel:
    return deploy_lenet(tmp_path_factory.mktemp("deployed"), epochs=3)


def accept_hotter(deployed: DeployedModel, tmp_path: Path, temperature: float, *, refit: bool = False,
                  seen: dict[str, Any] | None = None, **model_overrides: Any) -> Acceptance:
    """The pipeline's acceptance step for the deployed weights at `temperature` (403: every frame under tau),
    judged on held-out field labels (noisy test images) as the review's run was; `refit`: after the field re-fit
    of temperature and tau, as a retrain with enough held-out field labels runs."""
    from hgen.compiler.models import load_model_file
    from hgen.hub.config import parse_hub_config
    from hgen.hub.kb.store import KnowledgeBase
    from hgen.hub.retrain import HubPublisher, RetrainPipeline, RetrainStore
    from hgen.hub.retrain.data import HumanSet
    from hgen.hub.retrain.enhance import Enhanced
    from hgen.hub.retrain.kinds import get_retrain_kind
    from hgen.hub.retrain.judge import Prepared

    section = retrain_section(deployed, tmp_path / "store", devices={"cam-1": "x86_64"}, threshold=10,
                              min_holdout=10, tolerance=0.005)
    section["models"][0].update(model_overrides)
    kb = KnowledgeBase.open(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        pipeline = RetrainPipeline(parse_hub_config({"retrain": section}).retrain, RetrainStore(kb), HubPublisher(kb))
        config, kind = pipeline.model_config(deployed.name), get_retrain_kind("cnn")
        current = pipeline.current(deployed.name)
        data = deployed.data
        rng = np.random.default_rng(0)
        noisy = np.clip(data.test.x[:150] + rng.normal(0.0, 0.2 ** 0.5, data.test.x[:150].shape), 0, 1)
        noisy = noisy.astype(np.float32)
        holdout = HumanSet(noisy, data.test.y[:150], tuple(f"s{i}" for i in range(150)))
        prepared = Prepared(current, pipeline.verified(Path(current.bundle_dir)), data,
                            HumanSet(noisy[:0], data.test.y[:0], ()), kind)
        hotter = Enhanced(load_model_file(deployed.keras_path), temperature, 0.0, 0)
        field = FieldSet(noisy, data.test.y[:150], np.ones(150, np.int64))
        if refit:
            hotter = pipeline.judge.refit(config, prepared, hotter, field)
            if seen is not None:
                deployed_gate = Gate(load_model_file(deployed.keras_path), current.temperature, prepared.manifest.tau)
                seen["labour"] = (expected_labour("cnn", deployed_gate, field),
                                  expected_labour("cnn", Gate(hotter.model, hotter.temperature, hotter.tau), field))
        return pipeline.judge.accept(config, prepared, hotter, holdout, field)
    finally:
        kb.close()


def test_the_pipeline_refuses_the_same_weights_asking_people_about_every_frame(deployed: DeployedModel,
                                                                               tmp_path: Path) -> None:
    verdict = accept_hotter(deployed, tmp_path, 403.0)
    assert verdict.new_fused_test == pytest.approx(0.95)  # every frame to people: it scores as they do...
    assert not verdict.accepted and "may ask people no more than the deployed one" in verdict.reason
    assert verdict.new_labour > verdict.current_labour  # ...by asking them more
    assert accept_hotter(deployed, tmp_path / "same", deployed.temperature).accepted  # its own gate passes


def test_with_a_known_labour_demand_and_no_refit_a_version_may_ask_up_to_the_demand(deployed: DeployedModel,
                                                                                     tmp_path: Path) -> None:
    """With a demand but too few held-out field labels to re-choose tau, the new version ran at its own gate and won
    the fused check by asking people about every frame, whatever the demand; now it may ask up to the demand."""
    verdict = accept_hotter(deployed, tmp_path, 403.0, labour_demand=0.05)
    assert not verdict.accepted and "more than the labour demand 0.0500 allows" in verdict.reason
    assert verdict.new_labour > max(0.05, verdict.current_labour)
    generous = accept_hotter(deployed, tmp_path / "generous", 403.0, labour_demand=1.0)
    assert generous.accepted, generous.reason  # every frame to people, within what they agreed to


def test_without_a_demand_the_field_refit_rechooses_tau_within_the_deployed_labour(deployed: DeployedModel,
                                                                                   tmp_path: Path) -> None:
    """Without a demand the re-fit kept the deployed tau under a re-fitted temperature (on a noisy field the share
    asked rose 59 % -> 77 %, and was then refused); the deployed version's labour on the field is the demand now."""
    verdict = accept_hotter(deployed, tmp_path, 403.0, refit=True)
    assert verdict.current_labour is None  # judged at equal labour, not by the no-re-fit labour check
    assert verdict.accepted, verdict.reason  # the same weights at the same labour: no worse


def test_the_kept_labour_is_spent_whole_not_shrunk_by_the_demands_margin(deployed: DeployedModel,
                                                                         tmp_path: Path) -> None:
    """The margin (0.9) and upper bound meant for an agreed demand, applied to the deployed version's own labour, chose
    a tau asking ~14 % less on every retrain (fused 0.920 -> 0.881 for the same weights, accepted, compounding)."""
    seen: dict[str, Any] = {}
    verdict = accept_hotter(deployed, tmp_path, deployed.temperature, refit=True, seen=seen)
    before, after = seen["labour"]
    assert after <= before + 1e-9 and after >= 0.95 * before, (before, after)
    assert verdict.accepted, verdict.reason
