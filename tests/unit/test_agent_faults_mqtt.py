"""Over a real Mosquitto: a reply payload that does not decode marks the hub link with a protocol error, while a
decoded reply the agent fails to take (its outbox failing) is the agent's problem: the link stays healthy and the
replies after it are still taken."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
from pydantic import SecretStr

from hgen.edge_agent.config import HubConfig
from hgen.edge_agent.transports import ConnectionState, TransportCallbacks, TransportErrorCode, open_transport
from hgen.hub.testing.fixtures import broker  # noqa: F401 (pytest fixture)
from hgen.hub.testing.services import Broker
from hgen.protos import hub_pb2
from hgen.protos.mqtt import QOS, topic

WAIT_S = 10.0
DEVICE = "cam-1"


class Agentish:
    """The agent's callbacks: s-0 probes the subscription, s-1 fails to be taken, the rest are recorded; and
    every link state."""

    def __init__(self) -> None:
        self.taken: list[str] = []
        self.states: list[tuple[ConnectionState, TransportErrorCode]] = []
        self.connected, self.subscribed = threading.Event(), threading.Event()
        self.protocol_error, self.done = threading.Event(), threading.Event()

    def on_reply(self, reply: hub_pb2.SampleReply) -> None:
        if reply.sample_id == "s-0":  # the subscription's probe
            self.subscribed.set()
            return
        if reply.sample_id == "s-1":
            raise OSError("disk full")
        self.taken.append(reply.sample_id)
        self.done.set()

    def on_state(self, state: ConnectionState, error: TransportErrorCode, _detail: str) -> None:
        self.states.append((state, error))
        if error is TransportErrorCode.PROTOCOL:
            self.protocol_error.set()
        elif state is ConnectionState.CONNECTED:
            self.connected.set()


def hub_client(broker: Broker) -> mqtt.Client:
    password = broker.add_account("hubish", [f"readwrite hgen/v1/{DEVICE}/#"])
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hubish", protocol=mqtt.MQTTv5)
    client.username_pw_set("hubish", password)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def answer(sample_id: str) -> bytes:
    return hub_pb2.SampleReply(sample_id=sample_id, status=hub_pb2.REPLY_STATUS_ANSWERED).SerializeToString()


def subscribed(hub: mqtt.Client, replies: str, agent: Agentish) -> None:
    """Connected is not yet subscribed: send s-0 until the agent has taken one, so what follows is not lost."""
    deadline = time.monotonic() + WAIT_S
    while not agent.subscribed.wait(0.1):
        assert time.monotonic() < deadline, "the agent never subscribed to its replies"
        hub.publish(replies, answer("s-0"), QOS).wait_for_publish(WAIT_S)


def test_a_reply_the_agent_fails_to_take_is_not_a_protocol_error(broker: Broker) -> None:  # noqa: F811
    secret = broker.add_account(DEVICE, [f"readwrite hgen/v1/{DEVICE}/#"])
    agent = Agentish()
    transport = open_transport(HubConfig(url=broker.url, secret=SecretStr(secret)), DEVICE,
                               TransportCallbacks(agent.on_reply, lambda notice: None, agent.on_state))
    hub = hub_client(broker)
    replies = topic("hgen/v1", DEVICE, "replies")
    try:
        transport.start()
        assert agent.connected.wait(WAIT_S)
        subscribed(hub, replies, agent)
        for sample_id in ("s-1", "s-2"):  # in order on one topic at QoS 1
            hub.publish(replies, answer(sample_id), QOS).wait_for_publish(WAIT_S)
        assert agent.done.wait(WAIT_S) and agent.taken == ["s-2"]
        assert not agent.protocol_error.is_set(), agent.states
        hub.publish(replies, b"\xff\xff not a reply", QOS).wait_for_publish(WAIT_S)
        assert agent.protocol_error.wait(WAIT_S), agent.states  # what the agent shows on its status
    finally:
        hub.loop_stop()
        hub.disconnect()
        transport.stop()


def test_a_refused_secret_says_so_and_what_to_check(broker: Broker) -> None:  # noqa: F811
    """It showed "hub unreachable: Protocol error" (the disconnect after the refusal) and logged nothing."""
    broker.add_account(DEVICE, [f"readwrite hgen/v1/{DEVICE}/#"])
    agent = Agentish()
    refused = threading.Event()
    details: list[str] = []

    def on_state(state: ConnectionState, error: TransportErrorCode, detail: str) -> None:
        agent.on_state(state, error, detail)
        details.append(detail)
        if error is TransportErrorCode.REFUSED:
            refused.set()

    transport = open_transport(HubConfig(url=broker.url, secret=SecretStr("not-the-issued-one")), DEVICE,
                               TransportCallbacks(agent.on_reply, lambda notice: None, on_state))
    try:
        transport.start()
        assert refused.wait(WAIT_S), agent.states
        assert transport.error is TransportErrorCode.REFUSED and "check device_id and hub.secret" in transport.detail
        assert TransportErrorCode.UNREACHABLE not in [error for _, error in agent.states]
    finally:
        transport.stop()
