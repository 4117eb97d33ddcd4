"""Client certificates for devices, signed by the hub's device CA, whose common name is the device id.

With gRPC mutual TLS (`grpc.tls.client_ca_file`), a call without a bearer token proves the device its certificate
names; revoking the device in the hub refuses the certificate too (the hub checks the device is still enrolled),
so no CRL is needed. The private key is written mode 0600 and never kept by the hub.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hgen.hub.devices import DeviceCredentialError, check_device_id


@dataclass(frozen=True)
class DeviceCertificate:
    cert_file: Path
    key_file: Path


def _load_ca(ca_cert: Path, ca_key: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(ca_cert.read_bytes())
        key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise DeviceCredentialError(f"cannot load the device CA ({ca_cert}, {ca_key}): {exc}") from exc
    return cert, key  # type: ignore[return-value]


def issue_certificate(device_id: str, ca_cert: Path, ca_key: Path, out_dir: Path,
                      days: int = 730) -> DeviceCertificate:
    """`<out_dir>/<device>.pem` and `<device>.key` (EC P-256, client-auth only)."""
    check_device_id(device_id)
    ca, signer = _load_ca(ca_cert, ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
            .sign(signer, hashes.SHA256()))
    out_dir.mkdir(parents=True, exist_ok=True)
    files = DeviceCertificate(out_dir / f"{device_id}.pem", out_dir / f"{device_id}.key")
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(files.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return files
