"""The demo's `auto` transport: MQTT through a private Mosquitto where one is installed, gRPC where none is (so
`make demo` runs on any machine); a named transport is used as given."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hgen.compiler.demo import demo_config
from hgen.compiler.demo.services import choose_transport
from hgen.hub.testing import services


def hide_mosquitto(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without mosquitto: no PATH folder holding it, and none of the fixed places it is looked for."""
    folders = os.environ.get("PATH", "").split(os.pathsep)
    monkeypatch.setenv("PATH", os.pathsep.join(f for f in folders if not (Path(f) / "mosquitto").exists()))
    monkeypatch.setattr(services, "MOSQUITTO_CANDIDATES", ())
    with pytest.raises(services.ServiceUnavailableError):
        services.mosquitto_binary()


def test_auto_picks_mqtt_where_mosquitto_is_installed(mosquitto_required: str) -> None:
    assert choose_transport(demo_config(transport="auto")) == "mqtt"


def test_auto_falls_back_to_grpc_without_mosquitto(monkeypatch: pytest.MonkeyPatch) -> None:
    hide_mosquitto(monkeypatch)
    assert choose_transport(demo_config(transport="auto")) == "grpc"


@pytest.mark.parametrize("transport", ["grpc", "mqtt"])
def test_a_named_transport_is_used_as_given(monkeypatch: pytest.MonkeyPatch, transport: str) -> None:
    hide_mosquitto(monkeypatch)  # a named transport is not second-guessed, even mqtt
    assert choose_transport(demo_config(transport=transport)) == transport
