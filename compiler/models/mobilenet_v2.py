"""MobileNetV2 (Sandler et al. 2018) classifier: Keras applications' inverted-residual backbone, flattened into one
functional graph with a pooling + dropout + dense head, so the cost model and the compression operators see every
layer (Conv2D, DepthwiseConv2D, BatchNormalization, ReLU6, Add, ZeroPadding2D).

Inputs are the data layer's [0, 1] images; a leading Rescaling maps them to MobileNetV2's [-1, 1], so pretrained
weights see what they were trained on and the deployed model needs no extra preprocessing. `weights="imagenet"`
loads the no-top ImageNet file from the Keras cache (`hgen.compiler.models.weights`); random initialisation
otherwise. Any input of at least 32x32 (the backbone downsamples 32x), grey or colour, square or not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from hgen.compiler.models import ModelConfig, Shape, check_shape, register_model
from hgen.compiler.models.weights import MOBILENET_V2_URL, load_weights_file, mobilenet_v2_file, weights_file

if TYPE_CHECKING:
    import keras

MIN_SIDE = 32
BACKBONE_PREFIX = "mobilenetv2"


class MobileNetV2Config(ModelConfig):
    """Width multiplier, pretrained weights and head dropout."""

    alpha: float = Field(0.35, gt=0.0, le=2.0,
                         title="Width multiplier (ImageNet weights: 0.35, 0.5, 0.75, 1.0, 1.3, 1.4)")
    weights: Literal["imagenet"] | None = Field(None, title="Pretrained backbone weights: imagenet, or none (random)")
    download: bool = Field(True, title="Fetch a missing weights file into the Keras cache (needs network)")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, title="Dropout rate before the classifier")


@register_model("mobilenet_v2", MobileNetV2Config)
def mobilenet_v2(input_shape: Shape, num_classes: int, config: MobileNetV2Config = MobileNetV2Config()) -> keras.Model:
    """Rescaling -> MobileNetV2 backbone (alpha) -> GlobalAveragePooling2D -> Dropout -> Dense logits."""
    import keras
    from keras import layers

    check_shape("mobilenet_v2", input_shape, MIN_SIDE)
    path = None
    if config.weights == "imagenet":  # resolve the file before building anything: a missing file fails fast
        path = weights_file(mobilenet_v2_file(config.alpha, input_shape), MOBILENET_V2_URL, config.download)
    image = keras.Input(shape=input_shape, name="image")
    signed = layers.Rescaling(2.0, offset=-1.0, name="to_signed_unit")(image)
    backbone = keras.applications.MobileNetV2(input_tensor=signed, input_shape=input_shape, include_top=False,
                                              weights=None, alpha=config.alpha,
                                              name=f"{BACKBONE_PREFIX}_{config.alpha:g}")
    if path is not None:
        load_weights_file(backbone, path)
    x = layers.GlobalAveragePooling2D(name="pool")(backbone.output)
    x = layers.Dropout(config.dropout, name="dropout")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(image, logits, name=f"mobilenet_v2_{config.alpha:g}")
