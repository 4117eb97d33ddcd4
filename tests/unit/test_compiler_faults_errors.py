"""Errors reachable from user input or plugins are typed (caught by the CLIs' `HGenError` handler), and still the
ValueError older callers caught; the lazy reader asks a variant whether it changes images, not what it is called."""

from __future__ import annotations

import numpy as np
import pytest

from hgen.compiler.data.challenges import VARIANTS, NoParams, Variant
from hgen.compiler.data.lazy import DecodedImages, concat
from hgen.compiler.errors import CompilerError, InvalidArgumentError
from hgen.compiler.metrics.detection import mean_average_precision
from hgen.runtime.errors import HGenRuntimeError, RegistrationError
from hgen.runtime.hdnn.yolo import Detections
from hgen.runtime.registry import Registry


def test_a_name_registered_twice_is_a_runtime_error() -> None:
    registry: Registry[object] = Registry("widget")
    registry.add("a", object())
    with pytest.raises(RegistrationError, match="widget 'a' is registered twice") as caught:
        registry.add("a", object())
    assert isinstance(caught.value, HGenRuntimeError) and isinstance(caught.value, ValueError)


def test_map_of_mismatched_predictions_and_truth_is_typed() -> None:
    found = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    with pytest.raises(InvalidArgumentError, match="1 predictions for 2 images"):
        mean_average_precision([found], [np.zeros((0, 5)), np.zeros((0, 5))], 3)


def test_stacking_images_of_two_sizes_is_typed() -> None:
    small, large = np.zeros((2, 8, 8, 1), np.float32), np.zeros((2, 16, 16, 1), np.uint8)
    with pytest.raises(InvalidArgumentError, match="cannot stack images of shapes") as caught:
        concat([small, DecodedImages(large, 255.0)])
    assert isinstance(caught.value, CompilerError)


def _refuse(x: np.ndarray, rng: np.random.Generator, params: NoParams) -> np.ndarray:
    raise AssertionError("an identity variant was applied")


def _invert(x: np.ndarray, rng: np.random.Generator, params: NoParams) -> np.ndarray:
    return 1.0 - x


def test_only_the_clean_variant_is_marked_identity() -> None:
    assert [name for name, variant in VARIANTS.items() if variant.identity] == ["clean"]


def test_the_reader_skips_a_variant_marked_identity_whatever_its_name() -> None:
    source = np.full((3, 4, 4, 1), 51, np.uint8)
    plain = DecodedImages(source, 255.0, Variant("plain", NoParams, _refuse, "plain", identity=True), NoParams())
    np.testing.assert_allclose(np.asarray(plain), 0.2, atol=1e-6)
    named_clean = DecodedImages(source, 255.0, Variant("clean", NoParams, _invert, "inverted"), NoParams())
    np.testing.assert_allclose(np.asarray(named_clean), 0.8, atol=1e-6)
