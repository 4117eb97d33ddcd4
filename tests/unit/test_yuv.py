"""The shared YUV->RGB rule (`hgen.runtime.yuv`, ported in android_bridge/src/yuv.ts) and the agent's `y4m`
source that applies it to a file's planes: the numbers the rule promises, BGR frames, looping, grey and full-range
files, and typed errors for what it cannot convert."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from hgen.edge_agent.config import SourceConfig
from hgen.edge_agent.errors import SourceError
from hgen.edge_agent.sources import open_source
from hgen.edge_agent.sources.y4m import Y4mFileSource
from hgen.runtime.yuv import YuvError, i420_to_rgb, nv12_to_rgb


def planes(y: int | np.ndarray, u: int, v: int, height: int = 4, width: int = 4):
    luma = np.full((height, width), y, np.uint8) if np.isscalar(y) else np.asarray(y, np.uint8)
    chroma = ((luma.shape[0] + 1) // 2, (luma.shape[1] + 1) // 2)
    return luma, np.full(chroma, u, np.uint8), np.full(chroma, v, np.uint8)


def test_limited_range_grey_scales_luma_to_full_range_within_rounding() -> None:
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    rgb = i420_to_rgb(*planes(ramp, 128, 128)).reshape(-1, 3)
    exact = np.clip(np.round((np.arange(256) - 16) * 255 / 219), 0, 255)
    assert (rgb == rgb[:, :1]).all()  # grey stays grey
    assert np.abs(rgb[:, 0] - exact).max() <= 1 and rgb[16, 0] == 0 and rgb[235, 0] == 255
    assert (i420_to_rgb(*planes(ramp, 128, 128), full_range=True)[..., 1] == ramp).all()  # full range: identity


@pytest.mark.parametrize(("matrix", "yuv", "rgb"), [
    ("bt601", (81, 90, 240), (255, 0, 0)), ("bt601", (145, 54, 34), (0, 255, 1)), ("bt601", (41, 240, 110), (0, 0, 255)),
    ("bt709", (63, 102, 240), (255, 0, 0)), ("bt709", (173, 42, 26), (0, 255, 1)), ("bt709", (32, 240, 118), (0, 0, 255)),
])
def test_primaries_of_each_matrix(matrix: str, yuv: tuple[int, int, int], rgb: tuple[int, int, int]) -> None:
    got = i420_to_rgb(*planes(*yuv), matrix=matrix)[0, 0]
    assert np.abs(got.astype(int) - rgb).max() <= 2, got


def test_nv12_is_i420_with_interleaved_chroma_and_odd_sizes_work() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    u, v = (rng.integers(0, 256, (3, 4), dtype=np.uint8) for _ in range(2))
    uv = np.stack([u, v], axis=2).reshape(3, 8)
    assert np.array_equal(nv12_to_rgb(y, uv, "bt709", True), i420_to_rgb(y, u, v, "bt709", True))
    with pytest.raises(YuvError):
        i420_to_rgb(y, u[:2], v)
    with pytest.raises(YuvError):
        i420_to_rgb(*planes(16, 128, 128), matrix="bt2020")


def write_y4m(path: Path, frames: list[tuple[np.ndarray, np.ndarray, np.ndarray]], colour: str = "C420",
              extra: str = "") -> Path:
    height, width = frames[0][0].shape
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 {colour}{extra}\n".encode())
        for frame in frames:
            out.write(b"FRAME\n" + b"".join(p.tobytes() for p in frame))
    return path


def read_all(config: SourceConfig) -> list[np.ndarray]:
    source, images = open_source(config), []
    while (frame := source.read()) is not None:
        images.append(frame.image)
    source.close()
    return images


def test_y4m_source_gives_bgr_frames_by_the_rule_and_loops(tmp_path: Path) -> None:
    red, grey = planes(81, 90, 240, 6, 8), planes(126, 128, 128, 6, 8)
    video = write_y4m(tmp_path / "v.y4m", [red, grey])
    images = read_all(SourceConfig(kind="y4m", uri=str(video)))
    assert len(images) == 2 and images[0].shape == (6, 8, 3)
    assert np.array_equal(images[0], i420_to_rgb(*red)[..., ::-1]) and images[0][0, 0, 2] > 250  # BGR: red last
    looped = open_source(SourceConfig(kind="y4m", uri=str(video), loop=True, max_frames=5, prefetch=0))
    assert [looped.read().index for _ in range(5)] == [0, 1, 2, 3, 4]
    looped.close()


def test_y4m_source_reads_grey_and_full_range_files(tmp_path: Path) -> None:
    luma = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    mono = write_y4m(tmp_path / "mono.y4m", [(luma,)], colour="Cmono")
    full = write_y4m(tmp_path / "full.y4m", [planes(luma, 128, 128)], extra=" XCOLORRANGE=FULL")
    assert np.array_equal(read_all(SourceConfig(kind="y4m", uri=str(mono)))[0], i420_to_rgb(*planes(luma, 128, 128)))
    assert np.array_equal(read_all(SourceConfig(kind="y4m", uri=str(full)))[0][..., 0], luma)


@pytest.mark.parametrize("header", [b"RIFF....", b"YUV4MPEG2 W8 H6 C444\n", b"YUV4MPEG2 W8 H6 C420p10\n",
                                    b"YUV4MPEG2 H6 C420\n"])
def test_y4m_source_refuses_what_it_cannot_convert(tmp_path: Path, header: bytes) -> None:
    bad = tmp_path / "bad.y4m"
    bad.write_bytes(header + b"FRAME\n" + bytes(72))
    with pytest.raises(SourceError):
        Y4mFileSource(SourceConfig(kind="y4m", uri=str(bad)), threading.Event())
    with pytest.raises(SourceError):
        Y4mFileSource(SourceConfig(kind="y4m", uri=str(tmp_path / "missing.y4m")), threading.Event())


def test_a_truncated_last_frame_ends_the_stream(tmp_path: Path) -> None:
    video = write_y4m(tmp_path / "v.y4m", [planes(100, 128, 128, 6, 8)] * 2)
    video.write_bytes(video.read_bytes()[:-10])
    assert len(read_all(SourceConfig(kind="y4m", uri=str(video)))) == 1
