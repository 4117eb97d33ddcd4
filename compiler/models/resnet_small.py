"""A small ResNet (He et al. 2016, the CIFAR family: ResNet-8/14/20) for small images and small data sets.

Stem conv3x3 -> `stages` stages of `blocks` basic residual blocks (two conv3x3 + BatchNorm, identity shortcut;
the first block of each later stage halves the map with a stride-2 conv and a 1x1 projection shortcut, widths
double) -> GlobalAveragePooling2D -> Dense logits. 'same' padding everywhere, so any input size works.
Defaults (width 16, 3 stages, 1 block) give ResNet-8: ~78k parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from hgen.compiler.models import ModelConfig, Shape, check_shape, register_model

if TYPE_CHECKING:
    import keras


class ResNetSmallConfig(ModelConfig):
    """Depth and width of the network."""

    width: int = Field(16, ge=1, le=512, title="Filters of the stem and first stage (doubled per stage)")
    stages: int = Field(3, ge=1, le=5, title="Stages (each after the first halves the feature map)")
    blocks: int = Field(1, ge=1, le=8, title="Residual blocks per stage (1: ResNet-8, 3: ResNet-20)")


def conv_bn(x: Any, filters: int, kernel: int, strides: int, name: str, relu: bool = True) -> Any:
    from keras import layers

    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def basic_block(x: Any, filters: int, strides: int, name: str) -> Any:
    """Two conv3x3 + BN; the shortcut is projected when the shape changes, so the Add always matches."""
    from keras import layers

    shortcut = x
    if strides != 1 or int(x.shape[-1]) != filters:
        shortcut = conv_bn(x, filters, 1, strides, f"{name}_proj", relu=False)
    y = conv_bn(x, filters, 3, strides, f"{name}_a")
    y = conv_bn(y, filters, 3, 1, f"{name}_b", relu=False)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


@register_model("resnet_small", ResNetSmallConfig)
def resnet_small(input_shape: Shape, num_classes: int, config: ResNetSmallConfig = ResNetSmallConfig()) -> keras.Model:
    """stem - stages x blocks basic blocks - GAP - Dense logits."""
    import keras
    from keras import layers

    check_shape("resnet_small", input_shape)
    image = keras.Input(shape=input_shape, name="image")
    x = conv_bn(image, config.width, 3, 1, "stem")
    for stage in range(config.stages):
        for block in range(config.blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            x = basic_block(x, config.width * 2**stage, strides, f"s{stage + 1}b{block + 1}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(image, logits, name="resnet_small")
