"""A throwaway certificate authority made with openssl, for the TLS tests."""

from __future__ import annotations

import subprocess
from pathlib import Path


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=directory)


def make_cert(directory: Path, ca: str, name: str, san: str) -> None:
    """A certificate for ``name`` signed by ``ca``, valid for the subjectAltName ``san``."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", cwd=directory)
    (directory / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=directory)


def make_pki(directory: Path) -> Path:
    """site-ca (trusted) and other-ca; certificates for 127.0.0.1, for another name, and a client."""
    make_ca(directory, "site-ca")
    make_ca(directory, "other-ca")
    make_cert(directory, "site-ca", "server", "IP:127.0.0.1")
    make_cert(directory, "site-ca", "wrong-name", "DNS:server.example.net")
    make_cert(directory, "site-ca", "netjobs-client", "DNS:netjobs-client")
    return directory
