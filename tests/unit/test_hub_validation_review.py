"""The validation helpers behind the wire review's fixes: out-of-range numbers and times are typed refusals naming
their field, client strings are clipped before they are repeated, and the once-log stays bounded."""

from __future__ import annotations

import pytest
from hgen.hub.errors import InvalidRequestError
from hgen.hub.service import OnceLog
from hgen.hub.validation import (MAX_ECHOED_CHARS, TIMESTAMP_MAX_S, TIMESTAMP_MIN_S, check_request_numbers,
                                 check_sample_numbers, clip)
from hgen.protos import hub_pb2


@pytest.mark.parametrize("seconds, nanos, valid", [
    (TIMESTAMP_MIN_S, 0, True), (TIMESTAMP_MAX_S, 999_999_999, True),
    (TIMESTAMP_MIN_S - 1, 0, False), (TIMESTAMP_MAX_S + 1, 0, False), (0, -1, False), (0, 1_000_000_000, False),
])
def test_a_timestamp_is_checked_against_protobufs_range(seconds: int, nanos: int, valid: bool) -> None:
    request = hub_pb2.AnnotationRequest()
    request.sent_at.seconds, request.sent_at.nanos = seconds, nanos
    if valid:
        check_request_numbers(request)
        request.sent_at.ToNanoseconds()  # what the hub does next: it must not raise either
    else:
        with pytest.raises(InvalidRequestError, match="^sent_at"):
            check_request_numbers(request)


def test_an_unset_timestamp_and_a_zero_budget_are_fine() -> None:
    check_request_numbers(hub_pb2.AnnotationRequest())
    check_sample_numbers(hub_pb2.Sample())


def test_clip_keeps_short_ids_and_cuts_long_ones() -> None:
    assert clip("cam-a") == "cam-a"
    long = "x" * (1 << 20)
    assert len(clip(long)) < MAX_ECHOED_CHARS + 32 and clip(long).endswith(f"({len(long)} chars)")


def test_the_once_log_logs_each_key_once_and_stops_at_its_limit() -> None:
    once = OnceLog(limit=2)
    assert [once.first((str(i),)) for i in (0, 0, 1, 2, 3, 1)] == [True, False, True, False, False, False]
    assert len(once) == 3
