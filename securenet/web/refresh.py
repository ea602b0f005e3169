"""
Refresh tokens: where they are kept, and the rules of their rotation.

A refresh token is an opaque random string, C{snrt_<id>.<secret>} (128-bit
id, 256-bit secret), never a JWT: it can never be mistaken for an access
token by any verifier.  Only SHA-256 of the secret is stored (like an API
key's: the secret is not guessable, so a slow hash would add nothing).

Tokens form I{families}: a login starts one; each refresh consumes the
presented token (single use) and adds its successor to the same family.
Presenting a token that was already used means two parties hold the
family (one of them stole it): the whole family is revoked -- its newest
refresh token stops working, and so do the access tokens issued with any
of its members (their C{jti}s are recorded with each refresh token for
that purpose).

L{IRefreshTokenStore} is the seam; L{MemoryRefreshStore} is for tests and
services without a database; L{SQLiteRefreshStore} keeps its own tables in
the credential database file, through its own connection and thread.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs
from twisted.internet import defer
from zope.interface import Interface, implementer

from securenet.cred.passwords import Runner, synchronous_runner
from securenet.cred.sqlite import APPLICATION_ID, BUSY_TIMEOUT
from securenet.cred.store import StoreError

_T = TypeVar("_T")


@attrs.frozen
class RefreshToken:
    """
    One refresh token's record.

    @ivar token_id: the public part of C{snrt_<id>.<secret>}.
    @ivar family_id: the family (login session) it belongs to; access
        tokens carry it as their C{sid} claim.
    @ivar secret_hash: SHA-256 of the secret.
    @ivar expires_at: when it stops working (POSIX time).
    @ivar session_expires_at: when the family stops working, however often
        it was refreshed.
    @ivar access_jti: the id of the access token issued with it, and
        C{access_expires_at} its expiry: revoked with the family.
    @ivar scopes: the scopes of the family's access tokens.
    @ivar amr: how the family's login authenticated (RFC 8176: C{pwd},
        C{otp}).
    @ivar used_at: when it was exchanged for a successor, or None.
    """

    token_id: str
    family_id: str
    user: str
    secret_hash: bytes = attrs.field(repr=False)
    issued_at: float
    expires_at: float
    session_expires_at: float
    access_jti: str
    access_expires_at: float
    scopes: tuple[str, ...] = ()
    amr: tuple[str, ...] = ()
    used_at: float | None = None


class IRefreshTokenStore(Interface):
    """Persistence of refresh-token families.  Every method returns a Deferred."""

    def add(token: RefreshToken) -> defer.Deferred[None]:
        """
        Store a new token; its family is created with it if new.  Fails with
        L{StoreError} if the family is revoked (a refresh racing a revocation
        must not revive it).
        """

    def get(token_id: str) -> defer.Deferred[RefreshToken | None]:
        """The token with that id, or None."""

    def consume(token_id: str, when: float) -> defer.Deferred[bool]:
        """
        Atomically mark the token used at C{when}, only if it is unused and
        its family not revoked.  True if this call consumed it; False if it
        was already used (a reuse) or its family is revoked.
        """

    def revoke_family(family_id: str, when: float) -> defer.Deferred[list[tuple[str, float]]]:
        """
        Revoke a family (idempotent).  Fires with the C{(access jti, expiry)}
        of every access token issued in it, for the caller to revoke.
        """

    def is_family_revoked(family_id: str) -> defer.Deferred[bool]:
        """Whether the family was revoked (an unknown family counts as revoked)."""

    def prune(before: float) -> defer.Deferred[int]:
        """Forget families whose session ended before C{before}; fires with how many."""


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
        self.family_expiry[token.family_id] = token.session_expires_at
        self.tokens[token.token_id] = token
        return defer.succeed(None)

    def get(self, token_id: str) -> defer.Deferred[RefreshToken | None]:
        return defer.succeed(self.tokens.get(token_id))

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


#: The schema of L{SQLiteRefreshStore}'s tables (in the credential
#: database file, apart from the credential store's own schema).
SCHEMA_VERSION = 1

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS web_schema (version INTEGER NOT NULL)",
    """
    CREATE TABLE IF NOT EXISTS web_refresh_families (
        family_id TEXT PRIMARY KEY NOT NULL,
        user TEXT NOT NULL,
        expires REAL NOT NULL,
        revoked REAL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS web_refresh_tokens (
        token_id TEXT PRIMARY KEY NOT NULL,
        family_id TEXT NOT NULL REFERENCES web_refresh_families(family_id) ON DELETE CASCADE,
        user TEXT NOT NULL,
        secret_hash BLOB NOT NULL,
        issued REAL NOT NULL,
        expires REAL NOT NULL,
        access_jti TEXT NOT NULL,
        access_expires REAL NOT NULL,
        scopes TEXT NOT NULL,
        amr TEXT NOT NULL,
        used REAL
    )
    """,
    "CREATE INDEX IF NOT EXISTS web_refresh_tokens_by_family ON web_refresh_tokens(family_id)",
    "CREATE INDEX IF NOT EXISTS web_refresh_families_by_expiry ON web_refresh_families(expires)",
)


def _token(row: sqlite3.Row) -> RefreshToken:
    return RefreshToken(
        token_id=row["token_id"],
        family_id=row["family_id"],
        user=row["user"],
        secret_hash=bytes(row["secret_hash"]),
        issued_at=row["issued"],
        expires_at=row["expires"],
        session_expires_at=row["session_expires"],
        access_jti=row["access_jti"],
        access_expires_at=row["access_expires"],
        scopes=tuple(json.loads(row["scopes"])),
        amr=tuple(json.loads(row["amr"])),
        used_at=row["used"],
    )


@implementer(IRefreshTokenStore)
class SQLiteRefreshStore:
    """
    An L{IRefreshTokenStore} in the credential database file (made by
    L{securenet.cred.sqlite.SQLiteStore}): tables C{web_refresh_families}
    and C{web_refresh_tokens}, created if missing, reached through a
    separate connection -- on C{runner}'s thread in a server, never the
    reactor's.  Make one with L{open}.
    """

    def __init__(self, path: Path, connection: sqlite3.Connection, runner: Runner) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = connection
        self._runner = runner
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, runner: Runner | None = None) -> SQLiteRefreshStore:
        """
        Open the credential database at C{path} (which must exist: open its
        L{SQLiteStore} first) and create the refresh tables if needed.

        @param runner: where the SQL runs; None: on the calling thread.  A
            server passes L{securenet.cred.sqlite.thread_runner}C{(reactor)}.
        @raise StoreError: the file is missing, accessible by group or
            others, not a securenet credential database, or has refresh
            tables newer than this code.
        """
        path = Path(path)
        try:
            st = os.stat(path)
        except OSError as e:
            raise StoreError(f"{path}: cannot open the credential database ({e.strerror})") from None
        if os.name == "posix" and stat.S_IMODE(st.st_mode) & 0o077:
            raise StoreError(f"{path}: credential database must not be accessible by group or others (chmod 600 {path})")
        try:
            connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise StoreError(f"{path}: {e}") from None
        try:
            connection.row_factory = sqlite3.Row
            if connection.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
                raise StoreError(f"{path}: not a securenet credential database")
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA:
                    connection.execute(statement)
                row = connection.execute("SELECT max(version) FROM web_schema").fetchone()
                version = row[0]
                if version is None:
                    connection.execute("INSERT INTO web_schema (version) VALUES (?)", (SCHEMA_VERSION,))
                elif version > SCHEMA_VERSION:
                    raise StoreError(
                        f"{path}: refresh-token tables are version {version}, newer than this securenet supports ({SCHEMA_VERSION})"
                    )
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            connection.close()
            raise StoreError(f"{path}: {e}") from None
        except BaseException:
            connection.close()
            raise
        return cls(path, connection, runner or synchronous_runner)

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            c = self._connection
            if c is None:
                raise StoreError(f"{self.path}: the refresh-token store is closed")
            try:
                c.execute("BEGIN IMMEDIATE")
                try:
                    yield c
                    c.execute("COMMIT")
                except BaseException:
                    if c.in_transaction:
                        c.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise StoreError(f"{self.path}: {e}") from None

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection for one read (autocommit: no write lock taken)."""
        with self._lock:
            c = self._connection
            if c is None:
                raise StoreError(f"{self.path}: the refresh-token store is closed")
            try:
                yield c
            except sqlite3.Error as e:
                raise StoreError(f"{self.path}: {e}") from None

    def _run(self, f: Callable[..., _T], *args: Any) -> defer.Deferred[_T]:
        return self._runner(f, *args)

    def add(self, token: RefreshToken) -> defer.Deferred[None]:
        return self._run(self._add, token)

    def _add(self, token: RefreshToken) -> None:
        with self._transaction() as c:
            c.execute(
                "INSERT INTO web_refresh_families (family_id, user, expires, revoked) VALUES (?, ?, ?, NULL) "
                "ON CONFLICT (family_id) DO NOTHING",
                (token.family_id, token.user, token.session_expires_at),
            )
            revoked = c.execute("SELECT revoked FROM web_refresh_families WHERE family_id = ?", (token.family_id,)).fetchone()[0]
            if revoked is not None:
                raise StoreError(f"refresh family {token.family_id!r} is revoked")
            try:
                c.execute(
                    "INSERT INTO web_refresh_tokens (token_id, family_id, user, secret_hash, issued, expires, "
                    "access_jti, access_expires, scopes, amr, used) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        token.token_id,
                        token.family_id,
                        token.user,
                        token.secret_hash,
                        token.issued_at,
                        token.expires_at,
                        token.access_jti,
                        token.access_expires_at,
                        json.dumps(list(token.scopes)),
                        json.dumps(list(token.amr)),
                        token.used_at,
                    ),
                )
            except sqlite3.IntegrityError:
                raise StoreError(f"refresh token id {token.token_id!r} already exists") from None

    def get(self, token_id: str) -> defer.Deferred[RefreshToken | None]:
        return self._run(self._get, token_id)

    def _get(self, token_id: str) -> RefreshToken | None:
        with self._reading() as c:
            row = c.execute(
                "SELECT t.*, f.expires AS session_expires FROM web_refresh_tokens t "
                "JOIN web_refresh_families f USING (family_id) WHERE t.token_id = ?",
                (token_id,),
            ).fetchone()
        return None if row is None else _token(row)

    def consume(self, token_id: str, when: float) -> defer.Deferred[bool]:
        return self._run(self._consume, token_id, when)

    def _consume(self, token_id: str, when: float) -> bool:
        with self._transaction() as c:
            cursor = c.execute(
                "UPDATE web_refresh_tokens SET used = ? WHERE token_id = ? AND used IS NULL AND family_id IN "
                "(SELECT family_id FROM web_refresh_families WHERE revoked IS NULL)",
                (when, token_id),
            )
            return cursor.rowcount == 1

    def revoke_family(self, family_id: str, when: float) -> defer.Deferred[list[tuple[str, float]]]:
        return self._run(self._revoke_family, family_id, when)

    def _revoke_family(self, family_id: str, when: float) -> list[tuple[str, float]]:
        with self._transaction() as c:
            c.execute("UPDATE web_refresh_families SET revoked = ? WHERE family_id = ? AND revoked IS NULL", (when, family_id))
            rows = c.execute(
                "SELECT access_jti, access_expires FROM web_refresh_tokens WHERE family_id = ?", (family_id,)
            ).fetchall()
        return [(str(r[0]), float(r[1])) for r in rows]

    def is_family_revoked(self, family_id: str) -> defer.Deferred[bool]:
        return self._run(self._is_family_revoked, family_id)

    def _is_family_revoked(self, family_id: str) -> bool:
        with self._reading() as c:
            row = c.execute("SELECT revoked FROM web_refresh_families WHERE family_id = ?", (family_id,)).fetchone()
        return row is None or row[0] is not None

    def prune(self, before: float) -> defer.Deferred[int]:
        return self._run(self._prune, before)

    def _prune(self, before: float) -> int:
        with self._transaction() as c:
            return c.execute("DELETE FROM web_refresh_families WHERE expires < ?", (before,)).rowcount


__all__ = ["IRefreshTokenStore", "MemoryRefreshStore", "RefreshToken", "SQLiteRefreshStore"]
