"""`hgen data SPEC`: resolve a dataset spec and show where it came from (or why it was not found); a detection set
(`digits-det`, a YOLO or COCO set) also shows its boxes.

`hgen data inspect PATH [--out DIR]`: counts per class and split, sizes, channels and unreadable files of a data set
(a user's folder, CSV manifest, YOLO or COCO set, or a built-in name), and a contact sheet PNG per class.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from hgen.compiler.cli import VERBS, Verb
from hgen.compiler.errors import InvalidArgumentError

if TYPE_CHECKING:
    from hgen.compiler.data import Dataset
    from hgen.compiler.data.detection import DetectionDataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hgen.compiler.data.formats import format_names  # cheap: the format modules import no TensorFlow

    parser.add_argument("spec", help="dataset spec, e.g. fashion-mnist:lowres, mnist:noise?variance=0.2, D5, digits, "
                        "digits-det, a path (/data/cams, folder:/data/cams:lowres?size=64), or 'inspect' followed by one")
    parser.add_argument("path", nargs="?", help="with 'inspect': the data set to inspect")
    parser.add_argument("--root", help="explicit dataset folder, tried first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--download", action="store_true", help="allow a network download when nothing is found")
    parser.add_argument("--format", help=f"force a format for a path ({', '.join(format_names())})")
    parser.add_argument("--size", help="model input size for image files, e.g. 96 or 64x96 (default 96x96)")
    parser.add_argument("--channels", type=int, choices=(1, 3), help="1 (grey) or 3 (RGB); default from the images")
    parser.add_argument("--resize", choices=("stretch", "letterbox"), help="resize mode (default stretch)")
    parser.add_argument("--limit", type=int, help="cap every split (quick looks)")
    parser.add_argument("--out", help="with 'inspect': folder for the contact sheets (one PNG per class)")


def _image_options(args: argparse.Namespace) -> dict[str, object]:
    given = {"size": args.size, "channels": args.channels, "resize": args.resize}
    return {k: v for k, v in given.items() if v is not None}


def run(args: argparse.Namespace) -> None:
    if args.spec == "inspect":
        _inspect(args)
        return
    if args.path is not None:
        raise InvalidArgumentError(f"unexpected argument '{args.path}' (only 'inspect' takes a path)")
    for line in _describe(_load(args)):
        _say(line)


def _load(args: argparse.Namespace) -> Dataset | DetectionDataset:
    """A detection set (a built-in `*-det` name, or a path in a detection format) goes to the detection loader, as
    `hgen compile` sends it; image options apply to a path only (a built-in has its own fixed size)."""
    from hgen.compiler.data import load_dataset, user_location
    from hgen.compiler.data.detection import is_detection_spec, load_detection_dataset
    from hgen.compiler.data.formats import get_format

    user = user_location(args.spec, args.format) is not None
    image = _image_options(args) if user else None
    boxes = args.format is not None and get_format(args.format).task == "detect"
    if is_detection_spec(args.spec) or (user and boxes):
        return load_detection_dataset(args.spec, root=args.root, seed=args.seed, allow_download=args.download,
                                      format=args.format, image=image, limit=args.limit)
    return load_dataset(args.spec, root=args.root, seed=args.seed, allow_download=args.download, format=args.format,
                        image=image, limit=args.limit)


def _describe(data: Dataset | DetectionDataset) -> list[str]:
    from hgen.compiler.data.detection import DetectionDataset

    lines = [f"dataset   {data.name}",
             f"origin    {data.origin}" + (f" ({data.note})" if data.note else ""),
             f"splits    train {len(data.train)}, validation {len(data.val)}, test {len(data.test)}"]
    if isinstance(data, DetectionDataset):
        lines.append(_boxes_line(data))
    lines += [f"input     {data.input_shape} float32 in [0, 1]", f"classes   {', '.join(data.labels)}"]
    report = data.report
    if report is not None and report.unreadable:
        lines.append(f"unreadable {len(report.unreadable)} file(s) skipped (see `hgen data inspect`)")
    if report is not None and report.dropped:
        lines.append(f"dropped   {len(report.dropped)} label(s) left out (see `hgen data inspect`)")
    if report is not None:
        lines += [f"warning   {line}" for line in report.warnings]
        lines += [f"warning   the compile refuses this: {line}" for line in report.empty]
    return lines


def _boxes_line(data: DetectionDataset) -> str:
    """Boxes per split, and how many one image holds: what a detector's targets look like at a glance."""
    parts = (("train", data.train), ("validation", data.val), ("test", data.test))
    per_image = [len(b) for _, part in parts for b in part.boxes]
    spread = (f"; {min(per_image)}..{max(per_image)} per image (mean {sum(per_image) / len(per_image):.2f})"
              if per_image else "")
    return "boxes     " + ", ".join(f"{name} {sum(len(b) for b in part.boxes)}" for name, part in parts) + spread


def _say(line: str) -> None:
    """Print a line whatever the terminal's encoding: a file name that is not valid UTF-8 (Python keeps its bytes
    as surrogates) is shown escaped instead of ending the command with a UnicodeEncodeError."""
    encoding = sys.stdout.encoding or "utf-8"
    print(line.encode(encoding, "backslashreplace").decode(encoding))


def _inspect(args: argparse.Namespace) -> None:
    from hgen.compiler.data.inspect import inspect_dataset

    if not args.path:
        raise InvalidArgumentError("hgen data inspect needs a PATH (or a dataset name)")
    result = inspect_dataset(args.path, out_dir=args.out, seed=args.seed, limit=args.limit, format=args.format,
                             image=_image_options(args))
    for line in result.lines():
        _say(line)


VERBS.add("data", Verb("data", "resolve a dataset spec and describe it; 'data inspect PATH' checks a data set",
                       add_arguments, run))
