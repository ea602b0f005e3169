"""
Token keys read from a file that a reload (SIGHUP) reads again: the key of
C{--auth jwt:key=PATH} (L{ReloadableTokenChecker}) and of C{--token-key}
(the web layer's token service).

A reload rotates the key set (L{TokenSettings.rotated}): the new key signs
(if it can) and verifies tokens without a C{kid}; the key it replaces keeps
verifying the tokens that name it for the overlap, then is dropped.  So that
a token can name its key, every key read here is named by its content
(L{key_id}: the same file gives the same C{kid} after a restart).

A reload may not change the algorithm (it is pinned to the one read at
start-up, or to C{alg=}): a key file of another algorithm is refused, like
a missing, unreadable, too open or corrupt one, with the file named, and
the old key set stays as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import attrs
from zope.interface import implementer

from securenet.cred._jwt import MAX_MAX_LIFETIME, Clock, TokenChecker, TokenSettings, now
from securenet.interfaces import ICredentialStore, IReloadable
from securenet.pki._tokenkeys import (
    Algorithm,
    InvalidTokenKey,
    InvalidTokenSettings,
    TokenKey,
    key_id,
    load_signing_key,
    load_verification_key,
)


@attrs.frozen
class TokenKeyFile:
    """
    Where a token key comes from, so that a reload can read it again.

    @ivar path: the key file.
    @ivar signing: whether it is a signing key (a private key or an HS256
        secret, for an issuer) or a verification key (a public key or, with
        C{algorithm="HS256"}, a secret).
    @ivar algorithm: the algorithm every key read from it must have.
    @ivar overlap: how long, in seconds, a key that a reload replaces keeps
        verifying the tokens that name it (0: not at all).
    """

    path: str
    signing: bool
    algorithm: Algorithm
    overlap: float

    @classmethod
    def open(cls, path: str, *, signing: bool, algorithm: str | None = None, overlap: float) -> tuple[TokenKeyFile, TokenKey]:
        """
        Read the key at C{path} (blocking), and the L{TokenKeyFile} that
        reads it again with its algorithm pinned.

        @raise SecurenetError: the file cannot be used (a L{PKIError}
            naming it), or C{overlap} is out of range.
        """
        if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not (0 <= overlap <= MAX_MAX_LIFETIME):
            raise InvalidTokenSettings(f"the key overlap must be between 0 and {MAX_MAX_LIFETIME:g} seconds, not {overlap!r}")
        key = _read(path, signing, algorithm)
        return cls(path, signing, key.algorithm, float(overlap)), key

    def read(self) -> TokenKey:
        """The key the file holds now, named by L{key_id} (blocking); a L{PKIError} naming the file if it cannot be used."""
        return _read(self.path, self.signing, self.algorithm)

    def rotate(self, settings: TokenSettings, at: float) -> TokenSettings:
        """
        Read the file again (blocking): C{settings} once its key is current,
        at time C{at} (L{TokenSettings.rotated}).

        @raise SecurenetError: naming the file; C{settings} is unchanged.
        """
        key = self.read()
        try:
            return settings.rotated(key, at=at, overlap=self.overlap)
        except InvalidTokenSettings as e:
            raise InvalidTokenKey(Path(self.path), str(e)) from None


def _read(path: str, signing: bool, algorithm: str | None) -> TokenKey:
    key = load_signing_key(path, algorithm) if signing else load_verification_key(path, algorithm)
    return attrs.evolve(key, kid=key_id(key))


@implementer(IReloadable)
class ReloadableTokenChecker(TokenChecker):
    """
    The checker of C{--auth jwt:key=PATH}: a L{TokenChecker} whose key file
    a reload reads again (L{TokenKeyFile.rotate}); the key it replaces keeps
    verifying the tokens that name it (by C{kid}) for C{overlap=} seconds.

    @ivar key_file: where its key comes from.
    """

    what: Literal["checker"] = "checker"

    def __init__(self, settings: TokenSettings, store: ICredentialStore | None, clock: Clock, *, key_file: TokenKeyFile) -> None:
        super().__init__(settings, store, clock)
        self.key_file = key_file

    @property
    def source(self) -> str:
        """The key file (for the reload's log line)."""
        return self.key_file.path

    def prepare(self) -> Callable[[], None]:
        """
        Read the key file again (blocking); the returned function makes its
        key current.  (The new key set is computed from the current one:
        the reload driver runs one reload of a checker at a time.)
        """
        settings = self.key_file.rotate(self.settings, now(self.clock))

        def commit() -> None:
            self.settings = settings

        return commit
