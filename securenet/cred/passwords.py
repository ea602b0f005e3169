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

import datetime
import hashlib
import hmac
import os
import secrets
import stringprep
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, TypeVar

import argon2
import attrs
from argon2.exceptions import InvalidHashError, VerificationError
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from securenet.cred.sasl import (
    ChannelBindings,
    Challenge,
    Complete,
    IMechanismFactory,
    IMechanismProvider,
    IServerMechanism,
    MechanismError,
    Step,
)
from securenet.cred.store import ICredentialStore, ScramKeys, StoreError, User
from securenet.errors import SecurenetError

_T = TypeVar("_T")

_log = Logger()


# -- errors ------------------------------------------------------------------


class SASLprepError(SecurenetError, ValueError):
    """
    SASLprep refused a string.  C{problem} says why ("contains a control
    character"); neither it nor the message ever quotes the string, which
    may be a password.
    """

    def __init__(self, problem: str) -> None:
        super().__init__(f"string refused by SASLprep: it {problem}")
        self.problem = problem


class PasswordError(SecurenetError, ValueError):
    """A password was refused; the message says why and never contains it."""


class InvalidPasswordHash(PasswordError):
    """A stored password hash is not an argon2 hash (a corrupt or foreign record)."""


class UserRecordError(SecurenetError, ValueError):
    """A user name or role was refused (the message names it and says why)."""


# -- SASLprep (RFC 4013) -----------------------------------------------------
#
# No well-kept public library exposes SASLprep (scramp and passlib carry
# private copies), so it is written here from the RFC with the stdlib's
# stringprep tables (RFC 3454, Unicode 3.2) and unicodedata.ucd_3_2_0.  The
# tests compare it with scramp's copy on a corpus of inputs.

#: RFC 4013 section 2.3: prohibited output, with what to tell the user.
_PROHIBITED: tuple[tuple[Callable[[str], bool], str], ...] = (
    (stringprep.in_table_c12, "contains a non-ASCII space that was not mapped"),
    (stringprep.in_table_c21_c22, "contains a control character"),
    (stringprep.in_table_c3, "contains a private-use character"),
    (stringprep.in_table_c4, "contains a non-character code point"),
    (stringprep.in_table_c5, "contains a surrogate code point"),
    (stringprep.in_table_c6, "contains a character inappropriate for plain text"),
    (stringprep.in_table_c7, "contains a character inappropriate for canonical representation"),
    (stringprep.in_table_c8, "contains a display-changing or deprecated character"),
    (stringprep.in_table_c9, "contains a tagging character"),
)


def saslprep(text: str, *, allow_unassigned: bool = False) -> str:
    """
    Prepare C{text} with the SASLprep profile of stringprep (RFC 4013).

    Non-ASCII spaces become U+0020, characters "commonly mapped to nothing"
    (soft hyphen, zero-width joiners, ...) are removed, the result is NFKC
    (Unicode 3.2); then prohibited characters and bidirectional-text
    violations (RFC 3454 section 6) are refused.

    @param allow_unassigned: False (default) treats C{text} as a "stored
        string" and refuses code points unassigned in Unicode 3.2; True treats
        it as a "query" (RFC 3454 section 7).
    @return: the prepared string, possibly empty.
    @raise SASLprepError: the string cannot be prepared; C{problem} says why,
        without quoting it.
    """
    mapped = "".join(" " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c))
    prepared = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    for c in prepared:
        for in_table, problem in _PROHIBITED:
            if in_table(c):
                raise SASLprepError(problem)
        if not allow_unassigned and stringprep.in_table_a1(c):
            raise SASLprepError("contains a code point unassigned in Unicode 3.2")
    if any(stringprep.in_table_d1(c) for c in prepared):
        if any(stringprep.in_table_d2(c) for c in prepared):
            raise SASLprepError("mixes right-to-left and left-to-right characters")
        if not (stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1])):
            raise SASLprepError("contains right-to-left characters but does not start and end with one")
    return prepared


def normalize_password(password: str) -> str:
    """
    The form of C{password} that is hashed, verified and turned into SCRAM
    keys: its SASLprep (RFC 4013).  Applied the same way by
    L{PasswordHasher.hash}, L{PasswordHasher.verify} (so C{PLAIN}) and
    L{derive_scram_keys} (so SCRAM), so a password works with every
    mechanism.

    @raise PasswordError: the password is empty, or becomes empty, or
        SASLprep refuses it (the message says why, never what it is).
    """
    if not password:
        raise PasswordError("password must not be empty")
    try:
        prepared = saslprep(password)
    except SASLprepError as e:
        raise PasswordError(f"password refused: it {e.problem}") from None
    if not prepared:
        raise PasswordError("password is empty once prepared (it holds only characters SASLprep removes)")
    return prepared


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
        if not insecurely_weak and not any(
            memory_cost >= m and time_cost >= t for m, t in OWASP_ARGON2_MINIMUMS
        ):
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
        return (
            f"PasswordHasher(time_cost={self.time_cost}, memory_cost={self.memory_cost}, "
            f"parallelism={self.parallelism})"
        )

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


# -- users -------------------------------------------------------------------

#: The longest user name, in code points.
MAX_USER_NAME = 64


def _has_space_or_control(text: str) -> bool:
    return any(c.isspace() or unicodedata.category(c) in ("Cc", "Cf", "Zs", "Zl", "Zp") for c in text)


def canonical_user_name(name: str) -> str:
    """The form names are stored and looked up in: Unicode NFC."""
    return unicodedata.normalize("NFC", name)


def validate_user_name(name: str) -> str:
    """
    Check a new user's name and return its canonical (NFC) form.

    A name is at most L{MAX_USER_NAME} code points, holds no whitespace or
    control characters, and is its own SASLprep form -- so C{PLAIN}, SCRAM
    (whose clients SASLprep the name) and the CLI all name the same user.

    @raise UserRecordError: the name is refused; the message says why.
    """
    name = canonical_user_name(name)
    if not name:
        raise UserRecordError("user name must not be empty")
    if len(name) > MAX_USER_NAME:
        raise UserRecordError(f"user name {name!r} is {len(name)} characters; at most {MAX_USER_NAME} are allowed")
    if _has_space_or_control(name):
        raise UserRecordError(f"user name {name!r} contains whitespace or a control character")
    try:
        prepared = saslprep(name)
    except SASLprepError as e:
        raise UserRecordError(f"user name {name!r} refused: it {e.problem}") from None
    if prepared != name:
        raise UserRecordError(f"user name {name!r} is not in SASLprep form (that would be {prepared!r})")
    return name


def validate_roles(roles: Iterable[str]) -> tuple[str, ...]:
    """
    Check role names (non-empty, no whitespace, control characters or
    commas) and return them without duplicates, in the order given.

    @raise UserRecordError: a role is refused.
    """
    checked: list[str] = []
    for role in roles:
        role = unicodedata.normalize("NFC", role)
        if not role:
            raise UserRecordError("role name must not be empty")
        if _has_space_or_control(role) or "," in role:
            raise UserRecordError(f"role name {role!r} contains whitespace, a control character or a comma")
        if role not in checked:
            checked.append(role)
    return tuple(checked)


def new_user(
    name: str,
    password: str,
    *,
    roles: Iterable[str] = (),
    hasher: PasswordHasher,
    scram_iterations: int = 600_000,
    attributes: Mapping[str, Any] | None = None,
) -> User:
    """
    A new user record with an argon2id hash and SCRAM-SHA-256 keys of
    C{password}.  Blocks for both derivations (use a L{Runner} on a server).

    @raise UserRecordError: the name or a role is refused.
    @raise PasswordError: the password is empty or refused by SASLprep.
    """
    name = validate_user_name(name)
    checked_roles = validate_roles(roles)
    normalize_password(password)
    return User(
        name=name,
        password_hash=hasher.hash(password),
        scram=derive_scram_keys(password, iterations=scram_iterations),
        roles=checked_roles,
        attributes=dict(attributes or {}),
        created=datetime.datetime.now(datetime.UTC),
    )


# -- running blocking work ---------------------------------------------------


class Runner(Protocol):
    """
    The seam for blocking work: C{runner(f, *args)} calls C{f(*args)}
    somewhere and returns a Deferred of its result.
    """

    def __call__(self, f: Callable[..., _T], /, *args: Any) -> defer.Deferred[_T]: ...


def synchronous_runner(f: Callable[..., _T], /, *args: Any) -> defer.Deferred[_T]:
    """Run C{f} now, on the calling thread (the CLI, tests)."""
    return defer.maybeDeferred(f, *args)


def reactor_thread_pool_runner(reactor: IReactorThreads) -> Runner:
    """
    A runner using the reactor's thread pool (C{deferToThread}, with the
    reactor passed in): what L{PasswordChecker} uses in a server.
    """

    def run(f: Callable[..., _T], /, *args: Any) -> defer.Deferred[_T]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

    return run


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


@implementer(ICredentialsChecker, IMechanismProvider)
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

    def mechanisms(self) -> list[IMechanismFactory]:
        return [PLAIN]

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


# -- PLAIN (RFC 4616) ----------------------------------------------------------

#: The longest PLAIN message accepted (RFC 4616 asks for at least 255 bytes per field).
MAX_PLAIN_MESSAGE = 4096


def parse_plain(message: bytes) -> UsernamePassword:
    """
    Parse C{[authzid] NUL authcid NUL passwd} (RFC 4616).

    @return: credentials whose C{username} and C{password} are the UTF-8
        bytes of authcid and passwd.
    @raise MechanismError: malformed, not UTF-8, an empty authcid or
        password, or an authzid naming someone else (acting as another user
        is not supported).  The message never contains the password.
    """
    if len(message) > MAX_PLAIN_MESSAGE:
        raise MechanismError(f"PLAIN message is longer than {MAX_PLAIN_MESSAGE} bytes")
    fields = message.split(b"\0")
    if len(fields) != 3:
        raise MechanismError(
            f"PLAIN message must be authzid NUL authcid NUL password; it has {len(fields) - 1} NUL separators, not 2"
        )
    raw_authzid, raw_authcid, raw_password = fields
    try:
        authzid, authcid = raw_authzid.decode("utf-8"), raw_authcid.decode("utf-8")
        raw_password.decode("utf-8")
    except UnicodeDecodeError:
        raise MechanismError("PLAIN message is not valid UTF-8") from None
    if not authcid:
        raise MechanismError("PLAIN message has an empty authentication identity")
    if not raw_password:
        raise MechanismError("PLAIN message has an empty password")
    if authzid and canonical_user_name(authzid) != canonical_user_name(authcid):
        raise MechanismError("PLAIN authorization identity differs from the authentication identity (not supported)")
    return UsernamePassword(raw_authcid, raw_password)


@implementer(IServerMechanism)
class PlainMechanism:
    """
    One run of C{PLAIN}: the credentials come in the initial response or,
    if there is none, in the response to an empty challenge.
    """

    def __init__(self) -> None:
        self._state = "start"

    def step(self, response: bytes | None) -> defer.Deferred[Step]:
        try:
            return defer.succeed(self._step(response))
        except MechanismError:
            self._state = "done"
            return defer.fail()

    def _step(self, response: bytes | None) -> Step:
        if self._state == "start":
            if response is None:
                self._state = "waiting"
                return Challenge(b"")
        elif self._state == "waiting":
            if response is None:
                raise MechanismError("PLAIN expected a response to its empty challenge")
        else:
            raise MechanismError("PLAIN exchange is already complete")
        self._state = "done"
        return Complete(parse_plain(response))


@implementer(IMechanismFactory)
@attrs.frozen
class PlainMechanismFactory:
    """C{PLAIN}: a user name and password, sent in the clear over TLS; TOTP may follow."""

    name: str = "PLAIN"
    second_factor_allowed: bool = True

    def __call__(self, bindings: ChannelBindings, peer: str) -> PlainMechanism:
        return PlainMechanism()


PLAIN = PlainMechanismFactory()

__all__ = [
    "GENERIC_REFUSAL",
    "InvalidPasswordHash",
    "LoginRefused",
    "PLAIN",
    "PasswordChecker",
    "PasswordError",
    "PasswordHasher",
    "PlainMechanism",
    "PlainMechanismFactory",
    "Runner",
    "SASLprepError",
    "UserRecordError",
    "canonical_user_name",
    "derive_scram_keys",
    "new_user",
    "normalize_password",
    "parse_plain",
    "reactor_thread_pool_runner",
    "saslprep",
    "synchronous_runner",
    "validate_roles",
    "validate_user_name",
]
