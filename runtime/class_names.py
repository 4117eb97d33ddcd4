"""One rule for class names people choose between: each names a button on the annotator page and a label in the
bundle, so none may be blank and no two may read the same (NFC, surrounding spaces ignored). Shared by the data
formats (hgen.compiler.data.formats.Catalog), `hgen lower --labels` and hub.yaml's `web.class_names`: hub.yaml
refused "cat" twice while a data set's "cat" and "cat " (or "café" written composed and decomposed) made two
classes nobody could tell apart.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable


def unclear_class_names(names: Iterable[str]) -> str | None:
    """Why these class names cannot be told apart (a blank one, one listed twice), or None when they can."""
    listed = [unicodedata.normalize("NFC", name).strip() for name in names]
    if "" in listed:
        return f"class {listed.index('')} has a blank name; name every class"
    twice = sorted({name for name in listed if listed.count(name) > 1})
    if twice:
        return f"{', '.join(map(repr, twice))} listed more than once; each class needs its own name"
    return None
