"""Certificates and keys for the test clusters, made with the openssl command line.

One CA signs the API servers' serving certificate (127.0.0.1, localhost) and the client
certificates, so that clients verify TLS as they would against a real cluster.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _key(name: str, cwd: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name, cwd=cwd)


def _signed(name: str, subject: str, cwd: Path, extensions: str) -> None:
    _key(f"{name}.key", cwd)
    ext = cwd / f"{name}.ext"
    ext.write_text(extensions)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=cwd)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "30", "-extfile", ext.name, "-out", f"{name}.crt", cwd=cwd,
    )  # fmt: skip


def make(folder: Path) -> None:
    """CA, serving cert, client certs (admin in system:masters), service-account key pair."""
    folder.mkdir(parents=True, exist_ok=True)
    _key("ca.key", folder)
    _openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=csi-migrate-testenv-ca",
        "-days", "30", "-out", "ca.crt", cwd=folder,
    )  # fmt: skip
    _signed(
        "serving", "/CN=kube-apiserver", folder,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )  # fmt: skip
    _signed("admin", "/O=system:masters/CN=testenv-admin", folder, "extendedKeyUsage=clientAuth\n")
    _openssl(
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        "sa.key",
        cwd=folder,
    )
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=folder)
    for path in folder.iterdir():
        path.chmod(0o600)
