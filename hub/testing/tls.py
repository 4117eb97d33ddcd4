"""A throw-away PKI for TLS tests: a CA, a server certificate for loopback and a client certificate (mutual TLS).

Made at test time with `cryptography` (EC P-256: fast to generate), so no key material lives in the repository.
Certificates carry SKI/AKI and key usages, as strict verifiers (OpenSSL 3, gRPC) expect.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_FOR = dt.timedelta(days=2)


@dataclass(frozen=True)
class PkiFiles:
    """PEM files of one throw-away PKI."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    ca_key: Path | None = None  # the CA's private key (the hub's device CA: add-device --certificate-dir)


def make_pki(folder: Path, hosts: Sequence[str] = ("127.0.0.1", "localhost"), client_name: str = "cam-1") -> PkiFiles:
    """CA + server certificate (SAN `hosts`) + client certificate (CN `client_name`), written to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"hgen test CA {folder.name}")])
    ca = _builder(ca_name, ca_name, ca_key.public_key(), ca_key.public_key()) \
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True) \
        .add_extension(_usage(cert_sign=True), critical=True) \
        .sign(ca_key, hashes.SHA256())
    server_key, server = _leaf(ca, ca_key, "hgen test server", ExtendedKeyUsageOID.SERVER_AUTH, _sans(hosts))
    client_key, client = _leaf(ca, ca_key, client_name, ExtendedKeyUsageOID.CLIENT_AUTH, None)
    paths = PkiFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "client.pem",
                     folder / "client.key", folder / "ca.key")
    paths.ca_key.write_bytes(_key_pem(ca_key))  # type: ignore[union-attr]
    paths.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths.server_key.write_bytes(_key_pem(server_key))
    paths.client_cert.write_bytes(client.public_bytes(serialization.Encoding.PEM))
    paths.client_key.write_bytes(_key_pem(client_key))
    return paths


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             issuer_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key) \
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5)) \
        .not_valid_after(now + VALID_FOR) \
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False) \
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key), critical=False)


def _leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, name: str, purpose: x509.ObjectIdentifier,
          sans: x509.SubjectAlternativeName | None) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), ca.subject, key.public_key(),
                       ca_key.public_key()) \
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True) \
        .add_extension(_usage(cert_sign=False), critical=True) \
        .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
    if sans is not None:
        builder = builder.add_extension(sans, critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _sans(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not cert_sign, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=not cert_sign, key_cert_sign=cert_sign,
                         crl_sign=cert_sign, encipher_only=False, decipher_only=False)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
