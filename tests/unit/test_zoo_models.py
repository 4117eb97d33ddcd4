"""Zoo builders at any input shape, with typed strict options, registered by name and kind."""

from __future__ import annotations

import numpy as np
import pytest

from hgen.compiler.errors import InvalidArgumentError, UnknownNameError
from hgen.compiler.models import build_classifier, build_model, model_config, model_kind, model_names
from hgen.compiler.models.grid_detector import encode_targets


def test_registry_lists_every_model_with_its_kind():
    assert {"lenet5", "mobilenet_v2", "resnet_small", "grid_detector"} <= set(model_names())
    assert model_kind("grid_detector") == "yolo" and model_kind("mobilenet_v2") == "cnn"
    assert "grid_detector" not in model_names("cnn")
    with pytest.raises(UnknownNameError, match="valid choices"):
        build_classifier("grid_detector", (64, 64, 3), 3)


def test_options_are_typed_and_strict():
    assert model_config("mobilenet_v2", {"alpha": 0.5}).alpha == 0.5
    assert model_config("resnet_small", {"blocks": 3}).blocks == 3
    with pytest.raises(InvalidArgumentError, match="alpah: unknown key"):
        model_config("mobilenet_v2", {"alpah": 0.5})
    with pytest.raises(InvalidArgumentError, match="weights: unknown key"):
        build_model("lenet5", (28, 28, 1), 10, {"weights": "imagenet"})
    with pytest.raises(InvalidArgumentError, match="weights"):
        model_config("mobilenet_v2", {"weights": "cifar"})


@pytest.mark.parametrize("shape", [(12, 12, 1), (40, 30, 3), (96, 96, 3)])
def test_lenet5_at_any_shape(shape):
    model = build_model("lenet5", shape, 4)
    assert tuple(model.outputs[0].shape) == (None, 4)
    assert model(np.zeros((2, *shape), np.float32)).shape == (2, 4)


def test_too_small_inputs_fail_with_the_size_to_use():
    with pytest.raises(InvalidArgumentError, match="at least 12x12.*size=12"):
        build_model("lenet5", (8, 8, 1), 10)
    with pytest.raises(InvalidArgumentError, match="at least 32x32"):
        build_model("mobilenet_v2", (28, 28, 1), 10)
    with pytest.raises(InvalidArgumentError, match="height, width, channels"):
        build_model("resnet_small", (28, 28), 10)


def test_resnet_small_has_residual_adds_at_any_shape():
    model = build_model("resnet_small", (20, 26, 3), 5, {"width": 8, "blocks": 2})
    adds = [layer for layer in model.layers if type(layer).__name__ == "Add"]
    assert len(adds) == 6  # 3 stages x 2 blocks
    assert model(np.zeros((2, 20, 26, 3), np.float32)).shape == (2, 5)


def test_mobilenet_v2_is_one_flat_graph_with_the_mobile_layer_types():
    model = build_model("mobilenet_v2", (48, 32, 3), 7, {"alpha": 0.35})
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"DepthwiseConv2D", "BatchNormalization", "ReLU", "Add", "GlobalAveragePooling2D", "Rescaling"} <= kinds
    assert "Functional" not in kinds  # the backbone is flattened, so operators reach its convs
    assert model.get_layer("block_16_project").filters == 112  # _make_divisible(320 * 0.35, 8)
    assert model(np.zeros((1, 48, 32, 3), np.float32)).shape == (1, 7)


@pytest.mark.parametrize("shape,grid,resized", [((64, 64, 3), 8, False), ((50, 70, 1), 9, True)])
def test_grid_detector_at_any_size(shape, grid, resized):
    model = build_model("grid_detector", shape, 3)
    assert tuple(model.outputs[0].shape) == (None, grid, grid, 8)
    assert any(layer.name == "to_grid" for layer in model.layers) == resized
    targets = encode_targets([np.array([[0.1, 0.1, 0.3, 0.4, 2]])], grid, 3)
    assert targets.shape == (1, grid, grid, 8)
