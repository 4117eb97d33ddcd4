"""Public builders and CLI helpers carry their types in the signature (not in a comment), so a type checker sees
what they return; the zoo's builders say they return a Keras model without importing Keras to be listed."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from hgen.compiler.cli import compile as compile_cli
from hgen.compiler.cli import evaluate as evaluate_cli
from hgen.compiler.data.images import to_array
from hgen.compiler.models import MODELS


@pytest.mark.parametrize("name", MODELS.names())
def test_every_zoo_builder_declares_a_keras_model(name: str) -> None:
    assert inspect.signature(MODELS.get(name).build).return_annotation == "keras.Model"


def test_cli_config_builders_declare_their_config_types() -> None:
    assert inspect.signature(compile_cli.config_from).return_annotation == "CompileConfig"
    assert inspect.signature(evaluate_cli.config_from).return_annotation == "StudyConfig"


def test_to_array_declares_a_pillow_image() -> None:
    assert inspect.signature(to_array).parameters["image"].annotation == "PILImage"


def test_listing_the_zoo_imports_no_keras() -> None:
    code = ("import sys; from hgen.compiler.models import MODELS; MODELS.names(); "
            "print('keras' in sys.modules or 'tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "False"
