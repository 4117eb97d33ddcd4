"""Write a signed bundle directory: lower the model, hash every file into the manifest, sign the manifest.

This is the last step of the compiler's search (`write_bundle`), and also what `hgen` users call directly.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hgen.compiler.bundle.engines import BUNDLE_ENGINES, EngineJob, lower_engines
from hgen.compiler.bundle.files import file_fields
from hgen.compiler.errors import CompilerError, InvalidArgumentError
from hgen.compiler.lowering.targets import get_target
from hgen.compiler.lowering.tflite import TFLiteModel, check_calibration_range, lower_tflite, precision_of
from hgen.compiler.lowering.web import WEB_RUNTIMES, WebModel, lower_web
from hgen.runtime import signing
from hgen.runtime.bundle.manifest import InputSpec, Manifest, sign_manifest
from hgen.runtime.config import parse_config
from hgen.runtime.familiarity import Familiarity

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class BundleInfo:
    """Where the bundle is, its manifest, and any notes (e.g. a cross target left unlinked)."""

    path: Path
    manifest: Manifest
    messages: tuple[str, ...] = ()


def _web_entry(runtime: str, model: WebModel) -> dict[str, Any]:
    path = model.path
    entry = {"runtime": runtime, **file_fields(path), "format": path.suffix.lstrip(".")}
    if model.io_dtype == "uint8":  # float entries stay as older runtimes read them
        entry.update(io_dtype="uint8", input_quantization=_uint8(model.input_quant),
                     output_quantization=_uint8(model.output_quant))
    return entry


def _uint8(quant: Any) -> dict[str, Any] | None:
    return None if quant is None else {"scale": quant.scale, "zero_point": quant.zero_point}


def _check_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise InvalidArgumentError(f"bundle directory {out_dir} is not empty; pass overwrite=True to replace it")


@contextlib.contextmanager
def _staged(out_dir: Path) -> Iterator[Path]:
    """A folder inside `out_dir` (the same file system, so every move is a rename) to write the bundle in; its files
    replace `out_dir`'s only once it is signed, and the previous bundle's other files go after that. A lowering that
    failed (a TVM op, a full disk) used to leave `out_dir` emptied: the previous bundle was gone."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for leftover in out_dir.glob(".staging-*"):  # a write killed mid-way (a crash, SIGKILL) left its folder
        shutil.rmtree(leftover, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))
    try:
        yield staging
        written = sorted(staging.iterdir(), key=lambda child: child.name.startswith("manifest."))  # manifest last
        for child in written:
            child.replace(out_dir / child.name)
        kept = {child.name for child in written}
        for child in out_dir.iterdir():  # the previous bundle's files this one lacks (a folder the user put there stays)
            if child.is_file() and child.name not in kept:
                child.unlink()
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _input_spec(spec: InputSpec | Mapping[str, Any] | None, shape: tuple[int, ...]) -> InputSpec:
    data = spec.model_dump() if isinstance(spec, InputSpec) else dict(spec or {})
    if "shape" in data and tuple(data["shape"]) != shape:
        raise InvalidArgumentError(f"input_spec shape {tuple(data['shape'])} != lowered model input {shape}")
    data["shape"] = shape
    data.setdefault("layout", "NC" if len(shape) == 2 else "NHWC")  # features (n,): NHWC would refuse every input
    return parse_config(InputSpec, data, source="input_spec", error=InvalidArgumentError)


def _scale_offset(spec: InputSpec | Mapping[str, Any] | None) -> tuple[float, float]:
    """The input normalisation the bundle will record (InputSpec's defaults where the spec leaves it out)."""
    data = spec.model_dump() if isinstance(spec, InputSpec) else dict(spec or {})
    fields = InputSpec.model_fields
    return float(data.get("scale", fields["scale"].default)), float(data.get("offset", fields["offset"].default))


def _web_models(web: Sequence[str], keras_model: keras.Model, tflite: TFLiteModel, out_dir: Path,
                data: np.ndarray | None) -> tuple[list[dict[str, Any]], list[str]]:
    """Each browser runtime's model and manifest entry; a model a runtime cannot take keeps its device bundle, and
    says so."""
    entries, messages = [], []
    for runtime in web:
        try:
            entries.append(_web_entry(runtime, lower_web(keras_model, tflite, out_dir, runtime, data)))
        except CompilerError as exc:
            messages.append(f"no {runtime} model for phones: {exc}")
    return entries, messages


def write_bundle(
    out_dir: str | Path,
    keras_model: keras.Model,
    *,
    name: str,
    version: str,
    kind: str = "cnn",
    target: str,
    labels: Sequence[str],
    input_spec: InputSpec | Mapping[str, Any] | None = None,
    tau: float,
    temperature: float,
    fusion_lambda: float,
    confidence_params: Mapping[str, float] | None = None,
    predicted_metrics: Mapping[str, float | None] | None = None,
    plan: Mapping[str, Any] | None = None,
    representative_data: np.ndarray | None = None,
    engines: Sequence[str] = ("litert",),
    web: Sequence[str] = ("onnxruntime-web",),
    quantize: str = "float",
    lowered: TFLiteModel | None = None,
    familiarity: Familiarity | None = None,
    signing_key: Any,
    overwrite: bool = False,
) -> BundleInfo:
    """Lower `keras_model` for `target`, write every engine's file, the manifest and its Ed25519 signature.

    `web` adds the model files phones' browsers run (android_bridge): "onnxruntime-web" (float ONNX, the default)
    and/or "litert-js" (.tflite: float, or int8 with uint8 I/O for an int8 bundle); pass () for a bundle no phone
    will use. `lowered`: `keras_model` already lowered at `quantize` (the compile's measured int8 model), so it is
    neither converted nor calibrated again. `familiarity`: the training images' input statistics
    (`hgen.runtime.familiarity`), so the device asks people about frames unlike them."""
    BUNDLE_ENGINES.check_choice(engines)
    WEB_RUNTIMES.check_choice(web, allow_none=True)  # none: a bundle no phone will use
    get_target(target)  # unknown target: typed error before any work
    precision = precision_of(quantize)
    key = signing.load_private_key(signing_key)
    final_dir = Path(out_dir)
    _check_dir(final_dir, overwrite)
    with _staged(final_dir) as out_dir:
        if representative_data is not None:  # a lazy data set view (hgen.compiler.data.lazy) becomes float32 here
            representative_data = np.asarray(representative_data, np.float32)
            check_calibration_range(representative_data, *_scale_offset(input_spec))
        if lowered is not None and lowered.precision != precision:
            raise InvalidArgumentError(f"the lowered model is {lowered.precision}, the bundle {precision}")
        tflite = lowered or lower_tflite(keras_model, quantize=quantize, representative_data=representative_data)
        tflite_path = tflite.save(out_dir / f"model.{precision}.tflite")
        lowered_engines = lower_engines(engines, EngineJob(tflite, tflite_path, target, out_dir))
        entries = [engine.entry for engine in lowered_engines]
        messages = [message for engine in lowered_engines for message in engine.messages]
        web_entries, web_messages = _web_models(web, keras_model, tflite, out_dir, representative_data)
        messages += web_messages
        if tflite_path.name not in {entry.file for entry in entries}:  # no engine runs the TFLite file itself
            tflite_path.unlink()

        manifest = parse_config(
            Manifest,
            {
                "model": {"name": name, "version": version},
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "kind": kind,
                "target": target,
                "engines": [entry.model_dump() for entry in entries],
                "web": web_entries,
                "input": _input_spec(input_spec, tflite.input_shape).model_dump(),
                "output_shape": tflite.output_shape,
                "labels": list(labels),
                "tau": tau,
                "temperature": temperature,
                "lambda": fusion_lambda,
                "confidence": dict(confidence_params or {}),
                "predicted": dict(predicted_metrics or {}),
                "plan": dict(plan or {}),
                "familiarity": None if familiarity is None else familiarity.model_dump(),
            },
            source="bundle manifest",
            error=InvalidArgumentError,
        )
        sign_manifest(out_dir, manifest, key)
    return BundleInfo(final_dir, manifest, tuple(messages))
