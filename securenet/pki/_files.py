"""
Reading and writing PKI files safely.

Every loader refuses, with one L{PKIError} naming the file, what it should not
trust: a missing or corrupt file, a private key readable by group or others,
a certificate whose key is not the given private key.  These run at start-up
and in the CLI, never on a running reactor.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from securenet.pki._errors import AlreadyExists, FileCorrupt, FileMissing, InsecurePermissions, KeyMismatch

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

KEY_MODE = 0o600


def read_file(path: Path, what: str) -> bytes:
    """The bytes of C{path}, or L{FileMissing} naming it and saying why (C{what} names the file's role)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise FileMissing(path, f"{what} file does not exist") from None
    except IsADirectoryError:
        raise FileMissing(path, f"{what} path is a directory, not a file") from None
    except PermissionError:
        raise FileMissing(path, f"{what} file cannot be read (permission denied)") from None


def check_key_permissions(path: Path) -> None:
    """
    Refuse a private key file that group or others may read or write.

    On POSIX systems only; the check is what ssh does for its keys.
    """
    if os.name != "posix":
        return
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        raise FileMissing(path, "private key file does not exist") from None
    if mode & 0o077:
        raise InsecurePermissions(
            path,
            f"private key file has mode {mode:04o}; it must not be accessible by group or others (chmod 600 {path})",
            mode,
        )


def load_private_key(path: str | os.PathLike[str]) -> PrivateKey:
    """Load an unencrypted PEM private key, checking its file mode first."""
    path = Path(path)
    data = read_file(path, "private key")
    check_key_permissions(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise FileCorrupt(path, "private key is encrypted; securenet needs an unencrypted key file") from None
    except (ValueError, Exception):
        raise FileCorrupt(path, "not a PEM private key (corrupt or wrong file)") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)):
        raise FileCorrupt(path, f"unsupported private key type {type(key).__name__}")
    return key


def load_certificates(path: str | os.PathLike[str]) -> list[x509.Certificate]:
    """Load one or more PEM certificates (a leaf followed by its chain, or a CA bundle)."""
    path = Path(path)
    data = read_file(path, "certificate")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise FileCorrupt(path, "not a PEM certificate file (corrupt or wrong file)") from None
    if not certs:
        raise FileCorrupt(path, "contains no certificate")
    return certs


def load_crl(path: str | os.PathLike[str]) -> x509.CertificateRevocationList:
    path = Path(path)
    data = read_file(path, "CRL")
    try:
        return x509.load_pem_x509_crl(data)
    except ValueError:
        raise FileCorrupt(path, "not a PEM certificate revocation list (corrupt or wrong file)") from None


def _public_der(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_key_pair(
    certificate_path: str | os.PathLike[str], key_path: str | os.PathLike[str]
) -> tuple[list[x509.Certificate], PrivateKey]:
    """
    Load a certificate chain and its private key, refusing a mismatch.

    @return: C{(chain, key)}, the leaf first in C{chain}.
    """
    chain = load_certificates(certificate_path)
    key = load_private_key(key_path)
    if _public_der(chain[0].public_key()) != _public_der(key.public_key()):
        raise KeyMismatch(
            Path(key_path),
            f"private key does not match the certificate in {certificate_path}",
        )
    return chain, key


def write_private_key(path: Path, key: PrivateKey, *, overwrite: bool = False) -> None:
    """Write C{key} as unencrypted PKCS#8 PEM, created with mode 0600."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_new(path, pem, KEY_MODE, overwrite)


def write_certificates(path: Path, certs: list[x509.Certificate], *, overwrite: bool = False) -> None:
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    _write_new(path, pem, 0o644, overwrite)


def _write_new(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    """
    Write C{data} to C{path} atomically with C{mode} from the start (no window
    in which a key file is world-readable).
    """
    if path.exists() and not overwrite:
        raise AlreadyExists(path, "already exists; refusing to overwrite it")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
