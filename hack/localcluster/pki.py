"""Certificates and keys of the local control plane (self-signed CA, ECDSA P-256: instant to generate)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=365)
# The first address of the service range: the `kubernetes` Service's ClusterIP.
API_SERVICE_IP = "10.96.0.1"
API_DNS_NAMES = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local"]


@dataclass(frozen=True)
class ClientIdentity:
    """A client certificate: CN is the user, O the groups (RBAC subjects)."""

    file_stem: str
    user: str
    groups: tuple[str, ...] = ()


# system:masters bypasses RBAC: the admin (tests, kubectl) and kwok, which plays
# every kubelet. The controller-manager and scheduler use their built-in RBAC users.
IDENTITIES = (
    ClientIdentity("admin", "kubernetes-admin", ("system:masters",)),
    ClientIdentity("kwok", "kwok", ("system:masters",)),
    ClientIdentity("controller-manager", "system:kube-controller-manager"),
    ClientIdentity("scheduler", "system:kube-scheduler"),
)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(cn: str, groups: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    return x509.Name(attrs + [x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + VALIDITY))


def _leaf(path: Path, subject: x509.Name, ca_cert: x509.Certificate, ca_key, usage, sans=None) -> None:
    key = _key()
    builder = _builder(subject, ca_cert.subject, key).add_extension(
        x509.BasicConstraints(ca=False, path_length=None), critical=True
    ).add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    _write_cert(path.with_suffix(".crt"), builder.sign(ca_key, hashes.SHA256()))
    _write_key(path.with_suffix(".key"), key)


def generate(pki: Path) -> None:
    """Write ca, apiserver serving cert, one client cert per identity and the service-account key pair."""
    pki.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = _name("fms-local-ca")
    ca_cert = (_builder(ca_name, ca_name, ca_key)
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    _write_cert(pki / "ca.crt", ca_cert)
    _write_key(pki / "ca.key", ca_key)

    sans = [x509.DNSName(n) for n in API_DNS_NAMES]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", API_SERVICE_IP)]
    _leaf(pki / "apiserver", _name("kube-apiserver"), ca_cert, ca_key, ExtendedKeyUsageOID.SERVER_AUTH, sans)
    for ident in IDENTITIES:
        _leaf(pki / ident.file_stem, _name(ident.user, ident.groups), ca_cert, ca_key,
              ExtendedKeyUsageOID.CLIENT_AUTH)

    sa_key = _key()
    _write_key(pki / "sa.key", sa_key)
    (pki / "sa.pub").write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
