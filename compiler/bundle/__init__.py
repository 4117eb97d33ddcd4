"""Signed H-DNN bundles on the build side: `write_bundle` (directory), `pack_bundle` (single file), keys."""

from hgen.compiler.bundle.archive import ARCHIVE_SUFFIX, pack_bundle
from hgen.compiler.bundle.keys import KeyInfo, generate_keypair, show_key
from hgen.compiler.bundle.writer import BundleInfo, write_bundle

__all__ = ["ARCHIVE_SUFFIX", "BundleInfo", "KeyInfo", "generate_keypair", "pack_bundle", "show_key", "write_bundle"]
