"""What the agent's `http` result sink costs the device, one POST per result against batches.

A webhook (Python's ThreadingHTTPServer, in a separate process on a loopback port, so its work is not counted)
takes every POST with 200. The sink, in this process, is given `RESULTS` classifier results (model-only frames as
the agent makes them: sample id, label, confidence, bundle version), all at once as a backlog; then close() is
awaited after the last is delivered. Per `batch`: wall seconds until all were delivered, this process's CPU
seconds (user + system: the sender thread's JSON, HTTP and socket work) per 1,000 results, and the POSTs made.
Median of `REPEATS` runs. A camera at 30 fps makes 30 results a second; the CPU per result is what it costs a Pi
core, relative to this x86 one.

    python tools/bench/http_sink.py              # measure (about a minute)
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

RESULTS = 3000
BATCHES = (1, 10, 50)
REPEATS = 3
OUT = Path(__file__).resolve().parent / "results"

SERVER = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


def run_once(port: int, batch: int) -> dict[str, float]:
    from hgen.edge_agent.results import Result, ResultStatus
    from hgen.edge_agent.sinks.http import HttpSink, HttpSinkConfig
    from hgen.runtime.config import parse_config

    results = [Result(i, str(uuid.uuid4()), time.time(), ResultStatus.MODEL, "sure", label=i % 10,
                      label_name=str(i % 10), model_label=i % 10, confidence=0.93, bundle_version="1.0.3")
               for i in range(RESULTS)]
    sink = HttpSink(parse_config(HttpSinkConfig, {"kind": "http", "url": f"http://127.0.0.1:{port}/in",
                                                  "batch": batch, "batch_wait_s": 0.2, "max_queued": RESULTS}))
    cpu0, wall0 = os.times(), time.perf_counter()
    for result in results:
        sink.emit(result)
    deadline = time.monotonic() + 300
    while sink.delivered + sink.dropped < RESULTS and time.monotonic() < deadline:
        time.sleep(0.01)  # a benchmark's poll, not a test's synchronisation
    wall = time.perf_counter() - wall0
    cpu1 = os.times()
    sink.close()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {"wall_s": wall, "cpu_s_per_1000": cpu / RESULTS * 1000, "delivered": sink.delivered,
            "posts": -(-RESULTS // batch)}


def measure() -> dict:
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        rows = []
        for batch in BATCHES:
            runs = [run_once(port, batch) for _ in range(REPEATS)]
            rows.append({"batch": batch, "results": RESULTS, "posts": runs[0]["posts"],
                         "delivered": min(r["delivered"] for r in runs),
                         "wall_s": statistics.median(r["wall_s"] for r in runs),
                         "results_per_s": RESULTS / statistics.median(r["wall_s"] for r in runs),
                         "cpu_ms_per_result": statistics.median(r["cpu_s_per_1000"] for r in runs),
                         "runs_wall_s": [round(r["wall_s"], 3) for r in runs]})
    finally:
        server.terminate()
        server.wait()
    return {"repeats": REPEATS, "rows": rows}


def report(data: dict) -> str:
    table = markdown_table([{**row, "wall_s": f"{row['wall_s']:.2f}", "results_per_s": f"{row['results_per_s']:.0f}",
                             "cpu_ms_per_result": f"{row['cpu_ms_per_result']:.3f}"} for row in data["rows"]],
                           ["batch", "results", "posts", "delivered", "wall_s", "results_per_s", "cpu_ms_per_result"])
    m = data["machine"]
    return f"""# The agent's http result sink: one POST per result against batches

Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}. Median of {data['repeats']} runs per row.
A backlog of {RESULTS} classifier results (as the agent makes them) given to the sink at once; a webhook in another
process on loopback answers 200 to every POST (its CPU is not counted). `cpu_ms_per_result`: this process's user +
system CPU per result, the sender thread's JSON, HTTP and socket work. Loopback has no network latency: over a real
link each POST also waits a round trip, which batching saves too.

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
