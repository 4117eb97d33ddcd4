"""The agent's `http` result sink (a webhook) against a real HTTP server on a free loopback port (Python's
http.server, and over TLS with a throw-away CA): results arrive as JSON with the bearer token and an idempotency
key, in order; a failing server is retried and a rejecting one is not; a server that is away fills a bounded queue
and newer results are refused, not held without bound; a token over plain HTTP to another machine is refused at
config time."""

from __future__ import annotations

import json
import ssl
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from hgen.edge_agent.config import parse_agent_config
from hgen.edge_agent.results import Result, ResultStatus
from hgen.edge_agent.sinks import open_sinks
from hgen.edge_agent.sinks.http import HttpSink, HttpSinkConfig
from hgen.edge_agent.sinks.mqtt import SinkQueueFullError
from hgen.hub.testing.tls import make_pki
from hgen.runtime.config import parse_config


GARBAGE = -1  # a scripted reply that is not HTTP at all


class Webhook(ThreadingHTTPServer):
    """Records each POST; answers the scripted statuses first, then 200."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.statuses = list(statuses or [])
        self.refuse: set[str] = set()  # sample ids whose presence in a body gets 422 (a server's validation)
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.arrived = threading.Condition()

    @property
    def url(self) -> str:
        scheme = "https" if isinstance(self.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://127.0.0.1:{self.server_address[1]}/hooks/results"

    def wait_for(self, n: int) -> None:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.received) >= n, timeout=30), self.received


class Handler(BaseHTTPRequestHandler):
    server: Webhook

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        if {r["sample_id"] for r in (body if isinstance(body, list) else [body])} & self.server.refuse:
            status = 422
        with self.server.arrived:
            self.server.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.server.arrived.notify_all()
        if status == GARBAGE:
            self.wfile.write(b"this is not HTTP\r\n\r\n")
            self.close_connection = True
            return
        self.send_response(status)
        if 300 <= status < 400:
            self.send_header("Location", "http://127.0.0.2:9/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    server = Webhook()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def result(i: int, status: ResultStatus = ResultStatus.FUSED) -> Result:
    return Result(i, str(uuid.uuid4()), 0.0, status, "asked", label=i % 10)


def sink(url: str, **options: Any) -> HttpSink:
    return HttpSink(parse_config(HttpSinkConfig, {"kind": "http", "url": url, **options}))


def test_results_arrive_in_order_with_the_token_and_an_idempotency_key(webhook: Webhook) -> None:
    out = sink(webhook.url, token="s3cret")
    sent = [result(i) for i in range(5)]
    for r in sent:
        out.emit(r)
    webhook.wait_for(5)
    out.close()
    assert [body["sample_id"] for _, body in webhook.received] == [r.sample_id for r in sent]
    headers = webhook.received[0][0]
    assert headers["authorization"] == "Bearer s3cret" and headers["content-type"] == "application/json"
    assert headers["idempotency-key"] == f"{sent[0].sample_id}:fused"
    assert webhook.received[0][1]["status"] == "fused" and out.delivered == 5


def test_a_failing_server_is_retried_and_a_rejecting_one_is_not(webhook: Webhook) -> None:
    webhook.statuses = [503, 429, 200, 400]  # the first result: two failures, then taken; the second: rejected
    out = sink(webhook.url)
    first, second, third = result(1), result(2), result(3)
    for r in (first, second, third):
        out.emit(r)
    webhook.wait_for(5)
    out.close()
    ids = [body["sample_id"] for _, body in webhook.received]
    assert ids == [first.sample_id] * 3 + [second.sample_id, third.sample_id]  # in order, the rejected one once
    assert (out.delivered, out.dropped) == (2, 1)


def test_a_server_that_is_away_fills_a_bounded_queue(tmp_path: Path) -> None:
    """Nothing listens on the port: results wait (retried with back-off), up to max_queued; newer ones are refused
    and counted by the agent in sink_errors, as the mqtt sink's are. Closing gives up on what is left."""
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = sink(f"http://127.0.0.1:{port}/x", max_queued=3, retry_s=600)
    accepted = 0
    with pytest.raises(SinkQueueFullError, match="3 results already wait"):
        for i in range(10):
            out.emit(result(i))
            accepted += 1
    assert accepted in (3, 4)  # 3 queued, and maybe 1 already with the sender
    out.close()
    assert out.delivered == 0


def test_https_with_the_servers_own_ca(webhook: Webhook, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    webhook.socket = context.wrap_socket(webhook.socket, server_side=True)
    untrusted = sink(webhook.url, retry_s=0)  # the system's CAs do not know this server: not delivered
    untrusted.emit(result(1))
    untrusted.close()
    assert untrusted.dropped == 1 and webhook.received == []
    trusted = sink(webhook.url, token="t", ca_file=str(pki.ca_cert))
    trusted.emit(result(2))
    webhook.wait_for(1)
    trusted.close()
    assert webhook.received[0][0]["authorization"] == "Bearer t"


@pytest.mark.parametrize(("options", "message"), [
    ({"url": "http://cams.example.org/in", "token": "t"}, "travels in clear"),
    ({"url": "ftp://example.org/in"}, "url"),
    ({"url": "http://127.0.0.1/in", "ca_file": "ca.pem"}, "only an https:// url"),
    ({"url": "https://example.org/in", "retries": 3}, "retries"),
])
def test_config_mistakes_are_refused_by_key(options: dict[str, Any], message: str, tmp_path: Path) -> None:
    from hgen.edge_agent.errors import AgentConfigError

    data = {"device_id": "cam-1", "bundle": {"path": "b", "public_key": "k.pem"},
            "source": {"kind": "video", "uri": "v"}, "sinks": [{"kind": "http", **options}]}
    with pytest.raises(AgentConfigError, match=rf"sinks\.0\.http.*{message}"):
        parse_agent_config(data)
    parse_agent_config({**data, "sinks": []})  # the rest of the config is fine


def test_a_token_over_plain_http_to_this_machine_is_fine(webhook: Webhook) -> None:
    (out,) = open_sinks([parse_config(HttpSinkConfig, {"kind": "http", "url": webhook.url, "token": "t"})])
    out.emit(result(0))
    webhook.wait_for(1)
    out.close()


def agent_with(sink_config: dict[str, Any], tmp_path: Path) -> Any:
    """A real agent (a null bundle: no engine to load; frames given by hand) with the sink from agent.yaml's data."""
    from hgen.edge_agent.agent import Agent
    from hgen.edge_agent.testing import make_keys, null_bundle

    keys = make_keys(tmp_path / "keys")
    (tmp_path / "images").mkdir()
    return Agent(parse_agent_config({
        "device_id": "cam-1", "bundle": {"path": str(null_bundle(tmp_path / "bundle", keys)),
                                         "public_key": str(keys.public_pem)},
        "source": {"kind": "images", "uri": str(tmp_path / "images")},
        "outbox": {"path": str(tmp_path / "outbox.sqlite")}, "sinks": [sink_config]}))


def frames(n: int) -> list[Any]:
    import time

    import numpy as np

    from hgen.edge_agent.sources import Frame

    return [Frame(i, np.random.default_rng(i).integers(0, 256, (28, 28), dtype=np.uint8), time.time())
            for i in range(n)]


def test_an_agents_results_reach_the_webhook(webhook: Webhook, tmp_path: Path) -> None:
    agent = agent_with({"kind": "http", "url": webhook.url, "token": "t"}, tmp_path)
    try:
        results = [agent.process_frame(f) for f in frames(3)]
        webhook.wait_for(3)
    finally:
        agent.stop()
    assert [body["sample_id"] for _, body in webhook.received] == [r.sample_id for r in results]
    assert agent.telemetry.count("sink_errors") == 0


def test_results_a_webhook_never_took_count_in_sink_errors(tmp_path: Path) -> None:
    """Taken into the queue, then given up on (nothing listens; no retry time): each counts once, by the agent."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    agent = agent_with({"kind": "http", "url": f"http://127.0.0.1:{port}/x", "retry_s": 0}, tmp_path)
    for f in frames(3):
        agent.process_frame(f)
    agent.stop()
    assert agent.telemetry.count("sink_errors") == 3


def test_a_redirect_is_not_followed_and_a_reply_that_is_not_http_is_retried(webhook: Webhook) -> None:
    """urllib followed a 302 as a bodiless GET, carrying the token to wherever it pointed, and counted the result as
    delivered; a reply that is not HTTP killed the sender thread. Now: the redirect is a drop, said; the garbage a
    failure retried; the results after both still arrive."""
    webhook.statuses = [302, GARBAGE]
    out = sink(webhook.url, token="s3cret")
    sent = [result(i) for i in range(3)]
    for r in sent:
        out.emit(r)
    webhook.wait_for(4)  # 1: redirected; 2: garbage, then again; 3
    out.close()
    assert [body["sample_id"] for _, body in webhook.received] == [r.sample_id for r in (sent[0], *sent[1:2] * 2,
                                                                                         sent[2])]
    assert (out.delivered, out.dropped) == (2, 1)


def test_a_loopback_webhook_is_never_reached_through_the_environments_proxy(
        webhook: Webhook, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = Webhook()  # records anything sent to it as a proxy would receive it
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.server_address[1]}")
        monkeypatch.setenv("no_proxy", "")
        out = sink(webhook.url.replace("127.0.0.1", "localhost"), token="t")
        out.emit(result(1))
        webhook.wait_for(1)
        out.close()
        assert proxy.received == []
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_an_unreadable_ca_file_is_a_config_error_and_a_closed_sink_takes_nothing(webhook: Webhook,
                                                                                tmp_path: Path) -> None:
    from hgen.edge_agent.errors import AgentConfigError, ResultDroppedError

    with pytest.raises(AgentConfigError, match="ca_file .* cannot be read"):
        sink("https://127.0.0.1:1/x", ca_file=str(tmp_path / "missing.pem"))
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(AgentConfigError, match="ca_file"):
        sink("https://127.0.0.1:1/x", ca_file=str(tmp_path / "junk.pem"))
    out = sink(webhook.url)
    out.close()
    with pytest.raises(ResultDroppedError, match="closed"):
        out.emit(result(1))
    from hgen.edge_agent.cli import check  # `hgen-agent check` says so before `run` would

    config = parse_agent_config({"device_id": "cam-1", "bundle": {"path": "b", "public_key": "k.pem"},
                                 "source": {"kind": "video", "uri": "v"},
                                 "sinks": [{"kind": "http", "url": "https://127.0.0.1:1/x",
                                            "ca_file": str(tmp_path / "junk.pem")}]})
    with pytest.raises(AgentConfigError, match="ca_file"):
        check(config)


def test_batches_post_arrays_in_order_and_a_batch_is_retried_and_rejected_whole(webhook: Webhook) -> None:
    """batch 4: 10 results in three POSTs (4, 4, then the last 2 sent at close without waiting out batch_wait_s);
    a 503 retries the batch with the same key; a 404 (the url is wrong for every result) drops the whole batch,
    each result counted."""
    webhook.statuses = [503, 200, 404]
    out = sink(webhook.url, batch=4, batch_wait_s=30)
    sent = [result(i) for i in range(10)]
    for r in sent:
        out.emit(r)
    webhook.wait_for(3)  # the first batch twice (503, then taken), then the second (rejected)
    out.close()  # the third batch had 2 of 4: sent now, not after 30 s
    bodies = [body for _, body in webhook.received]
    assert all(isinstance(body, list) for body in bodies)
    assert [[r["sample_id"] for r in body] for body in bodies] == \
        [[r.sample_id for r in sent[:4]]] * 2 + [[r.sample_id for r in sent[4:8]], [r.sample_id for r in sent[8:]]]
    keys = [headers["idempotency-key"] for headers, _ in webhook.received]
    assert keys[0] == keys[1] and len(set(keys[1:])) == 3 and all(k.startswith("batch-") for k in keys)
    assert (out.delivered, out.dropped) == (6, 4)


def test_two_batches_starting_with_one_result_have_different_keys(webhook: Webhook) -> None:
    """After a restart a result may be sent again with others: a key naming only the first result and the count
    told a server honouring it that [A, C] was [A, B] again, and C was lost."""
    a, b, c = result(1), result(2), result(3)
    for pair in ((a, b), (a, c)):
        out = sink(webhook.url, batch=2, batch_wait_s=30)
        for r in pair:
            out.emit(r)
        out.close()
    webhook.wait_for(2)
    first, second = (headers["idempotency-key"] for headers, _ in webhook.received)
    assert first != second


def test_closing_while_the_server_is_away_and_a_batch_is_gathered_is_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sender gathering a batch found the queue emptied by close() (which does not wait for a failing server)
    and crashed on an empty batch."""
    import socket

    crashes: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashes.append(args.exc_value))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = sink(f"http://127.0.0.1:{port}/x", batch=10, batch_wait_s=30, retry_s=0)
    out.emit(result(0))
    out._flushing = True  # noqa: SLF001 (send the first batch now: it fails and is given up at once, retry_s 0)
    with out._cond:  # noqa: SLF001
        out._cond.notify_all()
        assert out._cond.wait_for(lambda: out.dropped == 1, timeout=30)
        out._flushing = False  # the next batch is gathered, waiting 30 s for more
    out.emit(result(1))
    with out._cond:  # noqa: SLF001
        assert out._cond.wait_for(lambda: out.gathering, timeout=30)  # the next batch waits 30 s for more
    for i in range(2, 4):
        out.emit(result(i))
    out.close()  # the last attempt failed: close() does not wait, it takes the queue
    out._thread.join(30)  # noqa: SLF001
    assert not out._thread.is_alive() and not crashes  # noqa: SLF001
    assert (out.delivered, out.dropped) == (0, 4)


def test_a_batch_larger_than_the_queue_is_refused_by_key() -> None:
    from hgen.edge_agent.errors import AgentConfigError

    data = {"device_id": "cam-1", "bundle": {"path": "b", "public_key": "k.pem"},
            "source": {"kind": "video", "uri": "v"},
            "sinks": [{"kind": "http", "url": "http://127.0.0.1/in", "batch": 50, "max_queued": 20}]}
    with pytest.raises(AgentConfigError, match=r"sinks\.0\.http.*batch: 50 is more than max_queued \(20\)"):
        parse_agent_config(data)


def test_a_batch_is_sent_after_batch_wait_s_when_it_does_not_fill(webhook: Webhook) -> None:
    out = sink(webhook.url, batch=100, batch_wait_s=0.2)
    first = result(0)
    out.emit(first)
    webhook.wait_for(1)  # arrives without close(): the batch waited its 0.2 s, then went with one result
    assert [r["sample_id"] for r in webhook.received[0][1]] == [first.sample_id]
    out.close()
    assert (out.delivered, out.dropped) == (1, 0)


def test_a_batch_too_large_for_the_server_is_sent_again_in_halves(webhook: Webhook) -> None:
    """A body limit (nginx's client_max_body_size, 1 MiB by default) refused a big batch with 413 every time, and
    every batch was dropped. Halves go in order; a single result the server still refuses is dropped alone."""
    webhook.statuses = [413, 413, 200, 200, 413]  # 4 -> 2 (413) -> 1, 1; then the other 2 -> 413 as a pair
    out = sink(webhook.url, batch=4, batch_wait_s=30)
    sent = [result(i) for i in range(4)]
    for r in sent:
        out.emit(r)
    webhook.wait_for(7)  # 4, 2, 1, 1, 2, then 1, 1
    out.close()
    sizes = [len(body) for _, body in webhook.received]
    assert sizes == [4, 2, 1, 1, 2, 1, 1]
    assert [r["sample_id"] for _, body in webhook.received[-2:] for r in body] == [r.sample_id for r in sent[2:]]
    assert (out.delivered, out.dropped) == (4, 0)


def test_a_single_result_too_large_is_dropped_alone(webhook: Webhook) -> None:
    webhook.statuses = [413, 200, 413]  # the pair is halved; the second result is too large on its own
    out = sink(webhook.url, batch=2, batch_wait_s=30)
    for i in range(2):
        out.emit(result(i))
    webhook.wait_for(3)
    out.close()
    assert [len(body) for _, body in webhook.received] == [2, 1, 1] and (out.delivered, out.dropped) == (1, 1)


def test_a_result_the_server_refuses_is_dropped_alone_not_with_its_batch(webhook: Webhook) -> None:
    """A server validating each result (422 for the whole array when one is wrong) made the sink drop the 7 good
    results of a batch of 8 with the bad one. Halves go again, in order, until the refused result stands alone."""
    sent = [result(i) for i in range(8)]
    webhook.refuse = {sent[5].sample_id}
    out = sink(webhook.url, batch=8, batch_wait_s=30)
    for r in sent:
        out.emit(r)
    webhook.wait_for(7)  # 8 (422); 4 taken; 4 (422); 2 (422); 1 taken; 1 (422: dropped); 2 taken
    out.close()
    accepted = [r["sample_id"] for _, body in webhook.received if not {b["sample_id"] for b in body} & webhook.refuse
                for r in body]
    assert accepted == [r.sample_id for r in sent if r is not sent[5]]  # every good one, in order
    assert [len(body) for _, body in webhook.received] == [8, 4, 4, 2, 1, 1, 2]
    assert (out.delivered, out.dropped) == (7, 1)


def test_a_server_that_refuses_every_array_costs_bounded_posts(webhook: Webhook) -> None:
    """All bad (say a server that takes only objects): 2n - 1 POSTs for a batch of n, then all dropped."""
    sent = [result(i) for i in range(4)]
    webhook.refuse = {r.sample_id for r in sent}
    out = sink(webhook.url, batch=4, batch_wait_s=30)
    for r in sent:
        out.emit(r)
    webhook.wait_for(7)
    out.close()
    assert [len(body) for _, body in webhook.received] == [4, 2, 1, 1, 2, 1, 1]
    assert (out.delivered, out.dropped) == (0, 4)


def test_a_half_the_server_fails_on_is_retried_with_its_own_key(webhook: Webhook) -> None:
    webhook.statuses = [422, 503]  # the batch is refused for what it holds; its first half meets a 503, then 200
    out = sink(webhook.url, batch=4, batch_wait_s=30)
    sent = [result(i) for i in range(4)]
    for r in sent:
        out.emit(r)
    webhook.wait_for(4)
    out.close()
    assert [[r["sample_id"] for r in body] for _, body in webhook.received] == \
        [[r.sample_id for r in sent]] + [[r.sample_id for r in sent[:2]]] * 2 + [[r.sample_id for r in sent[2:]]]
    keys = [headers["idempotency-key"] for headers, _ in webhook.received]
    assert keys[1] == keys[2] and len({keys[0], keys[1], keys[3]}) == 3
    assert (out.delivered, out.dropped) == (4, 0)


def test_closing_during_a_split_posts_no_more_halves(webhook: Webhook) -> None:
    """close() does not wait for a server that is away and counts the batch as dropped; the sender then went on to
    POST the batch's other half after close() had returned."""
    webhook.statuses = [422] + [503] * 50  # refused for what it holds; then the server is away
    out = sink(webhook.url, batch=4, batch_wait_s=30)
    sent = [result(i) for i in range(4)]
    for r in sent:
        out.emit(r)
    webhook.wait_for(2)  # the batch, then its first half
    out.close()
    out._thread.join(30)  # noqa: SLF001
    assert not out._thread.is_alive()  # noqa: SLF001
    second_half = {r.sample_id for r in sent[2:]}
    assert not [body for _, body in webhook.received[1:] if second_half & {r["sample_id"] for r in body}]
    assert (out.delivered, out.dropped) == (0, 4)
