"""What a user's own Keras file needs before hgen compiles it: load errors said in hgen's words, an input that takes
raw 0..255 pixels adapted to the [0, 1] images hgen trains on and the device feeds, and shape and dtype checks that
say what to change.

Why adapt rather than refuse a leading `Rescaling(1/255)`: it is how the Keras guides build image models
(`image_dataset_from_directory` yields raw pixels), and hgen feeds x = raw / 255, so the model saw [0, 1/255]: a
model at 0.93 on its own data scored chance (0.11) on the same images in the compile, silently. Multiplying that
layer's scale by 255 makes the model on x = raw / 255 exactly the user's model on raw pixels. The same holds for
a leading `Normalization` adapted on raw pixels (`layers.Normalization().adapt(raw_images)`, also in the guides:
digits: 0.10 on hgen's images, 0.91 on raw ones): its mean / 255 and variance / 255^2. A Rescaling that centres raw
pixels (`Rescaling(1, offset=-128)`) and either layer after a Flatten are the same case.

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
RAW_PIXEL_MEAN = 1.5  # a Normalization on the input with a mean above this was adapted on 0..255 pixels; a
# Rescaling whose zero point (-offset / scale) lies above this centres 0..255 pixels (Rescaling(1, offset=-128))
LAYOUT_ONLY = frozenset({"Flatten", "Reshape", "Permute"})  # move pixels, change none: the next layer sees them
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
    """The layer right on the input that expects 0..255 pixels adapted in place to hgen's [0, 1] images: a
    Rescaling's scale times 255, a Normalization's mean / 255 and variance / 255^2; returns what was done (also
    said: logged), None if nothing. Only the first layer computing on the pixels (`_input_consumer`): after an
    adapted Rescaling the next layers see what they saw on raw pixels already."""
    layer = _input_consumer(model)
    adapt = _ADAPTERS.get(type(layer).__name__) if layer is not None else None
    note = adapt(layer, path) if adapt is not None else None
    if note is not None:
        say(note)
    return note


def takes_raw_pixels(model: Any) -> str | None:
    """The name of the layer right on the input that expects 0..255 pixels (what `adapt_raw_pixel_input` adapts),
    or None: how the hub tells a user's own file from the compile's adapted model.keras."""
    layer = _input_consumer(model)
    test = _RAW_TESTS.get(type(layer).__name__) if layer is not None else None
    return layer.name if test is not None and test(layer) else None


def _raw_rescaling(layer: Any) -> bool:
    """A scale of at most `RAW_PIXEL_SCALE` (1/255, 1/127.5), or a zero point inside 0..255 pixels above what
    [0, 1] images can have (Rescaling(1, offset=-128), which centres raw pixels)."""
    scale = np.asarray(layer.scale, dtype=np.float64)
    if not scale.size or not np.all(np.isfinite(scale)) or np.any(scale == 0):
        return False
    if np.all(np.abs(scale) <= RAW_PIXEL_SCALE):
        return True
    centre = -np.asarray(getattr(layer, "offset", 0.0), dtype=np.float64) / scale
    return bool(np.all(np.isfinite(centre)) and np.all(centre > RAW_PIXEL_MEAN) and np.all(centre <= PIXEL_RANGE))


def _raw_normalization(layer: Any) -> bool:
    stats = _normalization_stats(layer)
    if getattr(layer, "invert", False) or stats is None:
        return False
    mean = stats[0]
    return bool(np.all(np.isfinite(mean)) and mean.min() >= 0.0 and RAW_PIXEL_MEAN < mean.max() <= PIXEL_RANGE)


def _adapt_rescaling(layer: Any, path: str | Path) -> str | None:
    if not _raw_rescaling(layer):
        return None
    scale = np.asarray(layer.scale, dtype=np.float64)
    adapted = scale * PIXEL_RANGE
    layer.scale = float(adapted) if adapted.ndim == 0 else adapted.tolist()
    offset = np.asarray(getattr(layer, "offset", 0.0), dtype=np.float64)
    shift = f", offset {_text(offset)}" if np.any(offset != 0) else ""
    return (f"model {path}: layer '{layer.name}' (Rescaling, scale {_text(scale)}{shift}) takes raw 0..255 pixels; "
            f"hgen feeds images / 255, so its scale is now {_text(adapted)} (the same model on raw pixels)")


def _adapt_normalization(layer: Any, path: str | Path) -> str | None:
    """Why the mean decides: statistics of [0, 1] images have every mean in [0, 1], so a mean above
    `RAW_PIXEL_MEAN` (and none outside 0..255) was adapted on raw pixels (`Normalization().adapt(raw_images)`, the
    Keras guides' way), and the model saw hgen's images as a nearly constant, very negative input: chance. An
    inverted layer (it de-normalises outputs) is left alone. Both the weights (or the constructor's mean and
    variance, which its config carries) and the tensors the layer computes from them change, so the model, its
    clones and the model.keras written all run the user's model on raw pixels (but for a variance under 7e-10, a
    constant pixel, where Keras' epsilon bounds the divisor)."""
    stats = _normalization_stats(layer)
    if stats is None or not _raw_normalization(layer):
        return None
    mean, variance = stats
    if layer.input_mean is None:  # adapted: weights, and the broadcast tensors `finalize_state` makes of them
        layer.adapt_mean.assign(mean / PIXEL_RANGE)
        layer.adapt_variance.assign(variance / PIXEL_RANGE**2)
        layer.finalize_state()
    else:  # given to the constructor: its config, and the tensors `build` made of them
        from keras import ops

        layer.input_mean = _like(layer.input_mean, mean / PIXEL_RANGE)
        layer.input_variance = _like(layer.input_variance, variance / PIXEL_RANGE**2)
        layer.mean = ops.cast(ops.divide(layer.mean, PIXEL_RANGE), layer.compute_dtype)
        layer.variance = ops.cast(ops.divide(layer.variance, PIXEL_RANGE**2), layer.compute_dtype)
    return (f"model {path}: layer '{layer.name}' (Normalization, mean {_brief(mean)}) takes raw 0..255 pixels (its "
            "statistics are theirs); hgen feeds images / 255, so its mean is now divided by 255 and its variance by "
            "255^2 (the same model on raw pixels)")


_ADAPTERS: dict[str, Callable[[Any, str | Path], str | None]] = {
    "Rescaling": _adapt_rescaling, "Normalization": _adapt_normalization}
_RAW_TESTS: dict[str, Callable[[Any], bool]] = {"Rescaling": _raw_rescaling, "Normalization": _raw_normalization}


def _normalization_stats(layer: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """The mean and variance a built Normalization normalises with (as float64), None if it has none yet."""
    if not layer.built or getattr(layer, "mean", None) is None:
        return None
    if layer.input_mean is not None:
        return np.asarray(layer.input_mean, np.float64), np.asarray(layer.input_variance, np.float64)
    return (np.asarray(layer.adapt_mean.numpy(), np.float64), np.asarray(layer.adapt_variance.numpy(), np.float64))


def _like(given: Any, values: np.ndarray) -> Any:
    """`values` in the form the constructor was given (a number or nested lists), so the config stays plain."""
    return float(values) if np.ndim(given) == 0 else values.tolist()


def _input_consumer(model: Any) -> Any | None:
    """The first layer that computes on the model's input's pixels (past layers that only move them: a
    Normalization after a Flatten, as dense models have it), if each on the way has one consumer."""
    from hgen.compiler.ops.graph import GraphView

    try:
        view = GraphView.of(model)
    except Exception:  # a graph hgen cannot read is refused later, with its own error
        return None
    first = [name for name in view.order if view.kind(name) == "InputLayer"]
    if len(first) != 1:
        return None
    name = first[0]
    while len(view.outbound[name]) == 1:
        name = view.outbound[name][0]
        if view.kind(name) not in LAYOUT_ONLY:
            return view.layers[name]
    return None


def _brief(values: np.ndarray) -> str:
    """At most four values; a per-pixel mean as its range."""
    return _text(values) if values.size <= 4 else f"{values.min():.4g}..{values.max():.4g} over {values.size} values"


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
    """The balanced accuracy (mean recall over the classes the `n` labelled images hold) that a model not looking at
    them reaches only by luck: 1 / those classes, plus `CHANCE_Z` binomial standard errors of that mean.

    Balanced, not plain accuracy: on imbalanced data (5 % defects) a useful model that finds 90 % of the defects
    and flags 6 % of good parts (plain accuracy 0.938) was refused for scoring below "always answer ok" (0.945);
    its balanced accuracy is 0.907, against chance 0.5. A model at chance by pixel scale or class order is at
    about 1 / classes either way."""

    chance: float
    bar: float
    n: int

    @classmethod
    def of(cls, labels: np.ndarray, num_classes: int) -> ChanceBar:
        counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes)
        present = counts[counts > 0]
        k = max(len(present), 1)
        chance = 1.0 / k
        se = math.sqrt(float(np.sum(chance * (1.0 - chance) / np.maximum(present, 1)))) / k
        return cls(chance, chance + CHANCE_Z * se, int(counts.sum()))

    @property
    def decisive(self) -> bool:
        """Enough images to tell: a model halfway from chance to perfect clears the bar (not with a handful)."""
        return self.bar < (1.0 + self.chance) / 2.0


def balanced_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean recall over the classes present in `labels` (what `ChanceBar` is the chance level of)."""
    y, answers = np.asarray(labels), np.asarray(logits).argmax(axis=1)
    classes = np.unique(y)
    return float(np.mean([np.mean(answers[y == c] == c) for c in classes])) if len(classes) else 0.0


def prepare_user_model(model: Any, path: str | Path, data: Dataset, seed: int, log: Callable[[str], None]) -> None:
    """A user's model as the compile's base: BatchNorm statistics re-estimated on the training images (in place,
    said with the validation accuracy before and after), then refused when it is no better than chance there."""
    from hgen.compiler.train import batch_norms, predict_logits, settle_batch_norm

    logits = predict_logits(model, data.val.x)
    kept = [layer.get_weights() for layer in batch_norms(model)]
    if settle_batch_norm(model, data.train.x, seed=seed):
        settled = predict_logits(model, data.val.x)
        before, after = balanced_accuracy(logits, data.val.y), balanced_accuracy(settled, data.val.y)
        if after < before:  # e.g. Dropout before a BatchNorm: training-mode statistics run wide
            for layer, weights in zip(batch_norms(model), kept):
                layer.set_weights(weights)
            log(f"kept the BatchNorm statistics of {path}: re-estimated on the training images they scored "
                f"{after:.4f} on the validation split (balanced accuracy), against {before:.4f} as saved")
        else:
            logits = settled
            log(f"re-estimated the BatchNorm statistics of {path} on the training images ({len(kept)} layers), as "
                f"every candidate's fine-tune does: validation balanced accuracy {before:.4f} -> {after:.4f}")
    require_above_chance(model, path, logits, data, log)


def require_above_chance(model: Any, path: str | Path, logits: np.ndarray, data: Dataset,
                         log: Callable[[str], None]) -> None:
    """An InvalidArgumentError naming the likely causes when the model's validation accuracy is not clearly above
    chance (`ChanceBar`); only a warning when the validation split is too small to tell."""
    y = np.asarray(data.val.y)
    score, bar = balanced_accuracy(logits, y), ChanceBar.of(y, data.num_classes)
    if score >= bar.bar:
        return
    text = (f"model {path} scores {score:.3f} on the data set's {bar.n} validation images (balanced accuracy: the "
            f"mean recall of their classes), no better than chance ({bar.chance:.3f}; it needs at least "
            f"{bar.bar:.3f}). "
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
    raw = balanced_accuracy(predict_logits(model, np.asarray(data.val.x[head], np.float32) * PIXEL_RANGE), y)
    scale = ("pixel scale: hgen feeds images as raw / 255, in [0, 1]; a model trained on 0..255 pixels needs "
             "keras.layers.Rescaling(1/255) or a Normalization adapted on those pixels right after its input (hgen "
             "adapts either), or training on images / 255")
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
    mapped = np.eye(k)[counts.argmax(axis=1)[logits.argmax(1)]]  # each output read as the class it mostly hits
    if balanced_accuracy(mapped, y) < ChanceBar.of(y, k).bar:
        return ""
    moved = [f"output {i} is mostly '{data.labels[j]}'" for i, j in enumerate(counts.argmax(axis=1))
             if counts[i].sum() and j != i]
    return ", ".join(moved[:6]) + (", ..." if len(moved) > 6 else "")
