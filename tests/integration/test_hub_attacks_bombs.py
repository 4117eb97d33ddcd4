"""Issue 16: a 30000x30000 PNG bomb and a JPEG bomb (declaring 1x1) through the gold upload and gRPC ingest of a
real hub process are refused from their headers; the process's peak RSS stays within 64 MB of its idle size."""

from __future__ import annotations

from pathlib import Path

from hgen.hub.testing.bombs import measure

LIMIT_MB = 64.0


def test_bombs_are_refused_without_growing_the_hub(tmp_path: Path) -> None:
    result = measure(tmp_path)
    bombs = result["bombs"]
    assert set(bombs) == {"png_grey_gold_upload", "png_grey_grpc_ingest", "jpeg_gold_upload", "jpeg_grpc_ingest"}
    assert bombs["png_grey_gold_upload"]["outcome"] == bombs["jpeg_gold_upload"]["outcome"] == "HTTP 413"
    assert bombs["png_grey_grpc_ingest"]["outcome"] == "REJECT_REASON_IMAGE_TOO_MANY_PIXELS"
    assert bombs["jpeg_grpc_ingest"]["outcome"] == "REJECT_REASON_IMAGE_TOO_MANY_PIXELS"
    worst = max(b["rss_growth_mb"] for b in bombs.values())
    assert worst <= LIMIT_MB, result  # before issue 16: 1.9 GB peaks (PNG upload, JPEG over gRPC)
