"""What a user's own Keras file needs before hgen compiles it: load errors said in hgen's words, an input that takes
raw 0..255 pixels adapted to the [0, 1] images hgen trains on and the device feeds, and shape and dtype checks that
say what to change.

Why adapt rather than refuse a leading `Rescaling(1/255)`: it is how the Keras guides build image models
(`image_dataset_from_directory` yields raw pixels), and hgen feeds x = raw / 255, so the model saw [0, 1/255]: a
model at 0.93 on its own data scored chance (0.11) on the same images in the compile, silently. Multiplying that
layer's scale by 255 makes the model on x = raw / 255 exactly the user's model on raw pixels.

Why settle BatchNorm statistics before anything else (`prepare_user_model`): a quickly trained model keeps moving
statistics far from its data's (measured: moving variance 0.165 where the data's is 0.039), and every candidate's
fine-tune re-estimates them, so the base, its teacher outputs and the least-squares fits of the operators disagreed
with every candidate (measured on digits: base 0.935 -> 0.972 test accuracy, a `gap` candidate 0.15 -> 0.74).
Why refuse a model at chance: a model trained on other pixel values or another class order compiled silently into a
bundle that answers at random, and the distillation only copies its teacher.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hgen.compiler.errors import InvalidArgumentError

if TYPE_CHECKING:
    from hgen.compiler.data import Dataset

log = logging.getLogger(__name__)

PIXEL_RANGE = 255.0  # hgen's images are raw / 255 (`hgen.compiler.data`); the device does the same (input_spec)
RAW_PIXEL_SCALE = 0.01  # a Rescaling on the input at most this (1/255, 1/127.5) expects 0..255 pixels
CHANCE_Z = 3.0  # binomial standard errors above chance a model must score: a model at chance passes ~1 in 700
PROBE_IMAGES = 512  # validation images the diagnosis of a model at chance runs on (raw pixels, class order)


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


def adapt_raw_pixel_input(model: Any, path: str | Path, say: Callable[[str], None] = log.warning) -> str | None:
    """A Rescaling right on the input that expects 0..255 pixels gets its scale multiplied by 255 (in place), so
    the model takes hgen's [0, 1] images; returns what was done (also said: logged), None if nothing."""
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
    say(note)
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


def raw_pixel_input_for(model: Any, path: str | Path, scale: float, offset: float,
                        say: Callable[[str], None] = log.warning) -> str | None:
    """`adapt_raw_pixel_input` when the device feeds x = raw / 255 (`hgen lower`'s default --scale and --offset),
    as the compile's devices always do; a bundle fed other values (--scale 1: raw pixels) keeps the model as it is."""
    if offset != 0.0 or not math.isclose(scale * PIXEL_RANGE, 1.0, rel_tol=1e-4):
        return None
    return adapt_raw_pixel_input(model, path, say)


@dataclass(frozen=True)
class ChanceBar:
    """The accuracy on `n` labelled images that a model not looking at them reaches only by luck: `CHANCE_Z`
    binomial standard errors above the best such model (always the largest class: its share, at least 1/k)."""

    chance: float
    bar: float
    n: int

    @classmethod
    def of(cls, labels: np.ndarray, num_classes: int) -> ChanceBar:
        n = len(labels)
        chance = max(1.0 / num_classes, float(np.bincount(labels, minlength=num_classes).max()) / max(n, 1))
        return cls(chance, chance + CHANCE_Z * math.sqrt(chance * (1.0 - chance) / max(n, 1)), n)

    @property
    def decisive(self) -> bool:
        """Enough images to tell: a model halfway from chance to perfect clears the bar (not with a handful)."""
        return self.bar < (1.0 + self.chance) / 2.0


def prepare_user_model(model: Any, path: str | Path, data: Dataset, seed: int, log: Callable[[str], None]) -> None:
    """A user's model as the compile's base: BatchNorm statistics re-estimated on the training images (in place,
    said with the validation accuracy before and after), then refused when it is no better than chance there."""
    from hgen.compiler.train import batch_norms, predict_logits, settle_batch_norm

    logits = predict_logits(model, data.val.x)
    if settle_batch_norm(model, data.train.x, seed=seed):
        before, logits = _accuracy(logits, data.val.y), predict_logits(model, data.val.x)
        log(f"re-estimated the BatchNorm statistics of {path} on the training images ({len(batch_norms(model))} "
            f"layers), as every candidate's fine-tune does: validation accuracy {before:.4f} -> "
            f"{_accuracy(logits, data.val.y):.4f}")
    require_above_chance(model, path, logits, data, log)


def require_above_chance(model: Any, path: str | Path, logits: np.ndarray, data: Dataset,
                         log: Callable[[str], None]) -> None:
    """An InvalidArgumentError naming the likely causes when the model's validation accuracy is not clearly above
    chance (`ChanceBar`); only a warning when the validation split is too small to tell."""
    y = np.asarray(data.val.y)
    accuracy, bar = _accuracy(logits, y), ChanceBar.of(y, data.num_classes)
    if accuracy >= bar.bar:
        return
    text = (f"model {path} scores {accuracy:.3f} on the data set's {bar.n} validation images, no better than "
            f"chance ({bar.chance:.3f}, always answering its largest class; it needs at least {bar.bar:.3f}). "
            f"Likely causes: {'; '.join(_likely_causes(model, logits, data))}")
    if not bar.decisive:
        log(f"warning: {text} (only {bar.n} validation images: compiling it anyway)")
        return
    raise InvalidArgumentError(text)


def _likely_causes(model: Any, logits: np.ndarray, data: Dataset) -> list[str]:
    """Pixel scale and class order, each with what the model shows of it: its accuracy on raw 0..255 pixels, and
    the class its outputs mostly answer for."""
    from hgen.compiler.train import predict_logits

    head = np.arange(min(PROBE_IMAGES, len(data.val)))
    y = np.asarray(data.val.y)[head]
    raw = _accuracy(predict_logits(model, np.asarray(data.val.x[head], np.float32) * PIXEL_RANGE), y)
    scale = ("pixel scale: hgen feeds images as raw / 255, in [0, 1]; a model trained on 0..255 pixels needs "
             "keras.layers.Rescaling(1/255) right after its input (hgen adapts it), or training on images / 255")
    raw_fits = raw >= ChanceBar.of(y, data.num_classes).bar
    if raw_fits:
        scale = f"{scale} (on raw 0..255 pixels this model scores {raw:.3f})"
    labels = ", ".join(data.labels[:20]) + (", ..." if len(data.labels) > 20 else "")
    order = f"class order: output i must be the data set's class i, in its order: {labels}"
    if moved := _other_order(logits, np.asarray(data.val.y), data):
        order = f"{order} (this model's outputs answer for other classes: {moved})"
    return [order, scale] if moved and not raw_fits else [scale, order]  # the one the model shows first


def _other_order(logits: np.ndarray, y: np.ndarray, data: Dataset) -> str:
    """'output 0 is mostly <label>, ...' when mapping each output to the class it is mostly right for clears the
    chance bar; empty otherwise."""
    k = data.num_classes
    counts = np.zeros((k, k), np.int64)
    np.add.at(counts, (logits.argmax(1), y), 1)
    if counts.max(axis=1).sum() / max(len(y), 1) < ChanceBar.of(y, k).bar:
        return ""
    moved = [f"output {i} is mostly '{data.labels[j]}'" for i, j in enumerate(counts.argmax(axis=1))
             if counts[i].sum() and j != i]
    return ", ".join(moved[:6]) + (", ..." if len(moved) > 6 else "")


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(logits).argmax(axis=1) == np.asarray(labels))) if len(labels) else 0.0
