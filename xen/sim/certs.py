"""Self-signed TLS certificates of simulated hosts (xapi.md 1.1: hosts serve HTTPS on 443
with a self-signed certificate by default; `host.get_server_certificate` returns its PEM).

One certificate per host address, CN and SAN = that address, made on first use with the
`cryptography` package (an EC P-256 key: milliseconds, where RSA 2048 would cost ~50 ms per
host). Files live in a private temporary directory removed by `close()`: `ssl` only loads
certificate chains from files.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from xen.sim.registry import CallContext, message

VALIDITY = datetime.timedelta(days=3650)  # XAPI's generated certificates last ten years


@dataclass(frozen=True, slots=True)
class HostCertificate:
    address: str
    pem: str
    cert_file: Path
    key_file: Path


class HostCertificates:
    """The certificates of every simulated host, made lazily and kept for the simulator's life
    (a host keeps its certificate across failovers and restarts of its listener)."""

    def __init__(self) -> None:
        self._dir: Path | None = None
        self._certs: dict[str, HostCertificate] = {}
        self._contexts: dict[str, ssl.SSLContext] = {}

    def get(self, address: str) -> HostCertificate:
        cert = self._certs.get(address)
        if cert is None:
            cert = self._certs[address] = self._make(address)
        return cert

    def server_context(self, address: str) -> ssl.SSLContext:
        ctx = self._contexts.get(address)
        if ctx is None:
            cert = self.get(address)
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cert.cert_file, cert.key_file)
            self._contexts[address] = ctx
        return ctx

    def bundle(self, name: str, addresses: list[str]) -> Path:
        """A PEM file with the certificates of `addresses`: what a client pins (ca_file) to
        trust every host of a pool, the master and the ones it may fail over to."""
        path = self._directory() / f"{name}.pem"
        path.write_text("".join(self.get(a).pem for a in addresses))
        return path

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None
        self._certs.clear()
        self._contexts.clear()

    def _directory(self) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="xo-sim-certs-"))
        return self._dir

    def _make(self, address: str) -> HostCertificate:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.SubjectAlternativeName([_san(address)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        directory = self._directory()
        stem = address.replace(":", "_")
        cert_file, key_file = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_file.write_text(pem)
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_file.chmod(0o600)
        return HostCertificate(address, pem, cert_file, key_file)


def certificate_record(pem: str) -> dict[str, object]:
    """A host's `Certificate` record for the certificate it serves, as xapi records it
    (`Certificates.host_install`): type host, validity, SHA-256 fingerprint in upper-case
    hex pairs joined by colons."""
    cert = x509.load_pem_x509_certificate(pem.encode())
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    return {
        "name": "",
        "type": "host",
        "not_before": cert.not_valid_before_utc.replace(microsecond=0),
        "not_after": cert.not_valid_after_utc.replace(microsecond=0),
        "fingerprint": ":".join(digest[i : i + 2] for i in range(0, len(digest), 2)),
    }


def _san(address: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(address))
    except ValueError:
        return x509.DNSName(address)


@message("host.get_server_certificate")
def get_server_certificate(ctx: CallContext, host: str) -> str:
    address = ctx.db.get("host", host)["address"]
    return ctx.pool.sim.server_certificate(address)
