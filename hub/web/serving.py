"""werkzeug's threaded WSGI server, bounded: a connection cap in total and per client address, and a read timeout.

Unbounded, every TCP connection got a thread and a file descriptor for as long as the client liked: about 1,000
idle connections from anyone who could reach the port (no account needed) used up the hub process's open files
(systemd's soft limit is 1,024), and the web UI, gRPC, SQLite and image files all failed until they let go. Now a
connection past a cap is answered 503 and closed at once (counted, logged once per address), and one that sends
nothing for `read_timeout_s` (mid-request, or idle between keep-alive requests) is dropped. Trusted proxies are
exempt from the per-address cap (every person behind one shares its address) but not from the total.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from hgen.hub.web.security import within_networks

log = logging.getLogger(__name__)
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 38\r\nRetry-After: 5\r\n"
        b"Connection: close\r\n\r\ntoo many connections, try again later\n")
MAX_LOGGED_ADDRESSES = 256  # refusals are logged once per address, for this many addresses


def bounded_handler(read_timeout_s: float) -> type[WSGIRequestHandler]:
    """The request handler with a socket timeout (StreamRequestHandler applies `timeout` to each connection)."""
    return type("BoundedRequestHandler", (WSGIRequestHandler,), {"timeout": read_timeout_s})


class BoundedWSGIServer(ThreadedWSGIServer):
    """At most `max_connections` open connections, at most `per_address` of them from one client address (trusted
    proxies excepted); `on_refused(address)` counts each refusal."""

    def __init__(self, host: str, port: int, app: Any, *, max_connections: int, per_address: int,
                 read_timeout_s: float, trusted: tuple[str, ...] = (),
                 on_refused: Callable[[str], None] = lambda address: None) -> None:
        super().__init__(host, port, app, bounded_handler(read_timeout_s))
        self.max_connections = max_connections
        self.per_address = per_address
        self.trusted = trusted
        self.on_refused = on_refused
        self._lock = threading.Lock()
        self._open: Counter[str] = Counter()
        self._logged: set[str] = set()

    def process_request(self, request: Any, client_address: Any) -> None:
        address = str(client_address[0]) if client_address else "?"
        if not self._admit(address):
            self._refuse(request, address)
            return
        try:
            super().process_request(request, client_address)
        except RuntimeError:  # no thread could be started
            self._leave(address)
            self.shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._leave(str(client_address[0]) if client_address else "?")

    def open_connections(self) -> int:
        with self._lock:
            return sum(self._open.values())

    def _admit(self, address: str) -> bool:
        with self._lock:
            if sum(self._open.values()) >= self.max_connections:
                return False
            if self._open[address] >= self.per_address and not within_networks(address, self.trusted):
                return False
            self._open[address] += 1
            return True

    def _leave(self, address: str) -> None:
        with self._lock:
            self._open[address] -= 1
            if self._open[address] <= 0:
                del self._open[address]

    def _refuse(self, request: socket.socket, address: str) -> None:
        """503 and close, without a thread: the accept loop must not wait on a client that does not read."""
        self.on_refused(address)
        if address not in self._logged and len(self._logged) < MAX_LOGGED_ADDRESSES:
            self._logged.add(address)
            log.warning("web: connection from %s refused (%d open; caps web.max_connections %d, "
                        "web.max_connections_per_address %d); logged once per address", address,
                        self.open_connections(), self.max_connections, self.per_address)
        try:
            request.setblocking(False)
            request.send(BUSY)
        except OSError:
            pass
        self.shutdown_request(request)
