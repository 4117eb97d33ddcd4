"""Strict hub configuration (`hgen-hub serve --config hub.yaml`): unknown keys rejected, errors by key path."""

from __future__ import annotations

import ipaddress
import logging
import socket
import warnings
from pathlib import Path
from typing import Any, Mapping

from pydantic import Field, PrivateAttr, SecretStr, ValidationInfo, field_validator, model_validator

from hgen.hub.aggregators import AGGREGATORS
from hgen.hub.errors import HubConfigError
from hgen.hub.names import refuse_bad_device_ids, refuse_unclear_class_names
from hgen.hub.transport_config import (  # noqa: F401 (callers import them from here)
    GrpcConfig,
    GrpcTlsConfig,
    MqttAccessConfig,
    MqttConfig,
    MqttTlsConfig,
)
from hgen.runtime.config import StrictModel, backend_option_problems, load_config_file, parse_config
from hgen.runtime.familiarity import UNFAMILIAR_SHARE
from hgen.runtime.hdnn import DEFAULT_KIND, KINDS, get_kind, kind_names

log = logging.getLogger(__name__)
DEFAULT_CLASSES = 10  # a hub with no readable model bundle: the built-in data sets' classes
# Old top-level hub.yaml keys that are now an aggregator's option: key -> (aggregator, option).
MOVED_AGGREGATOR_KEYS = {"dawid_skene_history": ("dawid_skene", "history")}


class HubConfigDeprecationWarning(DeprecationWarning):
    """A hub.yaml key that still works but has moved (also logged: Python hides DeprecationWarning from operators)."""


class KnowledgeBaseConfig(StrictModel):
    url: str = Field("sqlite:///hub.db", title="SQLAlchemy URL: sqlite:///path (WAL) or postgresql+psycopg://...")
    image_dir: Path | None = Field(None, title="Folder for images larger than inline_image_max_bytes "
                                               "(default: beside a SQLite file; a database server without it "
                                               "refuses such images, each on its own)")
    inline_image_max_bytes: int = Field(64 * 1024, ge=0, title="Images up to this size are stored in the database")
    migrate: bool = Field(True, title="Run the Alembic migrations to head at start-up")
    keep_unlabelled_images_days: float = Field(7.0, ge=0, title="The image of a sample that expired with no answer "
                                               "(no one labelled it) is removed this many days after it closed; "
                                               "its row and reply stay (0: keep them for ever)")
    keep_labelled_images: int = Field(0, ge=0, title="Per model, the images of the newest this many human labels "
                                      "that retraining reads are kept, and those of its older answered samples "
                                      "removed; rows and replies stay (0: keep them all). At least "
                                      "retrain.max_labels while retraining is enabled")

    @model_validator(mode="after")
    def _image_dir_beside_a_server(self) -> KnowledgeBaseConfig:
        """Said at start-up: without it an image over the inline limit is refused (each such sample, with its own
        reason; it used to fail its device's whole batch)."""
        if self.image_dir is None and not self.url.startswith("sqlite"):
            log.warning("knowledge_base.image_dir is not set: images over inline_image_max_bytes (%d) will be "
                        "refused; set it (shared between hubs), or raise the limit to keep every image in the "
                        "database", self.inline_image_max_bytes)
        return self


class LimitsConfig(StrictModel):
    max_pixels: int = Field(4096 * 4096, gt=0, title="Images with more pixels (height x width) are refused")
    max_batch: int = Field(1024, ge=1, title="Max samples in one AnnotationRequest")
    max_annotators: int = Field(10, ge=1, title="Max m a request may ask for")
    default_deadline_s: float = Field(600.0, gt=0, title="Deadline when a request carries none")
    max_deadline_s: float = Field(7 * 24 * 3600.0, gt=0, title="Later deadlines are clamped to this")
    default_labour_budget: float = Field(0.0, ge=0, title="Budget when a request carries 0 (0 = unlimited)")
    max_model_boxes: int = Field(1000, ge=1, title="Boxes a sample's model output may carry (the agent's detectors "
                                                   "keep at most 300); more: refused, INVALID_REQUEST")
    max_open_samples_per_device: int = Field(1000, ge=0, title="Samples one device may have waiting for people at "
                                             "once; a new one over it is refused for good (REJECTED, LABOUR_BUDGET: "
                                             "not sent again, the device keeps its model's answer) (0: no cap)")
    max_samples_per_device_per_hour: int = Field(0, ge=0, title="New samples one device may store in any hour; "
                                                 "more are refused (REJECTED, LABOUR_BUDGET) (0: no cap)")
    max_image_bytes_per_device_per_hour: int = Field(1 << 30, ge=0, title="Image bytes one device may store in "
                                                     "any hour, shared by every hub process on the knowledge base; "
                                                     "a sample over it is refused (REJECTED, TOO_LARGE) (0: no cap)")


MIN_SECRET_CHARS = {"secret_key": 32, "metrics_token": 16}  # web secrets shorter than this are refused
MIN_DISTINCT_CHARS = 8  # generated secrets have many more (token_hex(16): about 14 of 16), "k" * 32 has 1
GENERATE_SECRET = "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"


def _random_looking(secret: str) -> bool:
    """The documented placeholder ("replace with 32 or more random characters") and other typed phrases were
    accepted: a signed session cookie was forged on the 4th guess. Generated secrets have no spaces and many
    different characters."""
    return not any(c.isspace() for c in secret) and len(set(secret)) >= MIN_DISTINCT_CHARS


class WebConfig(StrictModel):
    """The annotator / operator web UI (hub/web). Off unless enabled; then a secret key is mandatory."""

    enabled: bool = Field(False, title="Serve the annotator and operator web UI")
    host: str = Field("127.0.0.1", title="Address to bind (put a TLS-terminating proxy in front for remote people)")
    port: int = Field(8080, ge=0, le=65535, title="Port to bind (0 = any free port)")
    secret_key: SecretStr | None = Field(None, title="Signs session cookies; at least 32 characters, no default")
    session_max_age_s: int = Field(8 * 3600, ge=60, title="A session older than this must log in again")
    login_max_failures: int = Field(5, ge=1, title="Failed logins per user and address before a lock-out")
    login_account_max_failures: int = Field(20, ge=1, title="Failed logins per user from all addresses together "
                                                            "before that user's logins are slowed by login_slow_s "
                                                            "(never locked out: others cannot lock a person out)")
    login_global_budget: int = Field(200, ge=1, title="Failed logins (all users, all addresses) per window before "
                                                      "every login attempt is slowed down (never locked out)")
    login_slow_s: float = Field(1.0, ge=0.0, le=30.0, title="Delay added to each login while the global budget "
                                                            "is spent")
    login_window_s: float = Field(300.0, gt=0, title="Window (and lock-out length) of the login rate limit")
    login_concurrent_hashes: int = Field(2, ge=1, le=64, title="Password checks run at once (16 MiB each); a "
                                         "login waits up to 0.5 s for one, then is refused (429)")
    max_connections: int = Field(128, ge=1, title="Open connections the web server holds at once (each a thread "
                                 "and a file); more are answered 503 and closed")
    max_connections_per_address: int = Field(16, ge=1, title="Open connections from one client address (trusted "
                                             "proxies excepted); more are answered 503 and closed")
    read_timeout_s: float = Field(30.0, gt=0, le=600, title="A connection that sends nothing for this long "
                                  "(mid-request, or idle between requests) is closed")
    trusted_proxies: tuple[str, ...] = Field((), title="Reverse proxies (IP or CIDR) whose X-Forwarded-For names "
                                                       "the client; empty: the peer address is the client")
    public_url: str | None = Field(None, pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$", title="Address people "
                                   "reach the UI at, used in invite links (default: the bound host and port)")
    invite_ttl_s: int = Field(7 * 24 * 3600, ge=60, title="How long an invite token stays valid")
    class_names: tuple[str, ...] = Field((), title="Class names shown to annotators (default: the first retrained "
                                                   "model's bundle labels, else 0..num_classes-1)")
    secure_cookies: bool | None = Field(None, title="Mark cookies Secure, so a browser never sends them over plain "
                                                    "HTTP (unset: when public_url is https://)")
    metrics_token: SecretStr | None = Field(None, title="Bearer token a Prometheus scraper sends for GET /metrics "
                                                        "(this process's counters); unset: /metrics is not served")

    def bound_url(self) -> str:
        """http://host:port as configured, a wildcard host named by this machine's name: where invite links point
        without `public_url` (the web server's own `url` once it runs; the CLI has only the config)."""
        host = self.host.strip("[]")
        host = socket.gethostname() if host in ("0.0.0.0", "::", "") else f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def cookies_secure(self) -> bool:
        """`secure_cookies`, or from `public_url`: a hub behind an HTTPS proxy left at the old default of False
        let a browser send its session cookie to any plain-HTTP address of the hub."""
        if self.secure_cookies is not None:
            return self.secure_cookies
        return (self.public_url or "").startswith("https://")

    @model_validator(mode="after")
    def _secret_when_enabled(self) -> WebConfig:
        if self.enabled and self.secret_key is None:
            raise ValueError("web.secret_key is required when the web UI is enabled (no default secret)")
        return self

    @field_validator("secret_key", "metrics_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        shortest = MIN_SECRET_CHARS[str(info.field_name)]
        if value is not None and len(value.get_secret_value()) < shortest:
            raise ValueError(f"web.{info.field_name} must be at least {shortest} characters")
        if value is not None and info.field_name == "secret_key" and not _random_looking(value.get_secret_value()):
            raise ValueError(f"web.secret_key looks typed, not generated (spaces, or under {MIN_DISTINCT_CHARS} "
                             "different characters): whoever guesses it can sign an operator's session; generate "
                             f"one: {GENERATE_SECRET}")
        return value

    @field_validator("class_names")
    @classmethod
    def _distinct_names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        refuse_unclear_class_names(names)
        return names

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            ipaddress.ip_network(item, strict=False)  # ValueError names the bad entry
        return value


class TasksConfig(StrictModel):
    """How long a person may hold a task and how many at once (hoarding would starve everyone else)."""

    assignment_timeout_s: float = Field(900.0, gt=0, title="A task not answered within this long goes back to "
                                                           "the queue (the late answer is refused)")
    max_open_per_annotator: int = Field(1, ge=1, le=100, title="Open tasks one person may hold at once, across "
                                                               "all their sessions")
    min_time_to_answer_s: float = Field(30.0, ge=0, title="A person is handed a task only while its sample's "
                                                          "deadline is at least this far off, or half the deadline "
                                                          "of a device that waits less than twice this (closer, it "
                                                          "could close before they answer; 0: up to the deadline)")


class GoldConfig(StrictModel):
    """Gold tasks: samples with a known answer mixed into each annotator's stream to rate them."""

    share: float = Field(0.05, ge=0.05, le=0.5, title="Share of an annotator's tasks that are gold (>= 5%)")
    min_answers: int = Field(5, ge=1, title="Gold tasks answered or given back before an annotator can be paused")
    pause_below: float = Field(0.6, ge=0.0, le=1.0, title="Pause an annotator whose gold accuracy falls below this")


class ModelConfig(StrictModel):
    """One deployed model the hub retrains: where its current model and original data are, who runs it."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", title="Model (bundle) name, as devices report it")
    keras_model: Path = Field(title="The deployed model as a Keras file: the model.keras hgen-compile wrote next to "
                              "the bundle (logits out), not your own file it started from; a retrain refuses a file "
                              "that does not answer like the bundle")
    bundle: Path = Field(title="The deployed signed bundle directory (its manifest gives plan, tau, T, version)")
    dataset: str = Field("fashion-mnist:lowres", title="Original training data (compiler dataset spec)")
    dataset_limit: int | None = Field(None, ge=50, title="Cap on each original split (small hubs, tests)")
    devices: dict[str, str] = Field(default_factory=dict, title="device id -> target the device runs (x86_64, rpi4...)")
    threshold: int = Field(  # type: ignore[assignment]  # None is replaced by the kind's default before validation
        None, ge=1, title="New human-labelled samples that trigger a retrain (default per kind, the paper's: 200 for "
                          "cnn, 1000 for yolo)")
    kind: str = Field(DEFAULT_KIND, title="H-DNN kind, a registered one: cnn (classification), yolo (detection)")
    compile_config: Path | None = Field(None, title="hgen-compile settings (YAML) the model was compiled with: a "
                                                    "retrain with re-search runs that search again (cnn only)")
    accuracy_demand: float | None = Field(
        None, ge=0.0, le=1.0, title="The accuracy demand A (Eq. 14) the H-DNN must keep with people: a retrain may "
                                    "lower the expected fused accuracy down to it, e.g. by sending fewer samples to "
                                    "people (None: the compile_config's demand, else not below the current model)")
    labour_demand: float | None = Field(
        None, ge=0.0, le=1.0, title="The labour demand L (Eq. 13) a retrain re-chooses tau for on the field's labels "
                                    "(retrain.field; None: the compile_config's demand, else the deployed tau stays)")

    @model_validator(mode="before")
    @classmethod
    def _threshold_of_kind(cls, data: Any) -> Any:
        """An unset threshold is the paper's for the kind: detection labels are cheaper per bit, so more are needed."""
        if isinstance(data, Mapping) and data.get("threshold") is None:
            kind = data.get("kind", DEFAULT_KIND)
            name = kind if isinstance(kind, str) and kind in kind_names() else DEFAULT_KIND  # a bad kind: refused below
            data = {**data, "threshold": get_kind(name).retrain_threshold}
        return data

    @field_validator("kind")
    @classmethod
    def _registered_kind(cls, kind: str) -> str:
        return KINDS.validate(kind)

    @field_validator("devices")
    @classmethod
    def _enrollable_devices(cls, devices: dict[str, str]) -> dict[str, str]:
        refuse_bad_device_ids(devices)
        return devices


class FieldConfig(StrictModel):
    """Learning a field unlike the training data (hub/retrain/field.py): held-out human labels, weighted so audited
    confident frames stand for all the confident frames people never see, re-fit the gate and judge the retrain."""

    recalibrate: bool = Field(True, title="Re-fit the temperature and re-choose tau (for the labour demand) on "
                                          "held-out field labels")
    audit_share: float = Field(0.02, gt=0.0, le=1.0, title="The devices' audit share (gate.audit_share): an "
                                                          "audited confident frame stands for 1 / audit_share frames")
    unfamiliar_share: float = Field(UNFAMILIAR_SHARE, gt=0.0, le=1.0, title="The devices' share of confident "
                                    "frames unlike the training images sent to people (gate.unfamiliar_share): "
                                    "such a frame stands for 1 / unfamiliar_share frames")
    min_samples: int = Field(100, ge=1, title="Held-out field labels needed to re-fit and judge on the field (fewer: "
                                             "the deployed gate stays, the test split judges)")
    keep_fused: bool = Field(False, title="tau must also keep the deployed model's expected accuracy with people on "
                                          "the field (False: the most accurate tau within the labour demand, the "
                                          "compile's rule; the acceptance check still guards the accuracy demand)")
    labour_margin: float = Field(0.9, gt=0.0, le=1.0, title="tau is chosen for this share of the labour demand (the "
                                                            "field estimate is from a few hundred labels)")
    labour_confidence: float = Field(0.8, ge=0.0, lt=1.0, title="tau's labour is judged by its one-sided upper "
                                                             "bound at this confidence (0: the estimate itself); "
                                                             "a few audited frames stand for most of the field")
    trade: float = Field(0.02, ge=0.0, le=0.2, title="Original test accuracy a retrain may lose for at least as much "
                                                     "gained on held-out field labels")
    style_share: float = Field(0.5, ge=0.0, le=1.0, title="Share of the original training samples rendered in the "
                               "field's style (its added sensor noise and tone curve per channel, estimated from "
                               "the human-labelled field images) for each retrain; 0: off (hub/retrain/style.py)")
    style_min_images: int = Field(50, ge=2, title="Human-labelled field images needed to estimate the field's style")
    style_min_unfamiliar: float = Field(0.5, ge=0.0, le=1.0, title="Render only when at least this share of the "
                                        "human-labelled field images is outside the original training images' "
                                        "familiarity ranges (a field like the training data is left as it is)")
    filter_factor: float = Field(3.0, ge=1.0, title="When most human-labelled samples are unlike the training "
                                                   "data (a shifted field, not junk), the filter leaves out only "
                                                   "those above this many times the median error")


class RetrainConfig(StrictModel):
    """The closed loop: filter, enhancement distillation, acceptance, re-lowering and publishing."""

    enabled: bool = Field(False, title="Run the retrain worker (threshold triggers and on-demand retrains)")
    store_dir: Path | None = Field(None, title="Where new model versions and bundles are written")
    signing_key: Path | None = Field(None, title="Ed25519 private key (PEM) that signs new bundles")
    models: tuple[ModelConfig, ...] = Field((), title="Models the hub retrains")
    holdout_share: float = Field(0.2, gt=0.0, lt=1.0, title="Share of human-labelled samples kept for acceptance")
    original_samples: int = Field(4000, ge=100, title="Original training samples mixed into each retrain")
    keep_bundle_archives: int = Field(5, ge=1, title="Versions whose bundle archive copies the knowledge base keeps "
                                      "per bundle name, besides the first (the compile's): the newest; older copies "
                                      "are emptied after each publish (hub/kb/bundles.py), the rows stay")
    max_labels: int = Field(20_000, ge=100, title="Human labels a retrain reads at most, the newest (all are decoded "
                                                 "at once: memory grows with this)")
    human_repeat: int = Field(3, ge=1, title="Each human-labelled sample appears this many times per epoch")
    epochs: int = Field(2, ge=1, title="Enhancement distillation epochs")
    temperature: float = Field(8.0, gt=0.0, title="Distillation temperature (high: soft targets)")
    alpha: float = Field(0.7, ge=0.0, le=1.0, title="Weight of the soft-target term")
    learning_rate: float = Field(5e-4, gt=0.0, title="Enhancement learning rate")
    human_margin: float = Field(6.0, gt=0.0, title="Logit margin given to a human label when mapped to soft targets")
    filter_enabled: bool = Field(True, title="Filter human-labelled samples with the autoencoder")
    filter_quantile: float = Field(0.99, gt=0.5, lt=1.0, title="Reconstruction error quantile of training data "
                                                               "above which a sample is out of distribution")
    filter_epochs: int = Field(3, ge=1, title="Autoencoder training epochs")
    tolerance: float = Field(0.0, ge=0.0, le=0.1, title="Accept when new >= current - tolerance on every check")
    noise_se: float = Field(1.0, ge=0.0, le=3.0, title="Refuse a new model only when it falls short on the held-out "
                            "human labels by more than this many standard errors of the paired difference (and "
                            "the tolerance); 0: by more than the tolerance alone")
    human_accuracy: float = Field(0.95, ge=0.5, le=1.0, title="Accuracy of the people's aggregated answers in the "
                                  "acceptance check's expected fused accuracy (H-CNN; gold tasks measure it)")
    min_holdout: int = Field(10, ge=1, title="Held-out human samples needed to run the acceptance check")
    engines: tuple[str, ...] = Field(("litert",), title="Engines in re-lowered bundles")
    seed: int = Field(0, title="Seed of splits and training")
    field: FieldConfig = Field(default_factory=FieldConfig, title="Learning a field unlike the training data")

    @model_validator(mode="after")
    def _paths_when_enabled(self) -> RetrainConfig:
        if self.enabled and (self.store_dir is None or self.signing_key is None):
            raise ValueError("retrain.store_dir and retrain.signing_key are required when retraining is enabled")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError("retrain.models names must be unique")
        return self

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)

    def missing_files(self) -> list[str]:
        """The files a retrain reads that are not there ("setting path"), checked where a hub serves or retrains
        (not by every command that reads the config: revoking a device must work from any folder)."""
        return [f"{what} {path}" for what, path in self._files() if not path.is_file()] if self.enabled else []

    def require_files(self) -> None:
        """Raise HubConfigError naming every missing file: a wrong path used to fail the operator's "Retrain now"
        with a 500, long after start-up."""
        missing = self.missing_files()
        if missing:
            raise HubConfigError("retraining is enabled but these files do not exist (relative paths are taken "
                                 f"from the folder the hub runs in): {'; '.join(missing)}")

    def _files(self) -> list[tuple[str, Path]]:
        """(setting, path) of every file a retrain reads."""
        files = [("retrain.signing_key", self.signing_key)] if self.signing_key is not None else []
        for i, model in enumerate(self.models):
            files += [(f"retrain.models[{i}].keras_model", model.keras_model),
                      (f"retrain.models[{i}].bundle", model.bundle / "manifest.json")]
        return files


class PhonesConfig(StrictModel):
    """Phones as devices (android_bridge/, the hub's /device page): what a phone is given when it is onboarded."""

    public_key: Path | None = Field(None, title="Ed25519 public key (PEM) phones pin to verify bundles (default: "
                                                "the .pub beside retrain.signing_key)")
    mqtt_websocket_url: str | None = Field(None, pattern=r"^wss?://[^/?#\s]+(/[^?#\s]*)?$", title="The broker's "
                                           "WebSockets listener as phones reach it (None: phones send no samples)")
    invite_ttl_s: int = Field(15 * 60, ge=30, title="How long a phone's single-use onboarding link stays valid")
    labour_share: float | None = Field(None, ge=0.001, le=1.0, title="Labour demand L enforced on phones (share of "
                                       "the most labour; None: no limit). At least 0.001: a phone banks 1,000 frames "
                                       "of refill, and a sample reserves the most its people can spend")
    min_escalation_interval_s: float = Field(0.0, ge=0.0, title="Phones send at most one sample per this interval")
    audit_share: float = Field(0.02, ge=0.0, le=1.0, title="Share of confident frames phones also send to people "
                                                            "(the agent's gate.audit_share)")
    unfamiliar_share: float = Field(UNFAMILIAR_SHARE, ge=0.0, le=1.0, title="Share of confident frames unlike the "
                                    "training images phones send to people (the agent's gate.unfamiliar_share; "
                                    "retrain.field.unfamiliar_share must match)")
    audit_seed: int = Field(0, ge=0, le=2**53 - 1, title="Seed of the phones' audit draw (Python's random.Random, "
                                                         "as the agent's gate.seed)")


class HubConfig(StrictModel):
    # whether num_classes is the task's (set, or read from the retrained models' bundles) or the fallback
    # DEFAULT_CLASSES, which a device's model need not share (hgen.hub.validation.classes_known)
    _classes_known: bool = PrivateAttr(True)
    knowledge_base: KnowledgeBaseConfig = Field(default_factory=KnowledgeBaseConfig, title="Knowledge base")
    grpc: GrpcConfig = Field(default_factory=GrpcConfig, title="gRPC transport")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, title="MQTT transport")
    limits: LimitsConfig = Field(default_factory=LimitsConfig, title="Input limits")
    devices: tuple[str, ...] = Field((), title="Device ids added to the knowledge base at start-up (records only: "
                                              "a device reaches the hub only with a credential from hgen-hub "
                                              "add-device, which registers it too)")
    allow_unknown_devices: bool = Field(False, title="In-process callers only (simulations, tests): accept samples "
                                                     "from device ids never registered. Devices on the wire always "
                                                     "need a credential (hgen-hub add-device)")
    aggregator: str = Field("majority", title="Default aggregator for classification samples")
    aggregator_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, title="Per-aggregator options by registered aggregator name, each checked against that "
                                    "aggregator's options (below), e.g. {dawid_skene: {history: 600}}; the "
                                    "top-level dawid_skene_history is deprecated and moved here")
    num_classes: int = Field(0, ge=0, title="Classes people answer in (aggregation, the annotators' buttons); 0 "
                                             "(default): as many as the retrained models' bundles list labels, "
                                             f"else {DEFAULT_CLASSES}")
    web: WebConfig = Field(default_factory=WebConfig, title="Annotator / operator web UI")
    gold: GoldConfig = Field(default_factory=GoldConfig, title="Gold tasks and annotator pausing")
    tasks: TasksConfig = Field(default_factory=TasksConfig, title="Task assignment: timeout and per-person cap")
    retrain: RetrainConfig = Field(default_factory=RetrainConfig, title="Retraining loop")
    phones: PhonesConfig = Field(default_factory=PhonesConfig, title="Phones as devices (the /device page)")

    @model_validator(mode="after")
    def _classes_of_the_models(self) -> HubConfig:
        """People answer in the deployed models' classes. A hub left at a default of 10 for a 3-class model showed
        ten buttons and stored answers the model has no class for, which then failed every retrain."""
        labels = {model.name: found for model in self.retrain.models if (found := read_labels(model.bundle))}
        counts = {name: len(names) for name, names in labels.items()}
        if len(set(labels.values())) > 1:  # people's answers are indices, and the page names one set of classes
            raise ValueError(f"the retrained models' bundles list different classes ({dict(labels)}): one hub "
                             "serves one task, in one class order; run a hub per task")
        if self.num_classes:
            wrong = [f"the bundle of retrain model {name!r} lists {n} labels" for name, n in counts.items()
                     if n != self.num_classes]
            if wrong:
                raise ValueError(f"num_classes is {self.num_classes}, but {'; '.join(wrong)}: leave num_classes out "
                                 "to take the bundles' count")
            return self
        found = sorted(set(counts.values()))
        if not counts and self.retrain.models:
            log.warning("no retrain.models bundle could be read (relative paths are taken from the folder the hub "
                        "runs in): people answer in %d classes; set num_classes if the models have another count",
                        DEFAULT_CLASSES)
        object.__setattr__(self, "num_classes", found[0] if found else DEFAULT_CLASSES)  # frozen: set once, here
        self._classes_known = bool(found)
        return self

    @model_validator(mode="after")
    def _labelled_images_cover_retraining(self) -> HubConfig:
        """A retrain reads the newest retrain.max_labels labels of its model: keeping fewer images than that starved
        every retrain of the older ones, emptied for good."""
        keep, read = self.knowledge_base.keep_labelled_images, self.retrain.max_labels
        if self.retrain.enabled and 0 < keep < read:
            raise ValueError(f"knowledge_base.keep_labelled_images ({keep}) is below retrain.max_labels ({read}): "
                             "retraining reads that many of the newest labels' images; set it to at least "
                             f"{read}, or 0 to keep every image")
        return self

    @field_validator("devices")
    @classmethod
    def _enrollable_devices(cls, devices: tuple[str, ...]) -> tuple[str, ...]:
        refuse_bad_device_ids(devices)
        return devices

    @field_validator("aggregator")
    @classmethod
    def _registered_aggregator(cls, name: str) -> str:
        """A typo here would pass start-up and then fail every sample's submit (no aggregator of that name)."""
        return AGGREGATORS.validate(name)

    @model_validator(mode="before")
    @classmethod
    def _moved_aggregator_keys(cls, data: Any) -> Any:
        """Existing hub.yaml files keep working: a moved key is put where it lives now, with a warning naming it."""
        for old, (name, option) in MOVED_AGGREGATOR_KEYS.items():
            if isinstance(data, Mapping) and old in data:
                data = _moved(data, old, name, option)
        return data

    @field_validator("aggregator_options")
    @classmethod
    def _known_aggregator_options(cls, options: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """A misspelt aggregator (`dawid_skeen`) or option (`histroy`) is refused here by key path, not ignored."""
        problems = backend_option_problems(AGGREGATORS, options)
        if problems:
            raise ValueError("\n".join(f"aggregator_options.{line}" for line in problems))
        return options

    def aggregator_config(self, name: str) -> StrictModel:
        """Aggregator `name`'s validated options (its defaults where none are set); UnknownAggregatorError if the
        name is not registered."""
        return AGGREGATORS.get(name).Config.model_validate(self.aggregator_options.get(name, {}))


def _moved(data: Mapping[str, Any], old: str, name: str, option: str) -> dict[str, Any]:
    """`data` with top-level `old` moved to aggregator_options.<name>.<option>; setting both is refused."""
    new = f"aggregator_options.{name}.{option}"
    moved = {key: value for key, value in data.items() if key != old}
    options = data.get("aggregator_options", {})
    entry = options.get(name, {}) if isinstance(options, Mapping) else None
    if not isinstance(entry, Mapping):  # a malformed aggregator_options: its own error names it
        return moved
    if option in entry:
        raise ValueError(f"{old} (deprecated) and {new} are both set: keep only {new}")
    message = f"hub config key {old} is deprecated: set {new} instead"
    warnings.warn(message, HubConfigDeprecationWarning)
    log.warning(message)  # what `hgen-hub check-config` and serve's log show the operator
    moved["aggregator_options"] = {**options, name: {**entry, option: data[old]}}
    return moved


def read_labels(bundle: str | Path) -> tuple[str, ...] | None:
    """The labels a bundle folder's manifest lists; None when it cannot be read or is not a manifest."""
    from hgen.runtime.bundle.manifest import MANIFEST_NAME, parse_manifest
    from hgen.runtime.errors import HGenError

    try:
        return tuple(parse_manifest((Path(bundle) / MANIFEST_NAME).read_bytes()).labels)
    except (OSError, ValueError, HGenError):
        return None


def class_names(configured: tuple[str, ...], num_classes: int) -> tuple[str, ...]:
    """One name per class the hub aggregates: configured ones first, numbers for the rest (extra names dropped)."""
    return tuple(configured[i] if i < len(configured) else str(i) for i in range(num_classes))


def bundle_labels(config: HubConfig) -> tuple[str, ...]:
    """The data set's class names as the first retrained model's bundle lists them (its manifest's labels), so
    people see "Sandal", not "5", without configuring names twice; () when there is none or it does not fit."""
    for model in config.retrain.models:
        labels = read_labels(model.bundle)  # None: unreadable or not a manifest, numbers it is
        if labels is not None and len(labels) == config.num_classes:
            return labels
    return ()


def people_class_names(config: HubConfig) -> tuple[str, ...]:
    """The names of the classes people answer in, as the annotator page shows them and an export writes them."""
    return class_names(config.web.class_names or bundle_labels(config), config.num_classes)


def parse_hub_config(data: Mapping[str, Any] | None, source: str = "hub config") -> HubConfig:
    return parse_config(HubConfig, data, source=source, error=HubConfigError)


def load_hub_config(path: str | Path) -> HubConfig:
    return load_config_file(HubConfig, path, error=HubConfigError)
