"""`hgen compile --weights imagenet --model-option KEY=VALUE`: parsed, and checked before any data is loaded."""

from __future__ import annotations

import argparse

import pytest

from hgen.compiler.cli.compile import add_arguments, config_from, model_options
from hgen.compiler.compile import compile_config
from hgen.compiler.errors import InvalidArgumentError


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_model_options_and_weights_reach_the_compile_config():
    args = parse("--model", "mobilenet_v2", "--weights", "imagenet", "--model-option", "alpha=0.35",
                 "--model-option", "download=false", "--head-epochs", "2", "--base-epochs", "4")
    config = config_from(args)
    assert config.model_options == {"alpha": 0.35, "download": False, "weights": "imagenet"}
    assert (config.head_epochs, config.base_epochs) == (2, 4)
    assert model_options(["blocks=3", "name=x"], None) == {"blocks": 3, "name": "x"}


def test_bad_options_fail_before_any_work():
    with pytest.raises(InvalidArgumentError, match="KEY=VALUE"):
        model_options(["alpha"], None)
    with pytest.raises(InvalidArgumentError, match="alpah: unknown key"):
        compile_config(model="mobilenet_v2", model_options={"alpah": 0.35})
    with pytest.raises(InvalidArgumentError, match="weights: unknown key"):
        compile_config(model="lenet5", model_options={"weights": "imagenet"})
    with pytest.raises(InvalidArgumentError, match="not to a model file"):
        compile_config(model="mine.keras", model_options={"alpha": 0.5})
