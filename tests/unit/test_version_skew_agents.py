"""The hub's record of which agent each device runs (hgen.hub.transports.agent_versions): once hgen.v1's behaviour
changes again (PROTOCOL_REVISION raised), a device still on an agent of an earlier revision, or one upgraded ahead
of its hub, is named in a warning with both revisions; the same agent again says nothing more. Before, a hub had no
way to tell which agent a device runs."""

from __future__ import annotations

import logging
from collections import Counter

from hgen.hub.transports.agent_versions import AgentRelease, AgentVersions
from hgen.protos import hub_pb2


def status(device: str, version: str, revision: int) -> hub_pb2.DeviceStatus:
    return hub_pb2.DeviceStatus(device_id=device, agent_version=version, protocol_revision=revision)


def test_older_and_newer_agents_are_warned_once_naming_both_revisions(caplog) -> None:
    counts: Counter[str] = Counter()
    agents = AgentVersions(lambda name: counts.update([name]), revision=2)
    caplog.set_level(logging.INFO, logger="hgen.hub.transports.agent_versions")
    older = agents.seen(status("cam-1", "0.1.0", 1))
    assert older is not None and "'cam-1'" in older and "'0.1.0'" in older and "revision 1" in older
    assert "revision 2" in older and "upgrade its agent" in older
    assert agents.seen(status("cam-1", "0.1.0", 1)) is None  # the same agent again: nothing more
    newer = agents.seen(status("cam-2", "0.3.0", 3))
    assert newer is not None and "newer" in newer and "upgrade the hub" in newer
    assert agents.seen(status("cam-1", "0.2.0", 2)) is None  # upgraded to the hub's revision: info only
    assert agents.fleet() == {"cam-1": AgentRelease("0.2.0", 2), "cam-2": AgentRelease("0.3.0", 3)}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [older, newer]
    assert counts == Counter({"agent_older_than_hub": 1, "agent_newer_than_hub": 1})


def test_a_reported_version_is_clipped_and_quoted_in_the_log() -> None:
    """The version is the device's own string: a long or multi-line one cannot flood or forge log lines."""
    message = AgentVersions(lambda name: None, revision=2).seen(status("cam-1", "0.1\nFAKE LINE" + "x" * 500, 1))
    assert message is not None and "\n" not in message and len(message) < 400


def test_the_phone_page_implements_the_same_protocol_revision() -> None:
    """The page (android_bridge/src/agent.ts) stamps its statuses with its own copy of the revision: raised in
    hgen.protos alone, every phone would be named an older agent."""
    import re
    from pathlib import Path

    from hgen.protos import PROTOCOL_REVISION

    source = (Path(__file__).parents[2] / "android_bridge" / "src" / "agent.ts").read_text()
    found = re.search(r"export const PROTOCOL_REVISION = (\d+);", source)
    assert found is not None and int(found.group(1)) == PROTOCOL_REVISION


def test_the_operator_page_names_each_devices_agent() -> None:
    from hgen.hub.web.stats import agent_of

    assert agent_of(None) == "-"
    assert agent_of(hub_pb2.DeviceStatus(device_id="old", online=True)) == "older agent (no version reported)"
    assert agent_of(status("new", "0.1.0", 1)) == "0.1.0 (rev 1)"
    assert agent_of(status("phone", "phone page", 1)) == "phone page (rev 1)"
