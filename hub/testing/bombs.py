"""Decompression bombs and the hub's memory under them (issue 16): for tests and tools/bench/hub_attacks.py.

`png_bomb` is a real one (a ~0.9 MB PNG whose zlib stream inflates to side x side grey pixels); `jpeg_bomb` is a
small JPEG whose frame header claims side x side (a decoder allocates the whole frame before it finds the data
short). `measure(workdir)` runs `python -m hgen.hub.testing.bombs` in a fresh process: a hub with gRPC and the
web UI, warmed up with good images, then every bomb through the gold upload and gRPC ingest; the child reports
its peak RSS (getrusage) over idle after each, as JSON.
"""

from __future__ import annotations

import io
import json
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np

SIDE = 30000


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(side: int = SIDE, colour: int = 0) -> bytes:
    """A valid PNG of side x side black pixels (colour type 0 grey, 2 RGB) in about 1 MB per 900 M samples."""
    channels = {0: 1, 2: 3}[colour]
    compressor = zlib.compressobj(9)
    rows = 64
    block = (b"\x00" * (side * channels + 1)) * rows
    parts = [compressor.compress(block) for _ in range(side // rows)]
    parts += [compressor.compress((b"\x00" * (side * channels + 1)) * (side % rows)), compressor.flush()]
    header = struct.pack(">IIBBBBB", side, side, 8, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(parts))
            + _chunk(b"IEND", b""))


def jpeg_bomb(side: int = SIDE) -> bytes:
    """A 64x64 baseline JPEG whose frame header (SOF0) is rewritten to claim side x side."""
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    data = bytearray(encoded.tobytes())
    at = data.index(b"\xff\xc0")
    data[at + 5:at + 9] = struct.pack(">HH", side, side)
    return bytes(data)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def measure(workdir: Path, timeout_s: float = 600.0) -> dict[str, Any]:
    """Run the bombs against a fresh hub process; {"idle_mb", "bombs": {name: {"outcome", "rss_growth_mb"}}}."""
    workdir.mkdir(parents=True, exist_ok=True)
    for name, data in (("png_grey", png_bomb()), ("jpeg", jpeg_bomb())):
        (workdir / f"{name}.bomb").write_bytes(data)
    done = subprocess.run([sys.executable, "-m", "hgen.hub.testing.bombs", str(workdir)], capture_output=True,
                          text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bomb run failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(workdir: Path) -> dict[str, Any]:
    """In the measured process: a real hub (gRPC + web), warm-up, then each bomb by each path."""
    import re

    import grpc

    from hgen.hub.testing.samples import make_request, make_sample, png_image
    from hgen.hub.testing.web import PASSWORD, add_people, web_hub
    from hgen.hub.transports.grpc_server import GrpcTransport
    from hgen.protos import hub_pb2, hub_pb2_grpc

    bombs = {p.stem: p.read_bytes() for p in sorted(workdir.glob("*.bomb"))}
    formats = {"png_grey": hub_pb2.IMAGE_FORMAT_PNG, "jpeg": hub_pb2.IMAGE_FORMAT_JPEG}
    results: dict[str, Any] = {}
    with web_hub(workdir / "hub") as app:
        add_people(app)
        op = app.web.app.test_client()
        token = re.search(r'name="csrf_token" value="([^"]+)"', op.get("/login").get_data(as_text=True)).group(1)
        op.post("/login", data={"username": "op", "password": PASSWORD, "csrf_token": token})
        token = re.search(r'name="csrf_token" value="([^"]+)"', op.get("/operator").get_data(as_text=True)).group(1)
        stub = hub_pb2_grpc.AnnotationHubStub(grpc.insecure_channel(f"127.0.0.1:{app.transport(GrpcTransport).port}"))
        metadata = _device_credential(app, "cam-1")

        def upload(data: bytes) -> int:
            return op.post("/operator/gold", data={"class_id": "1", "csrf_token": token,
                                                   "image": (io.BytesIO(data), "x")},
                           content_type="multipart/form-data").status_code

        def ingest(image: hub_pb2.Image) -> str:
            replies = list(stub.Submit(make_request("cam-1", [make_sample("cam-1", image=image)], m=1,
                                                    deadline_s=1), timeout=60, metadata=metadata))
            return hub_pb2.RejectReason.Name(replies[0].reject_reason) if replies else "no reply"

        good_jpeg = cv2.imencode(".jpg", np.zeros((64, 64, 3), np.uint8))[1].tobytes()
        upload(png_image(64).data), upload(good_jpeg)  # warm-up: decoders, templates, gRPC, database
        ingest(hub_pb2.Image(format=hub_pb2.IMAGE_FORMAT_JPEG, data=good_jpeg, height=64, width=64, channels=3))
        idle = peak_rss_mb()
        for name, data in bombs.items():
            status = upload(data)
            results[f"{name}_gold_upload"] = {"outcome": f"HTTP {status}", "rss_growth_mb": peak_rss_mb() - idle}
            reason = ingest(hub_pb2.Image(format=formats[name], data=data, height=1, width=1, channels=1))
            results[f"{name}_grpc_ingest"] = {"outcome": reason, "rss_growth_mb": peak_rss_mb() - idle}
    return {"idle_mb": idle, "bombs": results}


def _device_credential(app: Any, device_id: str) -> tuple[tuple[str, str], ...]:
    """gRPC metadata of an enrolled device (issue 15's device authentication), none on hubs without it."""
    try:
        from hgen.hub.testing.device import enroll
    except ImportError:
        return ()
    return (("authorization", f"Bearer {enroll(app, device_id)[device_id].bearer}"),)


if __name__ == "__main__":
    print(json.dumps(_child(Path(sys.argv[1]))))
