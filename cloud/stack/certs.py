"""TLS for the SuperLink: a private CA and a server certificate naming every address devices dial.

``make certs`` (``cloud certs``) writes under ``certs/``::

    ca.pem, ca.key           the certificate authority (copy ca.pem to each Raspberry Pi)
    server.pem, server.key   the SuperLink's certificate, signed by the CA

The server certificate's subject alternative names hold this host's LAN address and host name,
127.0.0.1, ::1, localhost and ``superlink`` (the compose service), so a SuperNode verifies the
SuperLink whichever of those it dials. Keys are ECDSA P-256; the private keys are written 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from rich.console import Console

from cloud.stack.lan import lan_address

DEFAULT_DIR = Path("certs")
COMPOSE_SERVICE = "superlink"


@dataclass(frozen=True)
class CertPaths:
    """Where the CA and server files are in a certificates folder."""

    folder: Path

    @property
    def ca(self) -> Path:
        """The CA certificate every client trusts."""
        return self.folder / "ca.pem"

    @property
    def ca_key(self) -> Path:
        """The CA's private key (stays on the cloud host)."""
        return self.folder / "ca.key"

    @property
    def cert(self) -> Path:
        """The SuperLink's certificate."""
        return self.folder / "server.pem"

    @property
    def key(self) -> Path:
        """The SuperLink's private key."""
        return self.folder / "server.key"

    def complete(self) -> bool:
        """True when CA, certificate and key all exist."""
        return self.ca.exists() and self.cert.exists() and self.key.exists()


def default_names() -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) the server certificate should cover on this host."""
    dns = ["localhost", COMPOSE_SERVICE, socket.gethostname()]
    fqdn = socket.getfqdn()
    if fqdn and fqdn not in dns:
        dns.append(fqdn)
    ips = ["127.0.0.1", "::1"]
    lan = lan_address()
    if lan:
        ips.append(lan)
    return dns, ips


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    """Write a private key as unencrypted PKCS#8 PEM, readable by the owner only."""
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _name(common_name: str) -> x509.Name:
    """A subject name with the kit as organisation."""
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edge-cloud-ml-kit"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certs(out_dir: Path = DEFAULT_DIR, dns_names: list[str] | None = None, ip_addresses: list[str] | None = None,
               days: int = 825, console: Console | None = None) -> CertPaths:
    """Create a CA and a server certificate signed by it; returns their paths.

    ``dns_names`` and ``ip_addresses`` default to this host's names and addresses (``default_names``).
    """
    console = console or Console(stderr=True)
    default_dns, default_ips = default_names()
    dns = list(dict.fromkeys(dns_names if dns_names is not None else default_dns))
    ips = list(dict.fromkeys(ip_addresses if ip_addresses is not None else default_ips))
    try:
        ip_objects = [ipaddress.ip_address(ip) for ip in ips]
    except ValueError as exc:
        raise ValueError(f"certificate IP address list {ips}: {exc}; pass addresses like 192.168.1.20") from None
    paths = CertPaths(Path(out_dir))
    paths.folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("edge-cloud-ml-kit local CA")
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.DNSName(d) for d in dns] + [x509.IPAddress(i) for i in ip_objects])
    server_cert = (
        x509.CertificateBuilder().subject_name(_name(dns[0] if dns else "superlink")).issuer_name(ca_name)
        .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(san, critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    _write_key(ca_key, paths.ca_key)
    _write_key(server_key, paths.key)
    paths.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    console.print(f"CA certificate:     {paths.ca}  (copy it to each device; pass --root-certificates)")
    console.print(f"server certificate: {paths.cert}  valid until {end:%Y-%m-%d}")
    console.print(f"  names: {', '.join(dns)}")
    console.print(f"  addresses: {', '.join(ips)}")
    console.print(f"server key:         {paths.key}  (0600; stays on this host)")
    return paths


def certificate_names(cert_path: Path) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) in a certificate's subject alternative names."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName), [str(i) for i in san.get_values_for_type(x509.IPAddress)]
