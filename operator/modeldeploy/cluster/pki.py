"""Certificates and keys for a local control plane (the `cryptography` package).

One CA signs the API server's serving certificate and client certificates whose subject the
API server maps to a user (CN) and groups (O). etcd has a CA of its own, as kubeadm sets it up:
etcd trusts any certificate its CA signed, so a user certificate of the cluster CA must not open
etcd. It signs etcd's certificate (serving and peer) and the API server's etcd client
certificate, and nothing else. The service-account signing key is a separate RSA key pair, as
kube-apiserver requires for its tokens. Every file is 0600 in a 0700 directory.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from modeldeploy.processes import private_dir

# Names clients may use for the API server: loopback, plus the in-cluster service names so a
# token's audience and a pod-style client both validate.
SERVING_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
# 127.0.0.1 is where we bind; 10.0.0.1 is the first address of --service-cluster-ip-range, which
# kube-apiserver gives the `kubernetes` Service; NODE_IP is where we bind with a local node.
NODE_IP = "10.244.0.1"
SERVING_IPS = ("127.0.0.1", "10.0.0.1", NODE_IP)
VALIDITY = dt.timedelta(days=365)
# Backdating absorbs small clock differences between whoever mints and whoever verifies.
BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path

    def exists(self) -> bool:
        return self.cert.is_file() and self.key.is_file()


def _ensure_ca(ca: CertPair, common_name: str, issued: tuple[CertPair, ...]) -> None:
    if not ca.exists():
        write_ca(ca, common_name)
        for stale in issued:  # a new CA invalidates everything it signed before
            stale.cert.unlink(missing_ok=True)


class _Pair:
    """A certificate and its key in the PKI directory: `<stem>.crt` and `<stem>.key`."""

    def __init__(self, stem: str) -> None:
        self.stem = stem

    def __get__(self, pki: ClusterPKI, owner: type) -> CertPair:
        return CertPair(pki.dir / f"{self.stem}.crt", pki.dir / f"{self.stem}.key")


@dataclass(frozen=True)
class ClusterPKI:
    """The files one control plane uses, all under one directory."""

    dir: Path

    ca = _Pair("ca")
    serving = _Pair("apiserver")
    admin = _Pair("admin")
    etcd_ca = _Pair("etcd-ca")
    etcd_server = _Pair("etcd-server")  # also etcd's peer certificate (server and client auth)
    etcd_client = _Pair("apiserver-etcd-client")  # the API server's (and `status`'s), for etcd
    kubelet_client = _Pair("apiserver-kubelet-client")  # the API server's, for a node's kubelet

    @property
    def sa_public_key(self) -> Path:
        return self.dir / "sa.pub"

    @property
    def sa_private_key(self) -> Path:
        return self.dir / "sa.key"

    def complete(self) -> bool:
        return (
            self.ca.exists()
            and self.serving.exists()
            and self.admin.exists()
            and self.etcd_ca.exists()
            and self.etcd_server.exists()
            and self.etcd_client.exists()
            and self.sa_public_key.is_file()
            and self.sa_private_key.is_file()
        )

    def ensure(self, node: bool = False) -> ClusterPKI:
        """Create whatever is missing; keep what exists so kubeconfigs stay valid across runs.

        `node`: also the API server's client certificate for the kubelet."""
        private_dir(self.dir)
        issued = (self.serving, self.admin, self.kubelet_client)
        _ensure_ca(self.ca, "modeldeploy-local-ca", issued)
        _ensure_ca(self.etcd_ca, "modeldeploy-local-etcd-ca", (self.etcd_server, self.etcd_client))
        # A serving certificate of an older release may lack an address we now bind.
        if not (self.serving.exists() and _serves_all(self.serving.cert)):
            mint_serving_cert(self.ca, self.serving)
        if node and not self.kubelet_client.exists():
            # The kubelet authorizes it by SubjectAccessReview: logs, exec, port-forward.
            mint_client_cert(self.ca, self.kubelet_client, "kube-apiserver", ["system:masters"])
        if not self.admin.exists():
            mint_client_cert(self.ca, self.admin, "admin", ["system:masters"])
        if not self.etcd_server.exists():
            mint_etcd_server_cert(self.etcd_ca, self.etcd_server)
        if not self.etcd_client.exists():
            mint_client_cert(self.etcd_ca, self.etcd_client, "kube-apiserver-etcd-client")
        if not (self.sa_public_key.is_file() and self.sa_private_key.is_file()):
            write_service_account_keys(self.sa_private_key, self.sa_public_key)
        return self

    def mint_user(self, user: str, groups: Sequence[str] = ()) -> CertPair:
        """A client certificate for `user` in `groups`, under users/ (re-minted on each call)."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in user)
        pair = CertPair(self.dir / "users" / f"{safe}.crt", self.dir / "users" / f"{safe}.key")
        private_dir(pair.cert.parent)
        return mint_client_cert(self.ca, pair, user, groups)


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256: fast to generate, and accepted by Go's TLS stack, kubectl and Python's ssl.
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(path, data)


def _write_private(path: Path, data: bytes) -> None:
    # Create with 0600 from the start: never a moment where the file is world-readable.
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _write_private(path, cert.public_bytes(serialization.Encoding.PEM))


def _load(pair: CertPair) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    key = serialization.load_pem_private_key(pair.key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{pair.key}: expected an EC private key")
    return cert, key


def _builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """Signatures for every certificate; a CA also signs certificates and CRLs."""
    unused = ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement")
    return x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
        **dict.fromkeys(unused, False),
    )


def write_ca(pair: CertPair, common_name: str) -> CertPair:
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            _key_usage(ca=True),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(pair.key, key)
    _write_cert(pair.cert, cert)
    return pair


def _leaf(
    ca: CertPair,
    out: CertPair,
    subject: x509.Name,
    usage: x509.ObjectIdentifier | Sequence[x509.ObjectIdentifier],
    san: x509.SubjectAlternativeName | None = None,
) -> CertPair:
    ca_cert, ca_key = _load(ca)
    key = _new_key()
    builder = (
        _builder(subject, ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(ca=False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [usage] if isinstance(usage, x509.ObjectIdentifier) else list(usage)
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    _write_key(out.key, key)
    _write_cert(out.cert, builder.sign(ca_key, hashes.SHA256()))
    return out


def mint_serving_cert(ca: CertPair, out: CertPair) -> CertPair:
    san = x509.SubjectAlternativeName(
        [x509.DNSName(n) for n in SERVING_DNS_NAMES]
        + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVING_IPS]
    )
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")])
    return _leaf(ca, out, subject, ExtendedKeyUsageOID.SERVER_AUTH, san)


def _serves_all(cert_path: Path) -> bool:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return set(SERVING_IPS) <= have


def mint_etcd_server_cert(ca: CertPair, out: CertPair) -> CertPair:
    """etcd on loopback: serving clients, and its own peer link (which is both ends)."""
    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "etcd")])
    usages = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
    return _leaf(ca, out, subject, usages, san)


def mint_client_cert(
    ca: CertPair, out: CertPair, user: str, groups: Sequence[str] = ()
) -> CertPair:
    """kube-apiserver's x509 authenticator: CN is the user name, each O is a group."""
    if not user:
        raise ValueError("user must not be empty")
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, user))
    return _leaf(ca, out, x509.Name(attrs), ExtendedKeyUsageOID.CLIENT_AUTH)


def write_service_account_keys(private_path: Path, public_path: Path) -> None:
    # RSA: the RS256 tokens every Kubernetes client library expects.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(private_path, key)
    _write_private(
        public_path,
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


def cert_subject(path: Path) -> tuple[str, list[str]]:
    """(user, groups) a client certificate authenticates as."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return (str(cn[0].value) if cn else ""), [str(o.value) for o in orgs]
