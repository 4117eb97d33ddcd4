"""The device-side labour demand (Eq. 13): a token bucket over frames that keeps the running L under the budget,
refunds samples that were not sent, and settles estimates against the labour replies report."""

from __future__ import annotations

import numpy as np
import pytest

from hgen.edge_agent.gating import LabourBucket
from hgen.runtime.labour import labour_ratio


def test_unlimited_bucket_takes_everything_and_still_counts() -> None:
    bucket = LabourBucket(None, 10)
    bucket.frame()
    assert bucket.take(9.0) and bucket.take(9.0)
    assert bucket.ratio() == labour_ratio(18.0, 1)


def test_running_labour_stays_under_the_share_for_any_stream() -> None:
    rng = np.random.default_rng(0)
    bucket = LabourBucket(0.05, window_frames=200)  # 0.6 operations per frame
    sent = 0
    for _ in range(5000):
        bucket.frame()
        if rng.random() < 0.3 and bucket.take(float(rng.uniform(3, 9))):  # d in [1, 3], m = 3
            sent += 1
        assert bucket.ratio() <= 0.05 + 1e-12
    assert 0.04 < bucket.ratio() and sent > 300  # the budget is used, not just respected


def test_a_quiet_period_banks_at_most_the_window() -> None:
    bucket = LabourBucket(0.05, window_frames=100)
    for _ in range(10_000):
        bucket.frame()
    assert bucket.tokens == bucket.capacity == pytest.approx(60.0)
    taken = sum(bucket.take(6.0) for _ in range(20))
    assert taken == 10


def test_refund_and_settle_against_reported_labour() -> None:
    bucket = LabourBucket(0.05, window_frames=100)
    for _ in range(20):
        bucket.frame()  # 12 operations
    assert bucket.take(6.0)
    bucket.refund(6.0)
    assert bucket.tokens == pytest.approx(12.0) and bucket.spent == 0.0
    assert bucket.take(6.0)
    bucket.settle(6.0, 9.0)  # people needed more than estimated: charged, so the next sample must wait
    assert bucket.spent == 9.0 and bucket.tokens == pytest.approx(3.0)
    assert not bucket.take(6.0)


def test_refunds_after_an_outage_bank_at_most_the_window() -> None:
    """A hub outage: samples go out as the frames allow, the frames go on filling the bucket, then every waiting
    sample comes back EXPIRED (refunded in full). The refunds lifted the bucket to many times its capacity, which
    then let a burst far above the labour demand through."""
    bucket = LabourBucket(0.05, window_frames=100)  # capacity 60 operations
    reserved = []
    for _ in range(10_000):
        bucket.frame()
        if bucket.take(9.0):
            reserved.append(9.0)
    for labour in reserved:
        bucket.settle(labour, 0.0)  # EXPIRED: nobody answered
    assert bucket.tokens == pytest.approx(bucket.capacity)
    assert sum(bucket.take(9.0) for _ in range(1000)) == 6
    bucket.refund(9.0)
    assert bucket.tokens <= bucket.capacity
