"""
API keys: long-lived secrets for programs, checked by L{APIKeyChecker} and
reachable over the wire as the SASL mechanism C{APIKEY}.

A key is C{sn_<key id>.<secret>}:

  - the key id (12 letters and digits, 71 random bits) is public: it names
    the record in the store, and appears in listings and logs.  It has no
    C{-} or C{_}, so it never looks like a command-line option and is
    selected whole by a double click;
  - the secret is C{secrets.token_urlsafe(32)}: 256 random bits.  The store
    keeps only SHA-256 of it.  A fast hash is right here, unlike for
    passwords: a slow hash protects low-entropy secrets against guessing,
    but nobody can enumerate 2**256 secrets, so a stolen store yields no key,
    and checking costs one hash instead of an argon2 run per attempt.

The full key is returned once, by L{create_api_key}, and never stored.

L{APIKeyChecker} looks the key id up, compares hashes in constant time
(against a dummy hash when the id is unknown, so timing says little about
which ids exist), and refuses revoked and expired keys and keys of unknown
or disabled users -- reading the store on every attempt, so a revocation
takes effect at the next one.  A refusal is an L{APIKeyRefused}, generic
in C{str()}, with the cause in C{reason} for the audit log.  The avatar id
is the key's owner; the key's scopes reach the caller as
L{VerifiedAPIKey}, returned by L{APIKeyChecker.verify} and set on
L{PresentedAPIKey} credentials as C{verified}.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Iterable
from typing import Any

import attrs
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from zope.interface import implementer

from securenet.cred._jwt import Clock, check_scopes, now
from securenet.interfaces import IAPIKeyCredentials, ICredentialStore
from securenet.store._errors import NoSuchUser
from securenet.store._records import APIKey, User

KEY_PREFIX = "sn_"
KEY_ID_LENGTH = 12
KEY_ID_ALPHABET = string.ascii_letters + string.digits
SECRET_BYTES = 32  # 43 URL-safe characters, 256 bits

_KEY = re.compile(r"sn_([A-Za-z0-9]{12})\.([A-Za-z0-9_-]{43})")

#: The longest APIKEY message the mechanism reads (a key is 59 characters).
MAX_KEY_LENGTH = 512

#: Compared against when the key id is unknown: no secret hashes to it.
_DUMMY_HASH = hashlib.sha256(b"securenet: no API key has this id").digest()


class APIKeyRefused(UnauthorizedLogin):
    """
    An API key was refused.  C{str()} is generic; C{reason} says what
    failed, for the audit log.
    """

    def __init__(self, reason: str) -> None:
        super().__init__("authentication failed")
        self.reason = reason

    def __repr__(self) -> str:
        return f"APIKeyRefused(reason={self.reason!r})"


def hash_secret(secret: str) -> bytes:
    """What the store keeps of a secret: its SHA-256."""
    return hashlib.sha256(secret.encode("ascii")).digest()


def parse_api_key(key: str) -> tuple[str, str] | None:
    """C{(key id, secret)} of a well-formed key, else None."""
    if not isinstance(key, str):
        return None
    match = _KEY.fullmatch(key)
    if match is None:
        return None
    return match.group(1), match.group(2)


def utc(when: float) -> datetime.datetime:
    """POSIX time as an aware UTC datetime (how API key times are stored)."""
    return datetime.datetime.fromtimestamp(when, datetime.UTC)


def _aware(when: datetime.datetime) -> datetime.datetime:
    """A stored naive datetime is UTC."""
    return when if when.tzinfo is not None else when.replace(tzinfo=datetime.UTC)


def create_api_key(
    store: ICredentialStore,
    user: str,
    *,
    scopes: Iterable[str] = (),
    expires: datetime.datetime | datetime.timedelta | None = None,
    clock: Clock,
) -> defer.Deferred[tuple[str, APIKey]]:
    """
    Create and store a new key for C{user}.

    @param expires: when the key stops working: a datetime, or a timedelta
        from the clock's now; None for never.
    @return: fires with C{(full key, record)}.  The full key is in no
        record: show it to the user now, it cannot be recovered.  Fails
        with L{NoSuchUser} if C{user} does not exist.
    @raise ValueError: at once, for invalid scopes or an expiry not in the
        future.
    """
    checked = check_scopes(scopes)
    created = utc(now(clock))
    until: datetime.datetime | None
    if expires is None:
        until = None
    elif isinstance(expires, datetime.timedelta):
        until = created + expires
    else:
        until = _aware(expires)
    if until is not None and until <= created:
        raise ValueError("an API key's expiry must be in the future")
    key_id = "".join(secrets.choice(KEY_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))
    secret = secrets.token_urlsafe(SECRET_BYTES)
    record = APIKey(
        key_id=key_id,
        user=user,
        secret_hash=hash_secret(secret),
        scopes=checked,
        created=created,
        expires=until,
    )

    def add(owner: User | None) -> defer.Deferred[None]:
        if owner is None:
            raise NoSuchUser(f"no user {user!r}")
        return store.add_api_key(record)

    d = store.get_user(user).addCallback(add)
    return d.addCallback(lambda _: (f"{KEY_PREFIX}{key_id}.{secret}", record))


@attrs.frozen
class VerifiedAPIKey:
    """The facts of an accepted key: its owner (the avatar id) and scopes."""

    key_id: str
    user: str
    scopes: tuple[str, ...]
    expires: datetime.datetime | None


@implementer(IAPIKeyCredentials)
@attrs.define
class PresentedAPIKey:
    """
    An API key as presented; L{APIKeyChecker.requestAvatarId} sets
    C{verified} when it accepts it.
    """

    key: str = attrs.field(repr=False)
    verified: VerifiedAPIKey | None = attrs.field(default=None, init=False)


@implementer(ICredentialsChecker)
class APIKeyChecker:
    """
    Accepts API keys (see the module docstring).

    @param required_scope: if given, a key without this scope is refused.
    """

    credentialInterfaces = (IAPIKeyCredentials,)

    def __init__(self, store: ICredentialStore, clock: Clock, *, required_scope: str | None = None) -> None:
        if required_scope is not None:
            check_scopes([required_scope])
        self.store = store
        self.clock = clock
        self.required_scope = required_scope

    def requestAvatarId(self, credentials: IAPIKeyCredentials) -> defer.Deferred[Any]:
        def accepted(verified: VerifiedAPIKey) -> str:
            if isinstance(credentials, PresentedAPIKey):
                credentials.verified = verified
            return verified.user

        return self.verify(credentials.key).addCallback(accepted)

    def verify(self, key: str) -> defer.Deferred[VerifiedAPIKey]:
        """Check C{key} against the store; fails with L{APIKeyRefused}."""
        parsed = parse_api_key(key)
        if parsed is None:
            return defer.fail(APIKeyRefused("malformed key"))
        key_id, secret = parsed
        digest = hash_secret(secret)

        def found(record: APIKey | None) -> defer.Deferred[VerifiedAPIKey]:
            expected = bytes(record.secret_hash) if record is not None else _DUMMY_HASH
            matches = hmac.compare_digest(expected, digest)
            if record is None:
                raise APIKeyRefused("unknown key id")
            if not matches:
                raise APIKeyRefused("wrong secret")
            if record.revoked:
                raise APIKeyRefused("key revoked")
            if record.expires is not None and utc(now(self.clock)) >= _aware(record.expires):
                raise APIKeyRefused("key expired")
            if self.required_scope is not None and self.required_scope not in record.scopes:
                raise APIKeyRefused(f"key lacks the required scope {self.required_scope!r}")
            return self.store.get_user(record.user).addCallback(owner, record)

        def owner(user: User | None, record: APIKey) -> VerifiedAPIKey:
            if user is None:
                raise APIKeyRefused("owner unknown")
            if user.disabled:
                raise APIKeyRefused("owner disabled")
            return VerifiedAPIKey(record.key_id, record.user, tuple(record.scopes), record.expires)

        return self.store.get_api_key(key_id).addCallback(found)
