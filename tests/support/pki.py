"""
The openssl command and an RSA key for tests that need them.
"""

from __future__ import annotations

import functools
import shutil

from cryptography.hazmat.primitives.asymmetric import rsa


@functools.cache
def rsa_key() -> rsa.RSAPrivateKey:
    """One RSA 3072 key per test run, shared because generating it is slow."""
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


def openssl() -> str:
    """The openssl binary; the tests that use it are what a user runs, so no skip."""
    path = shutil.which("openssl")
    if path is None:
        raise AssertionError("openssl is not on PATH; these tests need it")
    return path
