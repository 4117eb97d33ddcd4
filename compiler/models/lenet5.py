"""LeNet-5 (LeCun et al. 1998) in its common modern form: the paper's H-CNN backbone for the MNIST-style tasks.

Any input shape of at least 12x12 (the valid 5x5 conv after the first pooling needs it): grey or colour, square or
not. The classifier's first layer grows with the input (96x96x3 gives a 22x22x16 map, 7,744 inputs to fc1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hgen.compiler.models import ModelConfig, Shape, check_shape, register_model

if TYPE_CHECKING:
    import keras

MIN_SIDE = 12


@register_model("lenet5")
def lenet5(input_shape: Shape, num_classes: int, config: ModelConfig = ModelConfig()) -> keras.Model:
    """conv5x5(6, same) - maxpool - conv5x5(16) - maxpool - fc120 - fc84 - fc(num_classes), ReLU, logits out."""
    import keras
    from keras import layers

    check_shape("lenet5", input_shape, MIN_SIDE)
    return keras.Sequential(
        [
            keras.Input(shape=input_shape, name="image"),
            layers.Conv2D(6, 5, padding="same", activation="relu", name="conv1"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(16, 5, padding="valid", activation="relu", name="conv2"),
            layers.MaxPooling2D(2, name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(120, activation="relu", name="fc1"),
            layers.Dense(84, activation="relu", name="fc2"),
            layers.Dense(num_classes, name="logits"),
        ],
        name="lenet5",
    )
