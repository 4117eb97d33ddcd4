"""Dataset spec strings: `base[:variant][?key=value&...]`, plus the paper's aliases D1..D5.

Examples: `fashion-mnist:lowres`, `mnist:noise?variance=0.2`, `digits`, `D5`, `auto:lowres` (FashionMNIST when
installed, else the bundled scikit-learn digits).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl

from hgen.compiler.errors import DatasetSpecError, UnknownNameError
from hgen.runtime.config import StrictModel, parse_config

PAPER_ALIASES = {
    "D1": "mnist:clean",
    "D2": "mnist:noise",
    "D3": "fashion-mnist:clean",
    "D4": "fashion-mnist:noise",
    "D5": "fashion-mnist:lowres",
}


CLASSIFY_LOADER = "hgen.compiler.data.load_dataset"
DETECT_LOADER = "hgen.compiler.data.detection.load_detection_dataset"


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed spec: base dataset, variant and its validated parameters."""

    base: str
    variant: str
    params: StrictModel
    options: tuple[tuple[str, str], ...] = ()  # a user data set's non-default image and format options

    def __str__(self) -> str:
        items = [*self.params.model_dump().items(), *self.options]
        pairs = "&".join(f"{k}={v}" for k, v in items)
        return f"{self.base}:{self.variant}" + (f"?{pairs}" if pairs else "")


def parse_spec(text: str, bases: Sequence[str]) -> DatasetSpec:
    """Parse and validate a spec; unknown bases, variants and parameters list the valid choices. `bases` are the
    names the calling loader reads: the registry's (`hgen.compiler.data.builtins.builtin_names()`) or the synthetic
    detection sets (`detection_names()`); a built-in of the other kind is named as such, not as unknown."""
    from hgen.compiler.data.challenges import VARIANTS

    head, _, query = text.strip().partition("?")
    head = PAPER_ALIASES.get(head, head)
    base, _, variant = head.partition(":")
    variant = variant or "clean"
    if base not in bases:
        raise not_among(base)
    chosen = VARIANTS.get(variant)
    try:
        pairs = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=True)) if query else {}
    except ValueError:
        raise DatasetSpecError(f"bad parameters in dataset spec '{text}': use key=value&key=value") from None
    params = parse_config(chosen.params, pairs, source=f"dataset spec '{text}' parameters", error=DatasetSpecError)
    return DatasetSpec(base, variant, params)


def not_among(base: str) -> DatasetSpecError | UnknownNameError:
    """Why a loader cannot read `base`: a built-in of the other task names the loader that reads it (one loader per
    task, while the CLIs take both); any other name is unknown, and the error lists every built-in name a CLI takes."""
    from hgen.compiler.data.builtins import BUILTINS, builtin_names, detection_bases, detection_names

    if base in detection_bases():
        return DatasetSpecError(f"'{base}' is a synthetic detection data set (boxes, not one label per image): "
                                f"load it with {DETECT_LOADER}")
    if base in BUILTINS:
        paired = BUILTINS.get(base).detection
        also = f" (its detection set is '{paired}')" if paired else ""
        return DatasetSpecError(f"'{base}' is a classification data set{also}: load it with {CLASSIFY_LOADER}")
    return UnknownNameError(f"unknown dataset '{base}'; valid choices: {', '.join(builtin_names())} "
                            f"(or an alias {', '.join(PAPER_ALIASES)}), or a detection set: "
                            f"{', '.join(detection_names())}")
