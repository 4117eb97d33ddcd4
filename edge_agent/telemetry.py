"""Telemetry: counters, inference latency p50/p99 over a window, fps; as DeviceStatus and Prometheus text.

The Prometheus endpoint is a stdlib HTTP server on a local port (`GET /metrics`), so no extra dependency.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from hgen.protos import hub_pb2

COUNTERS = (
    "frames", "frames_invalid", "frames_resized", "frames_unfamiliar", "frames_dropped", "inference_errors",
    "escalated", "audits", "rate_limited", "budget_exhausted", "labour_exhausted", "sent_samples", "replies",
    "fused", "timeouts", "late_replies", "unknown_replies", "duplicate_replies", "hub_refused", "declined",
    "outbox_dropped", "swaps", "swaps_rejected", "updates_replaced", "rollbacks", "source_reconnects", "sink_errors",
)


class Telemetry:
    """Thread-safe counters plus gauges read on demand (outbox depth, state strings)."""

    def __init__(self, latency_window: int = 1000, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter({name: 0 for name in COUNTERS})
        self._latency_ms: deque[float] = deque(maxlen=latency_window)
        self._frame_times: deque[float] = deque(maxlen=120)
        self._clock = clock
        self._gauges: dict[str, Callable[[], float]] = {}
        self.problems: dict[str, str] = {}  # component -> readable problem, shown on status

    def inc(self, name: str, by: int = 1) -> None:
        with self._lock:
            self._counts[name] += by

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        self._gauges[name] = read

    def frame(self, latency_ms: float) -> None:
        with self._lock:
            self._counts["frames"] += 1
            self._latency_ms.append(latency_ms)
            self._frame_times.append(self._clock())

    def problem(self, component: str, text: str) -> None:
        with self._lock:
            if text:
                self.problems[component] = text
            else:
                self.problems.pop(component, None)

    def count(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def snapshot(self) -> dict[str, float]:
        """Every counter and gauge plus fps and latency percentiles, as plain numbers."""
        with self._lock:
            data: dict[str, float] = {k: float(v) for k, v in self._counts.items()}
            latencies = np.asarray(self._latency_ms) if self._latency_ms else None
            times = list(self._frame_times)
        data["fps"] = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        data["inference_ms_p50"] = float(np.percentile(latencies, 50)) if latencies is not None else 0.0
        data["inference_ms_p99"] = float(np.percentile(latencies, 99)) if latencies is not None else 0.0
        frames = max(data["frames"], 1.0)
        data["share_to_people"] = (data["escalated"] + data["audits"]) / frames
        for name, read in self._gauges.items():
            data[name] = float(read())
        return data

    def device_status(self, device_id: str, bundle_name: str, bundle_version: str) -> hub_pb2.DeviceStatus:
        snap = self.snapshot()
        status = hub_pb2.DeviceStatus(device_id=device_id, online=True, bundle_name=bundle_name,
                                      bundle_version=bundle_version, inference_ms_p50=snap["inference_ms_p50"],
                                      battery=-1.0, pending_samples=int(snap.get("outbox_depth", 0)),
                                      metrics=snap)
        with self._lock:
            for component in self.problems:
                status.metrics[f"problem.{component}"] = 1.0
        status.at.GetCurrentTime()
        return status


def prometheus_text(snapshot: Mapping[str, float], problems: Mapping[str, str], prefix: str = "hgen_agent") -> str:
    """Prometheus exposition format 0.0.4: counters end in _total, the rest are gauges."""
    lines = []
    for name, value in sorted(snapshot.items()):
        metric = f"{prefix}_{name}_total" if name in COUNTERS else f"{prefix}_{name}"
        kind = "counter" if name in COUNTERS else "gauge"
        lines += [f"# TYPE {metric} {kind}", f"{metric} {value:.6g}"]
    lines.append(f"# TYPE {prefix}_problem gauge")
    for component, text in sorted(problems.items()):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
        lines.append(f'{prefix}_problem{{component="{component}",detail="{escaped}"}} 1')
    return "\n".join(lines) + "\n"


class PrometheusEndpoint:
    """`GET /metrics` on host:port (port 0 picks a free one, see `.port`)."""

    def __init__(self, telemetry: Telemetry, host: str, port: int) -> None:
        owner = telemetry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = prometheus_text(owner.snapshot(), dict(owner.problems)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="agent-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
