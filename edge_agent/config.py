"""Strict agent configuration (`hgen-agent run --config agent.yaml`): unknown keys rejected, errors by key path.

Every section has defaults that suit a Raspberry Pi with one camera; only `device_id` and `bundle` are required.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from hgen.edge_agent.errors import AgentConfigError
from hgen.edge_agent.sinks import SinkConfig
from hgen.runtime.config import StrictModel, backend_option_problems, load_config_file, parse_config
from hgen.runtime.familiarity import UNFAMILIAR_SHARE
from hgen.runtime.labour import MAX_OPERATIONS, MAX_PARTICIPANTS, operations_per_frame


class BundleConfig(StrictModel):
    path: Path = Field(title="Bundle directory or .hgb archive to start with")
    public_key: Path = Field(title="Trusted Ed25519 public key (PEM) that every bundle must be signed with")
    expected_target: str | None = Field(None, title="Refuse bundles built for another target (e.g. rpi4, x86_64)")
    engine: str | None = Field(None, title="Engine of the bundle to run (default: the bundle's first that runs on "
                                           "this device; engines for another machine or without their runtime "
                                           "are skipped)")
    engine_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, title="Per-engine options by registered engine name, each checked against that "
                                    "engine's options (below), e.g. {litert: {num_threads: 2}}")
    store_dir: Path = Field(Path("bundles"), title="Where downloaded bundles are kept (running, previous, staged) "
                            "and current.json records the running one")
    resume: bool = Field(True, title="Start from the bundle running when the agent last stopped (current.json), if "
                         "it descends from this `path`; False: always start from `path`")

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, engine: str | None) -> str | None:
        from hgen.runtime.engines import ENGINES

        return engine if engine is None else ENGINES.validate(engine)

    @field_validator("engine_options")
    @classmethod
    def _known_engines(cls, options: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """A misspelt engine (`litrt`) or option is refused here by key path, not ignored or found at load."""
        from hgen.runtime.engines import ENGINES

        problems = backend_option_problems(ENGINES, options, each_key=True)  # shapes come from the manifest
        if problems:
            raise ValueError("\n".join(f"bundle.engine_options.{line}" for line in problems))
        return options


class SourceConfig(StrictModel):
    kind: str = Field(
        title="Frame source kind, a registered one: video (file), images (folder), camera (index), url (rtsp/http), "
              "y4m (a YUV4MPEG2 file's planes converted by hgen.runtime.yuv's integer rule, the pixels a phone "
              "makes of the same frame)")
    uri: str = Field(title="Video or y4m file path, image folder, camera index (0) or V4L2 device path "
                           "(/dev/video0), or rtsp/http URL")
    fps_limit: float | None = Field(None, gt=0, title="Read at most this many frames per second")
    pacing: Literal["live", "all"] = Field(
        "all", title="live: behave like a camera, skipping (and counting) frames when the pipeline falls behind "
                     "the fps_limit schedule; all: process every frame, slowing down if needed")
    loop: bool = Field(False, title="Restart a video file / image folder at its end (demo loops)")
    max_frames: int | None = Field(None, ge=1, title="Stop after this many frames (tests, benchmarks)")
    prefetch: int = Field(4, ge=0, le=64, title="Frames decoded ahead on a reader thread, so decoding overlaps "
                                                "inference (0: decode on the pipeline thread)")
    reconnect_initial_s: float = Field(0.5, gt=0, title="First back-off after a camera/stream drops")
    reconnect_max_s: float = Field(30.0, gt=0, title="Back-off ceiling (doubles each failed attempt)")
    reconnect_attempts: int | None = Field(None, ge=0, title="Give up after this many failed reopen attempts "
                                                              "(None: keep trying for ever)")

    @field_validator("kind")
    @classmethod
    def _registered_kind(cls, kind: str) -> str:
        from hgen.edge_agent.sources import SOURCES  # the sources import this module

        return SOURCES.validate(kind)

    @field_validator("uri")
    @classmethod
    def _uri_fits_kind(cls, uri: str, info: ValidationInfo) -> str:
        """A uri its kind cannot read (a camera's `cam0`) is refused here, by key, so `hgen-agent check` fails
        on it; live sources are not opened by `check`, and `run` would only fail later, naming no key."""
        from hgen.edge_agent.sources import SOURCES

        kind = info.data.get("kind")  # absent when the kind itself was refused
        problem = SOURCES.get(kind).uri_problem(uri) if kind is not None else None
        if problem is not None:
            raise ValueError(problem)
        return uri


class GateConfig(StrictModel):
    tau: float | None = Field(None, ge=0.0, le=1.0, title="Confidence threshold override (default: the bundle's)")
    audit_share: float = Field(0.02, ge=0.0, le=1.0, title="Share of confident samples also sent to people")
    unfamiliar_share: float = Field(UNFAMILIAR_SHARE, ge=0.0, le=1.0, title="Share of confident frames unlike the "
                                    "training images (the bundle's familiarity ranges) sent to people; frames under "
                                    "tau always are. The hub's retrain.field.unfamiliar_share must match")
    min_escalation_interval_s: float = Field(0.0, ge=0.0, title="Minimum time between two samples sent to people")
    seed: int = Field(0, title="Seed of the audit and unfamiliar draws (reproducible runs)")


class BatchingConfig(StrictModel):
    size: int = Field(8, ge=1, le=1024, title="Samples per AnnotationRequest (pool size)")
    max_wait_s: float = Field(2.0, gt=0, title="Send a partial batch after this long")
    annotators: int | None = Field(None, ge=1, le=10, title="m, people per sample (default: the bundle's)")
    labour_budget: float | None = Field(None, gt=0, title="L_c, max sum of L0 = d*m per batch (None: unlimited)")
    labour_share: float | None = Field(
        None, gt=0, le=1, title="L (Eq. 13) the device may spend over the stream: sum of L0 <= share x 4 participants "
                                "x 3 operations per frame, as a token bucket refilled per frame and corrected by the "
                                "labour each reply reports (None: unlimited; the compile's labour demand)")
    labour_window_frames: int = Field(1000, ge=1, title="Bucket capacity, in frames of refill: how much unspent "
                                                        "labour a quiet period may bank for a later burst")

    @model_validator(mode="after")
    def _one_sample_fits(self) -> BatchingConfig:
        """A sample reserves the most its m people can spend (m x 3 operations): a bucket that can never hold that
        much would send nobody, for the whole stream, without a word."""
        if self.labour_share is None:
            return self
        people = self.annotators or MAX_PARTICIPANTS
        rate = operations_per_frame(self.labour_share)
        capacity = rate * self.labour_window_frames  # the LabourBucket's
        if capacity < people * MAX_OPERATIONS:
            frames = math.ceil(people * MAX_OPERATIONS / rate)
            raise ValueError(f"labour_share {self.labour_share:g} x labour_window_frames {self.labour_window_frames} "
                             f"banks at most {capacity:g} operations, less than one sample of {people} people can "
                             f"cost ({people * MAX_OPERATIONS:g}): raise labour_window_frames to at least {frames}")
        return self
    deadline_s: float = Field(600.0, gt=0, title="Hub deadline per request")
    patience_s: float = Field(60.0, gt=0, title="After this long without a reply the model's answer stands")
    aggregator: str = Field("", title="Hub aggregator (empty: the hub's default for the kind)")
    image_format: Literal["png", "jpeg"] = Field("png", title="How the frame is encoded for people")


class TlsConfig(StrictModel):
    ca_file: Path | None = Field(None, title="CA certificate (PEM) that signed the hub's / broker's certificate")
    cert_file: Path | None = Field(None, title="Client certificate (PEM) for mutual TLS")
    key_file: Path | None = Field(None, title="Client private key (PEM) for mutual TLS")

    def check_files(self) -> None:
        """Each file readable and PEM that TLS can load, named by its key: a missing `keys/device.key` (a path
        taken from the working directory, a kit without the CA) used to end in a traceback at connect."""
        import ssl

        for key in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, key)
            if path is not None and not path.is_file():
                raise AgentConfigError(f"hub.tls.{key}: {path} is not a readable file")
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
            if self.cert_file is not None:
                context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise AgentConfigError(f"hub.tls: {self.ca_file}, {self.cert_file}, {self.key_file} do not load as PEM "
                                   f"certificates and key: {exc}") from None


class HubConfig(StrictModel):
    url: str | None = Field(None, title="grpc://host:50051 or mqtt://host:1883 (grpcs:// / mqtts:// for TLS); "
                                         "None: run stand-alone with the model's answers only")
    tls: TlsConfig | None = Field(None, title="TLS settings (required by grpcs:// and mqtts://)")
    secret: SecretStr | None = Field(None, title="This device's secret from `hgen-hub add-device` (MQTT password, "
                                                 "gRPC bearer token); keep the config file mode 0600")
    prefix: str = Field("hgen/v1", title="MQTT topic prefix")
    session_expiry_s: int = Field(24 * 3600, ge=0, title="MQTT session expiry (broker keeps replies this long)")
    keepalive_s: int = Field(30, ge=5, title="MQTT keepalive")
    call_timeout_s: float = Field(700.0, gt=0, title="gRPC deadline of one Submit stream")
    resend_after_s: float = Field(30.0, gt=0, title="Resend samples still without a reply after this long")
    watch_updates: bool = Field(True, title="Follow model update notices and hot-swap bundles")
    bundle_url: str | None = Field(None, title="grpc://host:port to fetch bundles from when a notice has no "
                                                "fetch_uri (required for MQTT hubs that publish updates; grpcs:// "
                                                "needs hub.tls)")

    @field_validator("url", "bundle_url")
    @classmethod
    def _scheme(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from hgen.edge_agent.transports.base import parse_endpoint  # the transports import this module

        try:
            parse_endpoint(value)
        except AgentConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _tls_when_asked(self) -> HubConfig:
        """grpcs:// and mqtts:// need hub.tls: found here, not as a failed handshake or a refused update later."""
        from hgen.edge_agent.transports.base import parse_endpoint

        for key in ("url", "bundle_url"):
            value = getattr(self, key)
            if value is not None and self.tls is None and parse_endpoint(value).tls:
                raise ValueError(f"hub.{key} {value} uses TLS: set hub.tls (ca_file, optionally cert_file/key_file)")
        return self


class OutboxConfig(StrictModel):
    path: Path = Field(Path("outbox.sqlite"), title="SQLite (WAL) file of samples waiting for the hub")
    max_samples: int = Field(100_000, ge=1, title="Bound on stored samples")
    max_bytes: int = Field(1 << 30, gt=0, title="Bound on the bytes stored samples hold (images, model outputs, "
                           "metadata; 1 GiB: about 1,900 full-frame samples); the file adds little beyond it")
    overflow: Literal["drop_oldest", "drop_newest"] = Field(
        "drop_oldest", title="When full: drop the oldest stored sample, or refuse the new one (both counted)")


class SwapConfig(StrictModel):
    canary_frames: int = Field(8, ge=1, le=256, title="Recent frames kept to health-check a new bundle on")
    probation_frames: int = Field(30, ge=0, title="Frames after a switch during which an error rolls back")
    min_agreement: float = Field(0.0, ge=0.0, le=1.0, title="Required top-1 agreement with the running model "
                                                             "on the canary frames (0: only check outputs)")


class TelemetryConfig(StrictModel):
    status_interval_s: float = Field(10.0, gt=0, title="How often DeviceStatus is sent to the hub")
    prometheus_host: str = Field("127.0.0.1", title="Address of the Prometheus text endpoint")
    prometheus_port: int | None = Field(None, ge=0, le=65535, title="Port of /metrics (None: off, 0: any free)")
    latency_window: int = Field(1000, ge=10, title="Recent inferences the p50/p99 are computed over")


class PriorConfig(StrictModel):
    enabled: bool = Field(False, title="Re-weight class probabilities by the class mix the device sees (SMART) "
                                       "before the gate and the fusion (classification bundles only; off: "
                                       "bit-identical to no prior)")
    window: int = Field(200, ge=10, le=100_000, title="Trusted labels (confident answers, people's answers) per "
                                                     "estimate of the mix; also the change detector's window")
    threshold: float = Field(0.5, ge=0.0, le=2.0, title="L1 distance between two consecutive windows' class shares "
                                                        "that counts as a change of mix (0..2); a window closer "
                                                        "than this to the uniform mix leaves the model unchanged")
    smoothing: float = Field(0.1, gt=0.0, le=1.0, title="Weight of the uniform distribution mixed into the prior, "
                                                        "so every class keeps at least smoothing / classes")


class PowerConfig(StrictModel):
    kind: str = Field("sysfs", title="Battery reader, a registered one: sysfs (/sys/class/power_supply) or a "
                                     "replayed trace (JSON lines t, battery, charging)")
    path: Path | None = Field(None, title="sysfs: the power_supply folder (default /sys/class/power_supply); "
                                          "trace: the trace file")
    clock: Literal["time", "step"] = Field("time", title="trace: replay against the agent's clock, or one row "
                                                         "per selection (tests)")

    @field_validator("kind")
    @classmethod
    def _registered_kind(cls, kind: str) -> str:
        from hgen.edge_agent.adapt.power import POWER_SOURCES  # the readers import this module

        return POWER_SOURCES.validate(kind)


class AdaptConfig(StrictModel):
    variants: Path | None = Field(None, title="Variant set to choose from by context (AdaSpring): a folder (signed "
                                              "variants.json + member bundles) or its .hgv archive, unpacked into "
                                              "bundle.store_dir/variants; None: off, the bundle runs as is")
    power: PowerConfig = Field(default_factory=PowerConfig, title="Where the battery level is read")
    meminfo: Path = Field(Path("/proc/meminfo"), title="Where free memory (MemAvailable) is read")
    interval_s: float = Field(2.0, gt=0, title="How often the selector runs")
    margin: float = Field(0.05, ge=0, title="Hysteresis: a better option must beat the running one's objective "
                                            "(Eq. 1) by this much")
    dwell: int = Field(3, ge=1, title="Hysteresis: consecutive selections the same better option must win")
    min_switch_interval_s: float = Field(30.0, ge=0, title="At least this long between two variant swaps "
                                                           "(a broken constraint switches at once)")
    offline: Literal["stop_escalating", "keep_escalating"] = Field(
        "stop_escalating", title="Hub unreachable or its replies slower than max_reply_latency_s: stop sending "
                                 "to people (tau 0, no audits; the outbox stays bounded) or keep queueing")
    max_reply_latency_s: float = Field(60.0, gt=0, title="Replies slower than this count as the hub being away")
    max_hub_queue: int | None = Field(1000, ge=0, title="While the hub's queue (samples open for people, reported "
                                                        "in replies) is deeper than this, ask nobody (None: ignore)")


class AgentConfig(StrictModel):
    device_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=128,  # the hub's rule (hgen.hub.names)
                           title="Device id registered at the hub")
    bundle: BundleConfig = Field(title="Model bundle")
    source: SourceConfig = Field(title="Frame source")
    gate: GateConfig = Field(default_factory=GateConfig, title="Who goes to people")
    batching: BatchingConfig = Field(default_factory=BatchingConfig, title="Pool-based batching")
    hub: HubConfig = Field(default_factory=HubConfig, title="Annotation hub")
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, title="Durable outbox")
    sinks: tuple[SinkConfig, ...] = Field((), title="Where results go")
    swap: SwapConfig = Field(default_factory=SwapConfig, title="Hot swap")
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig, title="Telemetry")
    prior: PriorConfig = Field(default_factory=PriorConfig, title="Runtime class prior (SMART)")
    adapt: AdaptConfig = Field(default_factory=AdaptConfig, title="Variants chosen by context (AdaSpring)")


def parse_agent_config(data: Mapping[str, Any] | None, source: str = "agent config") -> AgentConfig:
    return parse_config(AgentConfig, data, source=source, error=AgentConfigError)


def load_agent_config(path: str | Path) -> AgentConfig:
    """Load agent.yaml; relative paths in it are resolved against the file's folder (so kits are relocatable)."""
    config = load_config_file(AgentConfig, path, error=AgentConfigError)
    return resolve_paths(config, Path(path).resolve().parent)


def _resolve(base: Path, value: Path | None) -> Path | None:
    return None if value is None or value.is_absolute() else base / value


def camera_index(uri: str) -> int | None:
    """The camera index a uri names, as `int()` reads it (' 0', '-1': OpenCV's first camera found), else None."""
    try:
        return int(uri)
    except ValueError:
        return None


def _is_relative_path(uri: str) -> bool:
    """A source's uri names a file or folder unless it is a URL (scheme://) or a camera index."""
    return not ("://" in uri or camera_index(uri) is not None or Path(uri).is_absolute())


def resolve_paths(config: AgentConfig, base: Path) -> AgentConfig:
    """Make every relative file path absolute against `base`."""
    bundle = config.bundle.model_copy(update={
        k: _resolve(base, getattr(config.bundle, k)) or getattr(config.bundle, k)
        for k in ("path", "public_key", "store_dir")})
    source = config.source
    if _is_relative_path(source.uri):
        source = source.model_copy(update={"uri": str(base / source.uri)})
    outbox = config.outbox.model_copy(update={"path": _resolve(base, config.outbox.path) or config.outbox.path})
    sinks = tuple(sink.resolved(base) for sink in config.sinks)
    power = config.adapt.power.model_copy(update={"path": _resolve(base, config.adapt.power.path)
                                                  or config.adapt.power.path})
    adapt = config.adapt.model_copy(update={"variants": _resolve(base, config.adapt.variants) or config.adapt.variants,
                                            "power": power})
    hub = config.hub
    if hub.tls is not None:  # kits write keys/device.pem: relative to agent.yaml, not to where the agent starts
        tls = hub.tls.model_copy(update={k: _resolve(base, getattr(hub.tls, k)) or getattr(hub.tls, k)
                                         for k in ("ca_file", "cert_file", "key_file")})
        hub = hub.model_copy(update={"tls": tls})
    return config.model_copy(update={"bundle": bundle, "source": source, "outbox": outbox, "sinks": sinks,
                                     "adapt": adapt, "hub": hub})
