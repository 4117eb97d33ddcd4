"""The soak benchmark's report (tools/bench/soak.py): soak.md's table and notes, and the outbox-depth plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchlib import markdown_table

DEVICE_FPS, PATIENCE_S, RESEND_AFTER_S = 60, 30.0, 5.0
OUTAGE_FPS = 30  # the 30-60 fps at its low end: 13,500 samples in 30 minutes, drained by SIMULATED people
COLUMNS = ["fault", "transport", "db", "faults", "frames", "escalated", "fused_once", "lost", "duplicated",
           "unconverged", "converge_s_p50", "converge_s_p99", "duplicate_replies_per_sample", "fused_in_patience",
           "hub_missing", "drain_s", "wall_s", "code"]

NOTES = [
    "- Faults are spaced `stream / (faults + 1)`: a broker kill every ~2 s (it restarts in well under a second),",
    "  a hub kill every ~7-9 s. A hub process takes 3-6 s to start on this loaded machine (imports, migrations;",
    "  with MQTT also the broker ACL sync and reload), so the hub was down for a large part of those streams:",
    "  time to converge and the share within patience_s measure that downtime as much as the delivery path.",
    "- The machine's 2 cores were shared with other jobs (compiles, trainings, browser tests, the test suite):",
    "  load average 4-16 while these rows ran, and up to three soak runs ran as separate processes at once. So",
    "  the SIMULATED crowd answered ~4-10 samples per second, and every hub-side backlog drained at that pace:",
    "  time to converge and fused_in_patience here measure the loaded machine; lost / duplicated / unconverged",
    "  and duplicate replies do not depend on it. At lower load (load average ~1-3, code of commit e39af7e,",
    "  before the journal and the resend window) the same runs converged with p50 0.7-2.5 s (SQLite hub kills,",
    "  broker kills) and 2.8-10.8 s (PostgreSQL, soak_repeat.md), every sample within patience_s on PostgreSQL.",
    "- `code` is the commit whose delivery code a row measured; \"clean clone\" rows ran from a fresh clone of",
    "  that commit, the others in the shared work tree at that commit's delivery code.",
    "- Before the agent's 1 s reconnect grace (commit 6db99ee), the 100-kill broker run measured 2.02 duplicate",
    "  replies per sample (target not reached), p50 37.7 s, 98 kills fired, otherwise all targets met.",
    "- Agent kills: `hgen-agent run` is killed with SIGKILL and restarted on the same outbox; its results are",
    "  read back from its JSONL sink, which carries no emission time, so their time to converge is not measured",
    "  (converge_timed_samples says how many samples it covers) and duplicate replies are counted only in the",
    "  last, in-process segment. Each reply's final result is journalled in the outbox as the sample leaves it and",
    "  re-offered after a restart only to sinks that do not hold it (the JSONL sink reads its tail), so a kill",
    "  between writing a result and settling its sample no longer writes it twice (before that: 2 of 920 samples).",
    "  A restarted agent gives each restored sample only what is left of its patience_s, counted from its",
    "  escalation (before: a full patience_s again), and a restart takes seconds here, so fused_in_patience is",
    "  below 1 for these runs.",
    "- Hub unreachable: SIMULATED TIME. The hub is killed and the stream's frames are played unpaced (as fast as",
    "  the agent runs) while the agent's injected clock (hgen.edge_agent.clock.StreamClock) advances to frame i /",
    f"  {OUTAGE_FPS} s (the issue's 30-60 fps at its low end, so the SIMULATED people drain the backlog in bounded",
    "  time): patience, the resend back-off (waiting samples asked again every 5-320 s of that clock; over MQTT into",
    "  the broker's queue for the absent hub, at most the 256 oldest: edge_agent/resend.py), deadlines and the",
    "  labour window see the whole outage (outage_clock_s). The hub's own clock, the broker and the drain afterwards",
    "  are real time, and converge_s is on the agent's clock. deadline_s is 2 h (a team expecting hours offline",
    "  sets it; at the default 600 s the hub would expire every sample older than 10 min: answered EXPIRED, not",
    "  fused) and the default outbox (100,000 samples) holds the outage. Samples time out on patience_s first, as",
    "  they would in the field, so fused_in_patience is near 0 by construction; what matters is lost / duplicated /",
    "  unconverged and duplicate replies. converge_s counts from escalation on the agent's clock, so it includes",
    "  the outage itself (up to 30 min of simulated time) and then the real drain. drain_s is the SIMULATED",
    "  crowd's pace on the loaded machine (3 answers per sample through the",
    "  hub's annotator API and database), not the delivery path's.",
    "- The MQTT outage, before 020fdac, did NOT converge within its 3,000 s drain cap (2,791 of 13,500 samples",
    "  unconverged, 4.05 duplicate replies per sample): the hub ingested the broker's backlog (13,500 first asks",
    "  and 42,709 re-asks) on paho's network thread, each message waiting for SQLite's write lock against the",
    "  SIMULATED crowd; that thread stopped reading its socket, the broker dropped the hub, no PUBACK marked a",
    "  reply delivered and every reconnect re-published the whole backlog. Fixed in three steps, each measured:",
    "  (1) 020fdac: ingest on a worker, PUBACK by hand after the commit, at most 64 unacknowledged (MQTT v5",
    "  Receive Maximum): 12,709 fused by the cap, 791 still draining steadily (not stalled), 1.00 duplicate",
    "  replies per sample; (2) 1c826f9: re-asks back off to 64x resend_after_s instead of 8x (a reconnect resets",
    "  it), which halved the re-asks queued for the absent hub: all 13,500 fused once, drained in 2,069 s, 0.49",
    "  duplicate replies per sample; (3) 5d46509: the hub does not answer a re-ask within 10 s of the reply's last",
    "  send (bursts of asks queued while it was away crossed their reply): the suite's fast MQTT fault test went",
    "  from ~2.0 to 0.11-0.16 duplicate replies per sample; the hub kill runs over MQTT measured 0.96 and, on a",
    "  clean clone, 1.25 (SQLite; 1.25-2.5 without the rule) and 0.03 / 0.09 (PostgreSQL): within the target,",
    "  but on SQLite not clearly below the 1.25 measured without it. With all three (587ded2, shared tree, load",
    "  average ~2-3): 13,500 of 13,500 fused once, drained in 848 s, 0.19 duplicate replies per sample; on a clean",
    "  clone of 587ded2 (the table's row, load 3-16): 13,500 of 13,500, drained in 1,614 s, 0.38. For (2), an A/B",
    "  on the hub kill run over MQTT with (1) in place: 1.25 duplicate replies per sample at 8x, 1.97 at 64x (more",
    "  load): the re-ask cap was not what raised them there; (3) was.",
    "- The gRPC outage (the table's row, clean clone of d0ff275, re-ask cap 64x): all 13,500 fused once, drained in",
    "  760 s, 0 duplicate replies. A first attempt with the then default --drain-s 600 (now 3600) stopped while 2,372 samples were",
    "  still draining",
    "  (11,128 fused by then, none lost or duplicated): the cap was shorter than the drain, so the row is the",
    "  re-run with --drain-s 3600. The same run at the 8x cap (9cc1a84, shared tree) drained in 2,393 s.",
    "- Two hubs: both on one PostgreSQL and one broker (MQTT shared subscription `$share/hubs/...`); the second",
    "  hub is killed and restarted, the first keeps serving. Each hub process runs its own simulated crowd, with",
    "  the same three annotator names, so the two crowds share one open task per name: answers there come at",
    "  one crowd's pace, and tasks held by the killed crowd wait for its restart.",
]


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for row in rows:
        points = [(t, d) for t, d in row["outbox_depth"] if d >= 0]
        if points:
            ax.plot(*zip(*points, strict=True), label=row["run"], linewidth=1)
    ax.set_xlabel("seconds since the agent started")
    ax.set_ylabel("samples in the device outbox")
    ax.set_yscale("symlog")
    ax.set_title("Outbox depth under faults (SIMULATED annotators)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(rows: list[dict[str, Any]], setup: str, scale: float) -> str:
    """soak.md: the table (targets checked per row) and how to read it; `setup` is soak.py's description."""
    ok = lambda r: r.get("lost") == 0 and r.get("duplicated") == 0 and r.get("unconverged") == 0 \
        and r.get("duplicate_replies_per_sample", 99) <= 2
    lines = [
        "# Soak: delivery under faults (issue 17)", "",
        "Annotators are **SIMULATED** (3 per sample, always right, answering at once). " + setup,
        "", (f"Machine: 2 cores shared with other work, no GPU. One repeat per run (each run is thousands of samples);"
             f" scale {scale}; patience_s {PATIENCE_S}, resend_after_s {RESEND_AFTER_S}, {DEVICE_FPS} fps (outage"
             f" runs {OUTAGE_FPS} fps); wall_s is each run's wall time."), "",
        markdown_table([{**r, "fault": r["fault"] + ("" if ok(r) else " (target NOT reached)")} for r in rows],
                       COLUMNS), "",
        "Outbox depth over time: soak.png.", "",
        "## How to read it", "",
        *NOTES,
    ]
    return "\n".join(lines)
