"""
Errors of the PKI layer: files that cannot be trusted or read.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from securenet._errors import SecurenetError


@attrs.define(auto_exc=True, str=False)
class PKIError(SecurenetError):
    """
    A PKI file or operation was refused.

    @ivar path: the file concerned.
    @ivar problem: what is wrong with it, in a few words.
    """

    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


class FileMissing(PKIError):
    """The file does not exist or is not a regular file."""


class FileCorrupt(PKIError):
    """The file exists but is not the PEM object it should be."""


@attrs.define(auto_exc=True, str=False)
class InsecurePermissions(PKIError):
    """A private key file is readable or writable by group or others."""

    mode: int = 0


class KeyMismatch(PKIError):
    """A certificate's public key does not belong to the given private key."""


class AlreadyExists(PKIError):
    """Refusing to overwrite an existing key or certificate."""


class NotIssuedHere(PKIError):
    """The certificate was not issued by this CA."""


class InvalidName(PKIError):
    """A subject alternative name or pin could not be parsed."""
