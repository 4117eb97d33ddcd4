"""The whole product in one flow with tiny budgets: compile -> hub + simulated crowd -> agent on a video ->
retrain -> published bundle -> hot swap, the same code `make demo` runs (the camera is a generated video file)."""

import json

import pytest

from hgen.compiler.demo import DemoError, demo_config, run_demo
from hgen.compiler.demo.summary import format_summary

# Two search episodes cannot be expected to meet demands: the flow is tested, the demands check in unit tests.
TINY = dict(dataset="digits:lowres", loop_stream=True, enforce_demands=False, episodes=2, retrain_threshold=40,
            retrain_min_holdout=5, fps=20,
            frames_after_swap=40, tau_override=0.9, engines=("litert",), base_epochs=3, final_epochs=1,
            finetune_samples=400, demands={"accuracy": 0.5, "latency_ms": 100000, "storage_mb": 10,
                                           "energy_mj": 10, "labour": 0.1})


def test_demo_flow_retrains_and_hot_swaps_without_dropping_frames(tmp_path, mosquitto_required):
    """What `make demo` does: `auto` with mosquitto installed is MQTT through a private broker (the fallback to gRPC
    without one is tested in tests/unit/test_demo_transport_choice.py; the other demo tests here run on gRPC)."""
    summary = run_demo(demo_config(**TINY, out=str(tmp_path), transport="auto"), log=lambda message: None)
    assert summary["transport"] == "mqtt" and summary["annotators"] == "simulated"
    first, second = summary["versions"]
    assert first != second and summary["retrain"]["status"] == "published"
    assert summary["dropped_frames"] == 0
    assert summary["stream"]["before"]["frames"] > 0 and summary["stream"]["after"]["frames"] > 0
    pool = summary["evaluation_pool"]
    assert pool["images"] > 0 and pool["before"]["version"] == first and pool["after"]["version"] == second
    assert all(0 <= pool[row][key] <= 1 for row in ("before", "after") for key in ("model_only", "fused"))
    assert summary["share_to_people"] > 0 and summary["labour"] > 0
    assert summary["demands"]["accuracy"] == 0.5 and summary["demands_met"]["labour on the stream"]
    assert summary["field_accuracy"] is None  # no field: the compile's test split is where the device runs
    # the device enforces the labour demand (Eq. 13) on what people really spent, within one batch of slack
    assert summary["labour"] <= summary["labour_budget"] * 1.1 and summary["labour_device"] <= summary["labour_budget"] * 1.1
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    for key in ("accuracy_model_only_before", "accuracy_fused_before", "accuracy_model_only_after",
                "accuracy_fused_after", "evaluation_pool", "demands", "demands_met", "share_to_people", "labour",
                "labour_budget", "fps", "swap_pause_ms", "dropped_frames", "dataset", "transport", "wall_seconds"):
        assert key in on_disk
    assert (tmp_path / "compile" / "report.md").exists() and (tmp_path / "results.jsonl").stat().st_size > 0


def test_deployed_into_a_harder_field_the_retrain_refits_the_gate_there(tmp_path):
    """Compiled on clean digits, streamed and evaluated on noisy ones (`make demo`): the first retrain
    re-fits temperature and tau on the field's held-out labels for the labour demand."""
    config = demo_config(**TINY | {"dataset": "digits", "field": "noise", "audit_share": 0.2, "tau_override": None},
                         out=str(tmp_path), transport="grpc")
    summary = run_demo(config, log=lambda message: None)
    assert summary["field"] == "noise" and "field with noise" in format_summary(summary)
    assert summary["retrain"]["status"] == "published"
    pool = summary["evaluation_pool"]
    assert pool["after"]["tau"] != pool["before"]["tau"]  # the gate was re-chosen on the field
    refit = summary["retrain"]["field_refit"]  # ... and says how much of the model's field errors it catches
    assert abs(refit["tau"] - pool["after"]["tau"]) < 1e-6 and 0.0 <= refit["caught_errors"] <= 1.0
    assert 0.0 <= refit["confident_errors"] <= 1.0
    style = summary["retrain"]["field_style"]  # originals were rendered with the noise people's field images carry
    assert style["rendered"] > 0 and style["added_noise"] > 0.05 and style["field_noise"] > style["original_noise"]
    # noisy digits are unlike the clean training images until the published retrain has learned them
    assert pool["before"]["unfamiliar_share"] > 0.9 > pool["after"]["unfamiliar_share"]
    assert "unlike training" in format_summary(summary) and "of the model's errors" in format_summary(summary)
    assert summary["field_accuracy"]["fused_after"] == pool["after"]["fused"]  # the demand judged on the field too
    assert "accuracy demand on the field" in format_summary(summary)


def test_a_stream_too_short_for_a_retrain_fails_clearly(tmp_path):
    """Only the stream stage matters here: the smallest compile (one episode, one epoch) is enough."""
    config = demo_config(**TINY | {"retrain_threshold": 5000, "loop_stream": False, "fps": 200, "episodes": 1,
                                   "base_epochs": 1, "finetune_samples": 100},
                         out=str(tmp_path), transport="grpc")
    with pytest.raises(DemoError, match="stream ended before a retrain was published"):
        run_demo(config, log=lambda message: None)
