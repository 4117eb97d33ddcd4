"""`hgen-compile`: the same as `hgen compile`, as its own command."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from hgen.compiler.cli.main import main as hgen_main


def main(argv: Sequence[str] | None = None) -> int:
    return hgen_main(["compile", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
