"""Pretrained weights files: found in the Keras cache (`$KERAS_HOME/models`, else `~/.keras/models`), or fetched there.

Never a silent fallback to random weights: a missing file (offline, or `download` off) is a `PretrainedWeightsError`
naming the file, where to put it and where it comes from, so a user on an air-gapped machine can copy it in.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hgen.compiler.errors import CompilerError

KERAS_MODELS_SUBDIR = "models"
MOBILENET_V2_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
MOBILENET_V2_SIDES = (96, 128, 160, 192, 224)


class PretrainedWeightsError(CompilerError):
    """Pretrained weights are unavailable or do not fit the model; names the file to provide."""


def keras_cache_dir() -> Path:
    """Keras' cache root, read at call time (`KERAS_HOME` wins, as in `keras.utils.get_file`)."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()


def cache_candidates(filename: str) -> list[Path]:
    """Where Keras may have put `filename`: its cache, or /tmp/.keras when the cache is not writable (as Keras)."""
    home = keras_cache_dir()
    roots = [home] if not home.exists() or os.access(home, os.W_OK) else [home, Path("/tmp/.keras")]
    return [root / KERAS_MODELS_SUBDIR / filename for root in roots]


def mobilenet_v2_file(alpha: float, input_shape: tuple[int, int, int]) -> str:
    """The no-top ImageNet file Keras applications would load: per alpha; 224 unless the input is a listed square."""
    if alpha not in MOBILENET_V2_ALPHAS:
        raise PretrainedWeightsError(f"ImageNet weights for mobilenet_v2 exist only for alpha in "
                                     f"{', '.join(map(str, MOBILENET_V2_ALPHAS))}, got {alpha}")
    if input_shape[2] != 3:
        raise PretrainedWeightsError(f"ImageNet weights need 3-channel (colour) input, got {input_shape[2]} "
                                     "channel(s); load the data set with `?channels=3`")
    h, w = input_shape[:2]
    side = h if h == w and h in MOBILENET_V2_SIDES else 224  # conv weights do not depend on the input size
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{side}_no_top.h5"


def _missing(filename: str, origin: str, cause: str) -> PretrainedWeightsError:
    target = cache_candidates(filename)[0]
    return PretrainedWeightsError(f"pretrained weights file '{filename}' is not available ({cause}); download "
                                  f"{origin} on a machine with network access and copy it to {target}")


def weights_file(filename: str, origin_dir: str, download: bool) -> Path:
    """The cached file, else (if `download`) fetched through Keras into its cache; else a typed error."""
    for path in cache_candidates(filename):
        if path.is_file():
            return path
    origin = origin_dir + filename
    if not download:
        raise _missing(filename, origin, "not in the Keras cache and downloading is off")
    import keras

    try:
        fetched = keras.utils.get_file(filename, origin, cache_subdir=KERAS_MODELS_SUBDIR,
                                       cache_dir=str(keras_cache_dir()))
    except Exception as exc:  # urllib and Keras raise many types (offline, proxy, HTTP errors)
        raise _missing(filename, origin, f"download failed: {exc}") from None
    return Path(fetched)


def load_weights_file(model: Any, path: Path) -> None:
    """Load a Keras-applications `.h5` weights file into `model`; a mismatched or corrupt file names itself."""
    try:
        model.load_weights(str(path))
    except Exception as exc:  # h5py and Keras raise many types for a bad file
        raise PretrainedWeightsError(f"cannot load pretrained weights {path} into '{model.name}': {exc}; "
                                     "delete the file to fetch it again") from None
