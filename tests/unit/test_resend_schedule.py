"""The device's ask-again schedule and the outbox's payload-free scan (issue 17: delivery at scale)."""

from __future__ import annotations

from hgen.edge_agent.outbox import Outbox, OutboxRow
from hgen.edge_agent.resend import MAX_FACTOR, ResendSchedule


def test_asks_back_off_up_to_the_cap_and_a_reconnect_shortens_it_to_after_s() -> None:
    schedule = ResendSchedule(after_s=10.0)
    assert schedule.due("a", 0.0)  # never sent
    assert schedule.sent("a", 0.0) and not schedule.sent("a", 10.0)
    assert not schedule.due("a", 29.9) and schedule.due("a", 30.0)  # second ask waits 2 x 10 s
    now = 30.0
    for _ in range(6):
        schedule.sent("a", now)
    assert schedule.asks("a") == 8
    assert not schedule.due("a", now + 10.0 * MAX_FACTOR - 0.1) and schedule.due("a", now + 10.0 * MAX_FACTOR)
    schedule.reconnected(now + 1.0)  # the link came back: no waiting out the long back-off, nor asking at once
    assert not schedule.due("a", now + 9.9) and schedule.due("a", now + 10.0)
    assert schedule.asks("a") == 0
    schedule.sent("b", 100.0)
    schedule.reconnected(200.0)  # long outage: due after the grace in which kept replies arrive, once
    assert not schedule.due("b", 200.9) and schedule.due("b", 201.0)
    schedule.done("a")
    assert schedule.due("a", 0.0) and schedule.asks("a") == 0


def test_outbox_index_and_rows_read_only_what_a_resend_scan_needs(tmp_path) -> None:
    box = Outbox(tmp_path / "o.sqlite", 100)
    rows = [OutboxRow(f"s{i}", f"b{i // 2}", 0.0, i, 3, 0.0, b"p", b"l", "{}") for i in range(5)]
    box.put(rows)
    assert box.index() == [(f"s{i}", f"b{i // 2}") for i in range(5)]
    box.ack(["s1"])
    assert [r.sample_id for r in box.rows(["s4", "s1", "s0"])] == ["s0", "s4"]  # oldest first, acked gone
    assert box.rows([]) == []
    box.close()
