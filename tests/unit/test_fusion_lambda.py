"""Issue 21: the fusion weight lambda has one definition and one set of bounds, 0 < lambda <= 1, that the compile
config, the study config, the search's evaluator config, the manifest and the runtime all apply alike; a bad value is
refused at config time with its key path, before any training. The bounds follow from the fusion formula, tested
here: above 1 no fused answer changes, at 0 people are ignored."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hgen.compiler.compile import CompileConfig, compile_config
from hgen.compiler.errors import InvalidArgumentError
from hgen.compiler.search.evaluator import EvaluatorConfig
from hgen.compiler.study import StudyConfig, study_config
from hgen.runtime.bundle import BundleFormatError, Manifest
from hgen.runtime.bundle.manifest import parse_manifest
from hgen.runtime.errors import InvalidInputError
from hgen.runtime.hdnn import (FUSION_LAMBDA_DEFAULT, FUSION_LAMBDA_MAX, FUSION_LAMBDA_MIN, FusionParams,
                               check_fusion_lambda, get_kind)

GOOD = (1e-6, 0.05, FUSION_LAMBDA_DEFAULT, 0.5, 1.0)
BAD = (0.0, -0.1, 1.0 + 1e-9, 1.5, 10.0, math.nan, math.inf, -math.inf)


def manifest_bytes(fusion_lambda: float) -> bytes:
    import json

    data = {"schema_version": 1, "model": {"name": "m", "version": "1.0.0"}, "created": "2026-01-01T00:00:00+00:00",
            "target": "x86_64", "engines": [{"name": "litert", "file": "m.tflite", "sha256": "0" * 64, "size": 1}],
            "input": {"shape": [1, 8, 8, 1]}, "output_shape": [1, 3], "labels": ["a", "b", "c"], "tau": 0.5,
            "temperature": 1.0, "lambda": fusion_lambda}
    return json.dumps(data).encode()  # json writes nan / inf as NaN / Infinity, which Python's parser reads back


def accepts(check) -> bool:  # type: ignore[no-untyped-def]
    try:
        check()
    except (InvalidInputError, InvalidArgumentError, BundleFormatError):
        return False
    return True


CHECKS = {
    "runtime": lambda v: FusionParams(1.0, v),
    "check_fusion_lambda": lambda v: check_fusion_lambda(v),
    "search": lambda v: EvaluatorConfig(fusion_lambda=v),
    "compile": lambda v: compile_config(fusion_lambda=v),
    "study": lambda v: study_config(fusion_lambda=v),
    "manifest": lambda v: parse_manifest(manifest_bytes(v)),
}


@pytest.mark.parametrize("value", GOOD + BAD)
def test_every_place_draws_the_same_line(value: float) -> None:
    verdicts = {name: accepts(lambda: check(value)) for name, check in CHECKS.items()}
    expected = value in GOOD
    assert verdicts == dict.fromkeys(CHECKS, expected), verdicts


def test_bounds_are_the_documented_ones() -> None:
    assert (FUSION_LAMBDA_MIN, FUSION_LAMBDA_MAX) == (0.0, 1.0)
    assert FUSION_LAMBDA_MIN < FUSION_LAMBDA_DEFAULT <= FUSION_LAMBDA_MAX


def test_one_default_everywhere() -> None:
    assert CompileConfig().fusion_lambda == FUSION_LAMBDA_DEFAULT
    assert StudyConfig().fusion_lambda == FUSION_LAMBDA_DEFAULT
    assert EvaluatorConfig().fusion_lambda == FUSION_LAMBDA_DEFAULT
    assert FusionParams().fusion_lambda == FUSION_LAMBDA_DEFAULT


def test_compile_config_names_the_key_path_and_the_bounds() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        compile_config(fusion_lambda=1.5)
    assert "fusion_lambda:" in str(caught.value) and "less than or equal to 1" in str(caught.value)
    with pytest.raises(InvalidArgumentError, match="fusion_lambda: Input should be greater than 0"):
        compile_config(fusion_lambda=0.0)


def test_compile_config_file_is_refused_before_any_data_is_loaded(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from hgen.runtime.config import load_config_file

    path = tmp_path / "compile.yaml"
    path.write_text("dataset: no-such-dataset\nfusion_lambda: 2.0\n")  # the data set would fail later, if reached
    with pytest.raises(InvalidArgumentError, match=r"fusion_lambda: Input should be less than or equal to 1"):
        load_config_file(CompileConfig, path, error=InvalidArgumentError)


def test_manifest_names_the_lambda_key() -> None:
    with pytest.raises(BundleFormatError, match=r"lambda: Input should be less than or equal to 1"):
        parse_manifest(manifest_bytes(1.5))
    assert Manifest.model_validate_json(manifest_bytes(1.0)).fusion_lambda == 1.0


def test_runtime_error_names_the_bounds() -> None:
    with pytest.raises(InvalidInputError, match=r"\(0, 1\]"):
        FusionParams(1.0, 1.5)


# --- why (0, 1]: the fusion formula --------------------------------------------------------------------------


def random_case(seed: int, n: int = 4000, classes: int = 5, m: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, (n, classes))
    answers = rng.integers(-1, classes, (n, m))  # -1: no answer
    return logits, answers


def fused_with(logits: np.ndarray, answers: np.ndarray, fusion_lambda: float) -> np.ndarray:
    """The H-CNN fusion formula at any lambda (the runtime refuses lambda > 1, so it is written out here)."""
    cnn = get_kind("cnn")
    probs = cnn.probabilities(logits, FusionParams())
    counts = cnn.fused_scores(logits, answers, FusionParams(1.0, 1.0)) - probs
    return (probs + fusion_lambda * counts).argmax(axis=1)


@pytest.mark.parametrize("seed", range(3))
def test_above_one_no_fused_answer_changes(seed: int) -> None:
    logits, answers = random_case(seed)
    at_one = get_kind("cnn").fuse(logits, answers, FusionParams(1.0, 1.0))
    assert np.array_equal(fused_with(logits, answers, 1.0), at_one)
    for fusion_lambda in (1.5, 3.0, 100.0):
        assert np.array_equal(fused_with(logits, answers, fusion_lambda), at_one)


def test_below_one_lambda_still_matters_and_zero_would_ignore_people() -> None:
    logits, answers = random_case(7)
    model = get_kind("cnn").predict(logits, FusionParams())
    assert np.array_equal(fused_with(logits, answers, 0.0), model)  # lambda 0: asking people changes nothing
    small = get_kind("cnn").fuse(logits, answers, FusionParams(1.0, 0.1))
    large = get_kind("cnn").fuse(logits, answers, FusionParams(1.0, 1.0))
    assert (small != model).any() and (small != large).any()  # within (0, 1] lambda trades model against people


@pytest.mark.parametrize("verb", ["lower", "evaluate"])
def test_cli_refuses_a_bad_lambda_while_parsing(verb: str, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from hgen.compiler.cli.main import main as hgen_main

    argv = {"lower": [verb, str(tmp_path / "missing.keras"), "--out", str(tmp_path / "b")],
            "evaluate": [verb, "--dataset", "no-such-dataset"]}[verb]
    with pytest.raises(SystemExit) as caught:  # argparse's usage error: nothing was loaded or converted
        hgen_main([*argv, "--fusion-lambda", "1.5"])
    assert caught.value.code == 2
    assert "fusion lambda must be in (0, 1], got 1.5" in capsys.readouterr().err
