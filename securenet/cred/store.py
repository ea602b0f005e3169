"""
The credential store: users (password hash, SCRAM keys, roles, attributes,
TOTP), API keys, revoked token ids and failure counters.

L{ICredentialStore} is the seam: checkers only ever talk to it, so a
PostgreSQL store can replace the embedded SQLite one
(L{securenet.cred.sqlite.SQLiteStore}) without touching a checker.  Every
method returns a Deferred, because a real store does blocking I/O off the
reactor thread.  L{MemoryStore} is the in-memory implementation tests use.
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Mapping
from typing import Any

import attrs
from twisted.internet import defer
from zope.interface import Interface, implementer

from securenet.errors import SecurenetError


class StoreError(SecurenetError):
    """The store refused an operation or cannot be used (the message says why)."""


class NoSuchUser(StoreError):
    """The named user does not exist."""


class UserExists(StoreError):
    """A user of that name already exists."""


class NoSuchAPIKey(StoreError):
    """No API key has that id."""


@attrs.frozen
class ScramKeys:
    """
    What a SCRAM server stores for a user (RFC 5802 section 3): never the
    password nor anything a client could log in with directly.
    """

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


@attrs.frozen
class User:
    """
    A user record.

    @ivar password_hash: an argon2id PHC string (C{$argon2id$v=19$m=...}),
        or None for users who cannot log in with a password.
    @ivar totp_secret: base32 TOTP secret, or None if not enrolled.
    @ivar totp_last_step: the last TOTP time step accepted (a code is accepted
        at most once), or None.
    """

    name: str
    password_hash: str | None = None
    scram: ScramKeys | None = None
    roles: tuple[str, ...] = ()
    attributes: Mapping[str, Any] = attrs.field(factory=dict)
    totp_secret: str | None = None
    totp_last_step: int | None = None
    disabled: bool = False
    created: datetime.datetime | None = None


@attrs.frozen
class APIKey:
    """
    An API key record; the secret itself is never stored, only its hash.

    @ivar key_id: the public part of C{<key_id>.<secret>}.
    @ivar secret_hash: SHA-256 of the secret (the secret has >= 128 bits of
        entropy, so a fast hash suffices: there is nothing to brute-force).
    """

    key_id: str
    user: str
    secret_hash: bytes
    scopes: tuple[str, ...] = ()
    created: datetime.datetime | None = None
    expires: datetime.datetime | None = None
    revoked: bool = False


class ICredentialStore(Interface):
    """
    Persistence for credentials.  Every method returns a Deferred; names are
    case-sensitive exact strings.
    """

    def secret(name: str) -> defer.Deferred[bytes]:
        """
        A random 32-byte secret kept in the store under C{name}, made on first
        use and the same ever after (e.g. the key of SCRAM's fake salts, which
        must survive restarts like real salts do).
        """

    def get_user(name: str) -> defer.Deferred[User | None]:
        """The user called C{name}, or None."""

    def add_user(user: User) -> defer.Deferred[None]:
        """Create C{user}; fails with L{UserExists}."""

    def update_user(user: User) -> defer.Deferred[None]:
        """
        Replace the record of C{user.name}; fails with L{NoSuchUser}.  While
        the TOTP secret is unchanged, C{totp_last_step} never moves backwards
        (a stale record must not make a used code valid again).
        """

    def delete_user(name: str) -> defer.Deferred[None]:
        """Delete a user and their API keys; fails with L{NoSuchUser}."""

    def list_users() -> defer.Deferred[list[User]]:
        """All users, by name."""

    def mark_totp_step(name: str, step: int) -> defer.Deferred[bool]:
        """
        Atomically record that TOTP time step C{step} was used by C{name},
        only if it is later than the last recorded one.  True if recorded
        (the code may be accepted), False if it was already used or older.
        """

    def add_api_key(key: APIKey) -> defer.Deferred[None]:
        """Store a new API key record."""

    def get_api_key(key_id: str) -> defer.Deferred[APIKey | None]:
        """The API key with that id, or None."""

    def list_api_keys(user: str | None = None) -> defer.Deferred[list[APIKey]]:
        """API keys, all or of one user."""

    def revoke_api_key(key_id: str) -> defer.Deferred[None]:
        """Mark an API key revoked; fails with L{NoSuchAPIKey}."""

    def revoke_token(jti: str, expires: datetime.datetime) -> defer.Deferred[None]:
        """Remember that token id C{jti} is revoked (until C{expires}, after which it is moot)."""

    def is_token_revoked(jti: str) -> defer.Deferred[bool]:
        """Whether C{jti} was revoked."""

    def record_failure(key: str, when: float) -> defer.Deferred[int]:
        """
        Atomically add one failure for C{key} (e.g. C{user:alice},
        C{addr:192.0.2.1}) at time C{when}; returns the consecutive count.
        """

    def forgive_failure(key: str) -> defer.Deferred[int]:
        """
        Atomically take one failure back from C{key} (an attempt counted when
        it was admitted turned out to succeed); returns the new count.  The
        time of the last failure is kept.
        """

    def get_failures(key: str) -> defer.Deferred[tuple[int, float]]:
        """C{(consecutive failures, time of the last)} for C{key} (C{(0, 0.0)} if none)."""

    def reset_failures(key: str) -> defer.Deferred[None]:
        """Forget the failures of C{key} (after a success)."""


@implementer(ICredentialStore)
class MemoryStore:
    """
    An in-memory L{ICredentialStore}: for tests, and as the reference
    behaviour every other store must match.
    """

    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.api_keys: dict[str, APIKey] = {}
        self.revoked_tokens: dict[str, datetime.datetime] = {}
        self.failures: dict[str, tuple[int, float]] = {}
        self.secrets: dict[str, bytes] = {}

    def secret(self, name: str) -> defer.Deferred[bytes]:
        return defer.succeed(self.secrets.setdefault(name, secrets.token_bytes(32)))

    def get_user(self, name: str) -> defer.Deferred[User | None]:
        return defer.succeed(self.users.get(name))

    def add_user(self, user: User) -> defer.Deferred[None]:
        if user.name in self.users:
            return defer.fail(UserExists(f"user {user.name!r} already exists"))
        self.users[user.name] = user
        return defer.succeed(None)

    def update_user(self, user: User) -> defer.Deferred[None]:
        old = self.users.get(user.name)
        if old is None:
            return defer.fail(NoSuchUser(f"no user {user.name!r}"))
        if (
            old.totp_secret == user.totp_secret
            and old.totp_last_step is not None
            and (user.totp_last_step is None or user.totp_last_step < old.totp_last_step)
        ):
            # A record read before a TOTP login must not make its code usable again.
            user = attrs.evolve(user, totp_last_step=old.totp_last_step)
        self.users[user.name] = user
        return defer.succeed(None)

    def delete_user(self, name: str) -> defer.Deferred[None]:
        if name not in self.users:
            return defer.fail(NoSuchUser(f"no user {name!r}"))
        del self.users[name]
        for key_id in [k for k, v in self.api_keys.items() if v.user == name]:
            del self.api_keys[key_id]
        return defer.succeed(None)

    def list_users(self) -> defer.Deferred[list[User]]:
        return defer.succeed(sorted(self.users.values(), key=lambda u: u.name))

    def mark_totp_step(self, name: str, step: int) -> defer.Deferred[bool]:
        user = self.users.get(name)
        if user is None:
            return defer.fail(NoSuchUser(f"no user {name!r}"))
        if user.totp_last_step is not None and step <= user.totp_last_step:
            return defer.succeed(False)
        self.users[name] = attrs.evolve(user, totp_last_step=step)
        return defer.succeed(True)

    def add_api_key(self, key: APIKey) -> defer.Deferred[None]:
        if key.key_id in self.api_keys:
            return defer.fail(StoreError(f"API key id {key.key_id!r} already exists"))
        if key.user not in self.users:
            return defer.fail(NoSuchUser(f"no user {key.user!r}"))
        self.api_keys[key.key_id] = key
        return defer.succeed(None)

    def get_api_key(self, key_id: str) -> defer.Deferred[APIKey | None]:
        return defer.succeed(self.api_keys.get(key_id))

    def list_api_keys(self, user: str | None = None) -> defer.Deferred[list[APIKey]]:
        keys = [k for k in self.api_keys.values() if user is None or k.user == user]
        return defer.succeed(sorted(keys, key=lambda k: k.key_id))

    def revoke_api_key(self, key_id: str) -> defer.Deferred[None]:
        key = self.api_keys.get(key_id)
        if key is None:
            return defer.fail(NoSuchAPIKey(f"no API key {key_id!r}"))
        self.api_keys[key_id] = attrs.evolve(key, revoked=True)
        return defer.succeed(None)

    def revoke_token(self, jti: str, expires: datetime.datetime) -> defer.Deferred[None]:
        self.revoked_tokens[jti] = expires
        return defer.succeed(None)

    def is_token_revoked(self, jti: str) -> defer.Deferred[bool]:
        return defer.succeed(jti in self.revoked_tokens)

    def record_failure(self, key: str, when: float) -> defer.Deferred[int]:
        count, _ = self.failures.get(key, (0, 0.0))
        self.failures[key] = (count + 1, when)
        return defer.succeed(count + 1)

    def forgive_failure(self, key: str) -> defer.Deferred[int]:
        count, last = self.failures.get(key, (0, 0.0))
        if count <= 1:
            self.failures.pop(key, None)
            return defer.succeed(0)
        self.failures[key] = (count - 1, last)
        return defer.succeed(count - 1)

    def get_failures(self, key: str) -> defer.Deferred[tuple[int, float]]:
        return defer.succeed(self.failures.get(key, (0, 0.0)))

    def reset_failures(self, key: str) -> defer.Deferred[None]:
        self.failures.pop(key, None)
        return defer.succeed(None)
