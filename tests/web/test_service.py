"""
C{twistd securenet}'s HTTP options in process: C{--http} (repeatable, and
the C{http} config key), C{--token-key}, C{--token-ttl}, C{--refresh-ttl},
and the services C{makeService} builds from them.  The real thing runs in
tests/e2e/test_web.py.
"""

from __future__ import annotations

import io
import socket
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.application.internet import StreamServerEndpointService
from twisted.cred.credentials import IUsernamePassword
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from securenet import tap
from securenet._threads import synchronous_runner
from securenet.cred._jwt import TokenChecker
from securenet.cred._storechecker import StoreChecker
from securenet.interfaces import ITokenCredentials
from securenet.session._server import SessionFactory
from securenet.store._memory import MemoryStore
from securenet.testing import EphemeralPKI, EventCapture, weak_hasher
from securenet.web._site import SecureSite
from securenet.web._tokens import DEFAULT_ACCESS_TTL, DEFAULT_REFRESH_TTL

PKI = EphemeralPKI.create()


class WebOptionsTests(SynchronousTestCase):
    def parse(self, *argv: str) -> tap.Options:
        options = tap.Options()
        options.parseOptions(list(argv))
        return options

    def test_repeatedHttp(self) -> None:
        options = self.parse("--http", "securenet:1:a=b", "--http", "securenet:2:a=b")
        self.assertEqual(options["http"], ["securenet:1:a=b", "securenet:2:a=b"])

    def test_httpAloneServesNoStreamListener(self) -> None:
        """--http without --listen: only the HTTP API (no development default on 8443)."""
        options = self.parse("--http", "securenet:1:a=b")
        self.assertEqual(options["listen"], [])
        self.assertFalse(options["dev"])
        self.assertEqual(self.parse()["listen"], [tap.dev_listen()])

    def test_defaults(self) -> None:
        options = self.parse()
        self.assertEqual((options["http"], options["token-key"]), ([], None))
        self.assertEqual((options["token-ttl"], options["refresh-ttl"]), (DEFAULT_ACCESS_TTL, DEFAULT_REFRESH_TTL))

    def test_ttls(self) -> None:
        options = self.parse("--token-ttl", "60", "--refresh-ttl", "3600")
        self.assertEqual((options["token-ttl"], options["refresh-ttl"]), (60, 3600))
        for bad in ("0", "-5", "ten", "1.5"):
            with self.assertRaises(usage.UsageError) as caught:
                self.parse("--token-ttl", bad)
            self.assertIn(f"--token-ttl {bad}:", str(caught.exception))

    def writeConfig(self, text: str) -> Path:
        path = Path(self.mktemp())
        path.write_text(text)
        return path

    def test_config(self) -> None:
        path = self.writeConfig('http = ["securenet:9:x=y"]\ntoken_key = "keys/t.key"\ntoken_ttl = 120\nrefresh_ttl = 7200\n')
        options = self.parse("--config", str(path))
        self.assertEqual(options["http"], ["securenet:9:x=y"])
        self.assertEqual((options["token-key"], options["token-ttl"], options["refresh-ttl"]), ("keys/t.key", 120, 7200))
        self.assertEqual(options["listen"], [])

    def test_commandLineWins(self) -> None:
        path = self.writeConfig('http = ["securenet:9:x=y"]\ntoken_key = "a.key"\n')
        options = self.parse("--config", str(path), "--http", "securenet:10:x=y", "--token-key", "b.key")
        self.assertEqual((options["http"], options["token-key"]), (["securenet:10:x=y"], "b.key"))

    def test_configRefusals(self) -> None:
        cases = {
            "http must be a list of strings": 'http = "securenet:1"\n',
            "token_key must be a string": "token_key = 3\n",
            "token_ttl must be a whole number of seconds": 'token_ttl = "soon"\n',
            "refresh_ttl must be a whole number of seconds": "refresh_ttl = true\n",
        }
        for fragment, text in cases.items():
            with self.assertRaises(usage.UsageError) as caught:
                self.parse("--config", str(self.writeConfig(text)))
            self.assertIn(fragment, str(caught.exception))

    def test_documented(self) -> None:
        """Every new option and config key is in --help and CONFIG_KEYS."""
        text = str(tap.Options())
        for option in ("--http", "--token-key", "--token-ttl", "--refresh-ttl"):
            self.assertIn(option, text)
        for key in ("http", "token_key", "token_ttl", "refresh_ttl"):
            self.assertIn(key, tap.CONFIG_KEYS)


class WebServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.certs = PKI.save(Path(self.mktemp()))
        self.http = (
            f"securenet:0:certKey={self.certs / 'server.pem'}:privateKey={self.certs / 'server.key'}"
            f":trustRoots={self.certs / 'ca.pem'}:clientAuth=optional"
        )
        self.listen = f"securenet:0:certKey={self.certs / 'server.pem'}:privateKey={self.certs / 'server.key'}"
        key = ed25519.Ed25519PrivateKey.generate()
        self.key = Path(self.mktemp())
        self.key.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        self.key.chmod(0o600)
        self.public = Path(self.mktemp())
        self.public.write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)

    def options(self, *argv: str, store: bool = True) -> tap.Options:
        options = tap.Options()
        if store:
            # A credential store in memory (an SQLite one would start a thread on the global reactor).
            options.addChecker(
                StoreChecker(MemoryStore(), Clock(), runner=synchronous_runner, hasher=weak_hasher(), scram_iterations=4096)
            )
        options.parseOptions(list(argv))
        return options

    def test_httpService(self) -> None:
        service = tap.makeService(self.options("--http", self.http, "--http", self.http))
        [web] = list(service)  # type: ignore[call-overload]
        children = list(web)
        self.assertEqual(len(children), 2)
        for child in children:
            self.assertIsInstance(child, StreamServerEndpointService)
            self.assertIsInstance(child.factory, SecureSite)
            self.assertEqual(child.endpoint.endpoint.policy.client_auth, "optional")

    def test_streamAndHttp(self) -> None:
        service = tap.makeService(self.options("--listen", self.listen, "--http", self.http))
        stream, web = list(service)  # type: ignore[call-overload]
        self.assertIsInstance(stream.factory, SessionFactory)
        self.assertIsInstance(list(web)[0].factory, SecureSite)

    def test_tokenKeyVerifiesForStreamsToo(self) -> None:
        """--token-key registers a checker of its key pair in the portal the stream sessions use."""
        service = tap.makeService(self.options("--listen", self.listen, "--http", self.http, "--token-key", str(self.key)))
        stream = list(service)[0]  # type: ignore[call-overload]
        checker = stream.factory.portal.checkers[ITokenCredentials]
        self.assertIsInstance(checker, TokenChecker)
        self.assertIsNotNone(checker.store)
        self.assertIn(IUsernamePassword, stream.factory.portal.checkers)

    def assertRefused(self, options: tap.Options, fragment: str) -> None:
        with self.assertRaises(tap.StartupError) as caught:
            tap.makeService(options)
        self.assertEqual(caught.exception.code, 1)
        line = self.stderr.getvalue().strip()
        self.stderr.seek(0)
        self.stderr.truncate()
        self.assertEqual(len(line.splitlines()), 1, line)
        self.assertIn(fragment, line)

    def test_tokenKeyNeedsAStore(self) -> None:
        self.assertRefused(
            self.options("--http", self.http, "--token-key", str(self.key), store=False),
            "issuing tokens needs a credential database (--auth sqlite:PATH)",
        )

    def test_tokenKeyAndAuthJwt(self) -> None:
        options = self.options("--http", self.http, "--token-key", str(self.key), "--auth", f"jwt:key={self.public}")
        self.assertRefused(options, "already checked by an --auth jwt checker")

    def test_badTokenKey(self) -> None:
        self.assertRefused(
            self.options("--http", self.http, "--token-key", str(self.public)), f"--token-key: {self.public}: is a public key"
        )
        self.assertRefused(
            self.options("--http", self.http, "--token-key", "/nonexistent/key"),
            "--token-key: /nonexistent/key: token key file does not exist",
        )

    def test_badHttpEndpoint(self) -> None:
        self.assertRefused(
            self.options("--http", "securenet:0:nokey=1"), "--http securenet:0:nokey=1: unknown server endpoint key"
        )


class HTTPListenFailureTests(SynchronousTestCase):
    def test_portInUse(self) -> None:
        """
        --http on a port in use: twistd stops (ListenError, exit 1) with one
        line naming the port, the OS reason and the --http endpoint; the HTTP
        API never says it listens.
        """
        certs = PKI.save(Path(self.mktemp()))
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        http = f"securenet:{port}:interface=127.0.0.1:certKey={certs / 'server.pem'}:privateKey={certs / 'server.key'}"
        terminal = io.StringIO()
        self.patch(sys, "__stderr__", terminal)
        events = EventCapture(self)
        options = tap.Options()
        options.addChecker(
            StoreChecker(MemoryStore(), Clock(), runner=synchronous_runner, hasher=weak_hasher(), scram_iterations=4096)
        )
        options.parseOptions(["--http", http])
        service = tap.makeService(options)
        with self.assertRaises(SystemExit) as caught:
            service.privilegedStartService()
        expected = f"cannot listen on 127.0.0.1:{port}: Address already in use (--http {http})"
        self.assertIsInstance(caught.exception, tap.ListenError)
        self.assertEqual((caught.exception.code, str(caught.exception)), (1, expected))
        self.assertEqual(terminal.getvalue(), f"twistd securenet: error: {expected}\n")
        self.assertEqual(events.of("service.listening"), [])
