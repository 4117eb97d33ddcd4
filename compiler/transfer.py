"""Transfer learning for small data sets (hundreds of images per class): train the head on a frozen backbone, then
fine-tune the top of the backbone at a lower learning rate.

Why two phases: a fresh random head on a pretrained backbone sends large gradients back through it and wrecks the
features before the head has learnt anything; training the head alone first avoids that (Yosinski et al. 2014,
the Keras transfer-learning guide). BatchNormalization layers stay frozen (inference mode) during fine-tuning by
default: a few hundred images give poor batch statistics. The head is every layer after the last layer that
collapses the feature map (global pooling or Flatten), so zoo models and a user's own model work alike.
Each layer's `trainable` flag is restored afterwards, so the model saves, clones and compresses like any other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hgen.compiler.data import Split
from hgen.compiler.errors import InvalidArgumentError
from hgen.compiler.ops.graph import GraphView
from hgen.compiler.train import TrainConfig, train_classifier

COLLAPSING = frozenset({"GlobalAveragePooling2D", "GlobalMaxPooling2D", "Flatten"})


@dataclass(frozen=True)
class TransferConfig:
    """Epochs and learning rates of both phases; `unfreeze` is the share of backbone layers (from the top) that
    fine-tuning trains (1.0: all)."""

    head_epochs: int = 5
    finetune_epochs: int = 5
    batch_size: int = 32
    head_learning_rate: float = 1e-3
    finetune_learning_rate: float = 1e-4
    unfreeze: float = 1.0
    train_batchnorm: bool = False
    seed: int = 0
    verbose: int = 0

    def __post_init__(self) -> None:
        if self.head_epochs < 0 or self.finetune_epochs < 0 or self.head_epochs + self.finetune_epochs == 0:
            raise InvalidArgumentError("transfer learning needs head_epochs, finetune_epochs >= 0, not both 0")
        if not 0.0 < self.unfreeze <= 1.0 or self.batch_size < 1:
            raise InvalidArgumentError("transfer learning needs unfreeze in (0, 1] and batch_size >= 1")
        if self.head_learning_rate <= 0 or self.finetune_learning_rate <= 0:
            raise InvalidArgumentError("transfer learning needs positive learning rates")


@dataclass(frozen=True)
class TransferResult:
    """Wall seconds of each phase and how many layers each trained."""

    head_seconds: float
    finetune_seconds: float
    head_layers: tuple[str, ...]
    finetuned_layers: tuple[str, ...]


def split_head(model: Any) -> tuple[list[str], list[str]]:
    """(backbone, head) layer names in topological order; the head starts after the last collapsing layer."""
    view = GraphView.of(model)
    cuts = [i for i, name in enumerate(view.order) if view.kind(name) in COLLAPSING]
    if not cuts:
        raise InvalidArgumentError(f"model '{model.name}' has no global pooling or Flatten layer, so it has no "
                                   "classifier head to train on its own")
    backbone, head = list(view.order[:cuts[-1] + 1]), list(view.order[cuts[-1] + 1:])
    if not any(view.layers[name].weights for name in head):
        raise InvalidArgumentError(f"model '{model.name}' has no trainable layer after its last pooling/Flatten")
    return backbone, head


def set_trainable(model: Any, names: set[str], train_batchnorm: bool = True) -> None:
    """Only the named layers train (BatchNormalization only if `train_batchnorm`)."""
    for layer in model.layers:
        is_bn = type(layer).__name__ == "BatchNormalization"
        layer.trainable = layer.name in names and (train_batchnorm or not is_bn)


def top_layers(backbone: list[str], share: float) -> list[str]:
    """The last `share` of the backbone's layers (at least one)."""
    return backbone[len(backbone) - max(1, math.ceil(share * len(backbone))):]


def _phase(model: Any, train: Split, val: Split | None, epochs: int, rate: float, config: TransferConfig) -> float:
    if epochs == 0:
        return 0.0
    settings = TrainConfig(epochs=epochs, batch_size=config.batch_size, learning_rate=rate, seed=config.seed,
                           verbose=config.verbose)
    return train_classifier(model, train, val, settings)


def transfer_train(model: Any, train: Split, val: Split | None = None,
                   config: TransferConfig = TransferConfig()) -> TransferResult:
    """Head on a frozen backbone, then fine-tune the top `unfreeze` share; `model` is trained in place.

    The phases decide which layers train (also layers the caller had frozen); the caller's `trainable` flags are
    restored at the end."""
    backbone, head = split_head(model)
    tuned = top_layers(backbone, config.unfreeze)
    trainable = {layer.name: layer.trainable for layer in model.layers}
    try:
        set_trainable(model, set(head))
        head_seconds = _phase(model, train, val, config.head_epochs, config.head_learning_rate, config)
        set_trainable(model, set(head) | set(tuned), config.train_batchnorm)
        tune_seconds = _phase(model, train, val, config.finetune_epochs, config.finetune_learning_rate, config)
    finally:
        for layer in model.layers:
            layer.trainable = trainable[layer.name]
    return TransferResult(head_seconds, tune_seconds, tuple(head), tuple(tuned if config.finetune_epochs else ()))
