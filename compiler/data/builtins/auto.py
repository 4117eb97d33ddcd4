"""`auto`: the first installed of a preference order (FashionMNIST, else the bundled scikit-learn digits), so the
demo and quick runs work on a machine without FashionMNIST; the data set's name records which one was read."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from hgen.compiler.data.builtins import Builtin, Resolved, get_builtin, register
from hgen.compiler.errors import DatasetNotFoundError


class Auto(Builtin):
    name = "auto"
    title = "the first installed of FashionMNIST and the bundled digits"
    rank = 40
    prefers: ClassVar[tuple[str, ...]] = ("fashion-mnist", "digits")  # built-in names; the last must always load

    def resolve(self, root: Path | None, allow_download: bool) -> Resolved:
        """The first preference found; the note names the ones that were not (the demo prints it)."""
        missing: list[str] = []
        for index, name in enumerate(self.prefers):
            candidate = get_builtin(name)
            try:
                resolved = candidate.resolve(root, allow_download)
            except DatasetNotFoundError:
                if index == len(self.prefers) - 1:
                    raise
                missing.append(candidate.title)
                continue
            if not missing:
                return resolved
            return replace(resolved, note=f"{', '.join(missing)} not installed: using {resolved.data.title}")
        raise DatasetNotFoundError(f"built-in '{self.name}' has no preferences")  # only an empty `prefers` gets here


register(Auto())
