"""A bundle from a newer hgen release (its signed manifest has a field, or a schema version, this runtime does not
know) is refused, as before, but as BundleTooNewError saying the bundle is newer than this release and what to do.
Before, an agent older than its hub said only "invalid manifest: future_field: unknown key", which reads as a broken
bundle: an operator re-published it instead of upgrading the agent. (The release that made this test is the older
runtime here: its own null bundle, given a field a later release might add and signed again.)"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from hgen.edge_agent.testing import make_keys, null_bundle
from hgen.runtime import signing
from hgen.runtime.bundle import BundleFormatError, BundleTooNewError, load_bundle
from hgen.runtime.bundle.manifest import MANIFEST_NAME, SIGNATURE_NAME


def future_bundle(tmp_path: Path, change: Any) -> tuple[Path, Any]:
    """This release's bundle with its manifest changed by `change(raw)` and signed again by the same key."""
    keys = make_keys(tmp_path / "keys")
    bundle = null_bundle(tmp_path / "bundle", keys, version="2.0.0")
    raw = json.loads((bundle / MANIFEST_NAME).read_bytes())
    change(raw)
    data = (json.dumps(raw, indent=2, sort_keys=True) + "\n").encode()
    (bundle / MANIFEST_NAME).write_bytes(data)
    (bundle / SIGNATURE_NAME).write_bytes(signing.sign(data, signing.load_private_key(keys.private_pem)))
    return bundle, signing.load_public_key(keys.public_pem)


def archive(bundle: Path) -> Path:
    """Packed as hgen-compile packs (its pack_bundle checks the manifest, so it would refuse a newer one)."""
    out = bundle.with_suffix(".hgb")
    with tarfile.open(out, "w:gz") as packed:
        for name in (MANIFEST_NAME, SIGNATURE_NAME, "model.null"):
            packed.add(bundle / name, arcname=name)
    return out


def added_fields(raw: dict[str, Any]) -> None:
    raw["future_field"] = {"x": 1}
    raw["input"]["future_input"] = True


def test_a_manifest_with_fields_of_a_later_release_is_refused_as_too_new(tmp_path) -> None:
    bundle, key = future_bundle(tmp_path, added_fields)
    for path in (bundle, archive(bundle)):  # the agent takes archives; a folder is checked the same way
        with pytest.raises(BundleTooNewError) as refused:
            load_bundle(path, trusted_public_key=key, expected_target="x86_64", engines=[])
        message = str(refused.value)
        assert "future_field" in message and "input.future_input" in message
        assert "newer hgen release" in message and "upgrade hgen here" in message
        assert isinstance(refused.value, BundleFormatError)  # callers catching format errors still catch it


def test_a_later_schema_version_is_refused_as_too_new(tmp_path) -> None:
    bundle, key = future_bundle(tmp_path, lambda raw: raw.update(schema_version=2))
    with pytest.raises(BundleTooNewError, match="schema_version 2: the bundle was made by a newer hgen release"):
        load_bundle(archive(bundle), trusted_public_key=key, expected_target="x86_64", engines=[])


def test_a_malformed_manifest_is_still_a_plain_format_error(tmp_path) -> None:
    bundle, key = future_bundle(tmp_path, lambda raw: raw.update(tau="high"))
    with pytest.raises(BundleFormatError) as refused:
        load_bundle(bundle, trusted_public_key=key, expected_target="x86_64", engines=[])
    assert not isinstance(refused.value, BundleTooNewError) and "tau" in str(refused.value)
