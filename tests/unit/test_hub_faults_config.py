"""Audit faults in the hub configuration: a misspelt aggregator is refused at start-up (by key path), not by every
sample's submit afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest
from hgen.hub.aggregators import aggregator_names
from hgen.hub.cli import main
from hgen.hub.config import parse_hub_config
from hgen.hub.errors import HubConfigError


def test_a_misspelt_aggregator_is_refused_naming_the_key_and_the_valid_names() -> None:
    with pytest.raises(HubConfigError) as raised:
        parse_hub_config({"aggregator": "majorty"})
    message = str(raised.value)
    assert "aggregator: " in message and "'majorty'" in message
    assert all(name in message for name in aggregator_names())


@pytest.mark.parametrize("name", aggregator_names())
def test_every_registered_aggregator_is_accepted(name: str) -> None:
    assert parse_hub_config({"aggregator": name}).aggregator == name


def test_check_config_exits_with_the_config_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text("aggregator: majorty\n")
    assert main(["check-config", "--config", str(path)]) == 2
    assert "aggregator: " in capsys.readouterr().err
