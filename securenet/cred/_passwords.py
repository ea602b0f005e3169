"""
Passwords: preparation (SASLprep), storage (argon2id), SCRAM key derivation,
user creation, and the checker behind the SASL C{PLAIN} mechanism.

One rule holds everywhere: a password is prepared with L{normalize_password}
(RFC 4013 SASLprep) before it is hashed (L{PasswordHasher.hash}), verified
(L{PasswordHasher.verify}, so also by L{PasswordChecker} for C{PLAIN}) or
turned into SCRAM keys (L{derive_scram_keys}).  So "I<soft hyphen>X", "IX"
and the roman numeral nine are one password, whichever mechanism the client
uses.

Hashing, verifying and deriving are deliberately slow: a server runs them
through a L{Runner} (a thread), never on the reactor thread.
"""

from __future__ import annotations

import secrets
from typing import Any

import argon2
import attrs
from argon2.exceptions import InvalidHashError, VerificationError
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from securenet._threads import Runner
from securenet.cred._names import canonical_user_name
from securenet.cred._saslprep import PasswordError, SASLprepError, normalize_password, saslprep
from securenet.interfaces import ICredentialStore
from securenet.store._errors import StoreError

_log = Logger()


class InvalidPasswordHash(PasswordError):
    """A stored password hash is not an argon2 hash (a corrupt or foreign record)."""


# -- argon2id ----------------------------------------------------------------

#: argon2-cffi's default profile (RFC 9106's low-memory recommendation:
#: t=3, m=64 MiB, p=4), stronger than OWASP's minimums.
DEFAULT_ARGON2 = argon2.profiles.RFC_9106_LOW_MEMORY

#: OWASP's Password Storage Cheat Sheet minimums for argon2id, as
#: (memory cost in KiB, time cost) pairs, each with parallelism 1; any one
#: of them is acceptable.
OWASP_ARGON2_MINIMUMS: tuple[tuple[int, int], ...] = (
    (47104, 1),
    (19456, 2),
    (12288, 3),
    (9216, 4),
    (7168, 5),
)


class PasswordHasher:
    """
    argon2id password hashes (PHC strings, C{$argon2id$v=19$m=...}).

    Parameters weaker than every OWASP minimum are refused unless
    C{insecurely_weak=True} (for test suites only).  L{needs_rehash} is
    true for any hash made with other parameters than this hasher's, so
    raising the parameters upgrades old hashes at each user's next login.

    All methods block for the hashing time: call them through a L{Runner}.

    @ivar dummy_hash: a hash of a random password made with this hasher's
        parameters, computed once at construction.  Verifying against it for
        a user who does not exist costs what verifying a real user costs.
    """

    def __init__(
        self,
        *,
        time_cost: int = DEFAULT_ARGON2.time_cost,
        memory_cost: int = DEFAULT_ARGON2.memory_cost,
        parallelism: int = DEFAULT_ARGON2.parallelism,
        insecurely_weak: bool = False,
    ) -> None:
        if not insecurely_weak and not any(memory_cost >= m and time_cost >= t for m, t in OWASP_ARGON2_MINIMUMS):
            raise ValueError(
                f"argon2id time_cost={time_cost}, memory_cost={memory_cost} KiB is weaker than "
                "every OWASP minimum (e.g. memory_cost=19456 with time_cost=2); "
                "pass insecurely_weak=True only in tests"
            )
        self.time_cost = time_cost
        self.memory_cost = memory_cost
        self.parallelism = parallelism
        self._argon2 = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            hash_len=DEFAULT_ARGON2.hash_len,
            salt_len=DEFAULT_ARGON2.salt_len,
            type=argon2.Type.ID,
        )
        self.dummy_hash: str = self._argon2.hash(secrets.token_urlsafe(24))

    def __repr__(self) -> str:
        return f"PasswordHasher(time_cost={self.time_cost}, memory_cost={self.memory_cost}, parallelism={self.parallelism})"

    def hash(self, password: str) -> str:
        """
        The argon2id hash of L{normalize_password}C{(password)}.

        @raise PasswordError: the password is refused (see L{normalize_password}).
        """
        return self._argon2.hash(normalize_password(password))

    def verify(self, hash: str, password: str) -> bool:
        """
        Whether C{password} (prepared with L{normalize_password}) matches
        C{hash}.  A wrong password, including one SASLprep refuses, is
        C{False}, never an exception.

        @raise InvalidPasswordHash: C{hash} is not an argon2 hash.
        """
        try:
            prepared = normalize_password(password)
        except PasswordError:
            return False
        try:
            return self._argon2.verify(hash, prepared)
        except InvalidHashError:
            raise InvalidPasswordHash("stored password hash is not an argon2 hash") from None
        except VerificationError:
            return False

    def needs_rehash(self, hash: str) -> bool:
        """Whether C{hash} was made with other parameters (or another argon2 variant) than this hasher's."""
        try:
            return self._argon2.check_needs_rehash(hash)
        except InvalidHashError:
            return True


# -- the checker -------------------------------------------------------------

#: What every refused password login says (to the client and in C{str()}).
GENERIC_REFUSAL = "invalid credentials"


class LoginRefused(UnauthorizedLogin):
    """
    A password login was refused.  C{str()} is always L{GENERIC_REFUSAL};
    C{reason} says why, for the audit log only.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(GENERIC_REFUSAL)
        self.reason = reason


def _text(value: bytes | str, what: str) -> str:
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise LoginRefused(f"{what} is not valid UTF-8") from None


@implementer(ICredentialsChecker)
class PasswordChecker:
    """
    Checks user names and passwords (C{IUsernamePassword}, the SASL
    C{PLAIN} mechanism) against an L{ICredentialStore}.

    Every refusal is a L{LoginRefused} saying only "invalid credentials";
    its C{reason} is for the audit log.  A user who does not exist, has no
    password or is disabled costs one argon2 verification, like a wrong
    password, so response times do not tell which user names exist.  A
    successful login with a hash made under older parameters is rehashed
    and stored.

    @param runner: runs the hasher's blocking calls (verify, hash), never on
        the reactor thread in a server
        (L{reactor_thread_pool_runner}C{(reactor)}).
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, store: ICredentialStore, hasher: PasswordHasher, runner: Runner) -> None:
        self.store = store
        self.hasher = hasher
        self.runner = runner

    def requestAvatarId(self, credentials: IUsernamePassword) -> defer.Deferred[Any]:
        return defer.Deferred.fromCoroutine(self._check(credentials))

    async def _check(self, credentials: IUsernamePassword) -> str:
        name = canonical_user_name(_text(credentials.username, "user name"))
        password = _text(credentials.password, "password")
        if not name:
            raise LoginRefused("empty user name")
        try:
            saslprep(name)
        except SASLprepError as e:
            raise LoginRefused(f"user name refused: it {e.problem}") from None
        if not password:
            raise LoginRefused(f"empty password for {name!r}")
        try:
            normalize_password(password)
        except PasswordError as e:
            raise LoginRefused(f"{e} (user {name!r})") from None

        user = await self.store.get_user(name)
        stored = user.password_hash if user is not None else None
        try:
            ok = await self.runner(self.hasher.verify, stored or self.hasher.dummy_hash, password)
        except InvalidPasswordHash:
            raise LoginRefused(f"the stored password hash of {name!r} is not an argon2 hash") from None
        if user is None:
            raise LoginRefused(f"no user {name!r}")
        if stored is None:
            raise LoginRefused(f"user {name!r} has no password")
        if not ok:
            raise LoginRefused(f"wrong password for {name!r}")
        if user.disabled:
            raise LoginRefused(f"user {name!r} is disabled")
        if self.hasher.needs_rehash(stored):
            await self._rehash(name, stored, password)
        return user.name

    async def _rehash(self, name: str, old: str, password: str) -> None:
        """
        Store a hash with the current parameters, unless the record changed
        meanwhile (a new password is not overwritten).  A store failure here
        does not refuse the login: the next one tries again.
        """
        try:
            new = await self.runner(self.hasher.hash, password)
            current = await self.store.get_user(name)
            if current is not None and current.password_hash == old:
                await self.store.update_user(attrs.evolve(current, password_hash=new))
        except StoreError as e:
            _log.warn("could not store a rehashed password for {user}: {error}", user=name, error=str(e))
