"""
L{SQLiteStore}: the embedded L{ICredentialStore}, on the stdlib C{sqlite3}.

The database is one file, created with mode 0600 and refused if group or
others may access it, like a private key (L{securenet.pki.load_private_key}).  It is
recognised by its C{PRAGMA application_id}, and its schema version is
C{PRAGMA user_version}: L{MIGRATIONS} are applied in order at open, and a
database from a newer securenet is refused rather than misread.  WAL mode
and a busy timeout let a server and the C{securenet users} CLI share it.

Opening is synchronous (start-up, CLI).  After that, each method runs its
SQL through a runner: without one, on the calling thread (the CLI: the
Deferreds come back already fired); in a server, L{thread_runner} gives one
dedicated thread, so SQLite is never touched on the reactor thread.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet import defer
from zope.interface import implementer

from securenet._threads import Runner, synchronous_runner
from securenet.interfaces import ICredentialStore
from securenet.store._errors import (
    DatabaseFileError,
    InsecureDatabaseFile,
    NoSuchAPIKey,
    NoSuchUser,
    StoreError,
    UserExists,
)
from securenet.store._migrations import MIGRATIONS, pending
from securenet.store._records import APIKey, ScramKeys, User
from securenet.store._sqlite_refresh import SQLiteRefreshTokens

_T = TypeVar("_T")

#: C{PRAGMA application_id} of a securenet credential database ("SNCS").
APPLICATION_ID = 0x534E4353

#: The first 16 bytes of every SQLite 3 database file.
SQLITE_HEADER = b"SQLite format 3\x00"

#: How long a statement waits for another connection's write lock, in seconds.
BUSY_TIMEOUT = 10.0

#: Revoked token ids are forgotten this long after the token expired (a
#: verifier's clock-skew leeway must stay well below it).
REVOCATION_GRACE = datetime.timedelta(days=1)


# -- conversions -----------------------------------------------------------------


def _iso(value: datetime.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _datetime(value: str | None) -> datetime.datetime | None:
    return None if value is None else datetime.datetime.fromisoformat(value)


def _timestamp(value: datetime.datetime) -> float:
    """POSIX time of C{value}; a naive datetime is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value.timestamp()


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise StoreError(f"{what} cannot be stored as JSON: {e}") from None


_USER_COLUMNS = (
    "name, password_hash, scram_salt, scram_iterations, scram_stored_key, scram_server_key, "
    "roles, attributes, totp_secret, totp_last_step, disabled, created"
)


def _user_row(user: User) -> dict[str, Any]:
    scram = user.scram
    return {
        "name": user.name,
        "password_hash": user.password_hash,
        "scram_salt": scram.salt if scram else None,
        "scram_iterations": scram.iterations if scram else None,
        "scram_stored_key": scram.stored_key if scram else None,
        "scram_server_key": scram.server_key if scram else None,
        "roles": _json(list(user.roles), f"roles of user {user.name!r}"),
        "attributes": _json(dict(user.attributes), f"attributes of user {user.name!r}"),
        "totp_secret": user.totp_secret,
        "totp_last_step": user.totp_last_step,
        "disabled": int(user.disabled),
        "created": _iso(user.created),
    }


def _user(row: sqlite3.Row) -> User:
    scram = None
    if row["scram_salt"] is not None:
        scram = ScramKeys(
            salt=bytes(row["scram_salt"]),
            iterations=row["scram_iterations"],
            stored_key=bytes(row["scram_stored_key"]),
            server_key=bytes(row["scram_server_key"]),
        )
    return User(
        name=row["name"],
        password_hash=row["password_hash"],
        scram=scram,
        roles=tuple(json.loads(row["roles"])),
        attributes=json.loads(row["attributes"]),
        totp_secret=row["totp_secret"],
        totp_last_step=row["totp_last_step"],
        disabled=bool(row["disabled"]),
        created=_datetime(row["created"]),
    )


def _api_key(row: sqlite3.Row) -> APIKey:
    return APIKey(
        key_id=row["key_id"],
        user=row["user"],
        secret_hash=bytes(row["secret_hash"]),
        scopes=tuple(json.loads(row["scopes"])),
        created=_datetime(row["created"]),
        expires=_datetime(row["expires"]),
        revoked=bool(row["revoked"]),
    )


# -- opening -----------------------------------------------------------------


def _prepare_file(path: Path, *, retry: bool = True) -> None:
    """Create the file (mode 0600) and its directories, or check the existing one."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            # Made meanwhile by another process: check it.  If it is still
            # missing, a symbolic link to nowhere is where it (or its
            # directory) should be, and is never followed.
            if not retry:
                raise DatabaseFileError(
                    path, "cannot create the credential database (a dangling symbolic link is in the way)"
                ) from None
            _prepare_file(path, retry=False)
        except OSError as e:
            raise DatabaseFileError(path, f"cannot create the credential database ({e.strerror})") from None
        return
    except OSError as e:
        raise DatabaseFileError(path, f"cannot open the credential database ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise DatabaseFileError(path, "credential database path is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if os.name == "posix" and mode & 0o077:
        raise InsecureDatabaseFile(
            path,
            f"credential database has mode {mode:04o}; it must not be accessible by group or others (chmod 600 {path})",
            mode,
        )
    try:
        with open(path, "rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError as e:
        raise DatabaseFileError(path, f"cannot read the credential database ({e.strerror})") from None
    if header and header != SQLITE_HEADER:
        raise DatabaseFileError(path, "not an SQLite database (corrupt or wrong file)")


def _migrate(connection: sqlite3.Connection, path: Path) -> int:
    """Bring the schema to L{securenet.store.SCHEMA_VERSION}, in one transaction; return the version found."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        application_id = connection.execute("PRAGMA application_id").fetchone()[0]
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if application_id == 0 and version == 0:
            tables = connection.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
            if tables:
                raise DatabaseFileError(path, "an SQLite database, but not a securenet credential database")
            connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        elif application_id != APPLICATION_ID:
            raise DatabaseFileError(path, "an SQLite database, but not a securenet credential database")
        for target, statements in pending(version, MIGRATIONS, path):
            for statement in statements:
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {target}")
        connection.execute("COMMIT")
    except BaseException:
        _rollback(connection)
        raise
    return int(version)


def _rollback(connection: sqlite3.Connection) -> None:
    """Roll back the open transaction, if SQLite has not already done so."""
    if connection.in_transaction:
        try:
            connection.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
    try:
        connection.row_factory = sqlite3.Row
        problems = [" ".join(str(row[0]).split()) for row in connection.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
            raise DatabaseFileError(path, f"credential database is corrupt (quick_check: {problems[0]}{more})")
        _migrate(connection, path)
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise DatabaseFileError(path, f"cannot put the credential database in WAL mode (got {mode})")
        connection.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as e:
        connection.close()
        raise DatabaseFileError(path, f"not a usable SQLite database ({e})") from None
    except BaseException:
        connection.close()
        raise
    return connection


# -- the store ---------------------------------------------------------------


@implementer(ICredentialStore)
class SQLiteStore:
    """
    An L{ICredentialStore} in one SQLite file.  Make one with L{open}.

    Counters and TOTP steps are updated atomically in the database
    (C{BEGIN IMMEDIATE} transactions), so several threads, stores or
    processes sharing the file never lose an update.  L{update_user} never
    moves C{totp_last_step} backwards while the TOTP secret stays the same,
    so a record read before a TOTP login and written after it cannot make
    the code usable again.
    """

    def __init__(
        self,
        path: Path,
        connection: sqlite3.Connection,
        runner: Runner,
        clock: Callable[[], float],
    ) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = connection
        self._runner = runner
        self._clock = clock
        self._lock = threading.Lock()
        #: The refresh tokens of the HTTP API, in the same file.
        self.refresh_tokens = SQLiteRefreshTokens(self)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        runner: Runner | None = None,
        clock: Callable[[], float] = time.time,
    ) -> SQLiteStore:
        """
        Open (creating if needed) the database at C{path}, synchronously.

        @param runner: where the SQL runs; None: on the calling thread.  A
            server passes L{thread_runner}C{(reactor)}.
        @param clock: POSIX time, for pruning revoked token ids.
        @raise DatabaseFileError: the file cannot be created or read, is
            accessible by group or others (L{InsecureDatabaseFile}), is not
            an SQLite database, is corrupt, is another application's
            database, or has a newer schema (L{UnsupportedSchema}).
        """
        path = Path(path)
        _prepare_file(path)
        connection = _connect(path)
        return cls(path, connection, runner or synchronous_runner, clock)

    @property
    def schema_version(self) -> int:
        """
        The database's schema version (L{securenet.store.SCHEMA_VERSION} once opened).
        Read synchronously on the calling thread: for start-up, the CLI and tests.
        """
        with self._cursor() as c:
            return int(c.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        """Close the database; further calls fail with L{StoreError}."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------

    @contextmanager
    def _cursor(self) -> Iterator[sqlite3.Connection]:
        """The connection, for statements in autocommit mode."""
        with self._lock:
            if self._connection is None:
                raise StoreError(f"{self.path}: the credential database is closed")
            try:
                yield self._connection
            except sqlite3.Error as e:
                raise StoreError(f"{self.path}: {e}") from None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, taking the database's write lock at once."""
        with self._cursor() as c:
            c.execute("BEGIN IMMEDIATE")
            try:
                yield c
                c.execute("COMMIT")
            except BaseException:
                _rollback(c)
                raise

    def _run(self, f: Callable[..., _T], *args: Any) -> defer.Deferred[_T]:
        return self._runner(f, *args)

    # -- users -------------------------------------------------------------------

    def secret(self, name: str) -> defer.Deferred[bytes]:
        return self._run(self._secret, name)

    def _secret(self, name: str) -> bytes:
        with self._transaction() as c:
            c.execute("INSERT OR IGNORE INTO secrets (name, value) VALUES (?, ?)", (name, secrets.token_bytes(32)))
            row = c.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()
        return bytes(row[0])

    def get_user(self, name: str) -> defer.Deferred[User | None]:
        return self._run(self._get_user, name)

    def _get_user(self, name: str) -> User | None:
        with self._cursor() as c:
            row = c.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE name = ?", (name,)).fetchone()
        return None if row is None else _user(row)

    def add_user(self, user: User) -> defer.Deferred[None]:
        return self._run(self._add_user, user)

    def _add_user(self, user: User) -> None:
        row = _user_row(user)
        placeholders = ", ".join(f":{column}" for column in row)
        with self._transaction() as c:
            try:
                c.execute(f"INSERT INTO users ({', '.join(row)}) VALUES ({placeholders})", row)
            except sqlite3.IntegrityError:
                raise UserExists(f"user {user.name!r} already exists") from None

    def update_user(self, user: User) -> defer.Deferred[None]:
        return self._run(self._update_user, user)

    def _update_user(self, user: User) -> None:
        row = _user_row(user)
        assignments = ", ".join(f"{column} = :{column}" for column in row if column not in ("name", "totp_last_step"))
        with self._transaction() as c:
            cursor = c.execute(
                f"""
                UPDATE users SET {assignments},
                    totp_last_step = CASE
                        WHEN totp_secret IS :totp_secret AND totp_last_step IS NOT NULL
                             AND (:totp_last_step IS NULL OR totp_last_step > :totp_last_step)
                        THEN totp_last_step
                        ELSE :totp_last_step
                    END
                WHERE name = :name
                """,
                row,
            )
            if cursor.rowcount == 0:
                raise NoSuchUser(f"no user {user.name!r}")

    def delete_user(self, name: str) -> defer.Deferred[None]:
        return self._run(self._delete_user, name)

    def _delete_user(self, name: str) -> None:
        with self._transaction() as c:
            c.execute("DELETE FROM api_keys WHERE user = ?", (name,))
            if c.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
                raise NoSuchUser(f"no user {name!r}")

    def list_users(self) -> defer.Deferred[list[User]]:
        return self._run(self._list_users)

    def _list_users(self) -> list[User]:
        with self._cursor() as c:
            rows = c.execute(f"SELECT {_USER_COLUMNS} FROM users ORDER BY name").fetchall()
        return [_user(row) for row in rows]

    def mark_totp_step(self, name: str, step: int) -> defer.Deferred[bool]:
        return self._run(self._mark_totp_step, name, step)

    def _mark_totp_step(self, name: str, step: int) -> bool:
        with self._transaction() as c:
            cursor = c.execute(
                "UPDATE users SET totp_last_step = ? WHERE name = ? AND (totp_last_step IS NULL OR totp_last_step < ?)",
                (step, name, step),
            )
            if cursor.rowcount:
                return True
            if c.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone() is None:
                raise NoSuchUser(f"no user {name!r}")
            return False

    # -- API keys ------------------------------------------------------------------

    def add_api_key(self, key: APIKey) -> defer.Deferred[None]:
        return self._run(self._add_api_key, key)

    def _add_api_key(self, key: APIKey) -> None:
        with self._transaction() as c:
            if c.execute("SELECT 1 FROM api_keys WHERE key_id = ?", (key.key_id,)).fetchone():
                raise StoreError(f"API key id {key.key_id!r} already exists")
            if c.execute("SELECT 1 FROM users WHERE name = ?", (key.user,)).fetchone() is None:
                raise NoSuchUser(f"no user {key.user!r}")
            c.execute(
                "INSERT INTO api_keys (key_id, user, secret_hash, scopes, created, expires, revoked) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key.key_id,
                    key.user,
                    key.secret_hash,
                    _json(list(key.scopes), f"scopes of API key {key.key_id!r}"),
                    _iso(key.created),
                    _iso(key.expires),
                    int(key.revoked),
                ),
            )

    def get_api_key(self, key_id: str) -> defer.Deferred[APIKey | None]:
        return self._run(self._get_api_key, key_id)

    def _get_api_key(self, key_id: str) -> APIKey | None:
        with self._cursor() as c:
            row = c.execute("SELECT * FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
        return None if row is None else _api_key(row)

    def list_api_keys(self, user: str | None = None) -> defer.Deferred[list[APIKey]]:
        return self._run(self._list_api_keys, user)

    def _list_api_keys(self, user: str | None) -> list[APIKey]:
        with self._cursor() as c:
            if user is None:
                rows = c.execute("SELECT * FROM api_keys ORDER BY key_id").fetchall()
            else:
                rows = c.execute("SELECT * FROM api_keys WHERE user = ? ORDER BY key_id", (user,)).fetchall()
        return [_api_key(row) for row in rows]

    def revoke_api_key(self, key_id: str) -> defer.Deferred[None]:
        return self._run(self._revoke_api_key, key_id)

    def _revoke_api_key(self, key_id: str) -> None:
        with self._transaction() as c:
            if c.execute("UPDATE api_keys SET revoked = 1 WHERE key_id = ?", (key_id,)).rowcount == 0:
                raise NoSuchAPIKey(f"no API key {key_id!r}")

    # -- tokens --------------------------------------------------------------------

    def revoke_token(self, jti: str, expires: datetime.datetime) -> defer.Deferred[None]:
        return self._run(self._revoke_token, jti, expires)

    def _revoke_token(self, jti: str, expires: datetime.datetime) -> None:
        """Record the revocation, and forget those expired for longer than L{REVOCATION_GRACE}."""
        with self._transaction() as c:
            c.execute(
                "INSERT INTO revoked_tokens (jti, expires) VALUES (?, ?) "
                "ON CONFLICT (jti) DO UPDATE SET expires = max(expires, excluded.expires)",
                (jti, _timestamp(expires)),
            )
            c.execute(
                "DELETE FROM revoked_tokens WHERE expires < ? AND jti != ?",
                (self._clock() - REVOCATION_GRACE.total_seconds(), jti),
            )

    def is_token_revoked(self, jti: str) -> defer.Deferred[bool]:
        return self._run(self._is_token_revoked, jti)

    def _is_token_revoked(self, jti: str) -> bool:
        with self._cursor() as c:
            return c.execute("SELECT 1 FROM revoked_tokens WHERE jti = ?", (jti,)).fetchone() is not None

    # -- failures ------------------------------------------------------------------

    def record_failure(self, key: str, when: float) -> defer.Deferred[int]:
        return self._run(self._record_failure, key, when)

    def _record_failure(self, key: str, when: float) -> int:
        with self._transaction() as c:
            c.execute(
                "INSERT INTO failures (key, count, last) VALUES (?, 1, ?) "
                "ON CONFLICT (key) DO UPDATE SET count = count + 1, last = excluded.last",
                (key, when),
            )
            return int(c.execute("SELECT count FROM failures WHERE key = ?", (key,)).fetchone()[0])

    def forgive_failure(self, key: str) -> defer.Deferred[int]:
        return self._run(self._forgive_failure, key)

    def _forgive_failure(self, key: str) -> int:
        with self._transaction() as c:
            c.execute("UPDATE failures SET count = count - 1 WHERE key = ? AND count > 0", (key,))
            c.execute("DELETE FROM failures WHERE key = ? AND count <= 0", (key,))
            row = c.execute("SELECT count FROM failures WHERE key = ?", (key,)).fetchone()
        return 0 if row is None else int(row[0])

    def get_failures(self, key: str) -> defer.Deferred[tuple[int, float]]:
        return self._run(self._get_failures, key)

    def _get_failures(self, key: str) -> tuple[int, float]:
        with self._cursor() as c:
            row = c.execute("SELECT count, last FROM failures WHERE key = ?", (key,)).fetchone()
        return (0, 0.0) if row is None else (int(row[0]), float(row[1]))

    def reset_failures(self, key: str) -> defer.Deferred[None]:
        return self._run(self._reset_failures, key)

    def _reset_failures(self, key: str) -> None:
        with self._transaction() as c:
            c.execute("DELETE FROM failures WHERE key = ?", (key,))
