"""Strict hub configuration (`hgen-hub serve --config hub.yaml`): unknown keys rejected, errors by key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from pydantic import Field

from hgen.hub.errors import HubConfigError
from hgen.runtime.config import StrictModel, load_config_file, parse_config


class KnowledgeBaseConfig(StrictModel):
    url: str = Field("sqlite:///hub.db", title="SQLAlchemy URL: sqlite:///path (WAL) or postgresql+psycopg://...")
    image_dir: Path | None = Field(None, title="Folder for images larger than inline_image_max_bytes "
                                               "(default: beside a SQLite file, required for other databases)")
    inline_image_max_bytes: int = Field(64 * 1024, ge=0, title="Images up to this size are stored in the database")
    migrate: bool = Field(True, title="Run the Alembic migrations to head at start-up")


class GrpcConfig(StrictModel):
    enabled: bool = Field(True, title="Serve the AnnotationHub gRPC service")
    host: str = Field("127.0.0.1", title="Address to bind")
    port: int = Field(50051, ge=0, le=65535, title="Port to bind (0 = any free port)")
    max_message_bytes: int = Field(8 * 1024 * 1024, gt=0, title="Max send/receive message size, set on the server")
    max_workers: int = Field(16, ge=1, title="gRPC thread pool size (each open Submit stream holds one)")
    reply_poll_s: float = Field(0.25, gt=0, title="How often an open Submit stream re-reads the knowledge base "
                                                  "for replies made by another hub process")
    bundle_chunk_bytes: int = Field(256 * 1024, gt=0, title="Default FetchBundle chunk size")


class MqttConfig(StrictModel):
    enabled: bool = Field(False, title="Ingest samples from an MQTT broker")
    host: str = Field("127.0.0.1", title="Broker host")
    port: int = Field(1883, ge=1, le=65535, title="Broker port")
    prefix: str = Field("hgen/v1", title="Topic prefix: <prefix>/<device>/samples|replies|updates|status")
    client_id: str = Field("hgen-hub", title="MQTT client id; persistent session is kept under it")
    share_group: str | None = Field(None, title="Shared-subscription group ($share/<group>/...) for several hubs")
    session_expiry_s: int = Field(3600, ge=0, title="MQTT v5 session expiry: broker keeps QoS 1 messages this long")
    keepalive_s: int = Field(30, ge=5, title="MQTT keepalive")
    max_payload_bytes: int = Field(8 * 1024 * 1024, gt=0, title="Larger sample payloads are refused and counted")
    connect_timeout_s: float = Field(10.0, gt=0, title="How long start-up waits for the broker's CONNACK")


class LimitsConfig(StrictModel):
    max_pixels: int = Field(4096 * 4096, gt=0, title="Images with more pixels (height x width) are refused")
    max_batch: int = Field(1024, ge=1, title="Max samples in one AnnotationRequest")
    max_annotators: int = Field(10, ge=1, title="Max m a request may ask for")
    default_deadline_s: float = Field(600.0, gt=0, title="Deadline when a request carries none")
    max_deadline_s: float = Field(7 * 24 * 3600.0, gt=0, title="Later deadlines are clamped to this")
    default_labour_budget: float = Field(0.0, ge=0, title="Budget when a request carries 0 (0 = unlimited)")


class HubConfig(StrictModel):
    knowledge_base: KnowledgeBaseConfig = Field(default_factory=KnowledgeBaseConfig, title="Knowledge base")
    grpc: GrpcConfig = Field(default_factory=GrpcConfig, title="gRPC transport")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, title="MQTT transport")
    limits: LimitsConfig = Field(default_factory=LimitsConfig, title="Input limits")
    devices: tuple[str, ...] = Field((), title="Registered device ids (added to the knowledge base at start-up)")
    allow_unknown_devices: bool = Field(False, title="Accept samples from devices not registered")
    aggregator: str = Field("majority", title="Default aggregator for classification samples")
    num_classes: int = Field(10, ge=2, title="Classes of the classification task (for aggregation)")
    dawid_skene_history: int = Field(600, ge=0, title="Past answers dawid_skene uses to estimate annotator skill")


def parse_hub_config(data: Mapping[str, Any] | None, source: str = "hub config") -> HubConfig:
    return parse_config(HubConfig, data, source=source, error=HubConfigError)


def load_hub_config(path: str | Path) -> HubConfig:
    return load_config_file(HubConfig, path, error=HubConfigError)
