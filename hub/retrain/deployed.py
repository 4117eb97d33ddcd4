"""The pair a retrain starts from must be one model: the Keras file, fed as the hub feeds it, answers like the signed
bundle, fed as the device feeds it.

Why: the retrain distils the Keras file on images x = raw / 255 (the data set and people's labels, `data.py`), judges
the result against that same file, and ships it under the bundle's input spec. A Keras file that is not the bundle's
model on those inputs was distilled at chance, judged against itself at chance and published to every device
(FashionMNIST: the bundle at 0.68, the published one at 0.09). Met by a review acting as a field team with its own
model: `retrain.models[].keras_model` naming the user's own file, whose Rescaling(1/255) expects raw 0..255 pixels
(hgen-compile adapts that layer in its copy, OUT/model.keras), another compile's model.keras, or a bundle made by
`hgen lower --scale 1` (x = raw pixels, which the retrain never feeds).
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hgen.hub.errors import RetrainError
from hgen.hub.retrain.records import VersionRecord
from hgen.runtime.bundle.manifest import Manifest
from hgen.runtime.errors import HGenError

log = logging.getLogger(__name__)

HUB_SCALE, HUB_OFFSET = 1.0 / 255.0, 0.0  # what the retrain feeds: `data.decode` and the compile's data sets
PROBE_IMAGES = 256
# Cohen's kappa of the top-1 answers (agreement beyond what two unrelated models share by chance) below which the
# Keras file is not the bundle's model. The same model agrees 1.00 in float; int8 LiteRT against float agreed
# 0.73-0.99 top-1 (`hgen.compiler.train`; 0.92-0.985 on compressed user models with BatchNorm), kappa about 0.7 and
# more; a raw-pixel file against its adapted bundle agreed 0.12-0.15.
MIN_KAPPA = 0.5
# ... unless they differ on only a few images: kappa falls to 0 when nearly every answer is one class (a rare-defect
# model), where int8 flipping 1 of 256 answers made a correct pair look unrelated (kappa 0.0). A few, not a share:
# a file at chance answering the majority class always still differs wherever the bundle finds a defect (13 of 256
# at 5 % defects), and the wrong files met differed on 85-88 %.
MAX_FLIPS, MAX_FLIP_SHARE = 2, 0.02
# Detectors (H-YOLO, H-Faster-RCNN) answer in grids with no one top-1 answer per image: the Pearson correlation of
# what differs between images (`image_correlation`) is compared instead. Measured on 256 test canvases, two seeds per
# kind (tools/bench/results/one_model_detectors.md): a Keras file against its own int8 LiteRT bundle 0.9992 and
# more; the same model one epoch further 0.970-0.984 (passes: a newer version of the devices' model); another seed's
# model of the same architecture and data 0.73-0.82 (the raw grids, layout included, 0.72-0.94). Set between them
# with room below the int8 pairs: those were two small zoo detectors, and a user's int8 detector may drift more
# (int8 classifiers' top-1 agreement went as low as 0.73), where refusing the right file would stop every retrain.
MIN_CORRELATION = 0.9
MIN_IMAGES_CENTRED = 8  # fewer images: the raw correlation (a mean over one image is that image)


@dataclass(frozen=True)
class Agreement:
    """How often the Keras file and the bundle give the same answer on the same images."""

    agreement: float
    kappa: float
    images: int

    @classmethod
    def of(cls, hub: np.ndarray, device: np.ndarray) -> Agreement:
        """Of two answer vectors on the same images."""
        return cls(float(np.mean(hub == device)), kappa(hub, device), len(hub))

    @property
    def disagrees(self) -> bool:
        """Not one model: little agreement beyond chance, on more than a few images (see MAX_FLIPS)."""
        flips = round((1.0 - self.agreement) * self.images)
        return self.kappa < MIN_KAPPA and flips > max(MAX_FLIPS, MAX_FLIP_SHARE * self.images)


class OneModel:
    """Checks Keras file and bundle pairs (`mismatch`), remembering those found to be one model until the Keras file
    changes: a retrain runs the check once per deployed version, not once per run."""

    def __init__(self, public_key: Callable[[], Any]) -> None:
        self._public_key = public_key
        self._agreeing: set[tuple[str, str, int]] = set()

    def problem(self, keras_path: str | Path, bundle_dir: str | Path, manifest: Manifest,
                images: np.ndarray) -> str | None:
        """`mismatch` of the pair, None at once for a pair found to be one model before."""
        if not Path(keras_path).is_file():  # deleted to free the disk: the configured file may stand in (`require`)
            return f"its Keras file {keras_path} does not exist"
        key = (str(keras_path), str(bundle_dir), Path(keras_path).stat().st_mtime_ns)
        if key in self._agreeing:
            return None
        found = mismatch(keras_path, bundle_dir, manifest, self._public_key(), images)
        if found is None:
            self._agreeing.add(key)
        return found

    def require(self, model_name: str, configured: Path, current: VersionRecord, manifest: Manifest,
                images: np.ndarray) -> None:
        """RetrainError unless the deployed version's Keras file is the model its bundle runs. The first version's
        kept copy of a wrong file is replaced by the configured file once hub.yaml names one that is: the copy
        outlives the configuration, so a corrected `keras_model` was otherwise never read again."""
        problem = self.problem(current.keras_path, current.bundle_dir, manifest, images)
        if problem is None:
            return
        kept = Path(current.keras_path)
        if current.retrain_id is None and configured.is_file() and configured.resolve() != kept.resolve():
            said = self.problem(configured, current.bundle_dir, manifest, images)  # names the file hub.yaml does
            if said is None:
                shutil.copy2(configured, kept)
                log.warning("%s %s: the Keras file kept for it (%s) was not its bundle's model; replaced by %s, "
                            "which is", model_name, current.version, kept, configured)
                return
            problem = said
        raise RetrainError(f"retrain.models {model_name!r} {current.version}: {problem}")


def mismatch(keras_path: str | Path, bundle_dir: str | Path, manifest: Manifest, public_key: Any,
             images: np.ndarray) -> str | None:
    """Why the Keras file and the bundle are not one model to a retrain (a sentence saying what to change), or None.
    Compared where the bundle has a LiteRT engine: a classifier's top-1 answers, a detector's grids."""
    spec = manifest.input
    if not (math.isclose(spec.scale, HUB_SCALE, rel_tol=1e-6) and math.isclose(spec.offset, HUB_OFFSET,
                                                                               abs_tol=1e-9)):
        return (f"the bundle {bundle_dir} feeds its model x = raw * {spec.scale:g} + {spec.offset:g} (a bundle made "
                f"by `hgen lower --scale/--offset`?), but a retrain trains on x = raw / 255, as hgen-compile's "
                "bundles feed it: the retrained model would answer at random on the device. Compile the model with "
                "hgen-compile (a Rescaling(1/255) right after the input is adapted), or lower it with the default "
                "--scale and --offset")
    if not any(entry.name == "litert" for entry in manifest.engines) or len(images) == 0:
        return None
    from hgen.compiler.models import load_model_file
    from hgen.compiler.train import predict_logits

    model = load_model_file(keras_path)
    x = np.asarray(images[:PROBE_IMAGES], np.float32)
    device = device_outputs(bundle_dir, public_key, x)
    if device is None:
        return None
    said = differs(predict_logits(model, x), device)
    if said is None:
        return None
    return (f"its Keras file {keras_path} does not answer like the bundle {bundle_dir} ({said}), so a retrain would "
            f"start from another model than the devices run. {_hint(model)}")


def differs(hub: np.ndarray, device: np.ndarray) -> str | None:
    """How the two models' outputs on the same images say they are not one: a classifier's scores [N, classes] by
    their top-1 answers (`Agreement`), a detector's grids by their correlation (MIN_CORRELATION)."""
    if hub.shape != device.shape:
        return f"outputs of shape {hub.shape[1:]} where the bundle's are {device.shape[1:]}"
    if hub.ndim == 2:
        found = Agreement.of(hub.argmax(axis=1), device.argmax(axis=1))
        if not found.disagrees:
            return None
        return f"the same answer on {found.agreement:.0%} of {found.images} test images, kappa {found.kappa:.2f}"
    r = image_correlation(hub, device) if len(hub) >= MIN_IMAGES_CENTRED else correlation(hub, device)
    if r >= MIN_CORRELATION:
        return None
    return (f"outputs correlated {r:.2f} over {len(hub)} test images, where one model, int8 included, correlates "
            f"{MIN_CORRELATION} and more")


def image_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """`correlation` of what differs between images: each output's mean over the images taken away, so the layout
    every detector shares (no object in most cells) does not count as agreement."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return correlation(a - a.mean(axis=0), b - b.mean(axis=0))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two output arrays, flattened (0 when either is constant)."""
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    if np.std(a) == 0.0 or np.std(b) == 0.0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def device_outputs(bundle_dir: str | Path, public_key: Any, x: np.ndarray) -> np.ndarray | None:
    """The bundle's LiteRT outputs on `x`; None when the engine cannot run here (said in the log: the check is
    skipped, the retrain goes on)."""
    from hgen.runtime.bundle import load_bundle

    try:
        with load_bundle(bundle_dir, trusted_public_key=public_key, engines=["litert"]) as loaded:
            return np.asarray(loaded.engine.run(x), np.float64)
    except HGenError as exc:
        log.warning("the bundle %s cannot run on the hub (%s): its Keras file is not compared with it", bundle_dir,
                    exc)
        return None


def kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two answer vectors: 1 identical, 0 no more alike than their answer frequencies make chance."""
    observed = float(np.mean(a == b))
    classes = np.union1d(a, b)
    chance = float(sum(np.mean(a == c) * np.mean(b == c) for c in classes))
    return 1.0 if chance >= 1.0 else (observed - chance) / (1.0 - chance)


def _hint(model: Any) -> str:
    """What to name instead: the compile's own model.keras, and why when the file still takes raw pixels."""
    from hgen.compiler.models.user_file import takes_raw_pixels

    wanted = "name the model.keras hgen-compile wrote next to the bundle (OUT/model.keras of the same compile)"
    if (layer := takes_raw_pixels(model)) is not None:
        return (f"Its layer '{layer}' expects 0..255 pixels: this is your own file, not what hgen-compile made of it "
                f"(hgen feeds x = raw / 255 and the compile adapted that layer in its copy); {wanted}")
    return wanted[0].upper() + wanted[1:]
