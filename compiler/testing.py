"""Fixtures that need TensorFlow: a briefly trained LeNet-5 and signed LiteRT bundles of it for the agent's tests and
benchmark. They live in the compiler package so the device package (`hgen.edge_agent`) never holds a Keras import.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Any

import numpy as np

from hgen.edge_agent.testing import LABELS, TestKeys, digits_28, make_keys


def train_lenet(limit: int = 1200, epochs: int = 3, seed: int = 0) -> Any:
    """LeNet-5 trained briefly on digits (TensorFlow: test fixtures only, never the agent)."""
    import keras

    from hgen.compiler.models import build_model

    keras.utils.set_random_seed(seed)
    images, labels = digits_28(limit)
    net = build_model("lenet5", (28, 28, 1), 10)
    net.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    net.fit(images[..., None], labels, epochs=epochs, batch_size=32, verbose=0)
    return net


def cached_litert_bundles(folder: Path) -> dict[str, Path]:
    """Bundles for the agent tests, built once per checkout (training takes ~10 s) and reused from `folder`:
    v1 and v2 (x86_64), `rpi4` (another target), `nan` (fails the health check), and the key pair."""
    names = {"v1": ("0.1.0", "x86_64"), "v2": ("0.2.0", "x86_64"), "rpi4": ("0.3.0", "rpi4"),
             "nan": ("0.4.0", "x86_64")}
    paths = {key: folder / f"{key}.hgb" for key in names}
    keys = TestKeys(folder / "keys" / "signing.key", folder / "keys" / "signing.pub")
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as lock:  # parallel test workers (pytest-xdist): one builds, the others wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not all(p.exists() for p in paths.values()) or not keys.public_pem.exists():
            keys = make_keys(folder / "keys")
            model = train_lenet()
            for key, (version, target) in names.items():
                net = nan_model(model) if key == "nan" else model
                built = litert_bundle(folder / key, net, keys, version=version, target=target)
                built.replace(paths[key])
    return {**paths, "public_key": keys.public_pem, "private_key": keys.private_pem}


def litert_bundle(out: Path, model: Any, keys: TestKeys, *, version: str = "0.1.0", target: str = "x86_64",
                  tau: float = 0.9, archive: bool = True) -> Path:
    """A real signed LiteRT bundle of `model` (as `compiler/compile.py::_write_bundle` writes them)."""
    from hgen.compiler.bundle import pack_bundle, write_bundle

    images, _ = digits_28(300)
    write_bundle(out, model, name="lenet5-digits", version=version, kind="cnn", target=target, labels=LABELS,
                 input_spec={"scale": 1 / 255, "offset": 0.0}, tau=tau, temperature=1.0, fusion_lambda=0.4,
                 confidence_params={"m": 3.0, "difficulty_coef_0": -1.0, "difficulty_coef_1": 1.0,
                                    "difficulty_coef_2": -1.0, "difficulty_intercept": -1.0},
                 representative_data=images[..., None], engines=("litert",), signing_key=keys.private_pem,
                 overwrite=True)
    return pack_bundle(out) if archive else out


def nan_model(model: Any) -> Any:
    """A copy of `model` whose last layer's weights are NaN: a validly signed bundle that fails a health check."""
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    last = clone.layers[-1]
    last.set_weights([np.full_like(w, np.nan) for w in last.get_weights()])
    return clone
