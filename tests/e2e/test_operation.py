"""
End to end, operating C{twistd securenet}: a port already in use, SIGHUP
reloading (in the foreground and as a daemon, with a pidfile), a missing or read-only
credential database, Twisted's own password checkers (C{--auth memory},
C{unix}) over the stream and the HTTP API, and C{--help}.  Real C{twistd}
processes on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from securenet.store._records import User
from securenet.store._sqlite import SQLiteStore
from tests.e2e.test_web import WebTwistd
from tests.support import Twistd, child_env, converse, run, run_twistd_expecting_failure, script
from tests.support.e2e import client_endpoint, dev_pki, server_listen
from tests.test_tap import GENERIC_OPTIONS, help_sentences


def held_port(testcase: SynchronousTestCase) -> int:
    """A port on 127.0.0.1 that the test process listens on until the test ends."""
    holder = socket.socket()
    testcase.addCleanup(holder.close)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return int(holder.getsockname()[1])


def alive(pid: int) -> bool:
    """Whether process C{pid} runs (a zombie, exited but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def wait_until(condition: object, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.05)
    return bool(callable(condition) and condition())


def stop_daemon(pidfile: Path) -> None:
    """Stop a daemon still running from C{pidfile} (one that should have exited), so that no test leaves one behind."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    if alive(pid):
        os.kill(pid, signal.SIGTERM)
        if not wait_until(lambda: not alive(pid), 10):
            os.kill(pid, signal.SIGKILL)


class PidfileTwistd:
    """
    C{twistd [-n] --pidfile=PATH -l LOG securenet ARGS} in C{cwd}: in the
    foreground (C{daemon=False}) or as a daemon, whose pid is read from the
    pidfile.  L{stop} sends SIGTERM (to the daemon too) and waits for the end.
    """

    def __init__(self, cwd: Path, args: Sequence[str], *, daemon: bool, timeout: float = 30) -> None:
        self.cwd = cwd
        self.pidfile = cwd / "twistd.pid"
        self.log = cwd / "twistd.log"
        self.daemon = daemon
        options = [] if daemon else ["-n"]
        self.args = [script("twistd"), *options, f"--pidfile={self.pidfile}", "-l", str(self.log), "securenet", *args]
        self.process = subprocess.Popen(self.args, cwd=cwd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if daemon:
            out, err = self.process.communicate(timeout=timeout)
            assert self.process.returncode == 0, (self.process.returncode, out, err, self.logText())
            assert wait_until(self.pidfile.exists, timeout), self.logText()
            self.pid = int(self.pidfile.read_text().strip())
        else:
            self.pid = self.process.pid
        deadline = time.monotonic() + timeout
        while not re.search(r"\(TLS\) starting on (\d+)", self.logText()):
            if not self.running() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"twistd did not start listening:\n{self.logText()}")
            time.sleep(0.05)
        self.port = int(re.findall(r"\(TLS\) starting on (\d+)", self.logText())[0])

    def logText(self) -> str:
        try:
            return self.log.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def running(self) -> bool:
        if not self.daemon:
            return self.process.poll() is None
        return alive(self.pid)

    def signal(self, number: int) -> None:
        os.kill(self.pid, number)

    def stop(self) -> None:
        """SIGTERM, then wait (bounded) until the process has ended; kill it if it will not."""
        if self.running():
            self.signal(signal.SIGTERM)
        if not self.daemon:
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        elif not wait_until(lambda: not self.running(), 15):
            os.kill(self.pid, signal.SIGKILL)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


class ListenFailureTests(SynchronousTestCase):
    """A port in use: twistd exits 1 with one line, never says it listens, leaves no pidfile; no zombie server."""

    def setUp(self) -> None:
        self.certs = dev_pki(Path(self.mktemp()).resolve())
        self.work = Path(self.mktemp()).resolve()
        self.work.mkdir(parents=True)
        self.port = held_port(self)

    def twistd(self, *args: str, daemon: bool = False) -> subprocess.CompletedProcess[bytes]:
        pidfile = self.work / "twistd.pid"
        options = [] if daemon else ["-n"]
        if daemon:
            options += ["-l", str(self.work / "twistd.log")]
        self.addCleanup(stop_daemon, pidfile)
        try:
            result = run([script("twistd"), *options, f"--pidfile={pidfile}", "securenet", *args], cwd=self.work, timeout=20)
        except subprocess.TimeoutExpired:
            self.fail("twistd kept running although it could not listen")
        # A daemon's parent exits as soon as its child reports; the child then removes the pidfile.
        self.assertTrue(wait_until(lambda: not pidfile.exists(), 10), "the pidfile was left behind")
        return result

    def assertRefused(self, option: str, endpoint: str) -> None:
        result = self.twistd(option, endpoint)
        line = f"cannot listen on 127.0.0.1:{self.port}: Address already in use ({option} {endpoint})"
        self.assertEqual(result.returncode, 1, result)
        self.assertEqual(result.stderr.decode(), f"twistd securenet: error: {line}\n")
        log = result.stdout.decode()
        self.assertEqual(log.count(line), 1, log)
        self.assertIn(f"[securenet.tap#error] {line}\n", log)
        self.assertNotIn("listening on", log)
        self.assertNotIn("Traceback", log)
        self.assertNotIn("Unhandled Error", log)

    def test_streamPortInUse(self) -> None:
        """--listen on a port in use: exit 1, the port, the OS reason and the endpoint, once, on stderr and in the log."""
        self.assertRefused("--listen", server_listen(self.certs).replace("securenet:0:", f"securenet:{self.port}:"))

    def test_httpPortInUse(self) -> None:
        """The same for an --http listener."""
        self.assertRefused("--http", server_listen(self.certs).replace("securenet:0:", f"securenet:{self.port}:"))

    def test_secondListenerPortInUse(self) -> None:
        """A port in use behind one that binds: twistd still stops (the first says it listens, which it did)."""
        taken = server_listen(self.certs).replace("securenet:0:", f"securenet:{self.port}:")
        result = self.twistd("--listen", server_listen(self.certs), "--listen", taken)
        self.assertEqual(result.returncode, 1, result)
        line = f"cannot listen on 127.0.0.1:{self.port}: Address already in use (--listen {taken})"
        self.assertEqual(result.stderr.decode(), f"twistd securenet: error: {line}\n")
        self.assertEqual(result.stdout.decode().count("securenet listening on 127.0.0.1:"), 1)

    def test_daemonPortInUse(self) -> None:
        """As a daemon: twistd's parent exits 1 with the reason, the log has the line, the pidfile is removed."""
        endpoint = server_listen(self.certs).replace("securenet:0:", f"securenet:{self.port}:")
        result = self.twistd("--listen", endpoint, daemon=True)
        self.assertEqual(result.returncode, 1, result)
        self.assertIn(b"ListenError: cannot listen on 127.0.0.1:%d: Address already in use" % self.port, result.stderr)
        log = (self.work / "twistd.log").read_text()
        self.assertEqual(log.count(f"cannot listen on 127.0.0.1:{self.port}: Address already in use (--listen {endpoint})"), 1)
        self.assertNotIn("listening on", log)
        self.assertNotIn("Traceback", log)


class HangupTests(SynchronousTestCase):
    """SIGHUP reloads (one summary line): the server keeps serving, as a daemon too; SIGTERM still stops it cleanly."""

    line = "SIGHUP: reloaded 1, refused 0"

    def setUp(self) -> None:
        self.certs = dev_pki(Path(self.mktemp()).resolve())
        self.work = Path(self.mktemp()).resolve()
        self.work.mkdir(parents=True)

    def echo(self, port: int, data: bytes) -> subprocess.CompletedProcess[bytes]:
        return run([script("securenet"), "connect", "--linger", "0.5", "-q", client_endpoint(self.certs, port)], input=data)

    def check(self, daemon: bool) -> None:
        server = PidfileTwistd(self.work, ["--listen", server_listen(self.certs)], daemon=daemon)
        self.addCleanup(server.stop)
        self.assertEqual(self.echo(server.port, b"before\n").stdout, b"before\n")
        server.signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: self.line in server.logText(), 10), server.logText())
        time.sleep(0.2)
        self.assertTrue(server.running(), server.logText())
        result = self.echo(server.port, b"after SIGHUP\n")
        self.assertEqual((result.returncode, result.stdout), (0, b"after SIGHUP\n"), result.stderr)
        self.assertTrue(self.pidfileExists())
        server.stop()
        if not daemon:
            # A graceful stop (docs/operations.md) exits 0, not by the signal it was sent (as twistd alone would).
            self.assertEqual(server.process.returncode, 0)
        self.assertFalse(server.running())
        self.assertFalse(self.pidfileExists(), "the pidfile was left behind")
        log = server.logText()
        self.assertEqual(log.count(self.line), 1, log)
        self.assertIn(f"[securenet.reload#info] {self.line}\n", log)
        self.assertIn("Server Shut Down.", log)
        self.assertNotIn("Traceback", log)

    def pidfileExists(self) -> bool:
        return (self.work / "twistd.pid").exists()

    def test_foreground(self) -> None:
        self.check(daemon=False)

    def test_daemon(self) -> None:
        self.check(daemon=True)


class CredentialDatabaseTests(SynchronousTestCase):
    """--auth with a credential database that is missing or that the server cannot write: exit 1, one line, no file made."""

    def setUp(self) -> None:
        self.certs = dev_pki(Path(self.mktemp()).resolve())

    def test_missingDatabase(self) -> None:
        """A typo in --auth sqlite:PATH: refused with one line; no database appears (users add makes one)."""
        work = Path(self.mktemp()).resolve()
        work.mkdir(parents=True)
        db = work / "securnet.db"
        for auth, auth_type in ((f"sqlite:{db}", "sqlite"), (f"apikey:db={db}", "apikey"), (f"totp:db={db}", "totp")):
            try:
                result = run_twistd_expecting_failure(work, ["--listen", server_listen(self.certs), "--auth", auth], timeout=20)
            except subprocess.TimeoutExpired:
                self.fail(f"twistd started with --auth {auth}, a database that does not exist")
            self.assertEqual(result.returncode, 1)
            self.assertEqual(
                result.stderr.decode(),
                f"twistd securenet: error: --auth {auth_type}: {db}: no such credential database"
                f" (create it with: securenet users add NAME --db {db})\n",
            )
            self.assertEqual(result.stdout, b"")
            self.assertEqual(os.listdir(work), [])

    def readOnly(self, path: Path) -> None:
        """
        Make C{path} (the database, or its directory) read-only for the
        server: by its mode, for a user; for root, whom modes do not stop,
        with the immutable attribute (chattr +i), removed when the test ends.
        """
        if os.geteuid() != 0:
            path.chmod(0o500 if path.is_dir() else 0o400)
            self.addCleanup(path.chmod, 0o700 if path.is_dir() else 0o600)
            return
        made = run(["chattr", "+i", str(path)])
        if made.returncode != 0:
            raise AssertionError(f"cannot make {path} immutable, so read-only files cannot be tested as root: {made.stderr!r}")
        self.addCleanup(run, ["chattr", "-i", str(path)])

    def database(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        db = directory / "creds.db"
        with SQLiteStore.open(db) as store:
            store.add_user(User("alice"))
        return db

    def test_readOnlyFile(self) -> None:
        """A database the server cannot write: one line naming it (it was a StoreError, then an IndexError's traceback)."""
        work = Path(self.mktemp()).resolve()
        db = self.database(work)
        self.readOnly(db)
        result = run_twistd_expecting_failure(work, ["--listen", server_listen(self.certs), "--auth", f"sqlite:{db}"])
        self.assertEqual(result.returncode, 1, result)
        self.assertEqual(
            result.stderr.decode(),
            f"twistd securenet: error: --auth sqlite: {db}: the credential database cannot be written"
            " (attempt to write a readonly database); the server records failed logins and used TOTP codes in it\n",
        )
        self.assertEqual(result.stdout, b"")

    def test_readOnlyDirectory(self) -> None:
        """
        A database in a directory the server cannot write (it cannot make
        the files SQLite keeps beside it): one line naming it.
        """
        work = Path(self.mktemp()).resolve()
        db = self.database(work / "ro")
        self.readOnly(db.parent)
        result = run_twistd_expecting_failure(work, ["--listen", server_listen(self.certs), "--auth", f"sqlite:{db}"])
        self.assertEqual(result.returncode, 1, result)
        [line] = result.stderr.decode().splitlines()
        self.assertTrue(line.startswith(f"twistd securenet: error: --auth sqlite: {db}: not a usable SQLite database ("), line)
        self.assertEqual(result.stdout, b"")


class TwistedCheckerTests(SynchronousTestCase):
    """Twisted's own --auth memory and unix: PLAIN is offered and (memory) works, over the stream and HTTP Basic."""

    warning = (
        "[securenet.tap#warn] --auth memory: passwords are kept in plaintext (from the command line, in memory);"
        " use --auth sqlite:PATH (hashed passwords, SCRAM) outside tests\n"
    )

    def setUp(self) -> None:
        self.certs = dev_pki(Path(self.mktemp()).resolve())
        self.work = Path(self.mktemp()).resolve()
        self.work.mkdir(parents=True)
        self.listen = server_listen(self.certs, trustRoots="", clientAuth="none")

    def passwordFile(self, password: str) -> Path:
        path = self.work / f"{len(password)}.pw"
        path.write_text(password + "\n")
        return path

    def greeting(self, port: int) -> bytes:
        out, _ = converse(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-quiet"], b"", b"\r\n")
        return out

    def test_memoryOverTheStream(self) -> None:
        """--auth memory:alice:pw offers PLAIN; `securenet connect` logs in as alice; a wrong password is refused."""
        server = Twistd(self.work, ["--listen", self.listen, "--auth", "memory:alice:correct horse"])
        self.addCleanup(server.stop)
        self.assertIn(b"SECURENET 1 AUTH PLAIN\r\n", self.greeting(server.port))
        endpoint = client_endpoint(self.certs, server.port, certificate="", privateKey="")
        login = [script("securenet"), "connect", "--linger", "0.5", "--mechanism", "PLAIN", "--user", "alice", "--password-file"]
        result = run([*login, str(self.passwordFile("correct horse")), endpoint], input=b"hello memory\n")
        self.assertEqual((result.returncode, result.stdout), (0, b"hello memory\n"), result.stderr)
        self.assertIn(b"authenticated as alice", result.stderr)
        wrong = run([*login, str(self.passwordFile("wrong")), endpoint], input=b"secret\n")
        self.assertEqual((wrong.returncode, wrong.stdout), (1, b""))
        self.assertIn(b"AUTH-FAILED", wrong.stderr)
        log = server.waitForLog("by PLAIN: alice (credentials refused)")
        self.assertIn("authentication ok for 127.0.0.1", log)
        self.assertEqual(log.count(self.warning), 1, log)

    def test_memoryOverHTTPBasic(self) -> None:
        """With --http, HTTP Basic works against --auth memory (and a wrong password is a 401)."""
        http = self.listen
        server = WebTwistd(self.work, ["--http", http, "--auth", "memory:alice:correct horse"])
        self.addCleanup(server.stop)

        def me(credentials: str) -> tuple[str, bytes]:
            result = run(
                ["curl", "-sS", "--noproxy", "*", "--max-time", "10", "--cacert", str(self.certs / "ca.pem")]
                + ["-u", credentials, "-w", "\n%{http_code}", f"https://localhost:{server.http_ports[0]}/me"],
                timeout=20,
            )
            body, _, code = result.stdout.rpartition(b"\n")
            return code.decode(), body

        code, body = me("alice:correct horse")
        self.assertEqual(code, "200", body)
        self.assertEqual((json.loads(body)["name"], json.loads(body)["scheme"]), ("alice", "Basic"))
        self.assertEqual(me("alice:wrong")[0], "401")
        log = server.waitForLog("(credentials refused)")
        self.assertIn("authentication ok for 127.0.0.1", log)
        self.assertEqual(log.count(self.warning), 1, log)

    def test_unixOffersPlain(self) -> None:
        """--auth unix (system passwords: not tried here) offers PLAIN, and no plaintext warning."""
        server = Twistd(self.work, ["--listen", self.listen, "--auth", "unix"])
        self.addCleanup(server.stop)
        self.assertIn(b"SECURENET 1 AUTH PLAIN\r\n", self.greeting(server.port))
        self.assertNotIn("plaintext", server.logText())


class HelpTests(SynchronousTestCase):
    def test_help(self) -> None:
        """`twistd securenet --help`: single spaces in its sentences, and a usage line naming every option."""
        result = run([script("twistd"), "securenet", "--help"])
        self.assertEqual(result.returncode, 0, result.stderr)
        text = result.stdout.decode()
        for line in help_sentences(text):
            self.assertNotIn("  ", line)
        usage = text.splitlines()[0]
        self.assertTrue(usage.startswith("Usage: twistd [options] securenet [--listen ENDPOINT ...] "), usage)
        options = set(re.findall(r"^\s+(?:-\w, )?--([\w-]+)", text, re.MULTILINE)) - GENERIC_OPTIONS
        self.assertIn("log-level", options)
        for option in options:
            self.assertIn(f"[--{option} ", usage)


class SocketActivationTests(SynchronousTestCase):
    """
    C{securenet:fd=N:...}: twistd adopts a listening socket it inherited (as
    systemd socket activation or a supervisor hands one over), so a restart
    keeps the socket and loses no connection attempt.
    """

    def setUp(self) -> None:
        self.certs = dev_pki(Path(self.mktemp()).resolve())
        self.work = Path(self.mktemp()).resolve()
        self.work.mkdir(parents=True)
        self.socket = socket.socket()
        self.addCleanup(self.socket.close)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.port = int(self.socket.getsockname()[1])

    def start(self, n: int) -> tuple[subprocess.Popen[bytes], Path]:
        fd = self.socket.fileno()
        listen = server_listen(self.certs).replace("securenet:0:interface=127.0.0.1:", f"securenet:fd={fd}:")
        log = self.work / f"twistd-{n}.log"
        process = subprocess.Popen(
            [script("twistd"), "-n", "--pidfile=", "-l", str(log), "securenet", "--listen", listen],
            cwd=self.work,
            env=child_env(),
            pass_fds=(fd,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def stop() -> None:
            if process.poll() is None:
                process.kill()
                process.wait(10)

        self.addCleanup(stop)
        listening = f"securenet listening on 127.0.0.1:{self.port} "
        self.assertTrue(wait_until(lambda: listening in (log.read_text() if log.exists() else "")), log)
        return process, log

    def echo(self, data: bytes) -> subprocess.CompletedProcess[bytes]:
        return run([script("securenet"), "connect", "--linger", "0.5", "-q", client_endpoint(self.certs, self.port)], input=data)

    def test_restartKeepsTheSocket(self) -> None:
        """
        The adopted socket serves; after twistd stops, a client that connects
        waits in the kernel's queue and is served by the next twistd, which
        adopts the same socket.
        """
        first, _ = self.start(1)
        self.assertEqual(self.echo(b"one\n").stdout, b"one\n")
        first.send_signal(signal.SIGTERM)
        first.wait(20)
        # Connected while no twistd runs: the kernel queues it on the socket.
        waiting = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        self.addCleanup(waiting.close)
        second, log = self.start(2)
        context = ssl.create_default_context(cafile=str(self.certs / "ca.pem"))
        context.load_cert_chain(str(self.certs / "dev-client.pem"), str(self.certs / "dev-client.key"))
        with context.wrap_socket(waiting, server_hostname="localhost") as tls, tls.makefile("rwb") as f:
            self.assertTrue(f.readline().startswith(b"SECURENET 1 AUTH"))
            f.write(b"AUTH EXTERNAL =\r\nqueued\n")
            f.flush()
            self.assertTrue(f.readline().startswith(b"OK dev-client"))
            self.assertEqual(f.readline(), b"queued\n")
        self.assertEqual(self.echo(b"two\n").stdout, b"two\n")
        second.send_signal(signal.SIGTERM)
        second.wait(20)
        self.assertNotIn("Traceback", log.read_text())
