"""The bundle manifest (`manifest.json`): what the device needs to verify, load and preprocess a model.

The manifest lists every file with its size and SHA-256; its signature therefore covers the whole bundle.
Schema changes bump `SCHEMA_VERSION`; a device refuses versions it does not know.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from hgen.runtime.bundle.errors import BundleFormatError, BundleTooNewError
from hgen.runtime.config import StrictModel, format_validation_error
from hgen.runtime.familiarity import Familiarity
from hgen.runtime.hdnn import DEFAULT_KIND, FusionLambda

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
SEMVER = r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$"
SAFE_FILE = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"  # a plain file name: no directories, no '..'
MODEL_NAME = SAFE_FILE  # a model's name names files on devices too (NAME-VERSION.hgb in the bundle store)
SEMVER_PREFIX = re.compile(r"^(\d+)\.(\d+)\.(\d+)")


def version_key(version: str) -> tuple[int, int, int]:
    """Semantic order of bundle versions (1.0.10 after 1.0.9); a version that is not semantic sorts first."""
    match = SEMVER_PREFIX.match(version)
    return (int(match[1]), int(match[2]), int(match[3])) if match else (-1, -1, -1)


class ModelId(StrictModel):
    name: str = Field(pattern=MODEL_NAME, title="model name")
    version: str = Field(pattern=SEMVER, title="semantic version")


class Quantization(StrictModel):
    """Affine int8 parameters of a tensor: `real = (q - zero_point) * scale`."""

    scale: float = Field(gt=0.0)
    zero_point: int = Field(ge=-128, le=127)


class EngineEntry(StrictModel):
    """One runnable artifact of the bundle and the engine that runs it."""

    name: str = Field(title="engine registry name (litert, tvm, ...)")
    file: str = Field(pattern=SAFE_FILE, title="file name inside the bundle")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    precision: Literal["float32", "int8"] = "float32"
    format: Literal["tflite", "shared-library", "object-archive"] = "tflite"
    machine: str | None = Field(default=None, title="ELF machine of a native library (x86_64, aarch64, arm)")
    input_quantization: Quantization | None = None
    output_quantization: Quantization | None = None


class Uint8Quantization(StrictModel):
    """Affine uint8 parameters of a browser model's tensor: `real = (q - zero_point) * scale`."""

    scale: float = Field(gt=0.0)
    zero_point: int = Field(ge=0, le=255)


class WebModelEntry(StrictModel):
    """A model file for the phone's browser (`android_bridge/`): fixed batch 1, float input and output, or (LiteRT.js
    for an int8 bundle) the int8 graph with uint8 input and output, which the page (de)quantises with these
    parameters. Hashed and signed like the engines' files; the Python runtime verifies it but never opens it."""

    runtime: Literal["onnxruntime-web", "litert-js"] = Field(title="the browser engine that runs it")
    file: str = Field(pattern=SAFE_FILE, title="file name inside the bundle")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    format: Literal["onnx", "tflite"] = "onnx"
    io_dtype: Literal["float32", "uint8"] = Field("float32", title="the model's input and output element type")
    input_quantization: Uint8Quantization | None = None
    output_quantization: Uint8Quantization | None = None

    @model_validator(mode="after")
    def _quantized_io(self) -> WebModelEntry:
        given = (self.input_quantization is not None, self.output_quantization is not None)
        if given != ((self.io_dtype == "uint8"),) * 2:
            raise ValueError("uint8 web models need input and output quantization, float ones none")
        return self


class InputSpec(StrictModel):
    """How to turn a raw image (uint8 HWC, RGB or L) into the model input: fit to the shape (`hgen.runtime.preprocess`),
    then `x = raw * scale + offset`. Bundles written before `resize` existed stretch, as their devices did."""

    shape: tuple[int, ...] = Field(min_length=2, title="full input shape including the fixed batch")
    dtype: Literal["float32"] = "float32"
    layout: Literal["NHWC", "NC"] = "NHWC"
    scale: float = 1.0 / 255.0
    offset: float = 0.0
    resize: Literal["stretch", "letterbox"] = Field("stretch", title="how a frame of another size is fitted: stretch "
                                                    "(aspect ratio ignored) or letterbox (fit and pad)")
    pad_value: int = Field(0, ge=0, le=255, title="letterbox padding (uint8)")

    @field_validator("shape")
    @classmethod
    def _positive(cls, shape: tuple[int, ...]) -> tuple[int, ...]:
        if any(dim <= 0 for dim in shape):
            raise ValueError("every dimension must be positive (fixed shapes only)")
        return shape


class Predicted(StrictModel):
    """Predicted accuracy, latency, storage, energy and labour (A/T/S/E/L) from the search."""

    accuracy: float | None = None
    latency_ms: float | None = None
    storage_mb: float | None = None
    energy_mj: float | None = None
    labour: float | None = None


class Manifest(StrictModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    model: ModelId
    created: str = Field(title="creation time, ISO 8601 UTC")
    kind: str = Field(default=DEFAULT_KIND, pattern=r"^[a-z][a-z0-9_]*$",
                      title="H-DNN kind (a registered hgen.runtime.hdnn kind: cnn, yolo)")
    target: str = Field(title="target profile name (x86_64, rpi4, android-arm64, armv7)")
    engines: tuple[EngineEntry, ...] = Field(min_length=1)
    web: tuple[WebModelEntry, ...] = Field(default=(), title="model files for phones' browsers (android_bridge)")
    input: InputSpec
    output_shape: tuple[int, ...] = Field(min_length=1)
    labels: tuple[str, ...] = Field(min_length=1)
    tau: float = Field(ge=0.0, le=1.0, title="confidence threshold below which a human is asked")
    temperature: float = Field(gt=0.0)
    fusion_lambda: FusionLambda = Field(alias="lambda")
    confidence: dict[str, float] = Field(default_factory=dict, title="confidence estimator parameters")
    predicted: Predicted = Field(default_factory=Predicted)
    plan: dict[str, Any] = Field(default_factory=dict, title="the search's compression plan")
    familiarity: Familiarity | None = Field(None, title="the training images' input statistics: a frame outside "
                                                        "them goes to people like one under tau (None: no check)")

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        from hgen.runtime.hdnn import output_channels

        expected = output_channels(self.kind, len(self.labels))
        if self.output_shape[-1] != expected:
            raise ValueError(f"{len(self.labels)} labels of kind {self.kind} need {expected} outputs, "
                             f"got {self.output_shape[-1]}")
        files = [entry.file for entry in self.files()]
        if len(set(files)) != len(files) or {MANIFEST_NAME, SIGNATURE_NAME} & set(files):
            raise ValueError("bundle files must be unique and not shadow the manifest or signature")
        return self

    def files(self) -> tuple[EngineEntry | WebModelEntry, ...]:
        """Every hashed file of the bundle: the engines' and the browser models'."""
        return self.engines + self.web

    def engine(self, name: str) -> EngineEntry:
        for entry in self.engines:
            if entry.name == name:
                return entry
        raise BundleFormatError(
            f"bundle has no '{name}' engine; it has: {', '.join(e.name for e in self.engines)}"
        )

    def to_bytes(self) -> bytes:
        """The exact bytes that are written and signed."""
        data = self.model_dump(mode="json", by_alias=True)
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def parse_manifest(data: bytes) -> Manifest:
    """Parse manifest bytes that were already verified against their signature."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleFormatError(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise BundleFormatError("manifest must be a JSON object")
    version = raw.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise BundleTooNewError(f"manifest schema_version {version}: the bundle was made by a newer hgen release than "
                                f"this one ({_release()}, which reads {SCHEMA_VERSION}); upgrade hgen here to load it")
    if version != SCHEMA_VERSION:
        raise BundleFormatError(f"unsupported manifest schema_version {version!r}; this runtime reads {SCHEMA_VERSION}")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        detail = format_validation_error(exc, model=Manifest)
        unknown = [".".join(map(str, error["loc"])) for error in exc.errors() if error["type"] == "extra_forbidden"]
    if unknown:  # a field added by a later release (or a typo in a hand-made manifest: the detail names the closest)
        raise BundleTooNewError(f"invalid manifest: fields this runtime does not know ({', '.join(unknown)}): the "
                                f"bundle was likely made by a newer hgen release than this one ({_release()}); "
                                f"upgrade hgen here to load it\n{detail}")
    raise BundleFormatError(f"invalid manifest:\n{detail}")


def _release() -> str:
    """This runtime's `hgen` release, for messages."""
    import importlib.metadata

    try:
        return f"hgen {importlib.metadata.version('hgen')}"
    except importlib.metadata.PackageNotFoundError:
        return "hgen, not installed"


def file_digest(path: Path) -> tuple[str, int]:
    """(SHA-256 hex, size) of a file, read in 1 MiB blocks (bundles and variant files can be large): what a manifest,
    a variant index and the hub's bundle records list."""
    digest, size = hashlib.sha256(), 0
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def sign_manifest(out_dir: str | Path, manifest: Manifest, signing_key: Any) -> None:
    """Write `manifest.json` and its signature; the manifest must already hash every file of the bundle.
    Here, not in the compiler, because the hub re-signs stored bundles (rollback, publish) without TensorFlow."""
    from hgen.runtime import signing

    out_dir = Path(out_dir)
    manifest_bytes = manifest.to_bytes()
    (out_dir / MANIFEST_NAME).write_bytes(manifest_bytes)
    (out_dir / SIGNATURE_NAME).write_bytes(signing.sign(manifest_bytes, signing.load_private_key(signing_key)))
