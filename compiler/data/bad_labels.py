"""Images left out for their labels, under the unreadable-file policy of their images (`ImageOptions.on_unreadable`).

A detection format (`yolo`, `coco`, `voc`) does not refuse the whole set for one bad label: the image whose label file is
unreadable or holds a bad line (YOLO), or one of whose annotations has a bad box or an unknown category (COCO), is a
`BadLabels` record naming the first problem ("file:line: what is wrong"). The reader applies the policy before it
decodes anything: `skip` (default) leaves those images out and reports them (`LoadReport.bad_labels` and a warning
the compile prints), and is a LabelError when more than `max_unreadable_fraction` of the images considered have bad
labels (something systematic: pixel coordinates, a names list that does not match the indices); `error` is a
LabelError at the first one, as every bad label was before the policy.
"""

from __future__ import annotations

from dataclasses import dataclass

from hgen.compiler.data.formats import Catalog, Record
from hgen.compiler.data.images import ImageOptions
from hgen.compiler.errors import EmptyDatasetError, LabelError

SHOWN = 10  # problems named in an error message


@dataclass(frozen=True)
class BadLabels(Record):
    """An image whose labels cannot be used, and why (`problem`: "file:line: what is wrong").

    The whole image is left out, not only the bad box: a detector learns that everything outside an image's boxes is
    background, so an image trained without one of its objects teaches "no object here" where there is one, a wrong
    target no report would reveal; a lost image costs only a little data. A bad line is also rarely bad alone (pixel
    coordinates, a shifted class index, a truncated file), so the file's other lines are suspect too. Ultralytics
    does the same ("ignoring corrupt image/label"). The record stays in the catalog, so the split assignment and
    `limit` treat it as any image: fixing its label later moves no other image to another split.
    """

    problem: str = ""


def label_problem(record: Record) -> str | None:
    """Why `record`'s labels cannot be used, or None."""
    return record.problem if isinstance(record, BadLabels) else None


def leave_out_bad_labels(catalog: Catalog, order: list[int], options: ImageOptions) -> tuple[list[int], list[str]]:
    """The records of `order` whose labels are usable, and the problem of each one left out (see the module doc)."""
    if options.on_unreadable == "error":
        first = next((p for p in map(label_problem, catalog.records) if p is not None), None)
        if first is not None:
            raise LabelError(first)
        return order, []
    bad = sorted(i for i in order if label_problem(catalog.records[i]) is not None)  # named in the files' order
    problems = [label_problem(catalog.records[i]) or "" for i in bad]
    if bad and (len(bad) > options.max_unreadable_fraction * len(order) or len(bad) == len(order)):
        raise LabelError(
            f"{catalog.origin}: {len(bad)} of {len(order)} images have labels that cannot be used (over the "
            f"max_unreadable_fraction of {options.max_unreadable_fraction:g}: something systematic is wrong; fix "
            "them, or allow more with ?max_unreadable_fraction=... in the spec): " + "; ".join(problems[:SHOWN])
            + (" ..." if len(problems) > SHOWN else ""))
    left_out = set(bad)
    kept = [i for i in order if i not in left_out]
    if bad and not any(_has_box(catalog.records[i]) for i in kept):  # the format's own check counted these as boxes
        raise EmptyDatasetError(
            f"{catalog.origin}: no box is left once the {len(bad)} images whose labels cannot be used are left out "
            f"(every other image is background); a detector needs labelled objects: fix those labels, e.g. "
            f"{problems[0]}")
    return kept, problems


def _has_box(record: Record) -> bool:
    return record.boxes is not None and len(record.boxes) > 0


def bad_labels_warning(problems: list[str], files: int) -> tuple[str, ...]:
    """The warning the compile's log and `hgen data` print: how many images were left out, and the first reason."""
    if not problems:
        return ()
    return (f"{len(problems)} of {files} images left out because their labels cannot be used (`hgen data inspect` "
            f"lists them; fix the labels to train on them), e.g. {problems[0]}",)
