"""Helpers for the agent's tests and benchmark: generated videos, signed test bundles, a restartable Mosquitto,
and a real hub with the simulated crowd. Heavy imports (TensorFlow, the hub) happen inside the functions that
need them, so importing this module stays device-safe.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

LABELS = tuple(str(i) for i in range(10))


def write_video(path: Path, frames: int, size: tuple[int, int] | None = None, fps: float = 30.0, seed: int = 0,
                images: np.ndarray | None = None) -> Path:
    """An MJPG .avi written with cv2.VideoWriter (a camera cannot run in CI; OpenCV reads it back the same way).

    With `images` in [0, 1], grey (N, H, W) or (N, H, W, 1) or RGB (N, H, W, 3), the video cycles through them at
    their own size unless `size` is given (e.g. digits); else random noise at `size` (default 28x28).
    """
    import cv2

    if size is None:
        size = (28, 28) if images is None else tuple(images.shape[1:3])  # type: ignore[assignment]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (size[1], size[0]))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write MJPG to {path}")
    rng = np.random.default_rng(seed)
    for i in range(frames):
        if images is not None:
            pixels = (np.clip(images[i % len(images)], 0, 1) * 255).astype(np.uint8)
            pixels = cv2.resize(pixels, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
        else:
            pixels = rng.integers(0, 256, size, dtype=np.uint8)
        writer.write(_bgr(cv2, pixels))
    writer.release()
    return path


def _bgr(cv2: Any, pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        return cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    return cv2.cvtColor(pixels.reshape(pixels.shape[:2]), cv2.COLOR_GRAY2BGR)


def digits_28(limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn digits, 8x8 scaled to 24x24 and padded to 28x28 in [0, 1] (no download)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.kron(digits.images, np.ones((3, 3))) / 16.0
    images = np.pad(images, ((0, 0), (2, 2), (2, 2))).astype(np.float32)
    labels = digits.target.astype(np.int64)
    return (images[:limit], labels[:limit]) if limit else (images, labels)


@dataclass(frozen=True)
class TestKeys:
    private_pem: Path
    public_pem: Path


def make_keys(folder: Path) -> TestKeys:
    from hgen.runtime import signing

    folder.mkdir(parents=True, exist_ok=True)
    key = signing.generate_private_key()
    private, public = folder / "signing.key", folder / "signing.pub"
    private.write_bytes(signing.private_key_pem(key))
    public.write_bytes(signing.public_key_pem(key.public_key()))
    return TestKeys(private, public)


def null_output_shape(kind: str, classes: int, grid: int = 4) -> tuple[int, ...]:
    """The output a `null` bundle of `kind` declares: logits (1, classes), or an H-YOLO grid (1, S, S, 5 + C).

    The null engine does not read the manifest: pass the grid as `{"null": {"output_shape": ...}}` engine options.
    """
    from hgen.runtime.hdnn import output_channels

    channels = output_channels(kind, classes)
    return (1, channels) if kind == "cnn" else (1, grid, grid, channels)


def null_bundle(out: Path, keys: TestKeys, *, version: str = "0.1.0", target: str = "x86_64", tau: float = 0.5,
                name: str = "null-net", classes: int = 10, kind: str = "cnn",
                familiarity: dict[str, Any] | None = None, foreign_first: bool = False,
                labels: Sequence[str] | None = None, resize: str = "stretch") -> Path:
    """A signed bundle for the `null` engine (no model file needed, deterministic logits): fast unit tests.
    `foreign_first`: a TVM library built for another machine is listed before it (a bundle made for several
    devices), which this host cannot run."""
    from hgen.runtime import signing
    from hgen.runtime.bundle.manifest import MANIFEST_NAME, SIGNATURE_NAME, Manifest

    out.mkdir(parents=True, exist_ok=True)
    model_file = out / "model.null"
    model_file.write_bytes(b"null engine: no weights\n")
    manifest = Manifest.model_validate({
        "model": {"name": name, "version": version}, "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "kind": kind, "target": target,
        "engines": [*_foreign_entries(out, foreign_first),
                    {"name": "null", "file": model_file.name, "size": model_file.stat().st_size,
                     "sha256": hashlib.sha256(model_file.read_bytes()).hexdigest()}],
        "input": {"shape": (1, 28, 28, 1), "scale": 1 / 255, "offset": 0.0, "resize": resize},
        "output_shape": null_output_shape(kind, classes),
        "labels": list(labels or LABELS[:classes]), "tau": tau, "temperature": 1.0, "lambda": 0.4,
        "confidence": {"m": 3.0}, "familiarity": familiarity})
    data = manifest.to_bytes()
    (out / MANIFEST_NAME).write_bytes(data)
    (out / SIGNATURE_NAME).write_bytes(signing.sign(data, signing.load_private_key(keys.private_pem)))
    return out


def _foreign_entries(out: Path, wanted: bool) -> list[dict[str, Any]]:
    if not wanted:
        return []
    from hgen.runtime.bundle.elf import host_machine

    library = out / "model.other.so"
    library.write_bytes(b"a TVM library for another machine\n")
    other = "aarch64" if host_machine() != "aarch64" else "x86_64"
    return [{"name": "tvm", "file": library.name, "size": library.stat().st_size, "format": "shared-library",
             "machine": other, "sha256": hashlib.sha256(library.read_bytes()).hexdigest()}]


class ResultCollector:
    """A callback sink keeping every result, with a condition to wait on (tests never sleep)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.results: list[Any] = []

    def __call__(self, result: Any) -> None:
        with self.cond:
            self.results.append(result)
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[list[Any]], bool], timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: predicate(self.results), timeout)

    def with_status(self, status: str) -> list[Any]:
        """Results whose status value is `status` ("pending", "fused", ...)."""
        with self.cond:
            return [r for r in self.results if r.status.value == status]

    def final_for(self, sample_ids: set[str], timeout: float) -> dict[str, Any]:
        """Wait until every sample in `sample_ids` has a final result; those results by sample id."""
        def ready() -> bool:
            return {r.sample_id for r in self.results if r.final} >= sample_ids

        with self.cond:
            assert self.cond.wait_for(ready, timeout), "the agent never settled its escalated samples"
            return {r.sample_id: r for r in self.results if r.final and r.sample_id in sample_ids}


def streaming_agent_config(folder: Path, bundle: Path, public_key: Path, video: Path, device: str, url: str,
                           secret: str, target: str = "x86_64") -> Any:
    """An agent that streams `video` in a loop (every frame, 20 fps), asks nobody (tau 0) and keeps its store and
    outbox in `folder/device`: a device whose only job is to take updates."""
    from hgen.edge_agent.config import parse_agent_config

    return parse_agent_config({
        "device_id": device,
        "bundle": {"path": str(bundle), "public_key": str(public_key), "expected_target": target,
                   "store_dir": str(folder / device / "store")},
        "source": {"kind": "video", "uri": str(video), "fps_limit": 20, "pacing": "all", "loop": True},
        "gate": {"tau": 0.0, "audit_share": 0.0},
        "hub": {"url": url, "secret": secret},
        "outbox": {"path": str(folder / device / "outbox.sqlite")},
    })


def wait_agent(agent: Any, predicate: Callable[[], bool], timeout: float) -> bool:
    """Wait on the agent's change condition (replies, timeouts, link state, swaps) until `predicate` holds."""
    with agent._changed:
        return agent._changed.wait_for(predicate, timeout)


# --- a restartable Mosquitto ------------------------------------------------------------------------------


@dataclass
class RestartableBroker:
    """Mosquitto on a fixed free port with persistence; `kill9()` then `start()` simulates a crash."""

    workdir: Path
    port: int = 0
    process: subprocess.Popen | None = None
    kills: int = 0
    access: Any = None  # hgen.hub.testing.services.BrokerAccessFiles: clients authenticate, as everywhere

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def hub_mqtt(self, **extra: object) -> dict[str, object]:
        return self.access.hub_mqtt("127.0.0.1", self.port, **extra)

    def add_account(self, username: str, topics: Sequence[str]) -> str:
        return self.access.add_account(username, topics, "127.0.0.1", self.port)

    def start(self) -> None:
        from hgen.hub.testing.services import (
            BROKER_DURABILITY,
            BrokerAccessFiles,
            _wait_for_line,
            free_port,
            mosquitto_binary,
        )

        self.port = self.port or free_port()
        self.access = self.access or BrokerAccessFiles.seed(self.workdir)
        conf = self.workdir / "mosquitto.conf"
        user = "user root\n" if os.geteuid() == 0 else ""
        conf.write_text(f"{user}listener {self.port} 127.0.0.1\n{self.access.conf_lines()}"
                        f"persistence_location {self.workdir}/\n{BROKER_DURABILITY}log_dest stderr\n"
                        f"log_type error\nlog_type warning\nlog_type notice\nlog_type information\n")
        self.process = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stderr=subprocess.PIPE, text=True)
        _wait_for_line(self.process, "running", 15.0)

    def kill9(self) -> None:
        from hgen.hub.testing.services import kill9

        assert self.process is not None
        kill9(self.process)
        self.kills += 1

    def stop(self) -> None:
        from hgen.hub.testing.services import stop_process

        if self.process is not None:
            stop_process(self.process)


@contextmanager
def restartable_broker() -> Iterator[RestartableBroker]:
    """Raises ServiceUnavailableError (tests skip on it) before anything is created when mosquitto is missing."""
    from hgen.hub.testing.services import mosquitto_binary

    mosquitto_binary()
    with tempfile.TemporaryDirectory(prefix="hgen-mqtt-") as tmp:
        broker = RestartableBroker(Path(tmp))
        broker.start()
        try:
            yield broker
        finally:
            broker.stop()


# --- a real hub with the simulated crowd ----------------------------------------------------------------


@dataclass
class RunningHub:
    """HubApp (gRPC, optionally MQTT) plus the simulated crowd answering through the annotator API."""

    app: Any
    crowd: Any
    grpc_url: str
    oracle: dict[str, int] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)  # device id -> secret issued at start

    def secret(self, device_id: str) -> str:
        return self.secrets[device_id]

    def stop(self) -> None:
        self.crowd.stop()
        self.app.stop()

    def pause_crowd(self) -> None:
        self.crowd.stop()

    def resume_crowd(self) -> None:
        from hgen.hub.testing.crowd import CrowdDriver

        self.crowd = CrowdDriver(self.crowd.api, self.crowd.crowd, self.crowd._truth).start()

    def hub_counts(self) -> tuple[int, int, int]:
        """(samples stored, replies stored, samples with more than one reply) in the knowledge base."""
        from sqlalchemy import func, select

        from hgen.hub.kb.models import Reply, Sample

        with self.app.service.kb.session() as s:
            samples = s.scalar(select(func.count()).select_from(Sample))
            replies = s.scalar(select(func.count()).select_from(Reply))
            multi = s.scalar(select(func.count()).select_from(
                select(Reply.sample_id).group_by(Reply.sample_id).having(func.count() > 1).subquery()))
        return int(samples or 0), int(replies or 0), int(multi or 0)

    def sample_ids(self) -> set[str]:
        from sqlalchemy import select

        from hgen.hub.kb.models import Sample

        with self.app.service.kb.session() as s:
            return set(s.scalars(select(Sample.id)))

    def publish_bundle(self, path: Path, name: str, version: str, device_ids: Sequence[str] = ()) -> Any:
        """Register a bundle for FetchBundle and announce it as the retrain worker does: WatchUpdates streams
        wake and, with MQTT on, `device_ids` get the retained notice."""
        return self.app.publisher().publish_file(path, name, version, b"", device_ids)


def start_hub(db: Path, devices: Sequence[str], *, grpc_port: int = 0, broker: Any = None,
              m: int = 3, accuracy: float = 1.0, answer: str = "second",
              overrides: dict[str, dict[str, Any]] | None = None) -> RunningHub:
    """Start a hub on loopback with the simulated crowd (labelled simulated) answering every task.

    `broker` (services.Broker or RestartableBroker) turns MQTT on with hub-managed access; every device in
    `devices` is enrolled and its secret kept in `RunningHub.secrets` (for the agent's `hub.secret`).

    Simulated people cannot see the frame; `answer` picks their "truth" from the model output the hub stored:
    "first" confirms the model's top-1, "second" names its runner-up (so fusion visibly changes answers).
    `overrides` are merged into the hub config's sections (e.g. {"grpc": {"tls": {...}}}).
    """
    from hgen.hub.app import HubApp
    from hgen.hub.broker_acl import device_registry
    from hgen.hub.config import parse_hub_config
    from hgen.hub.crowd import SimulatedCrowd
    from hgen.hub.testing.crowd import CrowdDriver
    from hgen.hub.testing.services import free_port
    from hgen.hub.transports.grpc_server import GrpcTransport

    data: dict[str, Any] = {"devices": list(devices), "knowledge_base": {"url": f"sqlite:///{db}"},
                            "grpc": {"port": grpc_port or free_port(), "reply_poll_s": 0.1}}
    if broker is not None:
        data["mqtt"] = broker.hub_mqtt(client_id=f"hub-{os.getpid()}-{threading.get_ident()}")
    for section, values in (overrides or {}).items():
        data[section] = {**data.get(section, {}), **values}
    app = HubApp(parse_hub_config(data)).start()
    registry = device_registry(app.config, app.service.kb)
    issued = {device: registry.add(device).secret for device in devices if not registry.is_active(device)}
    kb = app.service.kb
    rank = 1 if answer == "second" else 0
    crowd = CrowdDriver(app.service.annotators, SimulatedCrowd.uniform(m, accuracy, 10, seed=0),
                        lambda sample_id: ranked_class(kb, sample_id, rank)).start()
    scheme = "grpcs" if app.config.grpc.tls is not None else "grpc"
    port = app.transport(GrpcTransport).port
    return RunningHub(app, crowd, f"{scheme}://127.0.0.1:{port}", secrets=issued)


def enroll_in(db: Path, device_id: str) -> str:
    """Enrol a device in a hub database before any hub runs on it (the agent starts first); returns its secret."""
    from hgen.hub.devices import DeviceCredentials
    from hgen.hub.kb.store import KnowledgeBase

    kb = KnowledgeBase.open(f"sqlite:///{db}")
    try:
        return DeviceCredentials(kb).add(device_id).secret
    finally:
        kb.close()


def ranked_class(kb: Any, sample_id: str, rank: int) -> int:
    """The class the device's model ranked `rank`-th (0 = top-1) for a stored sample."""
    from hgen.hub.kb.models import Sample
    from hgen.protos import hub_pb2

    with kb.session() as s:
        row = s.get(Sample, sample_id)
        output = hub_pb2.ModelOutput.FromString(row.model_output) if row is not None else None
    if output is None or not output.class_probabilities:
        return 0
    return int(np.argsort(output.class_probabilities)[::-1][rank])


def relu_tflite(tensor_type: str = "FLOAT32", quant: tuple[float, int] | None = None) -> bytes:
    """A one-op (RELU on a 1x4 tensor) TFLite model written with LiteRT's own flatbuffer schema: a real model for
    the real interpreter without TensorFlow; `tensor_type` INT8/UINT8 with `quant` (scale, zero point)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.RELU
    code.version = 1
    tensors = []
    for buffer, name in enumerate((b"x", b"y"), start=1):
        tensor = schema.TensorT()
        tensor.shape, tensor.buffer, tensor.name = [1, 4], buffer, name
        tensor.type = getattr(schema.TensorType, tensor_type)
        if quant is not None:
            tensor.quantization = schema.QuantizationParametersT()
            tensor.quantization.scale, tensor.quantization.zeroPoint = [quant[0]], [quant[1]]
        tensors.append(tensor)
    relu = schema.OperatorT()
    relu.opcodeIndex, relu.inputs, relu.outputs = 0, [0], [1]
    graph = schema.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs, graph.operators = tensors, [0], [1], [relu]
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs = 3, [code], [graph]
    model.buffers = [schema.BufferT() for _ in range(3)]
    builder = flatbuffers.Builder(256)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
