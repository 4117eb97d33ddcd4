"""What a user's own Keras file needs before hgen compiles it: load errors said in hgen's words, an input that takes
raw 0..255 pixels adapted to the [0, 1] images hgen trains on and the device feeds, and shape and dtype checks that
say what to change.

Why adapt rather than refuse a leading `Rescaling(1/255)`: it is how the Keras guides build image models
(`image_dataset_from_directory` yields raw pixels), and hgen feeds x = raw / 255, so the model saw [0, 1/255]: a
model at 0.93 on its own data scored chance (0.11) on the same images in the compile, silently. Multiplying that
layer's scale by 255 makes the model on x = raw / 255 exactly the user's model on raw pixels.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from hgen.compiler.errors import InvalidArgumentError

log = logging.getLogger(__name__)

PIXEL_RANGE = 255.0  # hgen's images are raw / 255 (`hgen.compiler.data`); the device does the same (input_spec)
RAW_PIXEL_SCALE = 0.01  # a Rescaling on the input at most this (1/255, 1/127.5) expects 0..255 pixels


def load_error(path: Path, exc: Exception) -> InvalidArgumentError:
    """Keras' load failure as a typed error naming what to change: a custom layer class or a Lambda layer (the two a
    field team meets) get a sentence, anything else Keras' own first line."""
    text = str(exc)
    if found := re.search(r"Could not locate (?:class|function) '([^']+)'", text):
        return InvalidArgumentError(
            f"model {path} uses '{found.group(1)}', which is not part of Keras: hgen loads models built from Keras' "
            "own layers only (it imports none of your code, and the device runs only built-in operations); rebuild "
            "the model without it (e.g. Multiply or Rescaling for a scaling layer) and save it again")
    if "Lambda" in text and "safe_mode" in text:
        return InvalidArgumentError(
            f"model {path} holds a Lambda layer (Python code), which hgen does not run from a model file; replace it "
            "with built-in layers (Rescaling(scale, offset) for x * a + b, Activation, Multiply, ...) and save the "
            "model again")
    first = next((line for line in text.splitlines() if line.strip()), type(exc).__name__)
    return InvalidArgumentError(f"cannot load Keras model {path}: {first[:500]}")


def check_input(model: Any, path: str | Path, input_shape: tuple[int, ...]) -> None:
    """The model's input must take the data set's images as float32: each mismatch says what to change."""
    tensor = model.inputs[0]
    shape, want = tuple(tensor.shape[1:]), tuple(int(d) for d in input_shape)
    if any(dim is None for dim in shape) and len(shape) == len(want):
        raise InvalidArgumentError(
            f"model {path} takes input {shape} with free dimensions; hgen compiles it for one fixed size: save it "
            f"with keras.Input(shape={want}), the data set's")
    if shape != want:
        raise InvalidArgumentError(
            f"model {path} takes input {shape}, the data set's images are {want}: give a model built for {want} "
            f"(keras.Input(shape={want})), or load your images at the model's size (a folder or manifest data set "
            f"takes e.g. `?size={shape[0]}x{shape[1]}&channels={shape[-1]}`)" if len(shape) == 3 else
            f"model {path} takes input {shape}, the data set's images are {want}: give a model built for {want}")
    dtype = str(getattr(tensor, "dtype", "float32"))
    if "float" not in dtype:
        raise InvalidArgumentError(
            f"model {path} takes {dtype} input; hgen trains it and the device runs it on float32 images x = raw / "
            f"255: save it with keras.Input(shape={want}) (float32); a Rescaling(1/255) right after the input is "
            "then adapted to that")


def adapt_raw_pixel_input(model: Any, path: str | Path) -> str | None:
    """A Rescaling right on the input that expects 0..255 pixels gets its scale multiplied by 255 (in place), so
    the model takes hgen's [0, 1] images; returns what was done (also logged), None if nothing."""
    layer = _input_rescaling(model)
    if layer is None:
        return None
    scale = np.asarray(layer.scale, dtype=np.float64)
    if scale.size == 0 or not np.all(np.abs(scale) <= RAW_PIXEL_SCALE) or not np.all(scale != 0):
        return None
    adapted = scale * PIXEL_RANGE
    layer.scale = float(adapted) if adapted.ndim == 0 else adapted.tolist()
    note = (f"model {path}: layer '{layer.name}' (Rescaling, scale {_text(scale)}) takes raw 0..255 pixels; hgen "
            f"feeds images / 255, so its scale is now {_text(adapted)} (the same model on raw pixels)")
    log.warning(note)
    return note


def _input_rescaling(model: Any) -> Any | None:
    """The Rescaling layer the model's input feeds directly, if that is the input's only consumer."""
    from hgen.compiler.ops.graph import GraphView

    try:
        view = GraphView.of(model)
    except Exception:  # a graph hgen cannot read is refused later, with its own error
        return None
    first = [name for name in view.order if view.kind(name) == "InputLayer"]
    if len(first) != 1 or len(view.outbound[first[0]]) != 1:
        return None
    consumer = view.outbound[first[0]][0]
    return view.layers[consumer] if view.kind(consumer) == "Rescaling" else None


def _text(values: np.ndarray) -> str:
    return f"{float(values):.6g}" if values.ndim == 0 else "[" + ", ".join(f"{v:.6g}" for v in values.ravel()) + "]"
