"""Settings refused when the config is read, by key path, instead of failing later (at a TLS handshake, an update's
download, a bundle load) or being silently ignored: TLS URLs without hub.tls, unknown engines and engine options,
source and battery kinds the registries do not hold. And the agent's typed errors where the runtime's used to leak:
a notice's grpcs:// fetch_uri without TLS settings, a frame that cannot become the model's input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hgen.edge_agent.config import parse_agent_config
from hgen.edge_agent.errors import AgentConfigError, AgentError, SwapError
from hgen.edge_agent.model import FrameShapeError, preprocess
from hgen.edge_agent.transports import TransportCallbacks, open_transport
from hgen.hub.testing.services import free_port
from hgen.protos import hub_pb2
from hgen.runtime.bundle import InputSpec
from hgen.runtime.preprocess import FrameShapeError as RuntimeFrameShapeError

BASE: dict[str, Any] = {"device_id": "cam-1", "bundle": {"path": "b", "public_key": "k"},
                        "source": {"kind": "video", "uri": "v"}}


def refused(**sections: Any) -> str:
    with pytest.raises(AgentConfigError) as error:
        parse_agent_config(BASE | sections)
    return str(error.value)


@pytest.mark.parametrize(("hub", "key"), [
    ({"url": "mqtt://broker:1883", "bundle_url": "grpcs://hub:50051"}, "hub.bundle_url"),
    ({"url": "mqtts://broker:8883"}, "hub.url"),
    ({"url": "grpcs://hub:50051"}, "hub.url")])
def test_a_tls_url_without_hub_tls_is_refused_by_key_path(hub: dict[str, str], key: str) -> None:
    assert f"{key} " in refused(hub=hub) and "hub.tls" in refused(hub=hub)
    assert parse_agent_config(BASE | {"hub": hub | {"tls": {"ca_file": "ca.pem"}}}).hub.tls is not None


def test_a_notices_grpcs_fetch_uri_without_hub_tls_refuses_the_update_not_the_agent(tmp_path: Path) -> None:
    config = parse_agent_config(BASE | {"hub": {"url": f"grpc://127.0.0.1:{free_port()}"}}).hub
    transport = open_transport(config, "cam-1", TransportCallbacks(lambda r: None, lambda n: None,
                                                                  lambda *a: None))
    notice = hub_pb2.ModelUpdate(bundle_name="net", version="2.0.0", fetch_uri="grpcs://bundles.example:443")
    try:
        with pytest.raises(SwapError, match="grpcs://bundles.example:443 uses TLS"):
            transport.fetch_bundle(notice, tmp_path / "net.hgb")
    finally:
        transport.stop()


def test_engine_options_are_checked_against_the_engine_registry_and_each_engines_options() -> None:
    text = refused(bundle=BASE["bundle"] | {"engine_options": {
        "litrt": {"num_threads": 2}, "litert": {"num_thread": 2, "xnnpack": "maybe"},
        "tvm": {"input_quantization": {"scale": -1.0, "zero_point": 0}}}})
    assert "bundle.engine_options.litrt: unknown engine; valid choices: litert, null, tvm" in text
    assert "bundle.engine_options.litert.num_thread: unknown option" in text
    assert "bundle.engine_options.litert.xnnpack: Input should be a valid boolean" in text
    assert "bundle.engine_options.tvm.input_quantization.scale: Input should be greater than 0" in text
    assert "bundle.engine: Value error, unknown engine 'litrt'" in refused(bundle=BASE["bundle"] | {"engine": "litrt"})
    # only the options given are checked: tvm's shapes come from the signed manifest at load
    fine = {"litert": {"num_threads": 2}, "tvm": {"entry": "main"}, "null": {"num_classes": 3}}
    assert parse_agent_config(BASE | {"bundle": BASE["bundle"] | {"engine_options": fine}}).bundle.engine_options \
        == fine


def test_source_and_battery_kinds_are_the_registries_names() -> None:
    assert "source.kind: Value error, unknown frame source 'vidoe'; valid choices: camera, images, url, video, y4m" in \
        refused(source={"kind": "vidoe", "uri": "v"})
    assert "adapt.power.kind: Value error, unknown power source 'acpi'; valid choices: sysfs, trace" in \
        refused(adapt={"power": {"kind": "acpi"}})
    config = parse_agent_config(BASE | {"source": {"kind": "y4m", "uri": "v.y4m"}, "adapt": {"power": {"kind": "trace"}}})
    assert (config.source.kind, config.adapt.power.kind) == ("y4m", "trace")


def test_a_frame_that_cannot_become_the_input_is_an_agent_error_and_still_the_runtimes() -> None:
    spec = InputSpec(shape=(1, 28, 28, 1), scale=1 / 255, offset=0.0)
    with pytest.raises(FrameShapeError) as error:
        preprocess(np.zeros((28, 28, 2), np.uint8), spec)  # two channels: neither grey nor colour
    assert isinstance(error.value, AgentError) and isinstance(error.value, RuntimeFrameShapeError)


def test_a_plaintext_fetch_uri_is_refused_to_a_device_on_tls(tmp_path: Path) -> None:
    """A notice (MQTT over TLS) naming grpc:// made the device send its bearer token in the clear."""
    from hgen.edge_agent.config import TlsConfig
    from hgen.edge_agent.transports.grpc import fetch_from_url

    notice = hub_pb2.ModelUpdate(bundle_name="net", version="2.0.0", fetch_uri="grpc://bundles.example:50051")
    with pytest.raises(SwapError, match="it is plaintext, and this device talks to its hub over TLS"):
        fetch_from_url(notice.fetch_uri, notice, tmp_path / "net.hgb", TlsConfig(ca_file=tmp_path / "ca.pem"),
                       "cam-1:secret")
