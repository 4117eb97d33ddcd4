"""Reviewed loader faults: what an unsigned archive or folder could make the device do before (or instead of) a typed
refusal, a signed manifest that disagrees with its model file, and misspelt or empty engine selections.

Each test failed on the loader before the fix: memory spent on a pax header, a raw LZMAError, IsADirectoryError or a
hash of /dev/zero that never ended, a bundle that loaded and then failed every frame, options dropped silently.
"""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import io
import lzma
import os
import tarfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from hgen.compiler.bundle import pack_bundle
from hgen.compiler.cli.main import main as hgen_main
from hgen.edge_agent.testing import make_keys, null_bundle, relu_tflite
from hgen.runtime import signing
from hgen.runtime.bundle import BundleFormatError, SignatureError, load_bundle, load_first_runnable
from hgen.runtime.bundle.errors import NoEngineError
from hgen.runtime.bundle.manifest import Manifest, file_digest, sign_manifest
from hgen.runtime.bundle.variants import INDEX_NAME, INDEX_SIGNATURE, load_variant_set, unpack_variant_set
from hgen.runtime.engines import EngineError, open_engine
from hgen.runtime.errors import InvalidInputError

needs_litert = pytest.mark.skipif(importlib.util.find_spec("ai_edge_litert") is None,
                                  reason="needs LiteRT: pip install 'hgen[agent]'")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return make_keys(tmp_path_factory.mktemp("keys"))


# --- archives: headers tarfile would read whole, and decompressors other than gzip ------------------------------


def _header(name: str, size: int, kind: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _pax_record(keyword: str, value: bytes) -> bytes:
    body = f" {keyword}=".encode() + value + b"\n"
    length = len(body) + len(str(len(body)))
    length = len(body) + len(str(length))
    return str(length).encode() + body


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)


def _archive(path: Path, *blocks: bytes, compress: bool = True) -> Path:
    """A tar of hand-made header blocks and payloads (then the end-of-archive zeros), gzip-compressed if asked."""
    data = b"".join(blocks) + b"\0" * (2 * tarfile.BLOCKSIZE)
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


def _manifest_member() -> bytes:
    return _header("manifest.json", 2, tarfile.REGTYPE) + _padded(b"{}")


def test_a_large_pax_header_is_refused_before_it_is_read(tmp_path: Path, keys) -> None:
    """A 200 KB unsigned archive made tarfile allocate 600 MB while the loader looked for manifest.json."""
    size = 32 << 20
    record = _pax_record("comment", b"a" * (size - 20))
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped:  # written in chunks: the test stays small too
        zipped.write(_header("././@PaxHeader", len(record), tarfile.XHDTYPE))
        for at in range(0, len(record), 1 << 20):
            zipped.write(record[at:at + (1 << 20)])
        zipped.write(b"\0" * (-len(record) % tarfile.BLOCKSIZE) + _manifest_member() + b"\0" * 1024)
    archive = tmp_path / "bomb.hgb"
    archive.write_bytes(raw.getvalue())
    del record, raw
    assert archive.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(BundleFormatError, match="pax header"):
            load_bundle(archive, trusted_public_key=keys.public_pem)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"{peak} bytes allocated for an unsigned archive"


@pytest.mark.parametrize("blocks", [
    pytest.param([_header("././@LongLink", 600, tarfile.GNUTYPE_LONGNAME) + _padded(b"m" * 600)], id="gnu-long-name"),
    pytest.param([_header("pax", 20, tarfile.XHDTYPE) + _padded(_pax_record("mtime", b"1")),
                  _header("pax", 20, tarfile.XHDTYPE) + _padded(_pax_record("mtime", b"1"))], id="second-pax-header"),
    pytest.param([_header("pax", 30, tarfile.XHDTYPE) + _padded(_pax_record("GNU.sparse.major", b"1"))],
                 id="pax-sparse-map"),
    pytest.param([_header("pax", 20, tarfile.XHDTYPE) + _padded(_pax_record("size", b"99999"))], id="pax-size"),
])
def test_headers_tarfile_would_expand_are_refused(tmp_path: Path, keys, blocks: list[bytes]) -> None:
    archive = _archive(tmp_path / "odd.hgb", *blocks, _manifest_member())
    with pytest.raises(BundleFormatError, match="not a plain file|pax header setting"):
        load_bundle(archive, trusted_public_key=keys.public_pem)


def test_archives_with_small_pax_headers_still_load(tmp_path: Path, keys) -> None:
    """`tar.add` writes a pax header (a float mtime) before every member: such an archive is still a bundle."""
    bundle = null_bundle(tmp_path / "null", keys)
    archive = tmp_path / "added.hgb"
    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name in ("manifest.json", "manifest.sig", "model.null"):
            tar.add(bundle / name, arcname=name)
    with tarfile.open(archive) as tar:
        assert tar.getmember("model.null").pax_headers, "the archive has no pax header to tolerate"
    with load_bundle(archive, trusted_public_key=keys.public_pem) as loaded:
        assert loaded.engine.run(np.zeros((1, 28, 28, 1), np.float32)).shape == (1, 10)
    with load_bundle(pack_bundle(bundle, tmp_path / "packed.hgb"), trusted_public_key=keys.public_pem) as loaded:
        assert list(loaded.engines) == ["null"]


class CountingReader(io.BytesIO):
    """A stream that counts the bytes read or skipped through it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.passed = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.passed += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        before = self.tell()
        after = super().seek(offset, whence)
        self.passed += max(0, after - before)
        return after


def test_the_header_walk_reads_past_expected_members_only() -> None:
    """An unsigned archive must not make the device decompress what it will refuse: the walk stops at a member it
    was not told to expect (or one larger than expected), which the loader refuses from its header."""
    from hgen.runtime.bundle.extraction import check_tar_headers

    big = _header("model.bin", 8 << 20, tarfile.REGTYPE) + b"\0" * (8 << 20)
    stream = CountingReader(_manifest_member() + big + b"\0" * 1024)
    check_tar_headers(stream, {"manifest.json": 1 << 20, "manifest.sig": 1 << 20})
    assert stream.passed < 4096  # the manifest member and the next header, not the 8 MiB behind it
    stream = CountingReader(_manifest_member() + big + b"\0" * 1024)
    check_tar_headers(stream, {"manifest.json": 1 << 20, "model.bin": 4096})
    assert stream.passed < 4096
    long_name = "m" * 150  # a pax `path` record names it, as tarfile reads it
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(long_name)
        info.size = 1 << 16
        tar.addfile(info, io.BytesIO(b"x" * info.size))
    stream = CountingReader(raw.getvalue())
    check_tar_headers(stream, {long_name: 1 << 16})
    assert stream.passed > 1 << 16


def test_a_variant_set_archive_with_a_large_pax_header_is_refused(tmp_path: Path, keys) -> None:
    record = _pax_record("comment", b"a" * (4 << 20))
    archive = _archive(tmp_path / "set.hgv", _header("pax", len(record), tarfile.XHDTYPE) + _padded(record),
                       _header(INDEX_NAME, 2, tarfile.REGTYPE) + _padded(b"{}"), compress=False)
    with pytest.raises(BundleFormatError, match="pax header"):
        unpack_variant_set(archive, keys.public_pem, tmp_path / "out")


def _corrupt_archive(tmp_path: Path, keys, compress=lzma.compress) -> Path:
    """A signed bundle's tar, compressed by `compress`, with bytes flipped late in the stream: large enough that the
    decompressor fails after the archive was opened, while its members are read."""
    bundle = null_bundle(tmp_path / "null", keys)
    (bundle / "model.null").write_bytes(np.random.default_rng(0).bytes(256 << 10))  # incompressible
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name in ("manifest.json", "manifest.sig", "model.null"):
            tar.add(bundle / name, arcname=name)
    data = bytearray(compress(raw.getvalue()))
    at = len(data) * 3 // 4
    data[at:at + 64] = bytes(byte ^ 0xFF for byte in data[at:at + 64])
    archive = tmp_path / "corrupt.hgb"
    archive.write_bytes(bytes(data))
    return archive


@pytest.mark.parametrize("compress", [lzma.compress, bz2.compress], ids=["xz", "bz2"])
def test_archives_compressed_otherwise_than_gzip_are_a_format_error(tmp_path: Path, keys, compress) -> None:
    """A corrupt xz archive escaped as a raw LZMAError (and `hgen verify` printed a traceback)."""
    with pytest.raises(BundleFormatError, match="truncated or corrupt"):
        load_bundle(_corrupt_archive(tmp_path, keys, compress), trusted_public_key=keys.public_pem)


def test_hgen_verify_says_a_corrupt_xz_archive_is_corrupt(tmp_path: Path, keys, capsys) -> None:
    code = hgen_main(["verify", str(_corrupt_archive(tmp_path, keys)), "--key", str(keys.public_pem)])
    assert code != 0 and "truncated or corrupt" in capsys.readouterr().err


# --- bundle folders: only regular files, read up to their signed size ------------------------------------------


def _replace(path: Path, how: str) -> None:
    path.unlink()
    if how == "folder":
        path.mkdir()
    elif how == "dev-zero":
        path.symlink_to("/dev/zero")
    else:
        os.mkfifo(path)


@pytest.mark.timeout(30)  # before: /dev/zero was hashed, and a FIFO waited for a writer, forever
@pytest.mark.parametrize(("name", "how"), [  # not manifest.sig -> /dev/zero: the old loader read it all into memory
    (name, how) for name in ("model.null", "manifest.sig", "manifest.json") for how in ("folder", "dev-zero", "fifo")
    if (name, how) != ("manifest.sig", "dev-zero")])
def test_a_bundle_file_that_is_not_a_regular_file_is_refused(tmp_path: Path, keys, name: str, how: str) -> None:
    if how == "fifo" and not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    bundle = null_bundle(tmp_path / "null", keys)
    _replace(bundle / name, how)
    with pytest.raises(BundleFormatError, match="not a regular file"):
        load_bundle(bundle, trusted_public_key=keys.public_pem)


def test_a_huge_signature_file_is_not_read_whole(tmp_path: Path, keys) -> None:
    bundle = null_bundle(tmp_path / "null", keys)
    with open(bundle / "manifest.sig", "r+b") as signature:
        signature.truncate(64 << 20)  # sparse: 64 MiB on paper
    tracemalloc.start()
    try:
        with pytest.raises(SignatureError):
            load_bundle(bundle, trusted_public_key=keys.public_pem)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"{peak} bytes allocated for a signature"


@pytest.mark.timeout(30)
def test_a_variant_index_that_is_a_fifo_or_too_large_is_refused(tmp_path: Path, keys) -> None:
    root = tmp_path / "set"
    root.mkdir()
    os.mkfifo(root / INDEX_NAME)
    (root / INDEX_SIGNATURE).write_bytes(b"sig")
    with pytest.raises(BundleFormatError, match="not a regular file"):
        load_variant_set(root, keys.public_pem)
    (root / INDEX_NAME).unlink()
    with open(root / INDEX_NAME, "wb") as index:
        index.truncate(64 << 20)
    with pytest.raises(BundleFormatError, match="larger than"):
        load_variant_set(root, keys.public_pem)


# --- the signed manifest against the model file ---------------------------------------------------------------


def _litert_bundle(root: Path, keys, model: bytes, input_shape=(1, 4), **entry) -> Path:
    root.mkdir()
    (root / "model.tflite").write_bytes(model)
    sha, size = file_digest(root / "model.tflite")
    manifest = Manifest.model_validate({
        "model": {"name": "relu", "version": "1.0.0"}, "created": "2026-01-01T00:00:00+00:00", "target": "x86_64",
        "engines": [{"name": "litert", "file": "model.tflite", "sha256": sha, "size": size, **entry}],
        "input": {"shape": input_shape, "layout": "NC"}, "output_shape": (1, 4), "labels": list("abcd"),
        "tau": 0.5, "temperature": 1.0, "lambda": 0.5})
    sign_manifest(root, manifest, signing.load_private_key(keys.private_pem))
    return root


@needs_litert
def test_a_manifest_that_describes_another_model_is_refused_at_load(tmp_path: Path, keys) -> None:
    """The device loaded such a bundle and then failed every frame (or ran int8 parameters the model lacks)."""
    model = relu_tflite()
    with load_bundle(_litert_bundle(tmp_path / "ok", keys, model), trusted_public_key=keys.public_pem) as loaded:
        assert loaded.engine.run(np.array([[-1, 2, -3, 4]], np.float32)).tolist() == [[0, 2, 0, 4]]
    shape = _litert_bundle(tmp_path / "shape", keys, model, input_shape=(1, 2, 2, 1))
    with pytest.raises(BundleFormatError, match=r"input shape \(1, 2, 2, 1\) in the manifest, \(1, 4\) in the model"):
        load_bundle(shape, trusted_public_key=keys.public_pem)
    quant = {"scale": 0.5, "zero_point": 3}
    int8 = _litert_bundle(tmp_path / "int8", keys, model, precision="int8", input_quantization=quant,
                          output_quantization=quant)
    with pytest.raises(BundleFormatError, match="precision int8 in the manifest, float32 in the model"):
        load_bundle(int8, trusted_public_key=keys.public_pem)
    with pytest.raises(BundleFormatError, match="does not match the signed manifest"):  # not skipped as "cannot run"
        load_first_runnable(int8, trusted_public_key=keys.public_pem)


@needs_litert
def test_a_quantized_model_whose_parameters_differ_from_the_manifest_is_refused(tmp_path: Path, keys) -> None:
    model = relu_tflite("INT8", (0.5, 3))
    same = {"scale": 0.5, "zero_point": 3}
    bundle = _litert_bundle(tmp_path / "same", keys, model, precision="int8", input_quantization=same,
                            output_quantization=same)
    with load_bundle(bundle, trusted_public_key=keys.public_pem) as loaded:
        assert loaded.engine.precision == "int8"
    other = {"scale": 0.25, "zero_point": 3}
    bundle = _litert_bundle(tmp_path / "other", keys, model, precision="int8", input_quantization=other,
                            output_quantization=same)
    with pytest.raises(BundleFormatError, match="input quantization scale 0.25, zero point 3 in the manifest, "
                                                "scale 0.5, zero point 3 in the model"):
        load_bundle(bundle, trusted_public_key=keys.public_pem)


@needs_litert
def test_a_uint8_model_is_quantized_like_an_int8_one(tmp_path: Path) -> None:
    """A uint8-I/O model (the LiteRT.js twin, a common export) was fed float32 and failed with a raw ValueError."""
    path = tmp_path / "uint8.tflite"
    path.write_bytes(relu_tflite("UINT8", (0.5, 128)))
    engine = open_engine("litert", path)
    assert engine.precision == "int8"
    assert engine.run(np.array([[-1, 2, -3, 4]], np.float32)).tolist() == [[0, 2, 0, 4]]
    raw = tmp_path / "raw.tflite"  # uint8 without quantization parameters: raw pixels, no float maps to them
    raw.write_bytes(relu_tflite("UINT8"))
    with pytest.raises(EngineError, match="without quantization"):
        open_engine("litert", raw)


# --- engine selection ----------------------------------------------------------------------------------------


def test_options_for_a_misspelt_engine_are_refused_before_any_io(tmp_path: Path, keys) -> None:
    with pytest.raises(InvalidInputError, match="litrt: unknown engine; valid choices: litert, null, tvm"):
        load_bundle(tmp_path / "missing", trusted_public_key=keys.public_pem, engine_options={"litrt": {}})
    bundle = null_bundle(tmp_path / "null", keys)
    with pytest.raises(InvalidInputError, match=r"tvm\.bogus: unknown option"):
        load_bundle(bundle, trusted_public_key=keys.public_pem, engine_options={"tvm": {"bogus": 1}})
    with pytest.raises(InvalidInputError, match="litrt"):
        load_first_runnable(bundle, trusted_public_key=keys.public_pem, engine_options={"litrt": {}})
    with load_bundle(bundle, trusted_public_key=keys.public_pem, engine_options={"tvm": {"entry": "main"}}) as loaded:
        assert list(loaded.engines) == ["null"]  # a valid option for an engine this bundle lacks is fine


def test_a_bundle_with_no_open_engine_says_so(tmp_path: Path, keys) -> None:
    loaded = load_bundle(null_bundle(tmp_path / "null", keys), trusted_public_key=keys.public_pem, engines=[])
    with loaded, pytest.raises(NoEngineError, match="no engine of bundle null-net is open"):
        _ = loaded.engine  # was StopIteration, which a generator or loop around it swallows


def test_the_hub_reads_a_recorded_bundles_target_through_the_same_header_walk(tmp_path: Path, keys) -> None:
    """The hub read a recorded archive's target with tarfile.open(path, "r:*"): any compression, pax headers whole.
    A bundle's target is read as before; a pax bomb and a corrupt xz file give no target (and no exception)."""
    from hgen.hub.bundle_files import bundle_target

    archive = pack_bundle(null_bundle(tmp_path / "ok", keys))
    assert bundle_target(str(archive)) == Manifest.model_validate_json(
        (tmp_path / "ok" / "manifest.json").read_bytes()).target
    record = _pax_record("comment", b"a" * (8 << 20))
    bomb = _archive(tmp_path / "bomb.hgb", _header("pax", len(record), tarfile.XHDTYPE) + _padded(record),
                    _manifest_member())
    xz = tmp_path / "xz.hgb"
    xz.write_bytes(lzma.compress(b"not a tar")[:40])
    tracemalloc.start()
    try:
        assert bundle_target(str(bomb)) is None and bundle_target(str(xz)) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"{peak} bytes allocated reading a target"
