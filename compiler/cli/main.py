"""Entry point of `hgen`: builds the parser from the registered verbs and maps errors to exit codes."""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Sequence

from hgen.compiler.cli import VERBS
from hgen.compiler.errors import (CompilerError, DatasetFormatError, DatasetNotFoundError, DatasetSpecError,
                                  DatasetTooLargeError, DemandsNotMetError, EmptyDatasetError, InvalidArgumentError, LabelError,
                                  MissingImageError, OutputFolderError, UnknownNameError, UnreachableBudgetError,
                                  UnreadableImageError)
from hgen.runtime.errors import ConfigError, HGenError, InvalidInputError, UnknownChoiceError
from hgen.runtime.quiet import add_verbose_argument, quiet_unless_verbose

# Most specific first: the first matching class decides the exit code.
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (DatasetNotFoundError, 3),
    # the data set is there but unusable (empty, one class, bad labels, images it names missing): bad input
    (EmptyDatasetError, 2), (DatasetTooLargeError, 2), (DatasetFormatError, 2), (LabelError, 2), (MissingImageError, 2), (UnreadableImageError, 2),
    (DemandsNotMetError, 4),
    # found before any training: an --out that cannot be written, budgets no plan can meet (raise them)
    (OutputFolderError, 2), (UnreachableBudgetError, 2),
    (DatasetSpecError, 2),
    (UnknownNameError, 2),
    (UnknownChoiceError, 2),
    (InvalidArgumentError, 2),
    (InvalidInputError, 2),
    (ConfigError, 2),
    (CompilerError, 1),
    (HGenError, 1),
)


# The machine's storage failing mid-run (not a bug in hgen): said in one line, exit 1, no traceback.
STORAGE_ERRORS: dict[int, str] = {
    errno.ENOSPC: "free space on that disk (or point --out / TMPDIR elsewhere) and run the command again",
    errno.EDQUOT: "the disk quota is used up: free some of it and run the command again",
    errno.EROFS: "that file system is read-only: choose another --out",
    errno.EIO: "the disk reported an I/O error: check it (dmesg) before trusting anything written there",
}


def storage_problem(error: OSError) -> str | None:
    """The one-line message for a storage failure, or None for any other OSError (a bug: its traceback shows)."""
    hint = STORAGE_ERRORS.get(error.errno or 0)
    if hint is None:
        return None
    where = f" writing {error.filename}" if error.filename else ""
    return f"{error.strerror or error}{where}: {hint}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hgen", description="H-Gen: human-in-the-loop DNNs for the edge.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    for name, verb in VERBS.items():
        verb_parser = sub.add_parser(name, help=verb.help, description=verb.help)
        verb.add_arguments(verb_parser)
        verb_parser.set_defaults(_verb=verb)
    add_verbose_argument(parser)
    return parser


def exit_code_for(error: BaseException) -> int:
    for error_type, code in EXIT_CODES:
        if isinstance(error, error_type):
            return code
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    quiet_unless_verbose(argv)  # first: TensorFlow's logging is set up when it is imported
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "path", "") is None and len(extra) == 1 and not extra[0].startswith("-"):
        args.path = extra[0]  # `data inspect --out DIR PATH`: argparse had matched the optional PATH before --out
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        args._verb.run(args)
    except HGenError as error:
        print(f"hgen {args.verb}: error: {error}", file=sys.stderr)
        return exit_code_for(error)
    except KeyboardInterrupt:
        print(f"hgen {args.verb}: interrupted", file=sys.stderr)
        return 130
    except OSError as error:
        problem = storage_problem(error)
        if problem is None:
            raise
        print(f"hgen {args.verb}: error: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
