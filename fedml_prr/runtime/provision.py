"""Provisioning a federation: its certificate authority and one kit per party (``fedml-prr provision``).

Every party of a cross-silo federation proves who it is with a certificate signed by the
federation's own CA (mutual TLS, :mod:`fedml_prr.fedml_adapter.grpc_link`).  A kit is a folder::

    <out>/ca/ca.key, ca.pem              the CA's private key (keep it offline) and certificate
    <out>/<party>/key.pem                 the party's private key (never leaves that machine)
    <out>/<party>/cert.pem                its certificate: common name and DNS name ``fedml-prr-rank-<r>``
    <out>/<party>/ca.pem                  the CA certificate, to verify the other parties
    <out>/<party>/party.yaml              its part of the config: rank, role, the TLS files

Party ``server`` is rank 0; the clients are ranks 1..K in the order given (rank ``k`` trains silo
``k - 1``).  Keys are ECDSA P-256; certificates are valid for ``days`` days and carry the usages a
gRPC party needs (it is both a TLS server and a TLS client).  Made with the ``cryptography``
library; private keys are written with mode 0600.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

import yaml

from ..training.identity import party_name

SERVER = "server"


@dataclass(frozen=True)
class Kit:
    """One party's TLS files."""

    rank: int
    folder: Path

    @property
    def cert(self) -> Path:
        return self.folder / "cert.pem"

    @property
    def key(self) -> Path:
        return self.folder / "key.pem"

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _name(common_name: str, federation: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, federation),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _new_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_cert(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(federation: str, *, days: int = 365):
    """``(private key, certificate)`` of a new federation CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    key = _new_key()
    now = datetime.datetime.now(datetime.timezone.utc)
    name = _name(f"{federation} federation CA", federation)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_party_certificate(ca_key, ca_cert, rank: int, federation: str, *, days: int = 365):
    """``(private key, certificate)`` of party ``rank``, signed by the CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = _new_key()
    now = datetime.datetime.now(datetime.timezone.utc)
    name = party_name(rank)
    cert = (x509.CertificateBuilder().subject_name(_name(name, federation)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def provision(out: Path, parties: Sequence[str], *, federation: str = "fedml-prr", days: int = 365,
              overwrite: bool = False) -> List[Kit]:
    """Create the CA and one kit per party under ``out`` (see the module docstring).

    ``parties``: the server first, then the clients in rank order (their silo names).  An
    existing non-empty ``out`` is an error unless ``overwrite``.
    """
    out = Path(out)
    if len(parties) < 2 or len(set(parties)) != len(parties):
        raise ValueError(f"give the server and at least one client, each name once; got {list(parties)}")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; choose a new folder or pass --overwrite")
    ca_key, ca_cert = make_ca(federation, days=days)
    _write_private(out / "ca" / "ca.key", _pem_key(ca_key))
    (out / "ca" / "ca.pem").write_bytes(_pem_cert(ca_cert))
    kits = []
    for rank, party in enumerate(parties):
        key, cert = make_party_certificate(ca_key, ca_cert, rank, federation, days=days)
        kit = Kit(rank, out / party)
        _write_private(kit.key, _pem_key(key))
        kit.cert.write_bytes(_pem_cert(cert))
        kit.ca.write_bytes(_pem_cert(ca_cert))
        role = {"rank": rank, "role": SERVER if rank == 0 else "client", "federation": federation,
                "identity": party_name(rank), **({"silo": rank - 1, "client": party} if rank else {}),
                "prr_args": {"prr_tls_cert": str(kit.cert.resolve()), "prr_tls_key": str(kit.key.resolve()),
                             "prr_tls_ca": str(kit.ca.resolve())}}
        (kit.folder / "party.yaml").write_text(yaml.safe_dump(role, sort_keys=False))
        kits.append(kit)
    return kits
