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
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from twisted.application.internet import StreamServerEndpointService
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.portal import Portal
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from securenet import tap
from securenet._errors import SecurenetError
from securenet._threads import synchronous_runner
from securenet.authz import ReloadablePolicy
from securenet.cred._identity import IdentityRealm
from securenet.cred._jwt import TokenChecker, TokenIssuer, TokenRefused, TokenSettings
from securenet.cred._storechecker import StoreChecker
from securenet.interfaces import IReloadable, ITokenCredentials
from securenet.pki import key_id, load_signing_key
from securenet.session._server import SessionFactory
from securenet.store._memory import MemoryStore
from securenet.store._records import User
from securenet.testing import EphemeralPKI, EventCapture, weak_hasher
from securenet.web import TokenKeyReload
from securenet.web._service import token_service
from securenet.web._site import SecureSite
from securenet.web._tokens import DEFAULT_ACCESS_TTL, DEFAULT_REFRESH_TTL, TokenLifetimes

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
        for option in ("--http", "--token-key", "--token-ttl", "--token-key-overlap", "--refresh-ttl"):
            self.assertIn(option, text)
        for key in ("http", "token_key", "token_ttl", "token_key_overlap", "refresh_ttl"):
            self.assertIn(key, tap.CONFIG_KEYS)

    def test_tokenKeyOverlap(self) -> None:
        """--token-key-overlap (token_key_overlap): whole seconds, 0 allowed; unset by default (then --token-ttl)."""
        self.assertIsNone(self.parse()["token-key-overlap"])
        self.assertEqual(self.parse("--token-key-overlap", "0")["token-key-overlap"], 0)
        self.assertEqual(self.parse("--token-key-overlap", "120")["token-key-overlap"], 120)
        path = self.writeConfig("token_key_overlap = 300\n")
        self.assertEqual(self.parse("--config", str(path))["token-key-overlap"], 300)
        self.assertEqual(self.parse("--config", str(path), "--token-key-overlap", "5")["token-key-overlap"], 5)
        for bad, fragment in (("-1", "must be at least 0 seconds"), ("soon", "not a whole number of seconds")):
            with self.assertRaises(usage.UsageError) as caught:
                self.parse("--token-key-overlap", bad)
            self.assertEqual(str(caught.exception), f"--token-key-overlap {bad}: {fragment}")
        with self.assertRaises(usage.UsageError) as caught:
            self.parse("--config", str(self.writeConfig('token_key_overlap = "1h"\n')))
        self.assertIn("token_key_overlap must be a whole number of seconds", str(caught.exception))


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

    def web_api(self, service: Any) -> Any:
        """The BuiltinAPI behind the first --http listener of C{service}."""
        web = [child for child in service if not isinstance(getattr(child, "factory", None), SessionFactory)][0]
        site = list(web)[0].factory
        return site.resource.children[b"me"].handlers[b"GET"].__self__

    def test_reloadablesReachEveryHolder(self) -> None:
        """tap passes one ReloadablePolicy to every listener and the HTTP API, and the token service its key reload."""
        policy = Path(self.mktemp())
        policy.write_text('[roles.reader]\npermissions = ["kv.read:**"]\n')
        argv = ["--listen", self.listen, "--listen", self.listen, "--http", self.http, "--policy", str(policy)]
        service = tap.makeService(self.options(*argv, "--token-key", str(self.key), "--token-key-overlap", "77"))
        streams = [child for child in service if isinstance(getattr(child, "factory", None), SessionFactory)]  # type: ignore[attr-defined]
        api = self.web_api(service)
        self.assertIsInstance(api.guard.policy, ReloadablePolicy)
        self.assertEqual([s.factory.policy for s in streams], [api.guard.policy] * 2)
        reload = api.tokens.key_reload
        self.assertIsInstance(reload, TokenKeyReload)
        self.assertEqual((reload.what, reload.source, reload.key_file.overlap), ("token-keys", str(self.key), 77))
        self.assertIs(reload.checker, streams[0].factory.portal.checkers[ITokenCredentials])

    def test_overlapDefaultsToTheTokenTtl(self) -> None:
        service = tap.makeService(self.options("--http", self.http, "--token-key", str(self.key), "--token-ttl", "120"))
        self.assertEqual(self.web_api(service).tokens.key_reload.key_file.overlap, 120)

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

    def test_overlapTooLong(self) -> None:
        self.assertRefused(
            self.options("--http", self.http, "--token-key", str(self.key), "--token-key-overlap", "40000000"),
            "--token-key-overlap 40000000: must be 0 to 31622400 seconds (a year)",
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


NOW = 1_800_000_000


class TokenKeyReloadTests(SynchronousTestCase):
    """
    A reload of --token-key (token_service's key_reload): new tokens are
    signed with the new key, tokens of the old key verify for the overlap;
    a bad key file changes nothing.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = MemoryStore()
        self.store.users["alice"] = User("alice")
        self.path = Path(self.mktemp())
        self.write(ed25519.Ed25519PrivateKey.generate())
        self.portal = Portal(IdentityRealm(self.store))
        self.tokens = token_service(
            self.clock, str(self.path), portal=self.portal, store=self.store, lifetimes=TokenLifetimes(access_ttl=900)
        )
        reload = self.tokens.key_reload
        assert isinstance(reload, TokenKeyReload)
        self.reload: TokenKeyReload = reload
        self.checker: TokenChecker = reload.checker
        self.assertIs(self.portal.checkers[ITokenCredentials], self.checker)

    def write(self, key: Any, mode: int = 0o600) -> None:
        data = (
            key
            if isinstance(key, bytes)
            else key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        self.path.write_bytes(data)
        self.path.chmod(mode)

    def issue(self) -> str:
        return self.tokens.issuer.issue("alice", ttl=900)

    def kid(self, token: str) -> str:
        return str(jwt.get_unverified_header(token)["kid"])

    def accepted(self, token: str) -> None:
        self.assertEqual(self.successResultOf(self.checker.verify(token)).subject, "alice")

    def refused(self, token: str) -> str:
        return str(self.failureResultOf(self.checker.verify(token), TokenRefused).value.reason)

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IReloadable, self.reload))
        self.assertEqual(
            (self.reload.what, self.reload.source, self.reload.key_file.overlap), ("token-keys", str(self.path), 900)
        )

    def test_tokensNameTheirKey(self) -> None:
        """The service signs with a kid (the key's thumbprint), and tokens without one still verify with the current key."""
        token = self.issue()
        self.assertEqual(self.kid(token), self.tokens.issuer.key.kid)
        self.assertEqual(self.tokens.issuer.key.kid, key_id(load_signing_key(self.path)))
        self.accepted(token)
        self.accepted(TokenIssuer(TokenSettings([load_signing_key(self.path)]), self.clock).issue("alice", ttl=60))

    def test_rotation(self) -> None:
        """After the commit, new tokens have the new key; old ones verify until they expire (overlap = the ttl)."""
        old = self.issue()
        self.write(ed25519.Ed25519PrivateKey.generate())
        issuer, settings = self.tokens.issuer, self.checker.settings
        commit = self.reload.prepare()
        self.assertIs(self.tokens.issuer, issuer)  # prepare swaps nothing
        self.assertIs(self.checker.settings, settings)
        self.assertEqual(self.kid(self.issue()), self.kid(old))
        commit()
        new = self.issue()
        self.assertNotEqual(self.kid(new), self.kid(old))
        self.assertEqual(self.kid(new), key_id(load_signing_key(self.path)))
        self.accepted(new)
        self.accepted(old)
        self.clock.advance(900 + 29)  # its exp, and the leeway
        self.accepted(old)
        self.clock.advance(1)
        self.assertIn("unknown kid", self.refused(old))
        self.accepted(self.issue())

    def test_shorterOverlap(self) -> None:
        """With an overlap shorter than the ttl, an old token is refused at its end even though it has not expired."""
        tokens = token_service(self.clock, str(self.path), portal=Portal(IdentityRealm(self.store)), store=self.store, overlap=60)
        checker = tokens.key_reload.checker  # type: ignore[union-attr]
        old = tokens.issuer.issue("alice", ttl=900)
        self.write(ed25519.Ed25519PrivateKey.generate())
        tokens.key_reload.prepare()()  # type: ignore[union-attr]
        self.clock.advance(60 + 29)
        self.successResultOf(checker.verify(old))
        self.clock.advance(1)
        self.assertIn("unknown kid", str(self.failureResultOf(checker.verify(old), TokenRefused).value.reason))

    def test_severalRotations(self) -> None:
        first = self.issue()
        self.write(ed25519.Ed25519PrivateKey.generate())
        self.reload.prepare()()
        self.clock.advance(300)
        second = self.issue()
        self.write(ed25519.Ed25519PrivateKey.generate())
        self.reload.prepare()()
        third = self.issue()
        self.assertEqual(len({self.kid(t) for t in (first, second, third)}), 3)
        for token in (first, second, third):
            self.accepted(token)
        self.clock.advance(600 + 30)  # the first key's overlap is over, the second's not
        self.assertIn("unknown kid", self.refused(first))
        self.accepted(second)
        self.accepted(third)

    def assertRefused(self, data: Any, mode: int, message: str) -> None:
        """A key file the reload refuses, naming it: the old key still signs, and its tokens still verify."""
        old = self.issue()
        issuer, settings = self.tokens.issuer, self.checker.settings
        if data is None:
            self.path.unlink()
        else:
            self.write(data, mode)
        with self.assertRaises(SecurenetError) as e:
            self.reload.prepare()
        self.assertEqual(str(e.exception), message.format(path=self.path))
        self.assertIs(self.tokens.issuer, issuer)
        self.assertIs(self.checker.settings, settings)
        self.assertEqual(self.kid(self.issue()), self.kid(old))
        self.accepted(old)
        self.accepted(self.issue())

    def test_missing(self) -> None:
        self.assertRefused(None, 0, "--token-key: {path}: token key file does not exist")

    def test_tooOpen(self) -> None:
        self.assertRefused(
            ed25519.Ed25519PrivateKey.generate(),
            0o644,
            "--token-key: {path}: private key file has mode 0644; it must not be accessible by group or others"
            " (chmod 600 {path})",
        )

    def test_corrupt(self) -> None:
        self.assertRefused(
            b"-----BEGIN PRIVATE KEY-----\nnonsense\n",
            0o600,
            "--token-key: {path}: not a PEM private key (corrupt or wrong file)",
        )

    def test_otherAlgorithm(self) -> None:
        self.assertRefused(
            ec.generate_private_key(ec.SECP256R1()),
            0o600,
            "--token-key: {path}: holds a P-256 (ES256) key, not an Ed25519 (EdDSA) key",
        )
        self.assertRefused(b"s" * 40, 0o600, "--token-key: {path}: not a PEM private key (EdDSA needs one)")

    def test_publicKey(self) -> None:
        public = ed25519.Ed25519PrivateKey.generate().public_key()
        pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.assertRefused(pem, 0o600, "--token-key: {path}: is a public key; issuing tokens needs the private key")
