"""The MQTT half of the wire protocol, shared by the hub and the device agent so they cannot drift apart.

Topics: `<prefix>/<device>/samples|replies|updates|status`, QoS 1, persistent sessions with an expiry.
"""

from __future__ import annotations

from typing import Any

from hgen.runtime.errors import InvalidInputError

QOS = 1
TOPIC_KINDS = ("samples", "replies", "updates", "status")


def topic(prefix: str, device_id: str, kind: str) -> str:
    """The topic of one device's stream of `kind`; InvalidInputError (a ValueError) for another kind (hgen.protos
    has no error root of its own, so the runtime's bad-argument error stands in)."""
    if kind not in TOPIC_KINDS:
        raise InvalidInputError(f"unknown topic kind {kind!r}; valid: {', '.join(TOPIC_KINDS)}")
    return f"{prefix}/{device_id}/{kind}"


def session_properties(expiry_s: int, receive_maximum: int | None = None) -> Any:
    """MQTT v5 CONNECT properties keeping the session (and its queued QoS 1 messages) for `expiry_s`.

    `receive_maximum` bounds how many QoS 1 messages the broker sends before we acknowledge them: a client that
    acknowledges only after its work is done gets back-pressure from the broker instead of an unbounded backlog."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = expiry_s
    if receive_maximum is not None:
        properties.ReceiveMaximum = receive_maximum
    return properties
