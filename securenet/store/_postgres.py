"""
L{PostgresStore}: the L{ICredentialStore} on a PostgreSQL server, shared by
every host of a service (psycopg 3 and its connection pool).

The database is named by a URL, C{postgresql://USER@HOST:PORT/DBNAME}
(any libpq connection URL), which never carries a password: one in the URL
is refused (it would show in a process listing, a configuration file or a
log).  libpq finds it in C{PGPASSFILE} or C{~/.pgpass} (or takes a client
certificate, C{sslcert=}); errors name the URL without its password.

The schema is L{POSTGRES_MIGRATIONS}, applied at open in one transaction
under an advisory lock (hosts starting together migrate once); its version
is the row of table C{schema_version}, and a newer one is refused
(L{UnsupportedSchema}), as SQLite's is.

Everything that must hold across hosts is one statement, atomic in the
server: a throttle counter is C{INSERT ... ON CONFLICT DO UPDATE ...
RETURNING}; a TOTP step is accepted by a conditional C{UPDATE} (a row
lock: of racing logins with one code, on any hosts, exactly one changes
the row); a refresh token is consumed by a conditional C{UPDATE ...
RETURNING}, so its reuse is seen by every host.

Opening is synchronous (start-up, CLI).  After that each method runs
through a runner, as L{SQLiteStore}'s do: without one on the calling
thread; in a server on dedicated threads, never the reactor's.  When the
server cannot be reached, a call fails with L{StoreUnavailable} (once the
pool's C{timeout} has passed) and the pool reconnects by itself when the
server is back.
"""

from __future__ import annotations

import datetime
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
import psycopg_pool
from psycopg.rows import dict_row
from twisted.internet import defer
from zope.interface import implementer

from securenet._logs import SecurenetLogger
from securenet._threads import Runner, synchronous_runner
from securenet.interfaces import ICredentialStore
from securenet.store._errors import DatabaseFileError, NoSuchAPIKey, NoSuchUser, StoreError, StoreUnavailable, UserExists
from securenet.store._migrations import POSTGRES_MIGRATIONS, pending
from securenet.store._postgres_refresh import PostgresRefreshTokens
from securenet.store._records import APIKey, ScramKeys, User
from securenet.store._sqlite import REVOCATION_GRACE, _datetime, _iso, _json, _timestamp, _user_row

_T = TypeVar("_T")

#: The URL schemes that name a PostgreSQL database.
SCHEMES = ("postgresql://", "postgres://")

#: Seconds a call waits for a connection before failing with L{StoreUnavailable}.
DEFAULT_TIMEOUT = 5.0

#: Connections in the pool at most (a server's runner has as many threads).
DEFAULT_POOL_SIZE = 4

#: The advisory lock held while migrating ("SNCS", as SQLite's application_id).
MIGRATION_LOCK = 0x534E4353

#: The password goes here, never in the URL.
PASSWORD_ADVICE = "put the password in PGPASSFILE or ~/.pgpass"

log = SecurenetLogger(namespace="securenet.store")

# The pool warns (stdlib logging) at every failed reconnection attempt; an
# outage is logged once, by the store.  A handler the application configures
# still gets the pool's warnings (they propagate).
logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())


def is_postgres_url(name: str) -> bool:
    """Whether C{name} (a C{--db} or C{db:} value) names a PostgreSQL database rather than an SQLite file."""
    return name.startswith(SCHEMES)


def check_url(url: str) -> str:
    """
    C{url} checked: a PostgreSQL URL that libpq can parse and that carries
    no password.  Returns it unchanged.

    @raise StoreError: it does not parse, or has a password (the message
        never repeats it).
    """
    if not is_postgres_url(url):
        raise StoreError(f"not a PostgreSQL URL (postgresql://USER@HOST:PORT/DBNAME): {url.split(':', 1)[0]}:...")
    try:
        parameters = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise StoreError("cannot parse the PostgreSQL URL (postgresql://USER@HOST:PORT/DBNAME)") from None
    if parameters.get("password") is not None:
        raise StoreError(f"the PostgreSQL URL carries a password: {PASSWORD_ADVICE} (mode 0600), never in the URL")
    return url


def _describe(url: str) -> str:
    """The URL as errors name it: host, port and database, no options."""
    parameters = psycopg.conninfo.conninfo_to_dict(url)
    user = f"{parameters['user']}@" if parameters.get("user") else ""
    host = parameters.get("host") or ""
    port = f":{parameters['port']}" if parameters.get("port") else ""
    return f"postgresql://{user}{host}{port}/{parameters.get('dbname') or ''}"


def _user(row: dict[str, Any]) -> User:
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


def _api_key(row: dict[str, Any]) -> APIKey:
    return APIKey(
        key_id=row["key_id"],
        user=row["username"],
        secret_hash=bytes(row["secret_hash"]),
        scopes=tuple(json.loads(row["scopes"])),
        created=_datetime(row["created"]),
        expires=_datetime(row["expires"]),
        revoked=bool(row["revoked"]),
    )


_USER_COLUMNS = (
    "name, password_hash, scram_salt, scram_iterations, scram_stored_key, scram_server_key, "
    "roles, attributes, totp_secret, totp_last_step, disabled, created"
)

#: The SQL type of each user column, for parameters psycopg sends untyped (None).
_USER_TYPES = {
    "name": "text",
    "password_hash": "text",
    "scram_salt": "bytea",
    "scram_iterations": "integer",
    "scram_stored_key": "bytea",
    "scram_server_key": "bytea",
    "roles": "text",
    "attributes": "text",
    "totp_secret": "text",
    "totp_last_step": "bigint",
    "disabled": "boolean",
    "created": "text",
}


def _pg_user_row(user: User) -> dict[str, Any]:
    row = _user_row(user)
    row["disabled"] = bool(row["disabled"])
    return row


@implementer(ICredentialStore)
class PostgresStore:
    """
    An L{ICredentialStore} on a PostgreSQL server.  Make one with L{open}.

    Several stores (threads, processes, hosts) on the same database never
    lose an update: counters, TOTP steps and refresh tokens change in single
    statements.  L{update_user} never moves C{totp_last_step} backwards while
    the TOTP secret stays the same, as L{SQLiteStore}'s does.
    """

    def __init__(self, url: str, pool: psycopg_pool.ConnectionPool[Any], runner: Runner, clock: Callable[[], float]) -> None:
        #: The database, as errors name it (no password, no options).
        self.path = _describe(url)
        self._pool = pool
        self._runner = runner
        self._clock = clock
        self._closed = False
        self._url = url
        self._timeout = pool.timeout
        self._available = True
        self._availability = threading.Lock()
        #: The refresh tokens of the HTTP API, in the same database.
        self.refresh_tokens = PostgresRefreshTokens(self)

    @classmethod
    def open(
        cls,
        url: str,
        *,
        runner: Runner | None = None,
        clock: Callable[[], float] = time.time,
        timeout: float = DEFAULT_TIMEOUT,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> PostgresStore:
        """
        Connect to the database at C{url} and bring its schema up to date, synchronously.

        @param runner: where the SQL runs; None: on the calling thread.  A
            server passes a L{securenet._threads.ThreadRunner} with C{pool_size} threads.
        @param clock: POSIX time, for pruning revoked token ids.
        @param timeout: seconds a call waits for a connection before it
            fails with L{StoreUnavailable}.
        @param pool_size: connections kept open at most.
        @raise StoreError: the URL is malformed or carries a password.
        @raise StoreUnavailable: the server cannot be reached (or refuses the login).
        @raise DatabaseFileError: the database is another application's, or
            has a newer schema (L{UnsupportedSchema}).
        """
        check_url(url)
        where = _describe(url)
        pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=max(1, pool_size),
            timeout=timeout,
            open=False,
            check=psycopg_pool.ConnectionPool.check_connection,
            name="securenet-postgres",
        )
        try:
            try:
                pool.open(wait=True, timeout=timeout)
            except psycopg_pool.PoolTimeout:
                raise StoreUnavailable(
                    f"{where}: cannot connect to the credential database ({_last_error(url, timeout)})"
                ) from None
            store = cls(url, pool, runner or synchronous_runner, clock)
            store._migrate()
        except BaseException:
            pool.close()
            raise
        return store

    @property
    def schema_version(self) -> int:
        """The database's schema version (L{POSTGRES_MIGRATIONS}' count once opened); synchronous."""
        with self._connection() as c:
            row = c.execute("SELECT version FROM schema_version").fetchone()
        assert row is not None
        return int(row["version"])

    def close(self) -> None:
        """Close the pool's connections; further calls fail with L{StoreError}."""
        self._closed = True
        self._pool.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """A connection of the pool, in one transaction (committed at exit, rolled back on error)."""
        if self._closed:
            raise StoreError(f"{self.path}: the credential database is closed")
        try:
            with self._pool.connection() as c:
                self._reached()
                c.row_factory = dict_row
                yield c
        except psycopg_pool.PoolTimeout:
            raise self._unreachable(None) from None
        except psycopg_pool.PoolClosed:
            raise StoreError(f"{self.path}: the credential database is closed") from None
        except psycopg.OperationalError as e:
            raise self._unreachable(e) from None
        except psycopg.Error as e:
            raise StoreError(f"{self.path}: {_first_line(e)}") from None

    def _unreachable(self, error: psycopg.Error | None) -> StoreUnavailable:
        """The error of a call that found no server; the first of an outage is logged, in one line."""
        with self._availability:
            first, self._available = self._available, False
        if first:
            reason = _first_line(error) if error is not None else _last_error(self._url, self._timeout)
            log.error(
                "{database}: the credential database cannot be reached ({reason}); logins are refused until it is back",
                database=self.path,
                reason=reason,
            )
        return StoreUnavailable(f"{self.path}: the credential database cannot be reached")

    def _reached(self) -> None:
        """A call got a connection: the end of an outage is logged."""
        if not self._available:
            with self._availability:
                back, self._available = not self._available, True
            if back:
                log.info("{database}: the credential database is reachable again", database=self.path)

    def _run(self, f: Callable[..., _T], *args: Any) -> defer.Deferred[_T]:
        return self._runner(f, *args)

    def _migrate(self) -> int:
        """Bring the schema to date in one transaction, under an advisory lock; the version found."""
        with self._connection() as c:
            c.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            if c.execute("SELECT to_regclass('schema_version') AS t").fetchone()["t"] is None:  # type: ignore[index]
                tables = c.execute(
                    "SELECT count(*) AS n FROM pg_tables WHERE schemaname = ANY (current_schemas(false))"
                ).fetchone()
                if tables and tables["n"]:
                    raise DatabaseFileError(self.path, "a PostgreSQL database, but not a securenet credential database")
                version = 0
            else:
                version = int(c.execute("SELECT version FROM schema_version").fetchone()["version"])  # type: ignore[index]
            for target, statements in pending(version, POSTGRES_MIGRATIONS, self.path):
                for statement in statements:
                    c.execute(statement)
                c.execute("UPDATE schema_version SET version = %s", (target,))
        return version

    # -- users -------------------------------------------------------------------

    def secret(self, name: str) -> defer.Deferred[bytes]:
        return self._run(self._secret, name)

    def _secret(self, name: str) -> bytes:
        with self._connection() as c:
            c.execute(
                "INSERT INTO secrets (name, value) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING", (name, secrets.token_bytes(32))
            )
            row = c.execute("SELECT value FROM secrets WHERE name = %s", (name,)).fetchone()
        assert row is not None
        return bytes(row["value"])

    def get_user(self, name: str) -> defer.Deferred[User | None]:
        return self._run(self._get_user, name)

    def _get_user(self, name: str) -> User | None:
        with self._connection() as c:
            row = c.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE name = %s", (name,)).fetchone()
        return None if row is None else _user(row)

    def add_user(self, user: User) -> defer.Deferred[None]:
        return self._run(self._add_user, user)

    def _add_user(self, user: User) -> None:
        row = _pg_user_row(user)
        placeholders = ", ".join(f"%({column})s" for column in row)
        with self._connection() as c:
            cursor = c.execute(
                f"INSERT INTO users ({', '.join(row)}) VALUES ({placeholders}) ON CONFLICT (name) DO NOTHING",
                row,
            )
            if cursor.rowcount == 0:
                raise UserExists(f"user {user.name!r} already exists")

    def update_user(self, user: User) -> defer.Deferred[None]:
        return self._run(self._update_user, user)

    def _update_user(self, user: User) -> None:
        row = _pg_user_row(user)
        assignments = ", ".join(
            f"{column} = %({column})s::{_USER_TYPES[column]}" for column in row if column not in ("name", "totp_last_step")
        )
        with self._connection() as c:
            cursor = c.execute(
                f"""
                UPDATE users SET {assignments},
                    totp_last_step = CASE
                        WHEN totp_secret IS NOT DISTINCT FROM %(totp_secret)s::text AND totp_last_step IS NOT NULL
                             AND (%(totp_last_step)s::bigint IS NULL OR totp_last_step > %(totp_last_step)s::bigint)
                        THEN totp_last_step
                        ELSE %(totp_last_step)s::bigint
                    END
                WHERE name = %(name)s
                """,
                row,
            )
            if cursor.rowcount == 0:
                raise NoSuchUser(f"no user {user.name!r}")

    def delete_user(self, name: str) -> defer.Deferred[None]:
        return self._run(self._delete_user, name)

    def _delete_user(self, name: str) -> None:
        with self._connection() as c:
            if c.execute("DELETE FROM users WHERE name = %s", (name,)).rowcount == 0:
                raise NoSuchUser(f"no user {name!r}")

    def list_users(self) -> defer.Deferred[list[User]]:
        return self._run(self._list_users)

    def _list_users(self) -> list[User]:
        with self._connection() as c:
            rows = c.execute(f'SELECT {_USER_COLUMNS} FROM users ORDER BY name COLLATE "C"').fetchall()
        return [_user(row) for row in rows]

    def mark_totp_step(self, name: str, step: int) -> defer.Deferred[bool]:
        return self._run(self._mark_totp_step, name, step)

    def _mark_totp_step(self, name: str, step: int) -> bool:
        with self._connection() as c:
            # One statement: racing logins with one code, on any hosts, queue on the
            # row's lock, and each re-checks the condition on the row the one before left.
            cursor = c.execute(
                "UPDATE users SET totp_last_step = %(step)s "
                "WHERE name = %(name)s AND (totp_last_step IS NULL OR totp_last_step < %(step)s)",
                {"step": step, "name": name},
            )
            if cursor.rowcount:
                return True
            if c.execute("SELECT 1 FROM users WHERE name = %s", (name,)).fetchone() is None:
                raise NoSuchUser(f"no user {name!r}")
            return False

    # -- API keys ------------------------------------------------------------------

    def add_api_key(self, key: APIKey) -> defer.Deferred[None]:
        return self._run(self._add_api_key, key)

    def _add_api_key(self, key: APIKey) -> None:
        with self._connection() as c:
            if c.execute("SELECT 1 FROM api_keys WHERE key_id = %s", (key.key_id,)).fetchone():
                raise StoreError(f"API key id {key.key_id!r} already exists")
            # The user's row is locked until the key is in: a concurrent delete waits (or went first).
            if c.execute("SELECT 1 FROM users WHERE name = %s FOR SHARE", (key.user,)).fetchone() is None:
                raise NoSuchUser(f"no user {key.user!r}")
            cursor = c.execute(
                "INSERT INTO api_keys (key_id, username, secret_hash, scopes, created, expires, revoked) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (key_id) DO NOTHING",
                (
                    key.key_id,
                    key.user,
                    key.secret_hash,
                    _json(list(key.scopes), f"scopes of API key {key.key_id!r}"),
                    _iso(key.created),
                    _iso(key.expires),
                    key.revoked,
                ),
            )
            if cursor.rowcount == 0:
                raise StoreError(f"API key id {key.key_id!r} already exists")

    def get_api_key(self, key_id: str) -> defer.Deferred[APIKey | None]:
        return self._run(self._get_api_key, key_id)

    def _get_api_key(self, key_id: str) -> APIKey | None:
        with self._connection() as c:
            row = c.execute("SELECT * FROM api_keys WHERE key_id = %s", (key_id,)).fetchone()
        return None if row is None else _api_key(row)

    def list_api_keys(self, user: str | None = None) -> defer.Deferred[list[APIKey]]:
        return self._run(self._list_api_keys, user)

    def _list_api_keys(self, user: str | None) -> list[APIKey]:
        with self._connection() as c:
            if user is None:
                rows = c.execute('SELECT * FROM api_keys ORDER BY key_id COLLATE "C"').fetchall()
            else:
                rows = c.execute('SELECT * FROM api_keys WHERE username = %s ORDER BY key_id COLLATE "C"', (user,)).fetchall()
        return [_api_key(row) for row in rows]

    def revoke_api_key(self, key_id: str) -> defer.Deferred[None]:
        return self._run(self._revoke_api_key, key_id)

    def _revoke_api_key(self, key_id: str) -> None:
        with self._connection() as c:
            if c.execute("UPDATE api_keys SET revoked = TRUE WHERE key_id = %s", (key_id,)).rowcount == 0:
                raise NoSuchAPIKey(f"no API key {key_id!r}")

    # -- tokens --------------------------------------------------------------------

    def revoke_token(self, jti: str, expires: datetime.datetime) -> defer.Deferred[None]:
        return self._run(self._revoke_token, jti, expires)

    def _revoke_token(self, jti: str, expires: datetime.datetime) -> None:
        """Record the revocation, and forget those expired for longer than L{REVOCATION_GRACE}."""
        with self._connection() as c:
            c.execute(
                "INSERT INTO revoked_tokens (jti, expires) VALUES (%s, %s) "
                "ON CONFLICT (jti) DO UPDATE SET expires = greatest(revoked_tokens.expires, excluded.expires)",
                (jti, _timestamp(expires)),
            )
            c.execute(
                "DELETE FROM revoked_tokens WHERE expires < %s AND jti <> %s",
                (self._clock() - REVOCATION_GRACE.total_seconds(), jti),
            )

    def is_token_revoked(self, jti: str) -> defer.Deferred[bool]:
        return self._run(self._is_token_revoked, jti)

    def _is_token_revoked(self, jti: str) -> bool:
        with self._connection() as c:
            return c.execute("SELECT 1 FROM revoked_tokens WHERE jti = %s", (jti,)).fetchone() is not None

    # -- failures ------------------------------------------------------------------

    def record_failure(self, key: str, when: float) -> defer.Deferred[int]:
        return self._run(self._record_failure, key, when)

    def _record_failure(self, key: str, when: float) -> int:
        with self._connection() as c:
            # One statement: parallel attempts on any number of hosts each get their own count.
            row = c.execute(
                "INSERT INTO failures (key, count, last) VALUES (%s, 1, %s) "
                "ON CONFLICT (key) DO UPDATE SET count = failures.count + 1, last = excluded.last "
                "RETURNING count",
                (key, when),
            ).fetchone()
        assert row is not None
        return int(row["count"])

    def forgive_failure(self, key: str) -> defer.Deferred[int]:
        return self._run(self._forgive_failure, key)

    def _forgive_failure(self, key: str) -> int:
        with self._connection() as c:
            row = c.execute(
                "UPDATE failures SET count = count - 1 WHERE key = %s AND count > 0 RETURNING count", (key,)
            ).fetchone()
            # The row stays locked by this transaction: nobody counts on it between the two statements.
            c.execute("DELETE FROM failures WHERE key = %s AND count <= 0", (key,))
        return 0 if row is None else int(row["count"])

    def get_failures(self, key: str) -> defer.Deferred[tuple[int, float]]:
        return self._run(self._get_failures, key)

    def _get_failures(self, key: str) -> tuple[int, float]:
        with self._connection() as c:
            row = c.execute("SELECT count, last FROM failures WHERE key = %s", (key,)).fetchone()
        return (0, 0.0) if row is None else (int(row["count"]), float(row["last"]))

    def reset_failures(self, key: str) -> defer.Deferred[None]:
        return self._run(self._reset_failures, key)

    def _reset_failures(self, key: str) -> None:
        with self._connection() as c:
            c.execute("DELETE FROM failures WHERE key = %s", (key,))


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _last_error(url: str, timeout: float) -> str:
    """Why a connection to C{url} fails now (one attempt), for an error message."""
    try:
        psycopg.connect(url, connect_timeout=max(2, int(timeout))).close()
    except psycopg.Error as e:
        return _first_line(e)
    return "the connection pool timed out"
