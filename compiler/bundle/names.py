"""A bundle's model name from what a user gives: the name names files on devices and hubs (NAME-VERSION.hgb in a
bundle store, `retrain.models[].name` in hub.yaml), so it is letters, digits and . _ - only (the manifest's rule).

Why derive it from a model file's name rather than take the stem: a field team's `Mein Modell ü.keras` or `猫.keras`
compiled through the whole search and then failed writing the manifest ("model.name: String should match pattern");
a name given on purpose (`hgen lower --name`) is checked before any work instead, saying what is allowed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from pathlib import Path

from hgen.compiler.errors import InvalidArgumentError
from hgen.runtime.bundle.manifest import MODEL_NAME

FALLBACK = "model"  # a stem with no letter or digit hgen can keep (all CJK, Arabic ...)
ALLOWED = "letters a-z/A-Z, digits and . _ - (starting with a letter or digit)"
VALID = re.compile(MODEL_NAME.removesuffix("$") + r"\Z")  # `$` alone lets a trailing newline through


def model_name_from_file(path: str | Path, say: Callable[[str], None] | None = None) -> str:
    """The model name a model file gives: its stem with accents dropped (`Prüfung` -> `Prufung`) and every run of
    other characters turned into '-', or `model` when nothing is left; `say` is told when that is not the stem
    (hub.yaml's `retrain.models[].name` must be the bundle's)."""
    stem = Path(path).stem
    name = _derived(stem)
    if name != stem and say is not None:
        say(f"model name {name!r} (from {Path(path).name!r}: a model name is {ALLOWED})")
    return name


def _derived(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    ascii_only = "".join(c for c in decomposed if not unicodedata.combining(c))
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_only).lstrip("._-").rstrip("-")
    return name if VALID.match(name) else FALLBACK


def check_model_name(name: str, where: str) -> str:
    """`name` when a bundle can carry it, else InvalidArgumentError naming `where` and the rule (before lowering)."""
    if not VALID.match(name):
        raise InvalidArgumentError(f"{where} {name!r} cannot name a model: a model name names files on devices, "
                                   f"so it is {ALLOWED}; e.g. {_derived(name)!r}")
    return name
