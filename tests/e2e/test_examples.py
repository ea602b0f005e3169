"""
The worked examples end to end, as examples/README.md tells a user to run
them: a real C{twistd securenet --app examples.X.server.F --policy
examples/X/policy.toml} process, a PKI made with the C{securenet pki} CLI
(devices with SPIFFE URI SANs), credential databases made with C{securenet
users add} (in-process, with cheap hashing injected) / C{users totp-enroll},
and the example clients and C{securenet connect} as the user's side.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pyotp
from twisted.trial.unittest import SynchronousTestCase

from securenet.testing import TEST_SCRAM_ITERATIONS
from tests.e2e.test_auth import add_user
from tests.support import REPO, Twistd, child_env, run, script

#: Users are added in-process with cheap hashing (add_user); the server is
#: told the same SCRAM iteration count.
SCRAM = f"scramIterations={TEST_SCRAM_ITERATIONS}"

CLIENTS = ("alice", "bob", "mod")
DEVICES = ("dev1",)
USERS = {
    "chat": [("alice", "member"), ("mod", "moderator")],
    "kv": [("alice", "writer"), ("bob", "reader"), ("root", "admin")],
    "telemetry": [("ops", "operator"), ("ops2", "operator")],
}

_PKI: dict[str, Path] = {}
_DATABASES: dict[str, tuple[Path, str | None]] = {}


def _all(commands: Sequence[Sequence[str]]) -> None:
    """Run CLI commands side by side; all must succeed."""
    running = [subprocess.Popen(list(c), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env()) for c in commands]
    for command, process in zip(commands, running, strict=True):
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, (command, out, err)


def examples_pki(base: Path) -> Path:
    """A CA, the server, clients and a SPIFFE device, made once per run with `securenet pki`."""
    if "certs" in _PKI:
        return _PKI["certs"]
    securenet = script("securenet")
    certs = base / "certs"
    _all([[securenet, "pki", "init", "--dir", str(certs)]])
    _all(
        [[securenet, "pki", "issue", "server", "server", "--dir", str(certs), "--san", "DNS:localhost,IP:127.0.0.1"]]
        + [[securenet, "pki", "issue", "client", name, "--dir", str(certs)] for name in CLIENTS]
        + [
            [securenet, "pki", "issue", "client", name, "--dir", str(certs), "--san", f"URI:spiffe://example.org/device/{name}"]
            for name in DEVICES
        ]
    )
    (base / "password").write_text("correct horse\n")
    _PKI.update(certs=certs, password=base / "password")
    return certs


def example_database(example: str, base: Path) -> tuple[Path, str | None]:
    """
    The example's credential database, made once per run with `securenet
    users add` (and `users totp-enroll ops` for telemetry); with the TOTP
    secret, if any.
    """
    if example in _DATABASES:
        return _DATABASES[example]
    securenet = script("securenet")
    base.mkdir(parents=True, exist_ok=True)
    db = base / f"{example}.db"
    password = str(_PKI["password"])
    for name, role in USERS[example]:
        add_user(name, "--role", role, "--db", str(db), "--password-file", password)
    secret = None
    if example == "telemetry":
        enrolled = run([securenet, "users", "totp-enroll", "ops", "--db", str(db)])
        assert enrolled.returncode == 0, enrolled.stderr
        found = re.search(r"secret=([A-Z2-7]+)", enrolled.stdout.decode())
        assert found, enrolled.stdout
        secret = found.group(1)
    _DATABASES[example] = (db, secret)
    return db, secret


class Interactive:
    """A client process kept running: write lines to it, wait for its output (bounded)."""

    def __init__(self, args: Sequence[str]) -> None:
        self.process = subprocess.Popen(
            list(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=child_env()
        )
        assert self.process.stdout is not None
        os.set_blocking(self.process.stdout.fileno(), False)
        self.output = b""

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def expect(self, text: str, timeout: float = 5) -> str:
        """All output so far, once it contains C{text} (or the process ended, or C{timeout} passed)."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while text.encode() not in self.output and time.monotonic() < deadline:
                if not selector.select(max(0.0, deadline - time.monotonic())):
                    continue
                try:
                    chunk = os.read(self.process.stdout.fileno(), 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    break
                self.output += chunk
        return self.output.decode("utf-8", "replace")

    def wait(self, timeout: float = 5) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(5)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


class ExampleE2E(SynchronousTestCase):
    example = ""

    def setUp(self) -> None:
        self.certs = examples_pki(Path(self.mktemp()).resolve())
        self.password = str(_PKI["password"])
        db, self.totp_secret = example_database(self.example, Path(self.mktemp()).resolve())
        self.work = Path(self.mktemp()).resolve()
        self.work.mkdir(parents=True)
        # Each test gets its own copy of the database (used TOTP steps, failure counters).
        self.db = self.work / f"{self.example}.db"
        shutil.copyfile(db, self.db)
        self.db.chmod(0o600)

    def serve(self, factory: str, client_auth: str = "optional", *extra: str) -> Twistd:
        """twistd -n securenet, as examples/README.md runs it (absolute paths)."""
        certs = self.certs
        listen = (
            f"securenet:0:interface=127.0.0.1:certKey={certs / 'server.pem'}:privateKey={certs / 'server.key'}"
            f":trustRoots={certs / 'ca.pem'}:clientAuth={client_auth}"
        )
        server = Twistd(
            self.work,
            [
                "--listen",
                listen,
                "--auth",
                "certificate",
                "--auth",
                f"sqlite:db={self.db},{SCRAM}",
                "--app",
                f"examples.{self.example}.server.{factory}",
                "--policy",
                str(REPO / "examples" / self.example / "policy.toml"),
                *extra,
            ],
        )
        self.addCleanup(server.stop)
        return server

    def endpoint(self, server: Twistd, certificate: str | None = None) -> str:
        endpoint = f"securenet:host=localhost:port={server.port}:trustRoots={self.certs / 'ca.pem'}"
        if certificate:
            endpoint += f":certificate={self.certs / (certificate + '.pem')}:privateKey={self.certs / (certificate + '.key')}"
        return endpoint

    def client(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return run([sys.executable, "-m", f"examples.{self.example}.client", *args], timeout=20)

    def interactive(self, *args: str) -> Interactive:
        process = Interactive(args)
        self.addCleanup(process.stop)
        return process


class ChatE2ETests(ExampleE2E):
    example = "chat"

    def test_chat(self) -> None:
        """
        Over mutual TLS, with `securenet connect`: names come from the
        certificates, bob (no role) may not list rooms, a claimed name stays
        a claim, the moderator kicks alice.
        """
        server = self.serve("ChatFactory", client_auth="required")
        connect = [script("securenet"), "connect", "-q"]
        alice = self.interactive(*connect, self.endpoint(server, "alice"))
        self.assertIn("* alice joined lobby", alice.expect("* alice joined lobby"))

        bob = run(
            [*connect, "--linger", "0.5", self.endpoint(server, "bob")], input=b"/rooms\n<mod> I am the moderator\n", timeout=20
        )
        self.assertEqual(bob.returncode, 0, bob.stderr)
        self.assertEqual(
            bob.stdout.decode().splitlines(),
            [
                "* welcome bob; /help lists the commands",
                "* bob joined lobby",
                "! denied: bob may not chat.rooms.list: missing permission chat.rooms.list",
                "[lobby] <bob> <mod> I am the moderator",
            ],
        )
        self.assertIn("[lobby] <bob> <mod> I am the moderator", alice.expect("<bob> <mod>"))

        mod = run([*connect, "--linger", "0.5", self.endpoint(server, "mod")], input=b"/rooms\n/kick alice\n", timeout=20)
        self.assertEqual(mod.returncode, 0, mod.stderr)
        self.assertIn("* rooms: lobby (2)\n", mod.stdout.decode())
        self.assertIn("* kicked alice\n", mod.stdout.decode())
        self.assertIn("* you were kicked by mod", alice.expect("* you were kicked by mod"))
        self.assertEqual(alice.wait(), 0)

        log = server.waitForLog("authorization deny for bob")
        self.assertIn("authorization deny for bob: chat.rooms.list (no rule matched: denied by default)", log)
        self.assertIn("mod kicked alice", log)
        # Allowed decisions are debug events: not logged at the default level.
        self.assertNotIn("authorization allow", log)


class KVE2ETests(ExampleE2E):
    example = "kv"

    def test_kv(self) -> None:
        """The AMP key-value service and its client: certificates and a password; denials exit 3."""
        server = self.serve("KVFactory", "optional", "--log-level", "debug")
        alice, bob = self.endpoint(server, "alice"), self.endpoint(server, "bob")

        result = self.client("--endpoint", alice, "set", "users/alice/todo", "milk")
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        result = self.client("--endpoint", alice, "set", "users/bob/todo", "pwned")
        self.assertEqual(
            (result.returncode, result.stderr.decode()),
            (3, "kv: denied: alice may not kv.write users/bob/todo: missing permission kv.write:users/bob/todo\n"),
        )
        result = self.client("--endpoint", bob, "get", "users/alice/todo")
        self.assertEqual((result.returncode, result.stdout), (0, b"milk\n"), result.stderr)
        result = self.client("--endpoint", bob, "delete", "users/alice/todo")
        self.assertEqual(result.returncode, 3, result.stderr)

        root = ("--endpoint", self.endpoint(server), "--user", "root", "--password-file", self.password)
        result = self.client(*root, "set", "config/motd", "hello")
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        result = self.client(*root, "list")
        self.assertEqual((result.returncode, result.stdout), (0, b"config/motd\nusers/alice/todo\n"), result.stderr)
        result = self.client(*root, "get", "nope")
        self.assertEqual((result.returncode, result.stderr), (4, b"kv: no such key: nope\n"))

        log = server.waitForLog("authorization deny for bob")
        self.assertIn("authorization deny for alice: kv.write users/bob/todo", log)
        # --log-level debug: allowed decisions are logged too.
        self.assertIn("[securenet.authz#debug] authorization allow for alice: kv.write users/alice/todo", log)
        self.assertIn("by SCRAM-SHA-256-PLUS: root", log)


class TelemetryE2ETests(ExampleE2E):
    example = "telemetry"

    def test_telemetry(self) -> None:
        """
        Devices publish with SPIFFE certificates, to their own topics only;
        the operator subscribes with a password and TOTP; an operator
        without a second factor may not.
        """
        server = self.serve("TelemetryFactory")
        code = pyotp.TOTP(str(self.totp_secret)).now()
        ops = self.interactive(
            sys.executable,
            "-m",
            "examples.telemetry.client",
            "--endpoint",
            self.endpoint(server),
            "--user",
            "ops",
            "--password-file",
            self.password,
            "--totp",
            code,
            "subscribe",
            "device/**",
            "--count",
            "1",
        )
        self.assertIn("telemetry: subscribed to device/**", ops.expect("subscribed to"))

        dev1 = self.endpoint(server, "dev1")
        result = self.client("--endpoint", dev1, "publish", "device/dev2/temperature", "99")
        self.assertEqual(
            (result.returncode, result.stderr.decode()),
            (
                3,
                "telemetry: denied: dev1 may not telemetry.publish telemetry/device/dev2/temperature: "
                "missing permission telemetry.publish:telemetry/device/dev2/temperature\n",
            ),
        )
        result = self.client("--endpoint", dev1, "publish", "device/dev1/temperature", "21.5")
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        self.assertEqual(ops.wait(), 0)
        self.assertEqual(ops.expect("21.5"), "telemetry: subscribed to device/**\ndevice/dev1/temperature 21.5\n")

        result = self.client(
            "--endpoint", self.endpoint(server), "--user", "ops2", "--password-file", self.password, "subscribe", "device/**"
        )
        self.assertEqual(
            (result.returncode, result.stderr.decode()),
            (
                3,
                "telemetry: denied: ops2 may not telemetry.subscribe telemetry/device/**: "
                "missing permission telemetry.subscribe:telemetry/device/**\n",
            ),
        )
        log = server.waitForLog("authorization deny for ops2")
        self.assertIn('rule 2 "subscribing takes a second factor"', log)
        self.assertIn("by EXTERNAL: dev1", log)
