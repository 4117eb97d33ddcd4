"""What a compile checks and prepares before it trains: a mistake visible in its settings or data must not cost a
training run and a search, and a re-run into the same `--out` must not leave the previous run's artifacts beside
the new ones (a still validly signed `bundle.hgb` of another model next to a new `model.keras`).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hgen.compiler.errors import InvalidArgumentError, OutputFolderError

# Everything a compile writes into --out, and only that: `keys/` is kept (devices trust its key, so it is reused);
# any other file in the folder is the user's and is left alone.
OWNED_ARTIFACTS = ("search.jsonl", "plan.json", "model.keras", "model.int8.tflite", "report.md", "search.png",
                   "summary.json", "bundle", "bundle.hgb")


def prepare_out(out: str | Path) -> Path:
    """Create the output folder and prove it writable, as a typed error naming the path and the OS reason: the
    compile used to fail with a traceback at `mkdir` (an --out that is a file, under /proc) or when it first wrote."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"--out {out} exists and is not a folder; give a folder path")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise OutputFolderError(f"cannot create or write the output folder {out}: {exc.strerror or exc}") from None
    return out


def clear_previous(out: Path, inputs: tuple[str | None, ...] = ()) -> list[str]:
    """Delete the artifacts a previous compile left in `out` (deleted, not moved aside: a kept copy of a signed
    bundle is what this removes); returns their names. Called after the cheap checks, right before training, so a
    typo in the settings does not cost the previous results. An artifact that is one of this compile's `inputs`
    (`--model OUT/model.keras`: recompiling the last result) is kept; the compile overwrites it when it ends."""
    used = {Path(p).resolve() for p in inputs if p}
    removed = []
    for name in OWNED_ARTIFACTS:
        path = out / name
        if path.resolve() in used or any(path.resolve() in p.parents for p in used):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            else:
                continue
        except OSError as exc:
            raise OutputFolderError(f"cannot remove the previous run's {path}: {exc.strerror or exc}") from None
        removed.append(name)
    return removed


def check_signing_key(signing_key: str | None, bundle: bool) -> None:
    """A given --signing-key must be a readable Ed25519 private key now, not after the search (only with a bundle:
    nothing is signed without one)."""
    if signing_key is None or not bundle:
        return
    from hgen.runtime.errors import HGenError
    from hgen.runtime.signing import load_private_key

    try:
        load_private_key(Path(signing_key))
    except HGenError as error:
        raise InvalidArgumentError(f"--signing-key {signing_key}: {error}; give an Ed25519 private key (PEM; "
                                   "`hgen keys generate --out DIR` makes DIR/signing.key), or leave --signing-key "
                                   "out to make one in OUT/keys") from None


def check_int8_calibration(quantize: str, training_images: int) -> None:
    """int8 calibrates activation ranges on at least `MIN_REPRESENTATIVE` training images: with fewer, say so before
    training, not when the winner is lowered."""
    from hgen.compiler.lowering.tflite import MIN_REPRESENTATIVE

    if quantize == "int8" and training_images < MIN_REPRESENTATIVE:
        raise InvalidArgumentError(f"--quantize int8 calibrates on at least {MIN_REPRESENTATIVE} training images; the "
                                   f"training split has {training_images}: add images (or raise --limit), or use "
                                   "--quantize float")
