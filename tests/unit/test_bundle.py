"""Bundle verification without TensorFlow: every refusal happens before the model bytes are parsed.

The model file here is deliberately garbage: if verification let it through, the LiteRT engine would fail
with an EngineError instead, so each typed refusal also proves the order of checks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from hgen.compiler.bundle import generate_keypair, pack_bundle, sha256_file, show_key, sign_manifest
from hgen.compiler.cli.main import main as hgen_main
from hgen.compiler.errors import InvalidArgumentError
from hgen.runtime import signing
from hgen.runtime.bundle import (
    BundleFormatError,
    IntegrityError,
    Manifest,
    SignatureError,
    TargetMismatchError,
    UntrustedKeyError,
    load_bundle,
)
from hgen.runtime.bundle.loader import verify_directory
from hgen.runtime.engines import EngineError
from hgen.runtime.errors import UnknownChoiceError

MODEL_FILE = "model.float32.tflite"


def _manifest(model_file: Path, **overrides) -> Manifest:
    data = {
        "model": {"name": "lenet5", "version": "1.2.3"},
        "created": "2026-01-01T00:00:00+00:00",
        "target": "x86_64",
        "engines": [
            {"name": "litert", "file": model_file.name, "sha256": sha256_file(model_file), "size": model_file.stat().st_size}
        ],
        "input": {"shape": [1, 28, 28, 1]},
        "output_shape": [1, 3],
        "labels": ["a", "b", "c"],
        "tau": 0.8,
        "temperature": 1.5,
        "lambda": 0.5,
        "predicted": {"accuracy": 0.98, "latency_ms": 1.2},
        "plan": {"prune": 0.5},
    }
    data.update(overrides)
    return Manifest.model_validate(data)


@pytest.fixture()
def key():
    return signing.generate_private_key()


@pytest.fixture()
def bundle(tmp_path: Path, key) -> Path:
    root = tmp_path / "bundle"
    root.mkdir()
    (root / MODEL_FILE).write_bytes(os.urandom(4096))
    sign_manifest(root, _manifest(root / MODEL_FILE), key)
    return root


def test_valid_signature_reaches_the_engine_only_then(bundle: Path, key) -> None:
    manifest = verify_directory(bundle, key.public_key(), "x86_64")
    assert manifest.model.version == "1.2.3" and manifest.fusion_lambda == 0.5
    with pytest.raises(EngineError):  # garbage model: parsed only after every check passed
        load_bundle(bundle, trusted_public_key=key.public_key())


def test_tampered_manifest_is_refused(bundle: Path, key) -> None:
    path = bundle / "manifest.json"
    path.write_bytes(path.read_bytes().replace(b'"tau": 0.8', b'"tau": 0.1'))
    with pytest.raises(SignatureError, match="modified"):
        load_bundle(bundle, trusted_public_key=key.public_key())


def test_tampered_model_file_is_refused(bundle: Path, key) -> None:
    model = bundle / MODEL_FILE
    data = bytearray(model.read_bytes())
    data[100] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=MODEL_FILE):
        load_bundle(bundle, trusted_public_key=key.public_key())


def test_wrong_key_is_refused(bundle: Path) -> None:
    other = signing.generate_private_key().public_key()
    with pytest.raises(UntrustedKeyError, match="signed by key"):
        load_bundle(bundle, trusted_public_key=other)


def test_forged_key_id_with_bad_signature_is_refused(bundle: Path) -> None:
    attacker, victim = signing.generate_private_key(), signing.generate_private_key()
    forged = signing.sign((bundle / "manifest.json").read_bytes(), attacker)
    fingerprint = signing.fingerprint(victim.public_key())
    (bundle / "manifest.sig").write_bytes(forged[:8] + fingerprint + forged[40:])
    with pytest.raises(SignatureError):
        load_bundle(bundle, trusted_public_key=victim.public_key())


@pytest.mark.parametrize("content", [b"", b"HGSIG", os.urandom(104)])
def test_malformed_signature_file_is_refused(bundle: Path, key, content: bytes) -> None:
    (bundle / "manifest.sig").write_bytes(content)
    with pytest.raises(SignatureError):
        load_bundle(bundle, trusted_public_key=key.public_key())


def test_missing_signature_is_refused(bundle: Path, key) -> None:
    (bundle / "manifest.sig").unlink()
    with pytest.raises(BundleFormatError, match="manifest.sig"):
        load_bundle(bundle, trusted_public_key=key.public_key())


def test_bundle_for_another_target_is_refused(bundle: Path, key) -> None:
    with pytest.raises(TargetMismatchError, match="x86_64"):
        load_bundle(bundle, trusted_public_key=key.public_key(), expected_target="rpi4")


def test_unknown_engine_is_refused_before_any_io(tmp_path: Path, key) -> None:
    with pytest.raises(UnknownChoiceError, match="litert, null, tvm"):
        load_bundle(tmp_path / "does-not-exist", trusted_public_key=key.public_key(), engines=["onnx"])


def test_engine_not_in_bundle_is_refused(bundle: Path, key) -> None:
    with pytest.raises(BundleFormatError, match="no 'tvm' engine"):
        load_bundle(bundle, trusted_public_key=key.public_key(), engines=["tvm"])


def test_signed_but_invalid_manifest_is_refused(bundle: Path, key) -> None:
    manifest_bytes = (bundle / "manifest.json").read_bytes().replace(b'"kind"', b'"extra": 1, "kind"')
    (bundle / "manifest.json").write_bytes(manifest_bytes)
    (bundle / "manifest.sig").write_bytes(signing.sign(manifest_bytes, key))
    with pytest.raises(BundleFormatError, match="extra: unknown key"):
        load_bundle(bundle, trusted_public_key=key.public_key())


def test_manifest_schema_checks_consistency(bundle: Path) -> None:
    with pytest.raises(ValueError, match="labels"):
        _manifest(bundle / MODEL_FILE, labels=["a"])
    with pytest.raises(ValueError, match="version"):
        _manifest(bundle / MODEL_FILE, model={"name": "x", "version": "1.0"})
    with pytest.raises(ValueError, match="file"):
        _manifest(bundle / MODEL_FILE, engines=[{"name": "litert", "file": "../x", "sha256": "0" * 64, "size": 1}])


def test_archive_round_trip_is_deterministic(bundle: Path, key, tmp_path: Path) -> None:
    first = pack_bundle(bundle)
    second = pack_bundle(bundle, tmp_path / "again.hgb")
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as archive:
        assert archive.getnames() == ["manifest.json", "manifest.sig", MODEL_FILE]
    with pytest.raises(EngineError):  # verified and extracted; only the garbage model fails
        load_bundle(first, trusted_public_key=key.public_key())


def test_a_disk_filling_up_while_packing_leaves_no_archive(bundle: Path, tmp_path: Path, monkeypatch) -> None:
    """The archive was written in place: a full disk left a truncated .hgb beside the model, ready to be shipped.
    (The full disk is simulated: the second member's write raises ENOSPC, as the kernel's write would.)"""
    import errno

    from hgen.compiler.bundle import archive as archive_module

    added: list[str] = []
    real_add = archive_module._add

    def add_until_full(archive, path, mtime) -> None:
        if added:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        added.append(path.name)
        real_add(archive, path, mtime)

    monkeypatch.setattr(archive_module, "_add", add_until_full)
    with pytest.raises(OSError, match="No space left"):
        pack_bundle(bundle, tmp_path / "full.hgb")
    assert added and not list(tmp_path.glob("full.hgb*"))


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.99])
def test_truncated_archive_is_refused(bundle: Path, key, fraction: float) -> None:
    archive = pack_bundle(bundle)
    data = archive.read_bytes()
    archive.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises((BundleFormatError, SignatureError)):
        load_bundle(archive, trusted_public_key=key.public_key())


def test_truncated_archive_after_manifest_is_a_format_error(bundle: Path, key) -> None:
    archive = pack_bundle(bundle)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) - 200])
    with pytest.raises(BundleFormatError, match="truncated or corrupt"):
        load_bundle(archive, trusted_public_key=key.public_key())


def test_archive_with_an_extra_member_is_refused(bundle: Path, key, tmp_path: Path) -> None:
    archive = tmp_path / "evil.hgb"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ["manifest.json", "manifest.sig", MODEL_FILE]:
            tar.add(bundle / name, arcname=name)
        tar.add(bundle / MODEL_FILE, arcname="../../escape")
    with pytest.raises(BundleFormatError, match="unexpected archive member"):
        load_bundle(archive, trusted_public_key=key.public_key())


def test_a_member_larger_than_signed_is_refused_before_a_byte_is_written(bundle: Path, key, tmp_path: Path) -> None:
    """A 50 KB archive used to expand its member to disk in full (terabytes, from a sparse or compressed member)
    before the size check refused it."""
    from hgen.runtime.bundle.loader import verify_archive

    huge = tmp_path / "huge"
    with open(huge, "wb") as out:
        out.truncate(64 << 20)  # 64 MiB of zeros: about 60 KB gzipped
    archive = tmp_path / "bomb.hgb"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ["manifest.json", "manifest.sig"]:
            tar.add(bundle / name, arcname=name)
        tar.add(huge, arcname=MODEL_FILE)
    assert archive.stat().st_size < 200_000
    dest = tmp_path / "extract"
    dest.mkdir()
    with pytest.raises(IntegrityError, match=f"{MODEL_FILE}: {64 << 20} bytes in the archive, 4096 signed"):
        verify_archive(archive, key.public_key(), None, dest)
    assert not (dest / MODEL_FILE).exists()


def test_a_listed_member_that_is_not_a_plain_file_is_refused(bundle: Path, key, tmp_path: Path) -> None:
    from hgen.runtime.bundle.extraction import plain_file

    archive = tmp_path / "link.hgb"
    with tarfile.open(archive, "w") as tar:
        for name in ["manifest.json", "manifest.sig"]:
            tar.add(bundle / name, arcname=name)
        link = tarfile.TarInfo(MODEL_FILE)
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(BundleFormatError, match=f"archive member '{MODEL_FILE}' is not a plain file"):
        load_bundle(archive, trusted_public_key=key.public_key())
    sparse = tarfile.TarInfo(MODEL_FILE)
    sparse.type = tarfile.GNUTYPE_SPARSE  # isfile() says yes: its few stored bytes expand to any size
    assert sparse.isfile() and not plain_file(sparse)


def test_archive_must_start_with_the_manifest(bundle: Path, key, tmp_path: Path) -> None:
    archive = tmp_path / "reordered.hgb"
    with tarfile.open(archive, "w:gz") as tar:
        for name in [MODEL_FILE, "manifest.json", "manifest.sig"]:
            tar.add(bundle / name, arcname=name)
    with pytest.raises(BundleFormatError, match="must start with"):
        load_bundle(archive, trusted_public_key=key.public_key())


def test_keys_generate_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    info = generate_keypair(tmp_path / "keys")
    assert (info.private_path.stat().st_mode & 0o777) == 0o600
    assert show_key(info.public_path).fingerprint == show_key(info.private_path).fingerprint == info.fingerprint
    with pytest.raises(InvalidArgumentError, match="already exists"):
        generate_keypair(tmp_path / "keys")
    assert hgen_main(["keys", "show", str(info.public_path)]) == 0
    assert info.fingerprint in capsys.readouterr().out
    assert hgen_main(["keys", "generate", "--out", str(tmp_path / "keys")]) == 2
    assert hgen_main(["keys", "generate", "--out", str(tmp_path / "keys"), "--force"]) == 0
    assert show_key(tmp_path / "keys" / "signing.pub").fingerprint != info.fingerprint


def test_public_key_forms_are_equivalent(key, tmp_path: Path) -> None:
    public = key.public_key()
    pem = tmp_path / "k.pub"
    pem.write_bytes(signing.public_key_pem(public))
    raw = signing.raw_public_bytes(public)
    for form in (public, pem, str(pem), signing.public_key_pem(public), raw, key):
        assert signing.fingerprint(signing.load_public_key(form)) == signing.fingerprint(public)
    with pytest.raises(signing.KeyFileError):
        signing.load_public_key(tmp_path / "missing.pub")


def test_verification_needs_no_tensorflow(bundle: Path, key, tmp_path: Path) -> None:
    public = tmp_path / "trusted.pub"
    public.write_bytes(signing.public_key_pem(key.public_key()))
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
        "from hgen.runtime.bundle.loader import verify_directory\n"
        "from hgen.runtime.signing import load_public_key\n"
        f"m = verify_directory(__import__('pathlib').Path({str(bundle)!r}), load_public_key({str(public)!r}))\n"
        "assert 'tensorflow' not in [n for n, v in sys.modules.items() if v is not None]\n"
        "print(m.model.name)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "lenet5"


@pytest.mark.parametrize("position", [0.3, 0.6, 0.95])
def test_corrupted_archive_is_refused(bundle: Path, key, position: float) -> None:
    archive = pack_bundle(bundle)
    data = bytearray(archive.read_bytes())
    data[int(len(data) * position)] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises((BundleFormatError, SignatureError, IntegrityError)):
        load_bundle(archive, trusted_public_key=key.public_key())
