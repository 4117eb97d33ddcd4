"""Signed H-DNN bundles on the build side: `write_bundle` (directory), `pack_bundle` (single file), keys."""

from hgen.compiler.bundle.archive import ARCHIVE_SUFFIX, pack_bundle
from hgen.compiler.bundle.files import sha256_file
from hgen.compiler.bundle.keys import KeyInfo, generate_keypair, show_key
from hgen.compiler.bundle.writer import BundleInfo, sign_manifest, write_bundle

__all__ = ["ARCHIVE_SUFFIX", "BundleInfo", "KeyInfo", "generate_keypair", "pack_bundle", "sha256_file", "show_key", "sign_manifest", "write_bundle"]
