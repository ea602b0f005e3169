"""
SCRAM-SHA-256 on the credential side (RFC 5802, RFC 7677): deriving the
stored keys from a password, and L{ScramChecker}, which checks a proof
against them.  The wire messages are L{securenet.sasl}'s.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from typing import Any

import attrs
from twisted.internet import defer
from zope.interface import implementer

from securenet.cred._passwords import LoginRefused
from securenet.cred._saslprep import normalize_password
from securenet.interfaces import ICredentialStore, IScramChecker, IScramCredentials
from securenet.store._records import ScramKeys, User

# -- SCRAM -------------------------------------------------------------------

#: RFC 7677 section 4: SCRAM-SHA-256 iteration counts start at 4096.
MIN_SCRAM_ITERATIONS = 4096


def derive_scram_keys(password: str, *, salt: bytes | None = None, iterations: int = 600_000) -> ScramKeys:
    """
    What a SCRAM-SHA-256 server stores for C{password} (RFC 5802 section 3,
    RFC 7677)::

        SaltedPassword = PBKDF2-HMAC-SHA256(SASLprep(password), salt, iterations)
        ClientKey      = HMAC(SaltedPassword, "Client Key")
        StoredKey      = SHA256(ClientKey)
        ServerKey      = HMAC(SaltedPassword, "Server Key")

    @param salt: a random 16-byte salt by default.
    @param iterations: 600,000 by default (OWASP's figure for
        PBKDF2-HMAC-SHA256); at least L{MIN_SCRAM_ITERATIONS}.
    @raise PasswordError: the password is refused (see L{normalize_password}).
    @raise ValueError: too few iterations, or an empty salt.
    """
    if iterations < MIN_SCRAM_ITERATIONS:
        raise ValueError(f"SCRAM iterations must be at least {MIN_SCRAM_ITERATIONS}, not {iterations}")
    if salt is None:
        salt = os.urandom(16)
    elif not salt:
        raise ValueError("SCRAM salt must not be empty")
    salted = hashlib.pbkdf2_hmac("sha256", normalize_password(password).encode("utf-8"), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    return ScramKeys(
        salt=salt,
        iterations=iterations,
        stored_key=hashlib.sha256(client_key).digest(),
        server_key=hmac.digest(salted, b"Server Key", "sha256"),
    )


#: The iteration count announced for users who do not exist: the default of
#: L{derive_scram_keys} (OWASP's figure for PBKDF2-HMAC-SHA256).
DEFAULT_ITERATIONS = 600_000
#: RFC 7677 section 4: a client must not accept fewer.
MIN_ITERATIONS = MIN_SCRAM_ITERATIONS
#: A client refuses more: a hostile server could otherwise make it spin.
MAX_ITERATIONS = 10_000_000
#: Length of the salts of users who do not exist: as long as the ones
#: L{derive_scram_keys} makes.
FAKE_SALT_LENGTH = 16

_KEY_LENGTH = hashlib.sha256().digest_size


# -- primitives ---------------------------------------------------------------


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    """
    SaltedPassword = Hi(Normalize(password), salt, i) (RFC 5802 section 3),
    the password prepared exactly as L{derive_scram_keys} prepares it.
    """
    return hashlib.pbkdf2_hmac("sha256", normalize_password(password).encode("utf-8"), salt, iterations)


def _client_and_server_keys(salted: bytes) -> tuple[bytes, bytes]:
    return _hmac(salted, b"Client Key"), _hmac(salted, b"Server Key")


@implementer(IScramCredentials)
@attrs.define
class ScramCredentials:
    username: str
    auth_message: bytes
    client_proof: bytes = attrs.field(repr=False)
    server_signature: bytes | None = attrs.field(default=None, repr=False)

    def server_final(self) -> bytes | None:
        if self.server_signature is None:
            return None
        return b"v=" + _b64(self.server_signature).encode("ascii")


@implementer(IScramChecker)
class ScramChecker:
    """
    Checks SCRAM-SHA-256 proofs against the L{ScramKeys} in a credential
    store, and offers SCRAM-SHA-256-PLUS and SCRAM-SHA-256 over the wire.

    Every failure -- unknown user, disabled user, user without SCRAM keys,
    wrong proof -- is a L{LoginRefused} saying only "invalid credentials"
    (as for C{PLAIN}); its C{reason} is for the audit log.

    Users who do not exist (or have no SCRAM keys) are announced a fake
    salt, stable for a name and derived from a secret, and
    C{default_iterations}, so the challenge does not say whether the user
    exists.  Set C{default_iterations} to the count users are enrolled with.
    The secret is random per checker unless given: pass a persistent one so
    that fake salts, like real ones, survive a restart.

    @param plus: whether SCRAM-SHA-256-PLUS is offered (it is whenever the
        connection has channel bindings).  A plain SCRAM-SHA-256 client that
        says it could bind (C{y}) is refused only when it is.
    """

    credentialInterfaces = (IScramCredentials,)

    def __init__(
        self,
        store: ICredentialStore,
        *,
        default_iterations: int = DEFAULT_ITERATIONS,
        plus: bool = True,
        secret: bytes | None = None,
    ) -> None:
        if default_iterations < MIN_ITERATIONS:
            raise ValueError(f"default_iterations must be at least {MIN_ITERATIONS}, not {default_iterations}")
        self.store = store
        self.default_iterations = default_iterations
        self.plus = plus
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        # Checked against when there are no keys, so every answer does the same work.
        self._decoy = _sha256(secrets.token_bytes(_KEY_LENGTH))

    def _fake_salt(self, username: str) -> bytes:
        return _hmac(self._secret, b"securenet SCRAM fake salt\x00" + username.encode("utf-8"))[:FAKE_SALT_LENGTH]

    def scram_parameters(self, username: str) -> defer.Deferred[tuple[bytes, int]]:
        """The salt and iteration count to announce to C{username} (fake if there are no keys)."""

        def found(user: User | None) -> tuple[bytes, int]:
            if user is not None and user.scram is not None:
                return user.scram.salt, user.scram.iterations
            return self._fake_salt(username), self.default_iterations

        return self.store.get_user(username).addCallback(found)

    def requestAvatarId(self, credentials: IScramCredentials) -> defer.Deferred[Any]:
        """Fires with the user name (str), and sets C{credentials.server_signature}."""
        return self.store.get_user(credentials.username).addCallback(self._verify, credentials)

    def _verify(self, user: User | None, credentials: IScramCredentials) -> str:
        name = credentials.username
        keys = user.scram if user is not None else None
        # The same work whatever the outcome: check against a decoy when there are no keys.
        stored_key = keys.stored_key if keys is not None else self._decoy
        proof: bytes = credentials.client_proof
        signature = _hmac(stored_key, credentials.auth_message)
        client_key = _xor(proof, signature) if len(proof) == len(signature) else b""
        matches = hmac.compare_digest(_sha256(client_key), stored_key)
        if user is None:
            raise LoginRefused(f"no user {name!r}")
        if keys is None:
            raise LoginRefused(f"user {name!r} has no SCRAM keys")
        if not matches:
            raise LoginRefused(f"wrong SCRAM proof for {name!r}")
        if user.disabled:
            raise LoginRefused(f"user {name!r} is disabled")
        credentials.server_signature = _hmac(keys.server_key, credentials.auth_message)
        return str(user.name)
