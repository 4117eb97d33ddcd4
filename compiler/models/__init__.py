"""Model zoo: Keras model builders registered by name (`lenet5`, `mobilenet_v2`, ...), plus loading a user's model file.

Builders return logits (no softmax): calibration (temperature scaling) and fusion need the raw scores. Each builder
declares a typed, strict options model (`ModelConfig` subclass), so `build_model("mobilenet_v2", shape, n,
{"alpha": 0.35})` is checked before anything is built and an unknown option is an error naming the key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hgen.compiler.errors import InvalidArgumentError, UnknownNameError
from hgen.runtime.config import StrictModel, parse_config
from hgen.runtime.hdnn import DEFAULT_KIND
from hgen.runtime.registry import Registry

if TYPE_CHECKING:
    import keras

Shape = tuple[int, int, int]
OptionValue = float | int | bool | str | None


class ModelConfig(StrictModel):
    """Options of a zoo model; the base (no options) for builders that have none."""


ModelBuilder = Callable[[Shape, int, Any], "keras.Model"]  # (input_shape, num_classes, config) -> logits model


@dataclass(frozen=True)
class ZooModel:
    """A registered builder, the typed options it takes and the H-DNN kind its output has."""

    build: ModelBuilder
    config_type: type[ModelConfig] = ModelConfig
    kind: str = DEFAULT_KIND


MODELS: Registry[ZooModel] = Registry("model", UnknownNameError, package=__name__)


def register_model(name: str, config_type: type[ModelConfig] = ModelConfig,
                   kind: str = DEFAULT_KIND) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: `@register_model("resnet_small", ResNetSmallConfig)` on `build(input_shape, num_classes, config)`."""

    def add(build: ModelBuilder) -> ModelBuilder:
        MODELS.add(name, ZooModel(build, config_type, kind))
        return build

    return add


def model_config(name: str, options: Mapping[str, Any] | ModelConfig | None = None) -> ModelConfig:
    """Parse `options` strictly into the model's config type (defaults where omitted)."""
    entry = MODELS.get(name)
    if isinstance(options, ModelConfig):
        if not isinstance(options, entry.config_type):
            raise InvalidArgumentError(f"model '{name}' takes {entry.config_type.__name__}, "
                                       f"not {type(options).__name__}")
        return options
    return parse_config(entry.config_type, options, source=f"options of model '{name}'", error=InvalidArgumentError)


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int,
                options: Mapping[str, Any] | ModelConfig | None = None, *, seed: int | None = None) -> keras.Model:
    """Build an untrained (or, with `weights`, pretrained) model from the zoo. With `seed`, Keras' global seed is set
    first, so the initial weights (and what training them gives) are the same in every process for that seed."""
    config = model_config(name, options)
    shape = check_shape(name, input_shape)
    if num_classes < 1:
        raise InvalidArgumentError(f"model '{name}' needs at least one class, got {num_classes}")
    if seed is not None:
        import keras

        keras.utils.set_random_seed(seed)
    return MODELS.get(name).build(shape, int(num_classes), config)


def build_classifier(name: str, input_shape: tuple[int, ...], num_classes: int,
                     options: Mapping[str, Any] | ModelConfig | None = None) -> keras.Model:
    """`build_model` for the H-CNN paths (study, search): a detector's name is refused like an unknown one."""
    if name not in model_names(DEFAULT_KIND):
        raise UnknownNameError(f"unknown model '{name}'; valid choices: {', '.join(model_names(DEFAULT_KIND))}")
    return build_model(name, input_shape, num_classes, options)


def model_kind(name: str) -> str:
    """The H-DNN kind a zoo model's output has (`cnn` unless registered with another `kind`)."""
    return MODELS.get(name).kind


def model_names(kind: str | None = None) -> list[str]:
    """Zoo names, optionally only those of one H-DNN kind (the compile search takes classifiers)."""
    return [name for name, entry in MODELS.items() if kind is None or entry.kind == kind]


def check_shape(name: str, input_shape: tuple[int, ...], min_side: int = 1) -> Shape:
    """(h, w, c) as ints, each positive and both sides >= `min_side`; a typed error naming the model otherwise."""
    if len(input_shape) != 3 or any(d is None or int(d) < 1 for d in input_shape):
        raise InvalidArgumentError(f"model '{name}' needs an input shape (height, width, channels), got {input_shape}")
    h, w, c = (int(d) for d in input_shape)
    if min(h, w) < min_side:
        raise InvalidArgumentError(f"model '{name}' needs images of at least {min_side}x{min_side} pixels, got "
                                   f"{h}x{w}; resize the data set (e.g. `?size={min_side}`) or pick another model")
    return h, w, c


PROBABILITY_ACTIVATIONS = frozenset({"softmax", "sigmoid"})  # outputs squashed into [0, 1]: not logits


def check_model_file(model: keras.Model, path: str | Path, input_shape: tuple[int, ...], num_classes: int) -> None:
    """Refuse, before any training, a user's model that does not fit the data set: its input shape, one output with
    a value per class (else only the bundle's manifest noticed, after the whole search, and `--no-bundle` never did),
    and logits, not probabilities (temperature scaling and fusion would be fitted on softmax outputs). A Rescaling on
    the input that expects raw 0..255 pixels is adapted in place to hgen's [0, 1] images (`user_file`)."""
    from hgen.compiler.models.user_file import adapt_raw_pixel_input, check_input

    _one_input_one_output(model, path)
    check_input(model, path, input_shape)
    outputs = tuple(model.outputs[0].shape[1:])
    if outputs != (num_classes,):
        raise InvalidArgumentError(f"model {path} outputs {outputs[-1] if len(outputs) == 1 else outputs} values per "
                                   f"image, the data set has {num_classes} classes: its last layer needs "
                                   f"{num_classes} units (one logit per class)")
    _refuse_probabilities(model, path, num_classes)
    adapt_raw_pixel_input(model, path)


def check_lowerable(model: keras.Model, path: str | Path) -> None:
    """Refuse a user's model that `hgen lower` would sign into a bundle no device can run right: free height or
    width (LiteRT records them as 1), an input without a channel axis (labelled NHWC, every frame refused), integer
    input (the device feeds x = raw * scale + offset as float32), or outputs that are not one logit per class."""
    _one_input_one_output(model, path)
    tensor = model.inputs[0]
    shape = tuple(tensor.shape[1:])
    if any(dim is None for dim in shape):
        raise InvalidArgumentError(f"model {path} takes input {shape} with free dimensions: a device runs one fixed "
                                   "shape; save the model with it, e.g. keras.Input(shape=(224, 224, 3))")
    if len(shape) not in (1, 3):
        raise InvalidArgumentError(f"model {path} takes input {shape}: hgen feeds images as (height, width, "
                                   "channels) or features as (n,); add the channel axis, e.g. keras.Input(shape="
                                   f"{(*shape, 1)})")
    dtype = str(getattr(tensor, "dtype", "float32"))
    if "float" not in dtype:
        raise InvalidArgumentError(f"model {path} takes {dtype} input; the device feeds float32 x = raw * scale + "
                                   "offset: save it with a float32 input (and --scale 1 --offset 0 for raw pixels)")
    outputs = tuple(model.outputs[0].shape[1:])
    if len(outputs) != 1 or outputs[0] is None:
        raise InvalidArgumentError(f"model {path} outputs {outputs} per image; hgen lower bundles a classifier with "
                                   "one logit per class")
    _refuse_probabilities(model, path, int(outputs[0]))


def _one_input_one_output(model: keras.Model, path: str | Path) -> None:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise InvalidArgumentError(f"model {path} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                                   "hgen compiles a model with one image input and one logits output")


def _refuse_probabilities(model: keras.Model, path: str | Path, num_classes: int) -> None:
    layer, activation = _output_activation(model)
    if activation in PROBABILITY_ACTIVATIONS:
        raise InvalidArgumentError(f"model {path} ends in a {activation} (layer '{layer}'); hgen needs logits: "
                                   f"remove the activation (e.g. Dense({num_classes}) without "
                                   f"activation='{activation}', or drop the final {activation} layer) and save the "
                                   "model again")


def _output_activation(model: keras.Model) -> tuple[str, str]:
    """(name, activation) of the layer producing the model's output: a Softmax layer counts as softmax."""
    history = getattr(model.outputs[0], "_keras_history", None)
    layer = history.operation if history is not None else model.layers[-1]
    if type(layer).__name__ == "Softmax":
        return layer.name, "softmax"
    return layer.name, getattr(getattr(layer, "activation", None), "__name__", "")


def load_model_file(path: str | Path) -> keras.Model:
    """Load a user's Keras model (`.keras` or `.h5`); the last layer must output logits."""
    import keras

    import hgen.compiler.ops.layers  # noqa: F401  registers the masked layers a compressed model may hold

    path = Path(path)
    if not path.is_file():  # the user's input: exit 2, as a wrong data set path
        raise InvalidArgumentError(f"model file {path} does not exist")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a bad file
        from hgen.compiler.models.user_file import load_error

        raise load_error(path, exc) from None
