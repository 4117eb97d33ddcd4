"""The field's style on the original training images (hub/retrain/style.py): estimates on synthetic images whose
field condition is known (a gamma curve, Gaussian noise), and how a retrain's training set uses them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from hgen.hub.config import FieldConfig, RetrainConfig
from hgen.hub.retrain.style import fit_style, in_field_style, noise_sigma, render


def scenes(n: int, seed: int, size: int = 24, channels: int = 3) -> np.ndarray:
    """Smooth random pictures (blurred uniform noise, stretched to [0.05, 0.95]): content without sensor noise."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, channels), np.float32)
    for i in range(n):
        raw = rng.uniform(0, 1, (size, size, channels)).astype(np.float32)
        blurred = cv2.GaussianBlur(raw, (0, 0), 3.0).reshape(size, size, channels)
        low, high = blurred.min(), blurred.max()
        out[i] = 0.05 + 0.9 * (blurred - low) / max(high - low, 1e-6)
    return out


def with_noise(x: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    return np.clip(x + np.random.default_rng(seed).normal(0, sigma, x.shape), 0, 1).astype(np.float32)


@pytest.mark.parametrize("sigma", [0.02, 0.05, 0.1])
def test_noise_estimate_finds_added_gaussian_noise(sigma: float) -> None:
    clean = scenes(200, 0)
    assert noise_sigma(clean) < 0.01
    assert noise_sigma(with_noise(clean, sigma, 1)) == pytest.approx(sigma, rel=0.15)


def test_a_darker_field_is_rendered_with_its_tone_curve() -> None:
    original, field = scenes(400, 0), np.power(scenes(400, 1), 2.5)
    style = fit_style(original, field)
    assert style.noise < 0.01
    probe = scenes(50, 2)
    rendered = render(probe, style, np.random.default_rng(0))
    assert np.abs(rendered - np.power(probe, 2.5)).mean() < 0.01
    assert np.abs(probe - np.power(probe, 2.5)).mean() > 0.1  # the curve is far from the identity


def test_a_noisy_field_adds_its_excess_noise() -> None:
    original, field = with_noise(scenes(300, 0), 0.01, 3), with_noise(scenes(300, 1), 0.08, 4)
    style = fit_style(original, field)
    assert style.noise == pytest.approx(np.sqrt(0.08**2 - 0.01**2), rel=0.15)
    assert noise_sigma(render(original[:100], style, np.random.default_rng(5))) == pytest.approx(
        style.field_noise, rel=0.15)


def test_a_field_like_the_training_data_leaves_images_nearly_unchanged() -> None:
    original, field = scenes(400, 0), scenes(400, 1)
    style = fit_style(original, field)
    assert style.noise < 0.01
    assert np.abs(render(original[:50], style, np.random.default_rng(0)) - original[:50]).mean() < 0.02


def test_a_field_like_the_training_images_is_not_rendered() -> None:
    """The gate's hard cases of an unshifted field are familiar images: no style is estimated from them."""
    original = scenes(200, 0)
    styled = in_field_style(original, scenes(60, 1), FieldConfig(style_min_images=50))
    assert styled.rendered == 0 and styled.style is None
    assert styled.summary() == {"rendered": 0, "field_unfamiliar": pytest.approx(0.0, abs=0.05)}
    assert styled.x is original


def test_the_configured_share_of_rows_is_rendered_and_the_rest_kept() -> None:
    original, field = scenes(200, 0), np.power(scenes(60, 1), 2.5)
    styled = in_field_style(original, field, FieldConfig(style_share=0.5, style_min_images=50), seed=3)
    assert sorted(styled.order.tolist()) == list(range(200))  # every original once, the rendered ones first
    changed = np.abs(styled.x - styled.reorder(original)).reshape(len(original), -1).max(axis=1) > 1e-6
    assert styled.rendered == 100 and changed[:100].all() and not changed[100:].any()
    assert styled.reorder(["a", "b", "c"] * 67)[0] == ["a", "b", "c"][int(styled.order[0]) % 3]
    assert styled.style is not None and styled.summary()["field_unfamiliar"] > 0.9


@pytest.mark.parametrize("config, field_images, size", [
    (FieldConfig(style_share=0.0), 100, 24),  # off
    (FieldConfig(style_min_images=50), 49, 24),  # too few field images to estimate from
    (FieldConfig(), 100, 20),  # the field's images are not the originals' shape
])
def test_no_rendering_when_off_short_of_field_images_or_of_another_shape(config: FieldConfig, field_images: int,
                                                                          size: int) -> None:
    original = scenes(80, 0)
    styled = in_field_style(original, scenes(field_images, 1, size=size) ** 2.5, config)
    assert styled.rendered == 0 and styled.style is None and styled.order is None
    assert styled.x is original  # untouched: a lazy user data set stays lazy


def test_the_training_set_keeps_the_teachers_logits_of_the_clean_originals() -> None:
    import keras

    from hgen.compiler.data import Dataset, Split
    from hgen.compiler.data.spec import DatasetSpec
    from hgen.compiler.train import predict_logits
    from hgen.hub.retrain.data import HumanSet
    from hgen.hub.retrain.enhance import training_set

    x, y = scenes(120, 0), np.arange(120) % 4
    spec = DatasetSpec("synthetic", "clean", FieldConfig())  # any validated params; the set is built here
    data = Dataset(spec, ("a", "b", "c", "d"), Split(x, y), Split(x[:10], y[:10]), Split(x[:10], y[:10]),
                   origin="synthetic scenes", seed=0)
    field = np.power(scenes(60, 1), 2.5)
    human = HumanSet(field, np.arange(60) % 4, tuple(f"s{i}" for i in range(60)))
    teacher = keras.Sequential([keras.Input(x.shape[1:]), keras.layers.Flatten(), keras.layers.Dense(4)])
    config = RetrainConfig(original_samples=100, human_repeat=1, field=FieldConfig(style_share=0.5))
    split, logits, styled = training_set(teacher, data, human, config)
    order = styled.order
    originals = np.asarray(split.x[:100])
    changed = np.abs(originals - x[order]).reshape(100, -1).max(axis=1) > 1e-6
    assert int(changed.sum()) == 50 and styled.summary()["rendered"] == 50
    # each row keeps its own label and the teacher's logits of its clean image, whatever the new order
    np.testing.assert_allclose(logits[:100], predict_logits(teacher, x[order]), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(split.y[:100], y[order])


def test_lazy_originals_stay_lazy_but_the_rendered_rows() -> None:
    """A user's folder is read as uint8 rows on demand (`hgen.compiler.data.lazy`): only the rendered half is
    materialised, and every row still reads as its own original (rendered or not) in the new order."""
    from hgen.compiler.data.lazy import DecodedImages, is_lazy

    pixels = np.round(scenes(120, 0) * 255).astype(np.uint8)
    lazy = DecodedImages(pixels, 255.0)
    styled = in_field_style(lazy, np.power(scenes(60, 1), 2.5), FieldConfig(style_share=0.5), seed=1)
    assert is_lazy(styled.x) and styled.rendered == 60
    kept = np.asarray(styled.x[np.arange(60, 120)])
    np.testing.assert_allclose(kept, pixels[styled.order[60:]] / 255.0, atol=1e-6)
    rendered = np.asarray(styled.x[np.arange(60)])
    assert np.abs(rendered - pixels[styled.order[:60]] / 255.0).mean() > 0.1  # darkened like the field
