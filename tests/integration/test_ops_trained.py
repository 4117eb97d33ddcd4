"""Operators on a trained LeNet-5 (digits, a few seconds of training): exact rewrites keep every prediction,
fitted rewrites start close, distillation fine-tunes them and sparse masks stay zero through it."""

from __future__ import annotations

import numpy as np
import pytest

from hgen.compiler.data import load_dataset
from hgen.compiler.metrics import model_costs
from hgen.compiler.models import build_model
from hgen.compiler.ops import Plan, apply_plan
from hgen.compiler.train import DistillConfig, TrainConfig, accuracy, distill, predict_logits, train_classifier


@pytest.fixture(scope="module")
def trained():
    data = load_dataset("digits", seed=0, limit=1500)
    model = build_model("lenet5", data.input_shape, data.num_classes)
    train_classifier(model, data.train, config=TrainConfig(epochs=4, batch_size=64))
    return model, data


def agreement(model, teacher, x):
    return float(np.mean(predict_logits(model, x).argmax(1) == predict_logits(teacher, x).argmax(1)))


def test_baseline_learned_something(trained):
    model, data = trained
    assert accuracy(model, data.test) > 0.6


def test_full_rank_rewrites_keep_every_prediction(trained):
    model, data = trained
    plan = Plan.of({"conv1": ("svd_conv", 1.0), "conv2": ("depthwise_separable", 1.0), "fc1": ("svd_dense", 1.0),
                    "fc2": ("svd_dense", 1.0)})
    assert agreement(apply_plan(model, plan), model, data.test.x) == 1.0


@pytest.mark.parametrize("plan", [{"logits": "gap"}, {"conv2": "fire"}, {"conv2": "sparse_random"},
                                  {"conv2": "sparse_decompose"}, {"fc1": "sparse_coding"}])
def test_fitted_rewrites_start_close_to_the_original(plan, trained):
    model, data = trained
    new = apply_plan(model, Plan.of(plan), data.train.x)
    minimum = 0.5 if "logits" in plan else 0.8  # pooling away the layout loses more before fine-tuning
    assert agreement(new, model, data.test.x) > minimum


def test_distillation_keeps_masks_zero_and_recovers_accuracy(trained):
    model, data = trained
    new = apply_plan(model, Plan.of({"conv2": ("sparse_random", 0.34), "fc1": ("sparse_coding", 0.2)}), data.train.x)
    stored = model_costs(new).weights
    masked = [layer for layer in new.layers if type(layer).__name__.startswith("Masked")]
    before = accuracy(new, data.test)
    distill(new, predict_logits(model, data.train.x), data.train, DistillConfig(epochs=2, learning_rate=1e-3))
    for layer in masked:
        assert np.all(np.asarray(layer.kernel)[np.asarray(layer.sparsity_mask) == 0] == 0), layer.name
    assert model_costs(new).weights == stored
    assert accuracy(new, data.test) >= before - 0.02
