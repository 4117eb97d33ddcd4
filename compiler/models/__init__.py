"""Model zoo: Keras model builders registered by name (`lenet5`, ...), plus loading a user's model file.

Builders return logits (no softmax): calibration (temperature scaling) and fusion need the raw scores.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from hgen.compiler.errors import CompilerError, UnknownNameError
from hgen.runtime.registry import Registry, discover

if TYPE_CHECKING:
    import keras

ModelBuilder = Callable[[tuple[int, int, int], int], "keras.Model"]
MODELS: Registry[ModelBuilder] = Registry("model", UnknownNameError)


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """Build an untrained model from the zoo."""
    discover(__name__)
    return MODELS.get(name)(input_shape, num_classes)


def build_classifier(name: str, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """`build_model` for the H-CNN paths (study, search): a detector's name is refused like an unknown one."""
    if name not in model_names("cnn"):
        raise UnknownNameError(f"unknown model '{name}'; valid choices: {', '.join(model_names('cnn'))}")
    return build_model(name, input_shape, num_classes)


def model_kind(name: str) -> str:
    """The H-DNN kind a zoo model's output has (`cnn` unless its builder says `hdnn_kind = ...`)."""
    discover(__name__)
    return str(getattr(MODELS.get(name), "hdnn_kind", "cnn"))


def model_names(kind: str | None = None) -> list[str]:
    """Zoo names, optionally only those of one H-DNN kind (the compile search takes classifiers)."""
    discover(__name__)
    return [name for name in MODELS.names() if kind is None or model_kind(name) == kind]


def load_model_file(path: str | Path) -> keras.Model:
    """Load a user's Keras model (`.keras` or `.h5`); the last layer must output logits."""
    import keras

    import hgen.compiler.ops.layers  # noqa: F401  registers the masked layers a compressed model may hold

    path = Path(path)
    if not path.is_file():
        raise CompilerError(f"model file {path} does not exist")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a bad file
        raise CompilerError(f"cannot load Keras model {path}: {exc}") from None
