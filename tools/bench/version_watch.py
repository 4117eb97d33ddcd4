"""How soon the operator page's version watch (`hgen.hub.retrain.watch`) marks a deployed version whose sure answers
people agree with less than the version before's, and how often it marks one that is no worse: the statistic alone,
simulated (no hub, no model; the people are SIMULATED as exact: their label is the truth).

Per cell: the version before had `BEFORE` audited sure frames at agreement p; the deployed one has n audited sure
frames at agreement p - drop; each frame agrees with probability given (independent Bernoulli draws, seeded). The
share of `RUNS` runs in which `Watch.worse` holds. With the agent's default audit share (5 % of confident frames) and
a camera at 1 frame per second, 100 audited sure frames take about 35 minutes of confident frames.

    python tools/bench/version_watch.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine, markdown_table, write_results  # noqa: E402

BEFORE = 1000
RUNS = 2000
AGREEMENT = (0.95, 0.9, 0.8)
DROPS = (0.0, 0.02, 0.05, 0.1, 0.2)
AUDITED = (30, 100, 300, 1000, 3000)


def marked_share(p: float, drop: float, n: int, rng: np.random.Generator) -> float:
    from hgen.hub.retrain.watch import Checked, Watch

    before = rng.binomial(BEFORE, p, RUNS)
    after = rng.binomial(n, max(p - drop, 0.0), RUNS)
    return float(np.mean([Watch("m", Checked("2", n, int(a)), Checked("1", BEFORE, int(b))).worse
                          for a, b in zip(after, before)]))


def main() -> int:
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    rows = [{"agreement before": p, "drop (points)": round(100 * d), "audited sure frames": n,
             "marked": round(marked_share(p, d, n, rng), 3)}
            for p in AGREEMENT for d in DROPS for n in AUDITED]
    seconds = time.perf_counter() - start
    m = machine()
    md = "\n".join([
        "# Version watch: how soon a worse deployed version is marked (simulated statistic, people SIMULATED)",
        "", __doc__.split("\n\n    python")[0], "",
        f"Machine: {m['cpu']}, {m['cores']} cores; {RUNS} runs per cell, seed 0; wall {seconds:.1f} s. Shares, not "
        "timings (no medians).", "",
        "`marked` at drop 0 is the false-alarm rate (a version no worse, marked); at other drops, the chance a "
        "version that much worse is marked after that many audited sure frames.", "",
        markdown_table(rows, ["agreement before", "drop (points)", "audited sure frames", "marked"]),
    ])
    write_results("version_watch", {"before": BEFORE, "runs": RUNS, "rows": rows, "seconds": seconds}, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
