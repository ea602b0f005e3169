"""
The credential store: users (password hash, SCRAM keys, roles, attributes,
TOTP), API keys, revoked token ids and failure counters.

L{ICredentialStore} is the seam: checkers only ever talk to it, so a
PostgreSQL store can replace the embedded SQLite one
(L{securenet.store.SQLiteStore}) without touching a checker.  Every
method returns a Deferred, because a real store does blocking I/O off the
reactor thread.  L{MemoryStore} is the in-memory implementation tests use.
"""

from __future__ import annotations

import datetime
import secrets

import attrs
from twisted.internet import defer
from zope.interface import implementer

from securenet.interfaces import ICredentialStore, IRefreshTokenStore
from securenet.store._errors import NoSuchAPIKey, NoSuchUser, StoreError, UserExists
from securenet.store._records import APIKey, RefreshToken, User


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
        #: The refresh tokens of the HTTP API.
        self.refresh_tokens = MemoryRefreshStore()

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


@implementer(IRefreshTokenStore)
class MemoryRefreshStore:
    """An in-memory L{IRefreshTokenStore}: tests, and the reference behaviour."""

    def __init__(self) -> None:
        self.tokens: dict[str, RefreshToken] = {}
        self.families: dict[str, float | None] = {}  # family -> revoked at
        self.family_expiry: dict[str, float] = {}

    def add(self, token: RefreshToken) -> defer.Deferred[None]:
        if self.families.get(token.family_id) is not None:
            return defer.fail(StoreError(f"refresh family {token.family_id!r} is revoked"))
        if token.token_id in self.tokens:
            return defer.fail(StoreError(f"refresh token id {token.token_id!r} already exists"))
        self.families.setdefault(token.family_id, None)
        # The family's session ends when its first token said: a later member cannot extend it.
        self.family_expiry.setdefault(token.family_id, token.session_expires_at)
        self.tokens[token.token_id] = token
        return defer.succeed(None)

    def get(self, token_id: str) -> defer.Deferred[RefreshToken | None]:
        token = self.tokens.get(token_id)
        if token is not None:
            token = attrs.evolve(token, session_expires_at=self.family_expiry[token.family_id])
        return defer.succeed(token)

    def consume(self, token_id: str, when: float) -> defer.Deferred[bool]:
        token = self.tokens.get(token_id)
        if token is None or token.used_at is not None or self.families.get(token.family_id) is not None:
            return defer.succeed(False)
        self.tokens[token_id] = attrs.evolve(token, used_at=when)
        return defer.succeed(True)

    def revoke_family(self, family_id: str, when: float) -> defer.Deferred[list[tuple[str, float]]]:
        if family_id in self.families and self.families[family_id] is None:
            self.families[family_id] = when
        found = [(t.access_jti, t.access_expires_at) for t in self.tokens.values() if t.family_id == family_id]
        return defer.succeed(found)

    def is_family_revoked(self, family_id: str) -> defer.Deferred[bool]:
        return defer.succeed(family_id not in self.families or self.families[family_id] is not None)

    def prune(self, before: float) -> defer.Deferred[int]:
        old = [f for f, expires in self.family_expiry.items() if expires < before]
        for family in old:
            del self.families[family], self.family_expiry[family]
        for token_id in [t for t, r in self.tokens.items() if r.family_id in old]:
            del self.tokens[token_id]
        return defer.succeed(len(old))
