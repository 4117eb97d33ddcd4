"""The flash kit's systemd unit agrees with hgen-agent's exit codes: it restarts a failed agent and leaves one
stopped on the code that means a configuration or bundle problem (a restart loop would not fix it)."""

from __future__ import annotations

import configparser
from pathlib import Path

from hgen.edge_agent.cli import EXIT_CONFIG, EXIT_FAILURE

UNIT = Path(__file__).resolve().parents[2] / "tools" / "flash" / "hgen-agent.service.in"


def test_the_unit_restarts_a_failed_agent_but_not_a_misconfigured_one() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  (systemd keys are case-sensitive)
    unit.read_string(UNIT.read_text())
    service = unit["Service"]
    assert service["Restart"] in ("always", "on-failure")
    prevented = {int(code) for code in service.get("RestartPreventExitStatus", "").split()}
    assert prevented == {EXIT_CONFIG} and EXIT_FAILURE not in prevented
