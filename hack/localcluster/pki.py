"""Certificates and kubeconfigs: the cluster's CertificateAuthority, the certificates and
client identities of its components, and the kubeconfig documents that carry them."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .config import CLUSTER_NAME, KUBELET_CLIENT_USER, SERVICE_CIDR


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read (keys, kubeconfigs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass
class CertificateAuthority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, common_name: str) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def load(cls, pki: Path) -> CertificateAuthority:
        """The cluster's CA from ``pki/ca.key`` and ``pki/ca.crt``."""
        return cls(
            serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None),  # type: ignore[arg-type]
            x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes()),
        )

    def issue(
        self,
        common_name: str,
        *,
        organizations: Sequence[str] = (),
        dns_names: Sequence[str] = (),
        ips: Sequence[str] = (),
        server: bool = False,
        client: bool = False,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, builder.sign(self.key, hashes.SHA256())

    def client_kubeconfig(
        self, server: str, user: str, groups: Sequence[str], target: Path
    ) -> Path:
        """Issue a client certificate for ``user`` and write a kubeconfig carrying it."""
        key, cert = self.issue(user, organizations=groups, client=True)
        document = kubeconfig_document(
            server, pem_cert(self.cert), pem_cert(cert), pem_key(key), user
        )
        write_private(target, document.encode())
        return target


def first_service_ip(cidr: str = SERVICE_CIDR) -> str:
    return str(next(ipaddress.ip_network(cidr).hosts()))


def kubeconfig_document(
    server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, user: str
) -> str:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)},
            }
        ],
        "contexts": [{"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": CLUSTER_NAME,
        "preferences": {},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def write_cluster_pki(pki: Path, config: Path, admin_kubeconfig: Path, server: str) -> None:
    """A fresh CA, the serving certificates of the API server, controller manager and
    scheduler, the front proxy's, the service-account key pair, and a kubeconfig per client
    (admin to ``admin_kubeconfig``, the components' to ``config/<name>.kubeconfig``)."""
    pki.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority.create(f"{CLUSTER_NAME}-ca")
    ca_pem = pem_cert(ca.cert)
    (pki / "ca.crt").write_bytes(ca_pem)
    write_private(pki / "ca.key", pem_key(ca.key))

    def save(name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        (pki / f"{name}.crt").write_bytes(pem_cert(cert))
        write_private(pki / f"{name}.key", pem_key(key))

    save(
        "apiserver",
        *ca.issue(
            "kube-apiserver",
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=("127.0.0.1", first_service_ip()),
            server=True,
        ),
    )
    for name in ("kube-controller-manager", "kube-scheduler"):
        save(
            f"{name}-serving",
            *ca.issue(name, dns_names=("localhost",), ips=("127.0.0.1",), server=True),
        )

    # The API server's client certificate towards kubelets (as kubeadm issues it).
    save("apiserver-kubelet-client", *ca.issue(KUBELET_CLIENT_USER, client=True))

    # The aggregation layer's front proxy (as kubeadm sets it up): its CA is published to
    # kube-system/extension-apiserver-authentication, which delegated authentication reads.
    front_proxy = CertificateAuthority.create(f"{CLUSTER_NAME}-front-proxy-ca")
    (pki / "front-proxy-ca.crt").write_bytes(pem_cert(front_proxy.cert))
    save("front-proxy-client", *front_proxy.issue("front-proxy-client", client=True))

    # Service-account token signing key pair.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_private(pki / "sa.key", pem_key(sa_key))
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

    # Client identities: each component its own user, so the audit log tells them apart.
    clients = {
        "admin": ("kubernetes-admin", ("system:masters",)),
        "kube-controller-manager": ("system:kube-controller-manager", ()),
        "kube-scheduler": ("system:kube-scheduler", ()),
        "kwok": ("kwok-controller", ("system:masters",)),
    }
    for name, (user, groups) in clients.items():
        key, cert = ca.issue(user, organizations=groups, client=True)
        save(name, key, cert)
        document = kubeconfig_document(server, ca_pem, pem_cert(cert), pem_key(key), user)
        target = admin_kubeconfig if name == "admin" else config / f"{name}.kubeconfig"
        write_private(target, document.encode())
