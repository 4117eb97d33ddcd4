"""`hgen keys generate|show`: the Ed25519 pair that signs bundles (private on the build host, public on devices)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hgen.compiler.bundle.keys import KeyInfo, generate_keypair, show_key
from hgen.compiler.cli import VERBS, Verb


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    generate = actions.add_parser("generate", help="create signing.key (0600) and signing.pub in a directory")
    generate.add_argument("--out", type=Path, default=Path("keys"), help="directory for the pair (default: ./keys)")
    generate.add_argument("--force", action="store_true", help="replace an existing pair")
    show = actions.add_parser("show", help="print the fingerprint and raw public key of a key file")
    show.add_argument("path", type=Path, help="signing.key or signing.pub")


def _print(info: KeyInfo) -> None:
    if info.private_path:
        print(f"private key: {info.private_path}")
    if info.public_path:
        print(f"public key:  {info.public_path}")
    print(f"fingerprint: {info.fingerprint}")
    print(f"public (raw, base64): {info.public_base64}")


def run(args: argparse.Namespace) -> None:
    if args.action == "generate":
        _print(generate_keypair(args.out, overwrite=args.force))
    else:
        _print(show_key(args.path))


VERBS.add("keys", Verb("keys", "generate or show the Ed25519 key pair that signs bundles", add_arguments, run))
