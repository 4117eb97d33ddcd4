"""`http`: each result POSTed as JSON to a URL (a webhook): the field team's own server, an IoT platform's ingest,
a serverless function.

Results go from a bounded in-memory queue through one sender thread, so a slow or absent server never holds up a
frame. A result the server refuses for a while (a connection error, a timeout, 5xx, 408, 429) is retried with
back-off up to `retry_s`, in order; one it rejects outright (another 4xx: the request is wrong and will stay wrong)
is logged and dropped (a dropped result is logged, and counted by the agent in sink_errors). Each POST carries
`Idempotency-Key: <sample id>:<status>`, so a server can tell a retry from a new result (a result whose reply was
lost is sent again). While `max_queued` results wait, newer ones are refused (`SinkQueueFullError`, counted in
sink_errors), as the mqtt sink does.

`batch` above 1 POSTs a JSON array of up to that many results, in order, waiting at most `batch_wait_s` after the
first to fill it: one POST per frame (30 a second from a camera) costs a Pi and the server more than the results
themselves. A batch is retried and given up whole (each of its results counted). One the server refuses for what
it holds (400 or 422: a result it cannot take; 413: too large) is sent again in halves, in order, down to single
results, so only the results it refuses are dropped, not the others of their batch (a server that refuses every
array costs 2n - 1 POSTs a batch of n before all are dropped; the halves share the batch's `retry_s`, and a split
logs one line). Other refusals (401, 403, 404: the url or the token is wrong for every result alike) drop the
batch whole. Its `Idempotency-Key` is `batch-<sha256 of its sample ids and statuses, in order>`, the same on every
retry; after a restart results may be sent again in other batches, so a server deduplicates each result by
(sample_id, status). A queued result is only in memory: with batches it waits there up to `batch_wait_s` more,
which a power cut loses. `token` is sent as `Authorization: Bearer`, and only over HTTPS or to this machine: a
bearer token in clear over a network is refused at config time. HTTPS verifies the server against the system's
certificates, or `ca_file` (a private server's own CA).
"""

from __future__ import annotations

import collections
import hashlib
import http.client
import logging
import ssl
import threading
import time
import urllib.error
import urllib.request
from ipaddress import ip_address
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator

from hgen.edge_agent.errors import AgentConfigError, ResultDroppedError
from hgen.edge_agent.results import Result
from hgen.edge_agent.sinks.base import SINKS, Sink, SinkSettings
from hgen.edge_agent.sinks.mqtt import SinkQueueFullError

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
# A batch refused for what it holds: 413 over the server's body limit (nginx's client_max_body_size is 1 MiB by
# default); 400 and 422, some result in it the server cannot take. Sent again in halves to spare the others.
SPLIT_STATUSES = frozenset({400, 413, 422})
BACKOFF_S = (0.5, 1.0, 2.0, 5.0)  # between attempts at one result, the last repeated
FLUSH_TIMEOUT_S = 5.0
JOIN_TIMEOUT_S = 0.5


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 30x is an HTTPError to `_post`, never followed."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class HttpSinkConfig(SinkSettings):
    kind: Literal["http"] = Field(title="Each result POSTed as JSON to a URL (a webhook)")
    url: str = Field(pattern=r"^https?://[^/\s]+(/\S*)?$", title="http(s)://host[:port]/path results are POSTed to")
    token: SecretStr | None = Field(None, title="Sent as 'Authorization: Bearer <token>' (HTTPS, or this machine)")
    ca_file: Path | None = Field(None, title="CA certificate(s) (PEM) the HTTPS server's certificate must chain to "
                                 "(default: the system's)")
    timeout_s: float = Field(5.0, gt=0.0, le=120.0, title="Seconds one POST may take")
    retry_s: float = Field(300.0, ge=0.0, title="How long one result is retried while the server is away or "
                           "failing (5xx, 408, 429, no connection) before it is dropped and counted")
    max_queued: int = Field(1000, ge=1, title="Results kept in memory while the server is slow or away; newer ones "
                            "are refused and counted in sink_errors")
    batch: int = Field(1, ge=1, le=1000, title="Results per POST: 1 sends each as a JSON object; more sends a JSON "
                       "array of up to this many, in order")
    batch_wait_s: float = Field(1.0, ge=0.0, le=60.0, title="With batch > 1: how long a batch waits after its first "
                                "result for more before it is sent")

    @model_validator(mode="after")
    def _batch_fits_the_queue(self) -> Self:
        """A batch is gathered in the queue: one larger than max_queued never fills, and results arriving while it
        waits are refused though the server is well."""
        if self.batch > self.max_queued:
            raise ValueError(f"batch: {self.batch} is more than max_queued ({self.max_queued}), which holds the "
                             "batch while it is gathered")
        return self

    @model_validator(mode="after")
    def _token_not_in_clear(self) -> Self:
        """A bearer token over plain HTTP to another host is readable by anyone on the way."""
        parts = urlsplit(self.url)
        if self.token is not None and parts.scheme == "http" and not _loopback(parts.hostname or ""):
            raise ValueError(f"token: {self.url} is plain HTTP to another machine, where the token travels in "
                             "clear; use https://, or no token")
        if self.ca_file is not None and parts.scheme != "https":
            raise ValueError("ca_file: only an https:// url verifies a certificate")
        return self

    def check_files(self) -> None:
        """`ca_file` loads as PEM certificates (AgentConfigError, as at start-up, rather than at the first POST)."""
        tls_context(self)

    def resolved(self, base: Path) -> Self:
        if self.ca_file is None or self.ca_file.is_absolute():
            return self
        return self.model_copy(update={"ca_file": base / self.ca_file})


def tls_context(config: HttpSinkConfig) -> ssl.SSLContext | None:
    """The HTTPS context (`ca_file`, else the system's CAs); None for plain HTTP. AgentConfigError when `ca_file`
    does not load."""
    if urlsplit(config.url).scheme != "https":
        return None
    try:
        return ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise AgentConfigError(f"sinks http {config.url}: ca_file {config.ca_file} cannot be read as PEM "
                               f"certificates ({exc})") from None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


@SINKS.register("http")
class HttpSink(Sink):
    def __init__(self, config: HttpSinkConfig) -> None:
        self.config = config
        self._opener = self._opener_for(config)
        self._queue: collections.deque[tuple[float, Result]] = collections.deque()  # (when queued, result)
        self._cond = threading.Condition()
        self._busy = 0  # results the sender holds, taken off the queue
        self._failing = False  # the last attempt failed: the server is away, close() does not wait for it
        self._counted_at_close = False  # close() counted the result in flight as dropped
        self._closing = False
        self._flushing = False  # close() began: a batch being filled is sent as it is
        self.gathering = False  # the sender is gathering a batch (waiting for more results or batch_wait_s)
        self._full = False
        self.delivered = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="http-sink", daemon=True)
        self._thread.start()

    @staticmethod
    def _opener_for(config: HttpSinkConfig) -> urllib.request.OpenerDirector:
        """No redirects (urllib turns a POST into a bodiless GET on 301-303 and carries the token to wherever it
        points, even another host or plain HTTP); no proxy for this machine (the environment's http_proxy would
        carry a loopback token in clear); TLS against `ca_file` or the system's CAs."""
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
        parts = urlsplit(config.url)
        if _loopback(parts.hostname or ""):
            handlers.append(urllib.request.ProxyHandler({}))
        context = tls_context(config)
        if context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context))
        return urllib.request.build_opener(*handlers)

    def emit(self, result: Result) -> None:
        """Queue `result` without blocking; SinkQueueFullError when max_queued already wait."""
        with self._cond:
            if self._closing:
                raise ResultDroppedError(f"http sink {self.config.url}: closed; result of sample "
                                         f"{result.sample_id} not kept")
            refused = len(self._queue) >= self.config.max_queued
            changed, self._full = refused != self._full, refused
            if not refused:
                self._queue.append((time.monotonic(), result))
                self._cond.notify_all()  # the sender, whether idle or filling a batch (close() waits here too)
        if changed:
            log.warning("http sink %s: %s", self.config.url, "its queue is full; refusing results (counted in "
                        "sink_errors)" if refused else "queueing results again")
        if refused:
            raise SinkQueueFullError(f"http sink {self.config.url}: {self.config.max_queued} results already wait; "
                                     f"result of sample {result.sample_id} not kept")

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                results = self._take()
                if not results:  # close() emptied the queue while the batch was gathered
                    continue
                self._busy = len(results)
                self._failing = False  # a new batch: close() waits for it as for any (the last may have failed)
            try:
                self._deliver(results)
            finally:
                with self._cond:
                    self._busy = 0
                    self._cond.notify_all()

    def _take(self) -> list[Result]:
        """Up to `batch` results off the queue (lock held): at once when full, else once `batch_wait_s` has passed
        since the first was queued (one that waited out a retry goes at once); closing sends what there is."""
        self.gathering = True
        self._cond.notify_all()  # (tests wait for it: close() may empty the queue under a batch being gathered)
        while self._queue and len(self._queue) < self.config.batch and not self._flushing \
                and (left := self._queue[0][0] + self.config.batch_wait_s - time.monotonic()) > 0:
            self._cond.wait(left)
        self.gathering = False
        return [self._queue.popleft()[1] for _ in range(min(self.config.batch, len(self._queue)))]

    def _deliver(self, results: list[Result], give_up: float | None = None, depth: int = 0) -> int:
        """POST until accepted, rejected, `retry_s` is spent, or the sink closes while the server is away; returns
        how many of `results` were dropped. A batch refused for what it holds (`SPLIT_STATUSES`) goes again in halves,
        in order, within the same `give_up` (`depth`: halvings so far; a split logs one line, at its top)."""
        if self._closing:
            return 0  # close() took what the sender held as dropped: no more halves after it returned
        give_up = time.monotonic() + self.config.retry_s if give_up is None else give_up
        level = logging.DEBUG if depth else logging.WARNING
        attempt = 0
        what = f"result of sample {results[0].sample_id}" if len(results) == 1 else \
            f"batch of {len(results)} results from sample {results[0].sample_id}"
        while True:
            retry, said, status = self._post(results)
            self._failing = retry
            if status in SPLIT_STATUSES and len(results) > 1:
                half = len(results) // 2
                dropped = self._deliver(results[:half], give_up, depth + 1)
                dropped += self._deliver(results[half:], give_up, depth + 1)
                log.log(level, "http sink %s: %s refused (%s); sent again in halves to spare the results the server "
                        "takes: %d of %d dropped", self.config.url, what, said, dropped, len(results))
                return dropped
            if not retry:
                if said:
                    log.log(level, "http sink %s: %s rejected, dropped: %s", self.config.url, what, said)
                self._count(len(results), delivered=not said)
                return len(results) if said else 0
            wait = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
            attempt += 1
            if not self._back_off(wait, give_up):
                self._count(len(results), delivered=False)
                log.log(level, "http sink %s: %s not delivered (%s), dropped", self.config.url, what, said)
                return len(results)

    def _back_off(self, wait: float, give_up: float) -> bool:
        """Wait `wait` seconds before the next attempt (new results arriving do not cut it short; closing does);
        False when the sink closes or the next attempt would be past `give_up`."""
        end = time.monotonic() + wait
        if end > give_up:
            return False
        with self._cond:
            while not self._closing and (left := end - time.monotonic()) > 0:
                self._cond.wait(left)
            return not self._closing

    def _count(self, n: int, delivered: bool) -> None:
        """The end of `n` results sent together, unless close() counted them already as dropped (in flight then).
        They leave the sender's hands in the same step, so a close() meanwhile cannot count them again."""
        with self._cond:
            in_flight, self._busy = self._busy, max(0, self._busy - n)  # a halved batch ends in two counts
            if self._counted_at_close or not in_flight:
                return
            if delivered:
                self.delivered += n
            else:
                self.dropped += n

    def _post(self, results: list[Result]) -> tuple[bool, str, int | None]:
        """(retry?, why it failed or "" when accepted, the HTTP status of a refusal). `batch` 1: the result as a
        JSON object; else a JSON array."""
        first = results[0]
        key = f"{first.sample_id}:{first.status.value}"
        if self.config.batch == 1:
            body = first.to_json()
        else:
            body = "[" + ",".join(result.to_json() for result in results) + "]"
            key = "batch-" + hashlib.sha256("\n".join(f"{r.sample_id}:{r.status.value}" for r in results)
                                            .encode()).hexdigest()
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        if self.config.token is not None:
            headers["Authorization"] = f"Bearer {self.config.token.get_secret_value()}"
        request = urllib.request.Request(self.config.url, data=body.encode(), headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.config.timeout_s) as response:
                response.read(1 << 16)
            return False, "", None
        except urllib.error.HTTPError as exc:
            if 300 <= exc.code < 400:
                return False, f"HTTP {exc.code}: redirected to {exc.headers.get('Location')!r}, not followed (a " \
                              "POST with its token is not sent on to another address): configure that url", exc.code
            return exc.code in RETRY_STATUSES, f"HTTP {exc.code} {exc.reason}", exc.code
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # refused, unreachable, timed
            return True, str(getattr(exc, "reason", exc)) or type(exc).__name__, None  # out, TLS, not HTTP at all

    def lost(self) -> int:
        with self._cond:
            return self.dropped

    def close(self) -> None:
        """Send what is queued while the server takes it (a bounded wait, none while it is failing), then stop. What
        is left, and a result still in flight, is counted as dropped now, so the agent's last count has it."""
        deadline = time.monotonic() + FLUSH_TIMEOUT_S
        with self._cond:
            self._flushing = True
            self._cond.notify_all()
            while (self._queue or self._busy) and not self._failing and time.monotonic() < deadline:
                self._cond.wait(max(0.0, deadline - time.monotonic()))
            self._closing = True
            self._counted_at_close = self._busy > 0
            left = len(self._queue) + self._busy
            self._queue.clear()
            self.dropped += left
            self._cond.notify_all()
        self._thread.join(JOIN_TIMEOUT_S)  # a POST in flight ends within timeout_s; the thread is a daemon
        if left:
            log.warning("http sink %s: %d result(s) not delivered at close", self.config.url, left)
