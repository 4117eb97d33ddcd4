"""`hgen lower`: a user's Keras model file -> signed bundle (directory, optionally packed), or an ONNX
file -> TVM library for a target. `hgen verify` checks a bundle as a device would, without running it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from hgen.compiler.cli import VERBS, Verb, fusion_lambda_arg
from hgen.compiler.errors import InvalidArgumentError
from hgen.runtime.hdnn import FUSION_LAMBDA_DEFAULT, FUSION_LAMBDA_TITLE


# The options of a Keras bundle (None on the command line: not given); an ONNX library takes none of them.
KERAS_DEFAULTS: dict[str, object] = {
    "key": None, "name": None, "version": "0.1.0", "labels": None, "quantize": "float", "representative": None,
    "representative_dataset": None, "engines": "litert,tvm", "scale": 1 / 255, "offset": 0.0, "tau": 0.5,
    "temperature": 1.0, "fusion_lambda": FUSION_LAMBDA_DEFAULT, "pack": False, "force": False,
}


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _labels(text: str) -> tuple[str, ...]:
    """`--labels`: comma-separated, or @FILE, one per line, so a class such as "x,y" can be named; NFC, as the data
    formats normalise class names (an "é" typed on one system and read from a folder on another are one label)."""
    import unicodedata

    from hgen.runtime.class_names import unclear_class_names

    if text.startswith("@"):
        path = Path(text[1:])
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidArgumentError(f"--labels {text}: cannot read {path} as UTF-8 text ({exc})") from None
        labels = tuple(line.strip() for line in lines if line.strip())
    else:
        labels = _csv(text)
    labels = tuple(unicodedata.normalize("NFC", label) for label in labels)
    if not labels:  # an empty @FILE: the bundle would silently be labelled 0..N-1
        raise InvalidArgumentError(f"--labels {text}: no label in it")
    problem = unclear_class_names(labels)
    if problem is not None:
        raise InvalidArgumentError(f"--labels: {problem}")
    return labels


def add_lower_arguments(parser: argparse.ArgumentParser) -> None:
    # Target and engine names come from their registries (cheap: no TVM or TensorFlow), so the help cannot go stale.
    from hgen.compiler.bundle.engines import BUNDLE_ENGINES
    from hgen.compiler.lowering.targets import TARGETS

    parser.add_argument("model", type=Path, help="Keras model file (.keras/.h5, logits out) or ONNX file (.onnx)")
    parser.add_argument("--out", type=Path, required=True, help="bundle directory (Keras) or library stem (ONNX)")
    parser.add_argument("--target", default="x86_64", help=f"target profile ({', '.join(TARGETS.names())})")
    parser.add_argument("--key", type=Path, help="Ed25519 signing key (hgen keys generate); required for Keras")
    parser.add_argument("--name", help="model name in the manifest (default: the file stem)")
    parser.add_argument("--version", help=f"semantic version of the model (default {KERAS_DEFAULTS['version']})")
    parser.add_argument("--labels", help="comma-separated class labels, or @FILE with one label per line (UTF-8; a "
                                          "label may then hold a comma) (default: 0..N-1)")
    parser.add_argument("--quantize", choices=["float", "int8"], help="default float")
    calibration = parser.add_mutually_exclusive_group()
    calibration.add_argument("--representative", type=Path, help=".npy of 100-500 normalised training inputs (int8)")
    calibration.add_argument("--representative-dataset", metavar="SPEC",
                             help="int8: calibrate on up to 500 images of this data set's training split, the same "
                                  "share of every class (a data set spec as hgen-compile --dataset takes)")
    parser.add_argument("--engines", help=f"comma list of {', '.join(BUNDLE_ENGINES.names())} "
                                          f"(default {KERAS_DEFAULTS['engines']})")
    parser.add_argument("--scale", type=float, help="input normalisation: x = raw * scale + offset (default 1/255)")
    parser.add_argument("--offset", type=float, help="default 0")
    parser.add_argument("--tau", type=float, help=f"confidence threshold (default {KERAS_DEFAULTS['tau']})")
    parser.add_argument("--temperature", type=float, help="default 1")
    parser.add_argument("--fusion-lambda", type=fusion_lambda_arg,
                        help=f"{FUSION_LAMBDA_TITLE} (default {FUSION_LAMBDA_DEFAULT})")
    parser.add_argument("--pack", action="store_true", help="also write the single-file archive <out>.hgb")
    parser.add_argument("--input-shape", help="ONNX only: fixed input shape, e.g. 1,28,28,1")
    parser.add_argument("--force", action="store_true", help="replace a non-empty bundle directory")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _refuse_keras_options(args: argparse.Namespace) -> None:
    """An ONNX file becomes an unsigned TVM library only: --quantize int8, --key, --labels, --pack ... given with it
    were dropped without a word (exit 0, a float library the user took for a signed int8 bundle)."""
    given = [_flag(dest) for dest in KERAS_DEFAULTS if getattr(args, dest) not in (None, False)]
    if given:
        raise InvalidArgumentError(f"{', '.join(given)} only apply to a Keras model's bundle; an ONNX file is lowered "
                                   "to a TVM library (--target, --input-shape): convert it to Keras for a bundle")


def _keras_args(args: argparse.Namespace) -> argparse.Namespace:
    """The Keras options with their defaults filled in; --input-shape (ONNX only) refused."""
    if args.input_shape is not None:
        raise InvalidArgumentError("--input-shape only applies to an ONNX file; a Keras model's input shape is its own "
                                   "(save it with a fixed one)")
    filled = dict(vars(args))
    filled.update({dest: default for dest, default in KERAS_DEFAULTS.items() if filled.get(dest) is None})
    return argparse.Namespace(**filled)


def _lower_onnx(args: argparse.Namespace) -> None:
    from hgen.compiler.lowering.onnx_io import lower_onnx

    _refuse_keras_options(args)

    shape = tuple(int(d) for d in _csv(args.input_shape)) if args.input_shape else None
    library = lower_onnx(args.model, args.target, args.out, input_shape=shape)
    print(f"{library.format} for {library.target} ({library.machine}): {library.path}")
    if library.message:
        print(library.message)


def _representative(args: argparse.Namespace) -> np.ndarray | None:
    """The int8 calibration images: a .npy as given, or a class-stratified pick of a data set's training split."""
    if args.representative:
        return _calibration_file(args.representative)
    if args.representative_dataset:
        from hgen.compiler.data import load_dataset
        from hgen.compiler.lowering.tflite import representative_sample

        train = load_dataset(args.representative_dataset, seed=0).train
        return representative_sample(train.x, train.y)
    return None


def _calibration_file(path: Path) -> np.ndarray:
    """A .npy of normalised model inputs: integer pixels are refused (they calibrated the int8 input scale to 1)."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidArgumentError(f"--representative {path}: not a readable .npy array ({exc})") from None
    if data.dtype.kind not in "f":
        raise InvalidArgumentError(f"--representative {path} holds {data.dtype} values; it needs the model's "
                                   "float inputs, normalised as the device will (x = raw * scale + offset)")
    return data


def _lower_keras(args: argparse.Namespace) -> None:
    from hgen.compiler.bundle import pack_bundle, write_bundle
    from hgen.compiler.bundle.names import check_model_name, model_name_from_file
    from hgen.compiler.models import check_lowerable, load_model_file
    from hgen.compiler.models.user_file import raw_pixel_input_for

    args = _keras_args(args)
    name = check_model_name(args.name, "--name") if args.name else model_name_from_file(args.model, say=print)
    given_labels = _labels(args.labels) if args.labels else None  # refused before any work, as the name
    if args.key is None:
        raise InvalidArgumentError("--key is required to sign the bundle (create one with: hgen keys generate)")
    model = load_model_file(args.model)
    check_lowerable(model, args.model)
    # A leading Rescaling(1/255), or Normalization adapted on raw pixels, adapted as hgen-compile does: it was fed
    # x = raw / 255 and answered at chance
    raw_pixel_input_for(model, args.model, args.scale, args.offset, say=print)
    classes = int(model.outputs[0].shape[-1])
    labels = given_labels or tuple(str(i) for i in range(classes))
    representative = _representative(args)
    info = write_bundle(
        args.out, model, name=name, version=args.version, target=args.target,
        labels=labels, input_spec={"scale": args.scale, "offset": args.offset}, tau=args.tau,
        temperature=args.temperature, fusion_lambda=args.fusion_lambda, representative_data=representative,
        engines=_csv(args.engines), quantize=args.quantize, signing_key=args.key, overwrite=args.force,
    )
    for entry in info.manifest.engines:
        print(f"{entry.name}: {entry.file} ({entry.size} bytes, {entry.precision}, {entry.format})")
    for message in info.messages:
        print(message)
    print(f"bundle: {info.path}")
    if args.pack:
        print(f"archive: {pack_bundle(info.path)}")


def run_lower(args: argparse.Namespace) -> None:
    if args.model.suffix.lower() == ".onnx":
        _lower_onnx(args)
    else:
        _lower_keras(args)


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="bundle directory or .hgb archive")
    parser.add_argument("--key", type=Path, required=True, help="trusted public key (signing.pub)")
    parser.add_argument("--target", help="refuse a bundle built for another target")


def run_verify(args: argparse.Namespace) -> None:
    import tempfile

    from hgen.runtime.bundle.loader import verify_archive, verify_directory
    from hgen.runtime.signing import load_public_key

    key = load_public_key(args.key)
    if args.bundle.is_dir():
        manifest = verify_directory(args.bundle, key, args.target)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            manifest = verify_archive(args.bundle, key, args.target, Path(tmp))
    print(f"verified: {manifest.model.name} {manifest.model.version} for {manifest.target}, "
          f"engines {', '.join(e.name for e in manifest.engines)}")


VERBS.add("lower", Verb("lower", "lower a Keras model to a signed bundle, or an ONNX model to a TVM library",
                        add_lower_arguments, run_lower))
VERBS.add("verify", Verb("verify", "verify a bundle's signature, target and file hashes", add_verify_arguments,
                         run_verify))
