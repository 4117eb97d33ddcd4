"""`hgen verify` on an archive path that does not exist (a typo, a directory removed meanwhile) exits non-zero with
one line naming the path, not a FileNotFoundError traceback; so does loading such a bundle from Python."""

from __future__ import annotations

from pathlib import Path

import pytest

from hgen.compiler.cli.main import main
from hgen.runtime.bundle.errors import BundleFormatError
from hgen.runtime.bundle.loader import verify_archive
from hgen.runtime.signing import generate_private_key, public_key_pem


@pytest.fixture()
def public_key(tmp_path: Path) -> Path:
    path = tmp_path / "signing.pub"
    path.write_bytes(public_key_pem(generate_private_key().public_key()))
    return path


def test_verify_of_a_missing_archive_exits_1_naming_it(tmp_path: Path, public_key: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.hgb"
    assert main(["verify", str(missing), "--key", str(public_key)]) == 1
    err = capsys.readouterr().err
    assert f"hgen verify: error: cannot read bundle archive {missing}" in err and "Traceback" not in err


def test_verify_archive_of_an_unreadable_path_is_a_bundle_error(tmp_path: Path, public_key: Path) -> None:
    from hgen.runtime.signing import load_public_key

    with pytest.raises(BundleFormatError, match=r"cannot read bundle archive .*missing\.hgb: No such file"):
        verify_archive(tmp_path / "missing.hgb", load_public_key(public_key), None, tmp_path)


def test_a_corrupt_archive_is_still_named_corrupt(tmp_path: Path, public_key: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    archive = tmp_path / "model.hgb"
    archive.write_bytes(b"\x1f\x8b" + b"\x00" * 64)  # a gzip magic, then nothing valid
    assert main(["verify", str(archive), "--key", str(public_key)]) == 1
    err = capsys.readouterr().err
    assert "model.hgb is truncated or corrupt" in err and "Traceback" not in err
