"""What the agent's `http` result sink costs the device, one POST per result against batches.

A webhook (Python's ThreadingHTTPServer, in a separate process on a loopback port, so its work is not counted)
takes every POST with 200 and counts them. The sink, in this process, is given classifier results (model-only
frames as the agent makes them: sample id, label, confidence, bundle version) in two ways: a backlog of
`BACKLOG` at once (a link back after an outage: every batch full), and `PACED` at a camera's 30 a second
(batches of what `batch_wait_s`, 1 s, gathers). Per row: wall seconds until all were delivered, this process's
CPU (user + system: the sender thread's JSON, HTTP and socket work, and for the paced rows the pacing loop's
sleeps) per result, and the POSTs the server counted. Median of `REPEATS` runs.

    python tools/bench/http_sink.py              # measure (about two minutes)
    python tools/bench/http_sink.py --from-json  # re-write the .md from the stored .json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine, markdown_table, write_results  # noqa: E402

BACKLOG = 3000
PACED = 300
FPS = 30.0
ROWS = (("backlog", 1), ("backlog", 10), ("backlog", 50), ("paced 30/s", 1), ("paced 30/s", 50))
REPEATS = 3
OUT = Path(__file__).resolve().parent / "results"

SERVER = r"""
import sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
posts = [0]
lock = threading.Lock()
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        with lock:
            posts[0] += 1
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def do_GET(self):
        with lock:
            body = str(posts[0]).encode()
            posts[0] = 0
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


def posts_counted(port: int) -> int:
    """The POSTs the server took since the last call (and reset)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=10) as response:
        return int(response.read())


def run_once(port: int, scenario: str, batch: int) -> dict[str, float]:
    from hgen.edge_agent.results import Result, ResultStatus
    from hgen.edge_agent.sinks.http import HttpSink, HttpSinkConfig
    from hgen.runtime.config import parse_config

    n = BACKLOG if scenario == "backlog" else PACED
    results = [Result(i, str(uuid.uuid4()), time.time(), ResultStatus.MODEL, "sure", label=i % 10,
                      label_name=str(i % 10), model_label=i % 10, confidence=0.93, bundle_version="1.0.3")
               for i in range(n)]
    posts_counted(port)
    sink = HttpSink(parse_config(HttpSinkConfig, {"kind": "http", "url": f"http://127.0.0.1:{port}/in",
                                                  "batch": batch, "max_queued": max(n, 1000)}))
    cpu0, wall0 = os.times(), time.perf_counter()
    for i, result in enumerate(results):
        if scenario != "backlog":
            time.sleep(max(0.0, wall0 + i / FPS - time.perf_counter()))  # the camera's pace
        sink.emit(result)
    deadline = time.monotonic() + 300
    while sink.delivered + sink.dropped < n and time.monotonic() < deadline:
        time.sleep(0.01)  # a benchmark's poll, not a test's synchronisation
    wall = time.perf_counter() - wall0
    cpu1 = os.times()
    sink.close()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {"wall_s": wall, "cpu_ms_per_result": cpu / n * 1000, "delivered": sink.delivered, "results": n,
            "posts": posts_counted(port)}


def measure() -> dict:
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        rows = []
        for scenario, batch in ROWS:
            runs = [run_once(port, scenario, batch) for _ in range(REPEATS)]
            rows.append({"results_given": scenario, "batch": batch, "results": runs[0]["results"],
                         "posts": statistics.median(r["posts"] for r in runs),
                         "delivered": min(r["delivered"] for r in runs),
                         "wall_s": statistics.median(r["wall_s"] for r in runs),
                         "cpu_ms_per_result": statistics.median(r["cpu_ms_per_result"] for r in runs),
                         "runs_cpu_ms_per_result": [round(r["cpu_ms_per_result"], 4) for r in runs]})
    finally:
        server.terminate()
        server.wait()
    return {"repeats": REPEATS, "rows": rows}


def report(data: dict) -> str:
    table = markdown_table([{**row, "posts": f"{row['posts']:.0f}", "wall_s": f"{row['wall_s']:.2f}",
                             "cpu_ms_per_result": f"{row['cpu_ms_per_result']:.3f}"} for row in data["rows"]],
                           ["results_given", "batch", "results", "posts", "delivered", "wall_s",
                            "cpu_ms_per_result"])
    m = data["machine"]
    return f"""# The agent's http result sink: one POST per result against batches

Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']} (an x86 server core: a Raspberry Pi's is slower).
Median of {data['repeats']} runs per row. Results as the agent makes them, given to the sink as a backlog of
{BACKLOG} at once (every batch full) or {PACED} at a camera's {FPS:.0f} a second (`batch_wait_s` 1 s, the default).
A webhook in another process on loopback answers 200 to every POST and counts them (its CPU is not counted).
`cpu_ms_per_result`: this process's user + system CPU per result: the sender thread's JSON, HTTP and socket work
(for the paced rows also the pacing loop). Plain HTTP on loopback, a new connection per POST: over HTTPS each POST
also costs a TLS handshake, and over a real link a round trip, which batching saves too; the delay a batch adds
(up to `batch_wait_s`) is not measured here.

{table}

Reproduce: `python tools/bench/http_sink.py` (`--from-json` rewrites this file from the .json).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-json", action="store_true")
    args = parser.parse_args()
    if args.from_json:
        data = json.loads((OUT / "http_sink.json").read_text())
    else:
        data = {"machine": machine(), **measure()}
    write_results("http_sink", data, report(data))
    print(report(data))


if __name__ == "__main__":
    main()
