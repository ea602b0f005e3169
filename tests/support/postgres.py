"""
A real PostgreSQL server for the tests: Debian's C{postgresql} package,
one server per test run, started on first use and stopped at interpreter
exit (L{server}).

The server runs as an unprivileged user (C{postgres}, through C{runuser},
when the tests run as root; else as the current user), with its data and
socket directories in a temporary directory that user owns, listening on
127.0.0.1 on a free port.  Clients connect over TCP as the role
L{ROLE} with a password (C{scram-sha-256} in C{pg_hba.conf}) that is kept in
a C{.pgpass} file of mode 0600 named by C{PGPASSFILE} in this process's
environment (so child processes get it too): a URL never carries it, as in
a real deployment.  L{PostgresServer.database} gives each test a fresh
database, dropped afterwards.

The server never outlives the test process: besides the C{atexit} handler,
a watchdog process holds the read end of a pipe whose write end only this
process has; when this process ends in any way (a crash, SIGKILL, a hang
at exit ended by a timeout), the pipe closes and the watchdog stops the
server and removes its files.

If the server cannot be started, L{server} raises L{PostgresUnavailable}
with the reason: a test that needs PostgreSQL fails, it is never skipped
(C{make test} installs the package: the Makefile's C{system-tools}).
"""

from __future__ import annotations

import atexit
import glob
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

if TYPE_CHECKING:
    from twisted.trial.unittest import SynchronousTestCase

#: The role the stores connect as (owner of each test database).
ROLE = "securenet"
#: The superuser the harness creates and drops databases as.
ADMIN = "securenet_admin"
#: The unprivileged user the server runs as when the tests run as root.
SERVER_USER = "postgres"


#: The watchdog: waits for end of file on stdin (this process gone), then
#: runs the stop command (its arguments after the first) and removes the
#: directories of the first (a JSON list).
WATCHDOG = """
import json, shutil, subprocess, sys
sys.stdin.buffer.read()
try:
    subprocess.run(sys.argv[2:], capture_output=True, timeout=60)
finally:
    for d in json.loads(sys.argv[1]):
        shutil.rmtree(d, ignore_errors=True)
"""


class PostgresUnavailable(RuntimeError):
    """The test PostgreSQL server cannot be started (the message says why)."""


def find_binaries() -> Path:
    """The C{bin} directory of the newest PostgreSQL that Debian installed."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not found:
        raise PostgresUnavailable(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): apt-get install postgresql (make system-tools)"
        )
    newest = max(found, key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    return Path(newest).parent


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """
    One running server (made by L{server}).

    @ivar port: its TCP port on 127.0.0.1.
    @ivar passfile: the C{.pgpass} file with both roles' passwords.
    """

    def __init__(self) -> None:
        self.bin = find_binaries()
        self._as_root = os.geteuid() == 0
        self.base = Path(tempfile.mkdtemp(prefix="securenet-pg-"))
        self.data = self.base / "data"
        self.sockets = self.base / "sockets"
        self.log = self.base / "server.log"
        self.port = 0
        self._running = False
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._counter = 0
        self._lock = threading.Lock()
        client_dir = Path(tempfile.mkdtemp(prefix="securenet-pgpass-"))
        self.passfile = client_dir / "pgpass"
        self._client_dir = client_dir
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    # -- running commands as the server's user ---------------------------------------

    def _command(self, name: str, *args: str) -> list[str]:
        command = [str(self.bin / name), *args]
        return ["runuser", "-u", SERVER_USER, "--", *command] if self._as_root else command

    def _run(self, name: str, *args: str) -> None:
        try:
            done = subprocess.run(self._command(name, *args), capture_output=True, timeout=120, cwd=self.base)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise PostgresUnavailable(f"{name} failed: {e}") from None
        if done.returncode:
            output = (done.stderr or done.stdout).decode("utf-8", "replace").strip()
            log = self.log.read_text("utf-8", "replace").strip() if self.log.exists() else ""
            raise PostgresUnavailable(f"{name} exited with {done.returncode}: {output} {log[-2000:]}".strip())

    def _start(self) -> None:
        if self._as_root:
            try:
                user = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise PostgresUnavailable(f"no {SERVER_USER!r} system user (it comes with Debian's postgresql package)") from None
            os.chown(self.base, user.pw_uid, user.pw_gid)
        admin_password = secrets.token_urlsafe(24)
        role_password = secrets.token_urlsafe(24)
        pwfile = self.base / "pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(admin_password + "\n")
        if self._as_root:
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        try:
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                ADMIN,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        self.sockets.mkdir(mode=0o700)
        if self._as_root:
            os.chown(self.sockets, user.pw_uid, user.pw_gid)
        fd = os.open(self.passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"127.0.0.1:*:*:{ADMIN}:{admin_password}\n127.0.0.1:*:*:{ROLE}:{role_password}\n")
        os.environ["PGPASSFILE"] = str(self.passfile)
        problems = []
        for _ in range(5):
            self.port = _free_port()
            try:
                self._pg_ctl_start()
                break
            except PostgresUnavailable as e:  # the port was taken meanwhile?
                problems.append(str(e))
        else:
            raise PostgresUnavailable(f"cannot start PostgreSQL in {self.base}: {problems[-1]}")
        self._running = True
        self._watchdog = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WATCHDOG,
                json.dumps([str(self.base), str(self._client_dir)]),
                *self._command("pg_ctl", "-D", str(self.data), "-w", "-m", "immediate", "stop"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # not stopped early by a ^C meant for the tests
            cwd="/",  # one the server's user may enter: pg_ctl needs its working directory
        )
        with self.admin() as c:
            # The password travels in the protocol (hashed by the server), never on a command line.
            c.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(sql.Identifier(ROLE), sql.Literal(role_password))
            )

    def _pg_ctl_start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets} -c fsync=off -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options, "start")

    # -- for the tests -------------------------------------------------------------------

    def admin(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """A connection as the superuser, in autocommit mode."""
        try:
            return psycopg.connect(
                host="127.0.0.1", port=self.port, user=ADMIN, dbname=database, passfile=str(self.passfile), autocommit=True
            )
        except psycopg.Error as e:
            raise PostgresUnavailable(f"cannot connect to the test PostgreSQL server: {e}") from None

    def url(self, database: str, user: str = ROLE) -> str:
        """The URL of C{database} (no password: it is in L{passfile})."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database owned by L{ROLE}; its name."""
        with self._lock:
            self._counter += 1
            name = f"test_{self._counter}_{uuid.uuid4().hex[:8]}"
        with self.admin() as c:
            c.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(ROLE)))
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def database(self, case: SynchronousTestCase) -> str:
        """A fresh database for the test C{case}, dropped by a cleanup; its URL."""
        name = self.create_database()
        case.addCleanup(self.drop_database, name)
        return self.url(name)

    def stop_server(self) -> None:
        """Stop the server (fast shutdown: clients are disconnected), to test an outage."""
        if self._running:
            self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-m", "fast", "stop")
            self._running = False

    def start_server(self) -> None:
        """Start the stopped server again, on the same port."""
        if not self._running:
            self._pg_ctl_start()
            self._running = True

    def stop(self) -> None:
        """Stop the server and remove its files (at interpreter exit); idempotent."""
        if self._running or (self.data / "postmaster.pid").exists():
            try:
                subprocess.run(
                    self._command("pg_ctl", "-D", str(self.data), "-w", "-m", "immediate", "stop"),
                    capture_output=True,
                    timeout=60,
                )
            except (OSError, subprocess.TimeoutExpired):
                pass
            self._running = False
        shutil.rmtree(self.base, ignore_errors=True)
        shutil.rmtree(self._client_dir, ignore_errors=True)
        if os.environ.get("PGPASSFILE") == str(self.passfile):
            del os.environ["PGPASSFILE"]
        if self._watchdog is not None:
            watchdog, self._watchdog = self._watchdog, None
            assert watchdog.stdin is not None
            watchdog.stdin.close()  # its stop finds nothing left to do
            try:
                watchdog.wait(60)
            except subprocess.TimeoutExpired:
                watchdog.kill()


_server: PostgresServer | None = None
_server_lock = threading.Lock()


def server() -> PostgresServer:
    """The test run's server, started on first use and stopped at exit."""
    global _server
    with _server_lock:
        if _server is None:
            started = PostgresServer()
            atexit.register(started.stop)
            _server = started
        return _server
