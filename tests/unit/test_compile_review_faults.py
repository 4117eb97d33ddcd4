"""Faults a review of `hgen-compile` found: unseeded initial weights, a "nobody is asked" note contradicting the
report's own row, a previous run's bundle left beside a new model, and mistakes (a user's model that does not fit,
a missing signing key, too few images for int8, an --out that cannot be written, budgets no plan meets, settings
without a flag) reported only after the whole search, as a traceback, or never. None of these tests trains: the
compile's training step is replaced by one that fails, which also proves the checks come before it."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from hgen.compiler.cli.main import build_parser, main
from hgen.compiler.errors import InvalidArgumentError, OutputFolderError, UnreachableBudgetError

CLASSES = ("cat", "dog", "bird")
QUICK = ["--device", "host", "--accuracy", "0.3", "--latency-ms", "60000", "--episodes", "1", "--evaluations", "1",
         "--base-epochs", "1", "--allow-miss"]


class TrainingReached(Exception):
    """Raised by the stand-in for the compile's training: whatever a test expects must happen before it."""


@pytest.fixture(autouse=True)
def _no_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HGEN_CACHE", str(tmp_path / "cache"))

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise TrainingReached

    monkeypatch.setattr("hgen.compiler.compile._train_base", refuse)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """3 classes x 30 images of 16x16 (66 training images: fewer than int8 calibration needs)."""
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir()
        for i in range(30):
            image = rng.integers(0, 60, (16, 16, 3), dtype=np.uint8)
            image[4 * c:4 * c + 6, 4 * c:4 * c + 6, c] = 220
            Image.fromarray(image).save(root / name / f"{i:03d}.png")
    return f"{root}?size=16"


def _keras_file(path: Path, outputs: int, activation: str | None = None, softmax_layer: bool = False) -> str:
    import keras

    image = keras.Input((16, 16, 3))
    x = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, name="c1")(image))
    out = keras.layers.Dense(outputs, activation=activation, name="out")(x)
    if softmax_layer:
        out = keras.layers.Softmax(name="probabilities")(out)
    keras.Model(image, out).save(path)
    return str(path)


def _weights(model: Any) -> list[np.ndarray]:
    return [np.asarray(w) for w in model.get_weights()]


# 1. one seed, one set of initial weights ----------------------------------------------------------------------------


def test_a_zoo_backbone_built_with_a_seed_starts_from_the_same_weights_whatever_ran_before() -> None:
    import keras

    from hgen.compiler.models import build_model

    first = _weights(build_model("lenet5", (16, 16, 3), 3, seed=7))
    keras.utils.set_random_seed(123)  # another process (or an earlier model) leaves the generators elsewhere
    build_model("lenet5", (16, 16, 3), 3)
    again = _weights(build_model("lenet5", (16, 16, 3), 3, seed=7))
    other = _weights(build_model("lenet5", (16, 16, 3), 3, seed=8))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_the_compile_builds_its_backbone_from_config_seed(folder: str, tmp_path: Path) -> None:
    import keras

    from hgen.compiler.compile import compile_config, prepare_base
    from hgen.compiler.data import load_dataset
    from hgen.compiler.search.evaluator import EvaluatorConfig

    config = compile_config(dataset=folder, seed=3, out=str(tmp_path))
    data = load_dataset(folder, seed=3)
    first = _weights(prepare_base(config, data, EvaluatorConfig()).model)
    keras.utils.set_random_seed(99)
    again = _weights(prepare_base(config, data, EvaluatorConfig()).model)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


# 2. "nobody is sent to people (L 0)" only when the report's row says L 0 --------------------------------------------


def _nobody(test_labour: float) -> str | None:
    from hgen.compiler.compile import _nobody_asked
    from hgen.compiler.metrics.hdnn import TauSweep
    from hgen.compiler.search.objective import Demands, Measured

    # validation split: tau 0.3 asks nobody; asking the least confident image would cost 0.06 > L_c 0.05
    sweep = TauSweep(taus=np.array([0.0, 0.3, 0.5, 1.0]), correct=np.array([9, 9, 10, 12]),
                     labour=np.array([0.0, 0.0, 0.06, 0.2]), samples=14)
    evaluator = SimpleNamespace(sweep=lambda backbone, tau: sweep)
    config = SimpleNamespace(demands=Demands(labour=0.05, latency_ms=60000), accuracy_confidence=0.9)
    chosen = SimpleNamespace(tau=0.3, tau_proposed=0.31)
    measured = Measured(0.6, 130.0, 0.1, 0.05, test_labour)
    return _nobody_asked(config, evaluator, SimpleNamespace(latency_ms=1.0), chosen, measured)  # type: ignore[arg-type]


def test_no_nobody_asked_note_when_the_test_split_sends_people_frames() -> None:
    assert _nobody(0.0137) is None  # the reviewer's run: L 0 on validation, 0.0137 in the report's H-DNN row
    assert "least confident of the 14 validation images" in (_nobody(0.0) or "")


# 3. a re-run into the same --out ------------------------------------------------------------------------------------


def _previous_run(out: Path) -> None:
    for name in ("model.keras", "summary.json", "report.md", "plan.json", "search.jsonl", "search.png",
                 "bundle.hgb", "model.int8.tflite"):
        (out / name).write_text("old")
    (out / "bundle").mkdir()
    (out / "bundle" / "manifest.json").write_text("{}")
    (out / "keys").mkdir()
    (out / "keys" / "signing.key").write_text("key")
    (out / "notes.txt").write_text("mine")


def test_a_rerun_removes_the_previous_runs_artifacts_and_keeps_keys_and_other_files(folder: str,
                                                                                     tmp_path: Path) -> None:
    from hgen.compiler.compile import compile_config, compile_hdnn

    _previous_run(tmp_path)
    with pytest.raises(TrainingReached):
        compile_hdnn(compile_config(dataset=folder, out=str(tmp_path), bundle=False))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["keys", "notes.txt"]
    assert (tmp_path / "keys" / "signing.key").read_text() == "key"


def test_a_compile_refused_by_a_check_leaves_the_previous_run_as_it_was(folder: str, tmp_path: Path) -> None:
    _previous_run(tmp_path)
    code = main(["compile", "--dataset", folder, *QUICK, "--signing-key", str(tmp_path / "missing.pem"),
                 "--out", str(tmp_path)])
    assert code == 2 and (tmp_path / "bundle.hgb").exists() and (tmp_path / "bundle" / "manifest.json").exists()


# 4 and 9. a user's model that does not fit the data set -------------------------------------------------------------


def test_a_user_model_with_another_output_count_is_refused_before_training(folder: str, tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    model = _keras_file(tmp_path / "ten.keras", 10)
    code = main(["compile", "--dataset", folder, *QUICK, "--no-bundle", "--model", model,
                 "--out", str(tmp_path / "out")])
    assert code == 2
    assert "outputs 10 values per image, the data set has 3 classes" in capsys.readouterr().err


@pytest.mark.parametrize("activation, softmax_layer, said", [
    ("softmax", False, "ends in a softmax (layer 'out')"),
    ("sigmoid", False, "ends in a sigmoid (layer 'out')"),
    (None, True, "ends in a softmax (layer 'probabilities')"),
])
def test_a_user_model_that_outputs_probabilities_is_refused(tmp_path: Path, activation: str | None,
                                                           softmax_layer: bool, said: str) -> None:
    from hgen.compiler.models import check_model_file, load_model_file

    path = _keras_file(tmp_path / "p.keras", 3, activation, softmax_layer)
    with pytest.raises(InvalidArgumentError, match="hgen needs logits") as caught:
        check_model_file(load_model_file(path), path, (16, 16, 3), 3)
    assert said in str(caught.value)


def test_a_user_model_with_logits_out_passes_the_check(tmp_path: Path) -> None:
    from hgen.compiler.models import check_model_file, load_model_file

    path = _keras_file(tmp_path / "logits.keras", 3)
    check_model_file(load_model_file(path), path, (16, 16, 3), 3)


# 5. a missing signing key, too few images for int8: before training -------------------------------------------------


def test_a_missing_signing_key_is_reported_before_training(folder: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["compile", "--dataset", folder, *QUICK, "--signing-key", str(tmp_path / "nokey.pem"),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot read key file" in err and "leave --signing-key out" in err
    assert not list((tmp_path / "out").iterdir())


def test_a_public_key_given_as_signing_key_is_refused(tmp_path: Path) -> None:
    from hgen.compiler.bundle.keys import generate_keypair
    from hgen.compiler.preflight import check_signing_key

    generate_keypair(tmp_path / "keys")
    check_signing_key(str(tmp_path / "keys" / "signing.key"), bundle=True)
    check_signing_key(str(tmp_path / "nokey.pem"), bundle=False)  # nothing is signed without a bundle
    with pytest.raises(InvalidArgumentError, match="not a PEM private key"):
        check_signing_key(str(tmp_path / "keys" / "signing.pub"), bundle=True)


def test_int8_with_too_few_training_images_is_refused_before_training(folder: str, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["compile", "--dataset", folder, *QUICK, "--quantize", "int8", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "the training split has 66:" in err and "--quantize float" in err


# 6. an --out that cannot be written ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where, said", [("file", "exists and is not a folder"), ("proc", "No such file")])
def test_an_out_folder_that_cannot_be_written_is_a_typed_error(tmp_path: Path, where: str, said: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "a_file" if where == "file" else Path("/proc/hgen-out")
    if where == "file":
        out.write_text("not a folder")
    assert main(["compile", *QUICK, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and said in err and "Traceback" not in err


def test_prepare_out_refuses_a_file(tmp_path: Path) -> None:
    from hgen.compiler.preflight import prepare_out

    (tmp_path / "f").write_text("")
    with pytest.raises(OutputFolderError, match="is not a folder"):
        prepare_out(tmp_path / "f")
    with pytest.raises(OutputFolderError, match="cannot create or write the output folder .*: Not a directory"):
        prepare_out(tmp_path / "f" / "sub")  # mkdir under a file: the OS reason is named
    assert prepare_out(tmp_path / "new" / "deep").is_dir()


# 7. budgets no plan meets -------------------------------------------------------------------------------------------


def test_a_storage_budget_no_plan_meets_exits_2_naming_the_least_storage(folder: str, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["compile", "--dataset", folder, *QUICK, "--storage-mb", "0.00001", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "the least S a plan reaches is 0.0150 MB" in err
    assert "raise --storage-mb to at least 0.0150" in err and "-0." not in err


def test_the_least_costs_are_those_of_real_plans_found_by_brute_force() -> None:
    from hgen.compiler.models import build_model
    from hgen.compiler.search.budget import PaperBudget
    from hgen.compiler.search.space import IDENTITY, build_space

    model = build_model("lenet5", (16, 16, 3), 3, seed=0)
    space = build_space(model)
    paper = PaperBudget.build(model, space, 1e-5, 3.0)
    assert paper.lower_bounds[0][0] + paper.base[0] < 0  # the old message's "S >= -0.0746 MB"
    names = [layer.name for layer in space.layers]
    least = [np.inf, np.inf]
    for ops in itertools.product(*(costs.items() for costs in paper.costs)):
        used = {n for n, (op, _) in zip(names, ops) if op != IDENTITY}
        if used & set().union(*(cost.absorbed for _, cost in ops)):
            continue  # an absorbed layer must stay identity
        cost = paper.additive_cost({n: op for n, (op, _) in zip(names, ops)})
        least = [min(least[0], cost[0]), min(least[1], cost[1])]
    assert paper.least_storage()[0] == pytest.approx(least[0]) and least[0] > 0
    assert paper.least_energy()[1] == pytest.approx(least[1])
    with pytest.raises(UnreachableBudgetError, match="raise --storage-mb to at least 0.0150"):
        paper.require_reachable()


# 8. --config FILE ---------------------------------------------------------------------------------------------------


def _config(*argv: str) -> Any:
    from hgen.compiler.cli.compile import config_from

    return config_from(build_parser().parse_args(["compile", *argv]))


def test_config_file_sets_what_no_flag_did_and_flags_override_it(tmp_path: Path) -> None:
    path = tmp_path / "compile.yaml"
    path.write_text("model: lenet5\nfinal_epochs: 7\nm: 2\nfamiliarity_quantile: null\nmodel_version: 2.1.0\n"
                    "demands: {accuracy: 0.9, labour: 0.05}\nepisodes: 9\n")
    config = _config("--config", str(path), "--episodes", "4", "--accuracy", "0.7")
    assert (config.final_epochs, config.m, config.familiarity_quantile, config.model_version) == (7, 2, None, "2.1.0")
    assert config.episodes == 4 and config.demands.accuracy == 0.7 and config.demands.labour == 0.05
    assert _config("--final-epochs", "2", "--annotators", "4", "--familiarity-quantile", "none").m == 4
    assert _config("--familiarity-quantile", "none").familiarity_quantile is None
    assert _config().familiarity_quantile == 0.001


def test_the_hubs_compile_config_file_loads_the_same(tmp_path: Path) -> None:
    from hgen.compiler.compile import CompileConfig
    from hgen.runtime.config import load_config_file

    path = tmp_path / "compile.yaml"
    path.write_text("dataset: digits\ndevice: host\nbn_freeze_epochs: 1\ndemands: {storage_mb: 0.5}\n")
    assert _config("--config", str(path)) == load_config_file(CompileConfig, path)


def test_an_unknown_key_in_the_config_file_exits_2_naming_its_key_path(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "compile.yaml"
    path.write_text("demands: {acuracy: 0.9}\nfinal_epoch: 2\n")
    assert main(["compile", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "demands.acuracy" in err and "final_epoch" in err
    assert not (tmp_path / "out").exists()


def test_a_config_file_that_is_not_a_mapping_is_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "compile.yaml"
    path.write_text("- a list\n")
    with pytest.raises(InvalidArgumentError, match="must be a mapping"):
        _config("--config", str(path))
    with pytest.raises(InvalidArgumentError, match="cannot read config"):
        _config("--config", str(tmp_path / "missing.yaml"))


def test_a_flag_left_out_is_not_a_setting() -> None:
    """A flag left out must not override the file with the CLI's default (they used to be argparse defaults)."""
    from hgen.compiler.cli.compile import flag_settings

    args = build_parser().parse_args(["compile", "--labour", "0.05"])
    assert flag_settings(args) == {"demands": {"labour": 0.05}}
    assert json.dumps(flag_settings(build_parser().parse_args(["compile"]))) == "{}"


def test_a_previous_model_given_as_this_compiles_model_is_not_removed(tmp_path: Path) -> None:
    from hgen.compiler.preflight import clear_previous

    _previous_run(tmp_path)
    removed = clear_previous(tmp_path, inputs=(str(tmp_path / "model.keras"), None))
    assert "model.keras" not in removed and (tmp_path / "model.keras").exists()
    assert "bundle.hgb" in removed and not (tmp_path / "bundle").exists()
