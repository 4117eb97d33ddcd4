"""hgen-compile end to end on small real data: search, artifacts written and loaded back, bad demands."""

import json

import numpy as np
import pytest

from hgen.compiler.cli.main import main
from hgen.compiler.compile import compile_config, compile_hdnn

DEMANDS = {"accuracy": 0.7, "latency_ms": 60000, "storage_mb": 2, "energy_mj": 3, "labour": 0.05}
QUICK = dict(dataset="digits:lowres", device="rpi4", base_epochs=4, final_epochs=1, finetune_samples=500,
             budget_minutes=3)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("compile")
    config = compile_config(**QUICK, episodes=3, out=str(out), stop_at_feasible=False, demands=DEMANDS)
    return compile_hdnn(config)


def test_search_log_plan_and_report(compiled):
    out = compiled.out
    records = [json.loads(line) for line in (out / "search.jsonl").read_text().splitlines()]
    assert len(records) == len(compiled.search.candidates) > 0
    assert {"plan", "tau", "reward", "measured", "violations"} <= set(records[0])
    plan = json.loads((out / "plan.json").read_text())
    assert 0.0 <= plan["tau"] <= 1.0 and set(plan["plan"]) == {"conv1", "conv2", "fc1", "fc2", "logits"}
    report = (out / "report.md").read_text()
    assert "SIMULATED" in report and "ESTIMATED" in report  # rpi4 latency is an estimate and says so
    assert (out / "search.png").stat().st_size > 10_000
    summary = compiled.summary
    assert summary["final"]["storage_mb"] > 0 and summary["origin"]["labour"] == 0.0
    assert 0.0 <= summary["tau_search"] <= 1.0 and plan["tau"] == summary["tau"]  # re-chosen for the final model
    assert "then for the final fine-tuned model" in report


def test_model_and_bundle_round_trip(compiled):
    import keras

    from hgen.compiler.data import load_dataset
    from hgen.runtime.bundle import load_bundle

    out = compiled.out
    model = keras.models.load_model(out / "model.keras", compile=False)
    x = load_dataset("digits:lowres", seed=0).test.x[:200]
    keras_top1 = model.predict(x, verbose=0).argmax(axis=1)
    bundle = compiled.summary["bundle"]
    with load_bundle(bundle["archive"], trusted_public_key=bundle["public_key"], expected_target="rpi4") as loaded:
        assert loaded.manifest.tau == pytest.approx(compiled.summary["tau"])
        assert loaded.manifest.confidence["m"] == 3.0
        device_top1 = loaded.engine.run(x).argmax(axis=1)
        familiarity = loaded.manifest.familiarity  # the training images' ranges: the device asks about others
    assert np.mean(device_top1 == keras_top1) >= 0.99
    assert familiarity is not None and familiarity.unfamiliar(x).mean() < 0.05
    noisy = x + np.random.default_rng(0).normal(0.0, np.sqrt(0.2), x.shape)
    assert familiarity.unfamiliar(noisy).mean() > 0.9


@pytest.fixture(scope="module")
def base_setup():
    from hgen.compiler.data import load_dataset
    from hgen.compiler.models import build_model
    from hgen.compiler.search.space import build_space
    from hgen.compiler.train import TrainConfig, train_classifier

    data = load_dataset("digits:lowres", seed=0)
    base = build_model("lenet5", data.input_shape, data.num_classes)
    train_classifier(base, data.train, config=TrainConfig(epochs=4))
    return data, base, build_space(base)


@pytest.mark.parametrize("strategy", ["hgen", "adadeep", "random", "optuna"])
def test_every_strategy_runs_on_its_own_evaluator_within_budget(strategy, base_setup):
    from hgen.compiler.search import run_search
    from hgen.compiler.search.context import Budget
    from hgen.compiler.search.devices import get_device
    from hgen.compiler.search.evaluator import CandidateEvaluator, EvaluatorConfig
    from hgen.compiler.search.objective import Demands

    data, base, space = base_setup
    evaluator = CandidateEvaluator(base, data, space, get_device("phone"), EvaluatorConfig(finetune_samples=300))
    result = run_search(evaluator, Demands(**DEMANDS), get_device("phone"), strategy=strategy,
                        budget=Budget(episodes=50, evaluations=2, stop_at_feasible=False))
    assert result.strategy == strategy and result.candidates
    assert result.evaluations == 2 and "evaluation budget of 2" in result.stop_reason
    assert all(c.measured is not None for c in result.candidates)  # layer-by-layer masks / repair: no invalid plan
    if strategy == "adadeep":
        assert all(c.tau == 0.0 and c.measured.labour == 0.0 for c in result.candidates)


def test_infeasible_demands_end_with_a_report_not_a_hang(tmp_path, capsys):
    code = main(["compile", "--dataset", "digits:lowres", "--episodes", "1", "--base-epochs", "1", "--no-bundle",
                 "--out", str(tmp_path), "--accuracy", "0.98", "--latency-ms", "60000"])
    assert code == 4  # the compile finished and wrote everything, but it does not claim success
    captured = capsys.readouterr()
    assert "H-DNN  : A" in captured.out and "violations: accuracy" in captured.out
    assert "misses the demands on the test split" in captured.err and "--allow-miss" in captured.err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert not summary["feasible_in_search"] and "episode budget of 1 used" in summary["stop_reason"]
    assert not summary["met_on_test"] and any("accuracy" in v for v in summary["violations"])
    assert "Wilson lower bound" in summary["accuracy_bound"]
    report = (tmp_path / "report.md").read_text()
    assert "NO candidate met every demand on the search split" in report
    assert "Demands NOT MET on the test split: accuracy" in report


def test_knowledge_base_samples_join_every_fine_tune(base_setup):
    from hgen.compiler.data import Split
    from hgen.compiler.search.devices import get_device
    from hgen.compiler.search.evaluator import CandidateEvaluator, EvaluatorConfig

    data, base, space = base_setup
    knowledge = Split(data.test.x[:40], data.test.y[:40])
    evaluator = CandidateEvaluator(base, data, space, get_device("host"), EvaluatorConfig(finetune_samples=300),
                                   knowledge=knowledge)
    assert len(evaluator.finetune) == 340
    assert np.array_equal(evaluator.finetune.x[-40:], knowledge.x)


def test_a_compile_that_sends_nobody_to_people_says_why(tmp_path, capsys):
    """T_d left at its 30 ms default cannot pay for seconds of people's time: the compile used to end at L 0 with
    no word of why."""
    code = main(["compile", "--dataset", "digits", "--limit", "120", "--episodes", "1", "--evaluations", "1",
                 "--base-epochs", "1", "--no-bundle", "--allow-miss", "--out", str(tmp_path)])
    assert code == 0
    said = "nobody is sent to people (L 0): people's time makes the mean latency of asking about even one of them"
    assert said in capsys.readouterr().err  # the progress log
    assert "over T_d 30.0 ms (raise --latency-ms)" in json.loads((tmp_path / "summary.json").read_text())[
        "nobody_asked"]
    assert "Nobody is sent to people (L 0): people's time" in (tmp_path / "report.md").read_text()
