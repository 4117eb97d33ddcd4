"""The autoencoder filter (paper section 4.2.2): human-labelled samples unlike the training data are left out.

An autoencoder trained on the original training images reconstructs in-distribution images well; a sample whose
reconstruction error is above the chosen quantile of the training images' errors (blank frames, glare, a
different scene) would teach the model about inputs it will not see, so it is marked useless and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class FilterResult:
    """Which samples to keep, their errors, and the threshold used."""

    keep: np.ndarray
    errors: np.ndarray
    threshold: float

    @property
    def filtered_out(self) -> int:
        return int((~self.keep).sum())


class AutoencoderFilter:
    """A small dense autoencoder (input -> 128 -> 32 -> 128 -> input) fitted once per model and reused."""

    def __init__(self, model: Any, threshold: float) -> None:
        self.model = model
        self.threshold = threshold

    @classmethod
    def fit(cls, x_train: np.ndarray, *, quantile: float = 0.99, epochs: int = 3, seed: int = 0) -> AutoencoderFilter:
        import keras
        from keras import layers

        keras.utils.set_random_seed(seed)
        x_train = np.asarray(x_train, np.float32)  # a lazy data set view (capped by original_samples) as floats
        shape = x_train.shape[1:]
        size = int(np.prod(shape))
        model = keras.Sequential([
            keras.Input(shape=shape), layers.Flatten(), layers.Dense(128, activation="relu"),
            layers.Dense(32, activation="relu"), layers.Dense(128, activation="relu"),
            layers.Dense(size, activation="sigmoid"), layers.Reshape(shape)], name="hub_filter_autoencoder")
        model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="mse")
        model.fit(x_train, x_train, batch_size=128, epochs=epochs, verbose=0, shuffle=True)
        errors = reconstruction_errors(model, x_train)
        return cls(model, float(np.quantile(errors, quantile)))

    def __call__(self, x: np.ndarray, field_factor: float | None = None) -> FilterResult:
        """With `field_factor`: when most of the batch is unlike the training data (its median error is above the
        threshold), the field itself has shifted (noise, blur) and its frames are what the retrain has to learn;
        a sample is then left out only above `field_factor` times the median (a blank frame, glare). Otherwise
        the threshold is the training data's."""
        if len(x) == 0:
            return FilterResult(np.zeros(0, bool), np.zeros(0), self.threshold)
        errors = reconstruction_errors(self.model, x)
        threshold = self.threshold
        if field_factor is not None and float(np.median(errors)) > self.threshold:
            threshold = field_factor * float(np.median(errors))
        return FilterResult(errors <= threshold, errors, threshold)


def reconstruction_errors(model: Any, x: np.ndarray) -> np.ndarray:
    recon = np.asarray(model.predict(x, batch_size=512, verbose=0))
    return np.mean((recon - x) ** 2, axis=tuple(range(1, x.ndim)))
