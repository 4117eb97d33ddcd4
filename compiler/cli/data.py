"""`hgen data SPEC`: resolve a dataset spec and show where it came from (or why it was not found).

`hgen data inspect PATH [--out DIR]`: counts per class and split, sizes, channels and unreadable files of a data set
(a user's folder, CSV manifest, YOLO or COCO set, or a built-in name), and a contact sheet PNG per class.
"""

from __future__ import annotations

import argparse
import sys

from hgen.compiler.cli import VERBS, Verb
from hgen.compiler.errors import InvalidArgumentError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hgen.compiler.data.formats import format_names  # cheap: the format modules import no TensorFlow

    parser.add_argument("spec", help="dataset spec, e.g. fashion-mnist:lowres, mnist:noise?variance=0.2, D5, digits, "
                        "a path (/data/cams, folder:/data/cams:lowres?size=64), or 'inspect' followed by one")
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
    from hgen.compiler.data import load_dataset, user_location
    from hgen.compiler.data.detection import is_detection_spec, load_detection_dataset
    from hgen.compiler.data.formats import get_format

    options = _image_options(args)
    boxes = args.format is not None and get_format(args.format).task == "detect"
    if user_location(args.spec, args.format) is not None and (is_detection_spec(args.spec) or boxes):
        data = load_detection_dataset(args.spec, seed=args.seed, format=args.format, image=options,
                                      limit=args.limit)
    elif user_location(args.spec, args.format) is not None:
        data = load_dataset(args.spec, seed=args.seed, format=args.format, image=options, limit=args.limit)
    else:
        data = load_dataset(args.spec, root=args.root, seed=args.seed, allow_download=args.download,
                            limit=args.limit)
    _say(f"dataset   {data.name}")
    _say(f"origin    {data.origin}" + (f" ({data.note})" if data.note else ""))
    _say(f"splits    train {len(data.train)}, validation {len(data.val)}, test {len(data.test)}")
    _say(f"input     {data.input_shape} float32 in [0, 1]")
    _say(f"classes   {', '.join(data.labels)}")
    report = getattr(data, "report", None)
    if report is not None and report.unreadable:
        _say(f"unreadable {len(report.unreadable)} file(s) skipped (see `hgen data inspect`)")
    if report is not None and report.dropped:
        _say(f"dropped   {len(report.dropped)} label(s) left out (see `hgen data inspect`)")


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
