"""The H-CNN study end to end on small real data: train, calibrate, crowd, gate, fuse."""

import json

import numpy as np
import pytest

from hgen.compiler.cli.main import main
from hgen.compiler.study import evaluate_at, prepare_hcnn, study_config, tau_grid


@pytest.fixture(scope="module")
def prepared():
    return prepare_hcnn(study_config(dataset="digits:lowres", epochs=3, m=3, seed=0))


def test_calibration_and_gate_behave(prepared):
    assert prepared.temperature > 0
    assert prepared.ece_after < prepared.ece_before
    results = [evaluate_at(prepared, tau) for tau in tau_grid(0.1, 0.9, 0.2)]
    shares = [r.share_to_people for r in results]
    assert shares == sorted(shares) and shares[-1] > 0
    assert all(r.simulated for r in results)


def test_people_fix_what_the_model_gets_wrong(prepared):
    result = evaluate_at(prepared, 0.7)
    assert result.accuracy_fused > result.accuracy_model
    assert 0 < result.labour < 1
    assert result.latency_ms > prepared.t_infer_ms  # people add time


def test_same_seed_same_crowd(prepared):
    from hgen.compiler.metrics import ask_crowd
    from hgen.hub.crowd import SimulatedCrowd

    logits, labels = prepared.test_logits, prepared.dataset.test.y
    first, second = (ask_crowd(SimulatedCrowd.uniform(3, 0.9, 10, seed=7), logits, labels, 3) for _ in range(2))
    np.testing.assert_array_equal(first.labels, second.labels)
    np.testing.assert_array_equal(first.latency_s, second.latency_s)


def test_d5_from_the_installed_fashion_mnist(fashion_mnist_required):
    from hgen.compiler.data import load_dataset

    data = load_dataset("D5", limit=3000)
    result = prepare_hcnn(study_config(dataset="D5", epochs=2), dataset=data)
    assert result.origin_accuracy > 0.6  # 2 epochs on 3,000 low-res images
    assert evaluate_at(result, 0.6).accuracy_fused >= result.origin_accuracy


def test_evaluate_command_writes_its_results(tmp_path, capsys):
    out = tmp_path / "evaluate.json"
    code = main(["evaluate", "--dataset", "digits:lowres", "--epochs", "2", "--tau", "0.5", "--tau", "0.8",
                 "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert [row["tau"] for row in result["rows"]] == [0.5, 0.8]
    assert result["rows"][1]["share_to_people"] >= result["rows"][0]["share_to_people"]
    assert "SIMULATED" in capsys.readouterr().out
