"""Transfer learning: the head trains on a frozen backbone, then only the top share of the backbone is fine-tuned
(BatchNorm statistics kept), and every layer is trainable again afterwards."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hgen.compiler.data import Split
from hgen.compiler.errors import InvalidArgumentError
from hgen.compiler.models import build_model
from hgen.compiler.transfer import TransferConfig, split_head, transfer_train


def tinted(n: int, classes: int, seed: int = 0) -> Split:
    """Noise images whose class is a colour tint: learnable from pooled features."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.random((n, 32, 32, 3)).astype(np.float32) * 0.5
    x[np.arange(n), :, :, y % 3] += 0.5
    return Split(x, y.astype(np.int64))


def weights_of(model, name):
    return [np.array(w) for w in model.get_layer(name).get_weights()]


def changed(before, after) -> bool:
    return any(not np.array_equal(a, b) for a, b in zip(before, after))


@pytest.fixture(scope="module")
def model():
    return build_model("mobilenet_v2", (32, 32, 3), 3, {"alpha": 0.35, "dropout": 0.0})


def test_the_head_is_what_follows_the_last_pooling(model):
    backbone, head = split_head(model)
    assert head == ["dropout", "logits"] and backbone[-1] == "pool"
    with pytest.raises(InvalidArgumentError, match="no global pooling or Flatten"):
        import keras

        image = keras.Input((8, 8, 1))
        split_head(keras.Model(image, keras.layers.Conv2D(2, 1)(image)))


def test_head_then_top_of_backbone(model):
    names = ("Conv1", "bn_Conv1", "Conv_1", "Conv_1_bn", "logits")
    before = {name: weights_of(model, name) for name in names}
    result = transfer_train(model, tinted(24, 3), config=TransferConfig(head_epochs=1, finetune_epochs=1,
                                                                        batch_size=8, unfreeze=0.05))
    after = {name: weights_of(model, name) for name in names}
    assert changed(before["logits"], after["logits"]) and changed(before["Conv_1"], after["Conv_1"])
    assert not changed(before["Conv1"], after["Conv1"])  # below the unfrozen share
    assert not changed(before["Conv_1_bn"], after["Conv_1_bn"])  # BatchNorm stays frozen by default
    assert "Conv_1" in result.finetuned_layers and "Conv1" not in result.finetuned_layers
    assert result.head_layers == ("dropout", "logits")
    assert all(math.isfinite(s) and s >= 0.0 for s in (result.head_seconds, result.finetune_seconds))  # wall time
    assert all(layer.trainable for layer in model.layers)


def test_head_only_leaves_the_backbone_alone():
    model = build_model("resnet_small", (32, 32, 3), 3, {"width": 4})
    before = weights_of(model, "s3b1_b_conv")
    transfer_train(model, tinted(16, 3), config=TransferConfig(head_epochs=1, finetune_epochs=0, batch_size=8))
    assert not changed(before, weights_of(model, "s3b1_b_conv"))
    with pytest.raises(InvalidArgumentError, match="not both 0"):
        TransferConfig(head_epochs=0, finetune_epochs=0)
