"""Issue 15, the flash kit: the device's secret (and optional client certificate) go into the kit's agent config,
which is never readable by anyone but its owner (mode 0600), and the result is a valid agent config."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import yaml

from hgen.edge_agent.config import load_agent_config

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "flash"))
from build_kit import DeviceCredentials, copy_credentials, kit_config, write_private  # noqa: E402


def test_kit_config_carries_the_credentials_in_a_private_file(tmp_path: Path) -> None:
    operator = tmp_path / "operator.yaml"
    operator.write_text(yaml.safe_dump({"device_id": "cam-7", "source": {"kind": "camera", "uri": "0"},
                                        "hub": {"url": "grpcs://hub.example:50051", "tls": {"ca_file": "ca.pem"}}}))
    (tmp_path / "cert.pem").write_text("CERT")
    (tmp_path / "key.pem").write_text("KEY")
    credentials = DeviceCredentials("s3cret-from-add-device", tmp_path / "cert.pem", tmp_path / "key.pem")
    kit = tmp_path / "kit"
    (kit / "keys").mkdir(parents=True)
    copy_credentials(kit / "keys", credentials)
    write_private(kit / "agent.yaml", yaml.safe_dump(kit_config(operator, "model.hgb", credentials)))
    for private in (kit / "agent.yaml", kit / "keys" / "device.key"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    config = load_agent_config(kit / "agent.yaml")
    assert config.hub.secret is not None and config.hub.secret.get_secret_value() == "s3cret-from-add-device"
    # relative paths are taken beside agent.yaml, as the device reads them
    assert config.hub.tls is not None and config.hub.tls.ca_file == kit / "keys" / "ca.pem"  # copied in
    assert config.hub.tls.cert_file == kit / "keys" / "device.pem" and (kit / "keys" / "device.pem").read_text() == "CERT"
    assert "s3cret" not in repr(config)


def test_without_credentials_the_config_is_unchanged(tmp_path: Path) -> None:
    operator = tmp_path / "operator.yaml"
    operator.write_text(yaml.safe_dump({"device_id": "cam-7", "hub": {"url": "mqtt://b:1883"}}))
    assert kit_config(operator, "m.hgb")["hub"] == {"url": "mqtt://b:1883"}
