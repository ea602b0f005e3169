"""
C{twistd securenet}'s options, config file, app loading and service, in
process; and the endpoint-string plugins through Twisted's own parsers.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.application.internet import StreamServerEndpointService
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from securenet import _threads, synchronous_runner, tap
from securenet._reload import CRLWatch, ListenerMaterial, Reloader
from securenet.apps._echo import EchoFactory
from securenet.cred import _strcred
from securenet.cred._checkers import CertificateChecker
from securenet.interfaces import IReloadable
from securenet.sasl._mechanism import ChannelBindings
from securenet.sasl._offer import offered_mechanisms
from securenet.session._endpoint import SessionClientEndpoint
from securenet.session._server import SessionFactory
from securenet.store._records import User
from securenet.store._sqlite import SQLiteStore
from securenet.testing import EphemeralPKI, EventCapture
from securenet.tls._endpoints import SecureClientEndpoint, SecureServerEndpoint
from tests.support import nobody_ids, unprivileged

PKI = EphemeralPKI.create()


class SampleProtocol(Protocol):
    pass


class SampleFactory(Factory):
    protocol = SampleProtocol


sampleFactoryInstance = SampleFactory()


def makeSampleFactory() -> Factory:
    return SampleFactory()


def notAFactory() -> str:
    return "nope"


class OptionsTests(SynchronousTestCase):
    def parse(self, *argv: str) -> tap.Options:
        options = tap.Options()
        options.parseOptions(list(argv))
        return options

    def test_devDefaults(self) -> None:
        """No --listen, --app or --auth: the make-run endpoint, echo, certificate checker."""
        options = self.parse()
        self.assertEqual(options["listen"], [tap.dev_listen()])
        self.assertIn("clientAuth=required", options["listen"][0])
        self.assertEqual(options["app"], "echo")
        [checker] = options["credCheckers"]
        self.assertIsInstance(checker, CertificateChecker)
        self.assertEqual(checker.mapping, "cn")

    def test_repeatedListenAndAuth(self) -> None:
        options = self.parse("--listen", "securenet:1:a=b", "--listen", "securenet:2:a=b", "--auth", "certificate:map=spiffe")
        self.assertEqual(options["listen"], ["securenet:1:a=b", "securenet:2:a=b"])
        [checker] = options["credCheckers"]
        self.assertEqual(checker.mapping, "spiffe")

    def test_badAuthArgument(self) -> None:
        """A checker that cannot be made stops twistd with exit 1 (and one line on stderr)."""
        with self.assertRaises(tap.StartupError) as caught:
            self.parse("--auth", "certificate:map=nope")
        self.assertEqual(caught.exception.code, 1)

    def test_unknownAuthType(self) -> None:
        with self.assertRaises(usage.UsageError) as caught:
            self.parse("--auth", "kerberos")
        self.assertIn("--auth kerberos: no such checker type 'kerberos'", str(caught.exception))

    def writeConfig(self, text: str) -> Path:
        path = Path(self.mktemp())
        path.write_text(text)
        return path

    def test_config(self) -> None:
        """The config file's settings apply where the command line is silent."""
        path = self.writeConfig('listen = ["securenet:9:x=y"]\napp = "echo"\nauth = ["certificate:map=dns"]\npolicy = "p.toml"\n')
        options = self.parse("--config", str(path))
        self.assertEqual(options["listen"], ["securenet:9:x=y"])
        self.assertEqual(options["policy"], "p.toml")
        self.assertEqual(options["credCheckers"][0].mapping, "dns")

    def test_commandLineWins(self) -> None:
        path = self.writeConfig('listen = ["securenet:9:x=y"]\napp = "from.config"\n')
        options = self.parse("--config", str(path), "--listen", "securenet:10:x=y", "--app", "echo")
        self.assertEqual((options["listen"], options["app"]), (["securenet:10:x=y"], "echo"))

    def test_configRefusals(self) -> None:
        """Each bad config is refused naming the file and the problem."""
        cases = {
            "unknown key 'colour'": 'colour = "blue"\n',
            "not valid TOML": "listen = [\n",
            "listen must be a list of strings": 'listen = "securenet:1"\n',
            "auth must be a list of strings": "auth = [1]\n",
            "app must be a string": "app = 3\n",
            "policy must be a string": "policy = [1]\n",
        }
        for expected, text in cases.items():
            path = self.writeConfig(text)
            with self.assertRaises(usage.UsageError) as caught:
                self.parse("--config", str(path))
            self.assertIn(str(path), str(caught.exception))
            self.assertIn(expected, str(caught.exception))

    def test_missingConfig(self) -> None:
        with self.assertRaises(usage.UsageError) as caught:
            self.parse("--config", "/nonexistent/securenet.toml")
        self.assertIn("/nonexistent/securenet.toml: file does not exist", str(caught.exception))


class LoadAppTests(SynchronousTestCase):
    def test_builtin(self) -> None:
        self.assertIsInstance(tap.load_app("echo"), EchoFactory)

    def test_kinds(self) -> None:
        """A protocol class, a factory class, a factory instance, a callable returning a factory."""
        here = __name__
        self.assertIs(tap.load_app(f"{here}.SampleProtocol").protocol, SampleProtocol)  # type: ignore[attr-defined]
        self.assertIsInstance(tap.load_app(f"{here}.SampleFactory"), SampleFactory)
        self.assertIs(tap.load_app(f"{here}.sampleFactoryInstance"), sampleFactoryInstance)
        self.assertIsInstance(tap.load_app(f"{here}.makeSampleFactory"), SampleFactory)

    def test_refusals(self) -> None:
        with self.assertRaises(usage.UsageError) as caught:
            tap.load_app("no.such.module")
        self.assertIn("--app no.such.module: cannot import it", str(caught.exception))
        with self.assertRaises(usage.UsageError) as caught:
            tap.load_app(f"{__name__}.notAFactory")
        self.assertIn("is not a protocol factory", str(caught.exception))


class MakeServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.certs = PKI.save(Path(self.mktemp()))

    def test_servicePerListen(self) -> None:
        listen = f"securenet:0:certKey={self.certs / 'server.pem'}:privateKey={self.certs / 'server.key'}"
        options = tap.Options()
        options.parseOptions(
            ["--listen", listen, "--listen", listen.replace(":0:", ":0:interface=\\:\\:1:"), "--auth", "anonymous"]
        )
        service = tap.makeService(options)
        children = list(service)  # type: ignore[call-overload]
        self.assertEqual(len(children), 2)
        for child in children:
            self.assertIsInstance(child, StreamServerEndpointService)
            self.assertIsInstance(child.endpoint, SecureServerEndpoint)
            self.assertIsInstance(child.factory, SessionFactory)
            self.assertIsInstance(child.factory.wrappedFactory, EchoFactory)

    def test_policyReachesTheSession(self) -> None:
        """--policy FILE is loaded once and carried by every listener's session factory."""
        policy = Path(self.mktemp())
        policy.write_text('[roles.reader]\npermissions = ["kv.read:**"]\n')
        listen = f"securenet:0:certKey={self.certs / 'server.pem'}:privateKey={self.certs / 'server.key'}"
        options = tap.Options()
        options.parseOptions(["--listen", listen, "--auth", "anonymous", "--policy", str(policy)])
        [child] = list(tap.makeService(options))  # type: ignore[call-overload]
        from securenet.authz import ReloadablePolicy
        from securenet.interfaces import IPolicy

        self.assertTrue(IPolicy.providedBy(child.factory.policy))
        self.assertIsInstance(child.factory.policy, ReloadablePolicy)
        self.assertEqual(child.factory.policy.current.permissions_of("reader"), ("kv.read:**",))

    def test_badPolicyIsOneLine(self) -> None:
        """A bad policy stops twistd (exit 1) with the file and line."""
        policy = Path(self.mktemp())
        policy.write_text('[roles.reader]\npermissions = ["kv.read:**"]\nbogus = 1\n')
        listen = f"securenet:0:certKey={self.certs / 'server.pem'}:privateKey={self.certs / 'server.key'}"
        options = tap.Options()
        options.parseOptions(["--listen", listen, "--auth", "anonymous", "--policy", str(policy)])
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        with self.assertRaises(tap.StartupError) as caught:
            tap.makeService(options)
        self.assertEqual(caught.exception.code, 1)
        self.assertIn(f"{policy}:3:", stderr.getvalue())
        self.assertEqual(len(stderr.getvalue().strip().splitlines()), 1)

    def test_badEndpointIsOneLine(self) -> None:
        """A configuration error becomes StartupError (exit 1) with the endpoint and reason."""
        options = tap.Options()
        options.parseOptions(["--listen", f"securenet:0:certKey={self.certs / 'server.pem'}"])
        with self.assertRaises(tap.StartupError) as caught:
            tap.makeService(options)
        self.assertEqual(caught.exception.code, 1)


class EndpointPluginTests(SynchronousTestCase):
    """`securenet:` works through Twisted's serverFromString / clientFromString."""

    def test_server(self) -> None:
        certs = PKI.save(Path(self.mktemp()))
        endpoint = serverFromString(
            MemoryReactorClock(), f"securenet:0:certKey={certs / 'server.pem'}:privateKey={certs / 'server.key'}"
        )
        self.assertIsInstance(endpoint, SecureServerEndpoint)

    def test_client(self) -> None:
        certs = PKI.save(Path(self.mktemp()))
        endpoint = clientFromString(MemoryReactorClock(), f"securenet:host=localhost:port=1:trustRoots={certs / 'ca.pem'}")
        # TLS, then the authentication exchange (tests/session/test_endpoint.py).
        self.assertIsInstance(endpoint, SessionClientEndpoint)
        self.assertIsInstance(endpoint.tls, SecureClientEndpoint)


# -- twistd securenet --help -----------------------------------------------------------


class DrainOptionsTests(SynchronousTestCase):
    """C{--drain SECONDS} and the config key C{drain}: the graceful stop's drain time (tests/test_service.py)."""

    def parse(self, *argv: str) -> tap.Options:
        options = tap.Options()
        options.parseOptions(list(argv))
        return options

    def config(self, text: str) -> str:
        path = Path(self.mktemp())
        path.write_text(text)
        return str(path)

    def test_default(self) -> None:
        self.assertEqual(self.parse()["drain"], 30)

    def test_values(self) -> None:
        """A whole number of seconds; 0 closes the connections at once."""
        self.assertEqual([self.parse("--drain", v)["drain"] for v in ("5", "0", "600")], [5, 0, 600])

    def test_refused(self) -> None:
        """A bad value: one usage error naming the option, the value and why."""
        expected = {
            "-1": "--drain -1: must be at least 0 seconds",
            "ten": "--drain ten: not a whole number of seconds",
            "1.5": "--drain 1.5: not a whole number of seconds",
            "": "--drain : not a whole number of seconds",
        }
        for value, message in expected.items():
            with self.assertRaises(usage.UsageError) as caught:
                self.parse("--drain", value)
            self.assertEqual(str(caught.exception), message)

    def test_config(self) -> None:
        """The config key applies when the command line is silent; the command line wins."""
        path = self.config("drain = 7\n")
        self.assertEqual(self.parse("--config", path)["drain"], 7)
        self.assertEqual(self.parse("--config", path, "--drain", "2")["drain"], 2)
        self.assertIn("drain", tap.CONFIG_KEYS)

    def test_configRefused(self) -> None:
        for text in ('drain = "soon"\n', "drain = true\n", "drain = 1.5\n"):
            path = self.config(text)
            with self.assertRaises(usage.UsageError) as caught:
                self.parse("--config", path)
            self.assertEqual(str(caught.exception), f"--config {path}: drain must be a whole number of seconds")
        path = self.config("drain = -3\n")
        with self.assertRaises(usage.UsageError) as caught:
            self.parse("--config", path)
        self.assertEqual(str(caught.exception), "--drain -3: must be at least 0 seconds")

    def test_service(self) -> None:
        """makeService gives the service the drain time."""
        certs = PKI.save(Path(self.mktemp()))
        listen = f"securenet:0:interface=127.0.0.1:certKey={certs / 'server.pem'}:privateKey={certs / 'server.key'}"
        service = tap.makeService(self.parse("--listen", listen, "--auth", "anonymous", "--drain", "4"))
        assert isinstance(service, tap.SecurenetService)
        self.assertEqual(service.drain, 4)


#: Options every twistd plugin has (Twisted's), which the synopsis need not repeat.
GENERIC_OPTIONS = {"help", "version", "help-auth", "help-auth-type"}


def help_sentences(text: str) -> list[str]:
    """The lines of a --help text without the option column (where runs of spaces align the columns)."""
    return [re.sub(r"^\s*(?:-\w, )?--[\w-]+=?(?=\s)", "", line).strip() for line in text.splitlines()]


class HelpTests(SynchronousTestCase):
    def test_singleSpaces(self) -> None:
        """--help's sentences have no runs of spaces (no implicit concatenation or docstring indentation shows)."""
        for line in help_sentences(str(tap.Options())):
            self.assertNotIn("  ", line)

    def test_synopsisNamesEveryOption(self) -> None:
        """The usage line names every option of twistd securenet (--policy and --log-level too)."""
        options = tap.Options()
        synopsis = options.getSynopsis()
        names = {name.rstrip("=") for name in options.longOpt} - GENERIC_OPTIONS
        self.assertEqual(
            names,
            {
                "listen",
                "app",
                "auth",
                "policy",
                "config",
                "http",
                "token-key",
                "token-ttl",
                "token-key-overlap",
                "refresh-ttl",
                "log-level",
                "audit-failure",
                "expiry-margin",
                "drain",
                "workers",
                "metrics",
            },
        )
        for name in sorted(names):
            self.assertIn(f"[--{name} ", synopsis)
        self.assertNotIn("  ", synopsis)


# -- the credential database at start-up --------------------------------------------------


def public_key_file(testcase: SynchronousTestCase) -> Path:
    path = Path(testcase.mktemp())
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    path.write_bytes(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def scratch_directory(testcase: SynchronousTestCase) -> Path:
    """A new directory that the user of L{unprivileged} owns (root's test directory may be closed to nobody)."""
    directory = Path(tempfile.mkdtemp(prefix="securenet-tap-test-"))

    def remove() -> None:
        for path, _, _ in os.walk(directory):
            os.chmod(path, 0o700)
        shutil.rmtree(directory, ignore_errors=True)

    testcase.addCleanup(remove)
    if os.geteuid() == 0:
        os.chown(directory, *nobody_ids())
    return directory


class CredentialDatabaseTests(SynchronousTestCase):
    """--auth with a credential database: it must exist, and the server must be able to write it."""

    def setUp(self) -> None:
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)

    def refused(self, *argv: str) -> str:
        """Parse C{argv}, expecting twistd to stop with exit 1 and one line: return it."""
        with self.assertRaises(tap.StartupError) as caught:
            tap.Options().parseOptions(list(argv))
        self.assertEqual(caught.exception.code, 1)
        line = self.stderr.getvalue()
        self.stderr.seek(0)
        self.stderr.truncate()
        self.assertEqual(len(line.splitlines()), 1, line)
        return line.rstrip("\n")

    def test_missingDatabaseRefused(self) -> None:
        """
        A credential database that does not exist is refused, for every
        checker with a database (sqlite:PATH and each db= option), with one
        line naming it and how to make one; no file is created.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        db = directory / "typo.db"
        key = public_key_file(self)
        for description, auth_type in [
            (f"sqlite:{db}", "sqlite"),
            (f"sqlite:db={db},scramIterations=4096", "sqlite"),
            (f"apikey:db={db}", "apikey"),
            (f"totp:db={db}", "totp"),
            (f"jwt:key={key},db={db}", "jwt"),
        ]:
            line = self.refused("--auth", description)
            self.assertEqual(
                line,
                f"twistd securenet: error: --auth {auth_type}: {db}: no such credential database"
                f" (create it with: securenet users add NAME --db {db})",
            )
            self.assertEqual(os.listdir(directory), [])

    def test_missingDirectoryRefused(self) -> None:
        """Nor is a directory made for it."""
        directory = Path(self.mktemp())
        db = directory / "sub" / "creds.db"
        line = self.refused("--auth", f"sqlite:{db}")
        self.assertIn(f"--auth sqlite: {db}: no such credential database", line)
        self.assertFalse(directory.exists())

    def test_readOnlyDatabaseRefused(self) -> None:
        """
        A database file the server cannot write (mode 0400) stops twistd with
        one line naming it, not a StoreError and an IndexError: the fake-salt
        secret is made in a write transaction, whose failure was ignored.
        """
        db = scratch_directory(self) / "creds.db"
        with unprivileged():
            with SQLiteStore.open(db) as store:
                store.add_user(User("alice"))
            db.chmod(0o400)
            line = self.refused("--auth", f"sqlite:{db}")
        self.assertEqual(
            line,
            f"twistd securenet: error: --auth sqlite: {db}: the credential database cannot be written"
            " (attempt to write a readonly database); the server records failed logins and used TOTP codes in it",
        )

    def test_readOnlyDirectoryRefused(self) -> None:
        """A database in a directory the server cannot write (0500) is refused too, with one line naming it."""
        directory = scratch_directory(self) / "dir"
        db = directory / "creds.db"
        with unprivileged():
            with SQLiteStore.open(db) as store:
                store.add_user(User("alice"))
            directory.chmod(0o500)
            for mode in (0o600, 0o400):
                db.chmod(mode)
                line = self.refused("--auth", f"sqlite:{db}")
                self.assertTrue(line.startswith(f"twistd securenet: error: --auth sqlite: {db}: "), line)
                self.assertIn("readonly database", line)


# -- listening ----------------------------------------------------------------------------


def held_port(testcase: SynchronousTestCase) -> int:
    """A port on 127.0.0.1 that this process listens on until the test ends."""
    holder = socket.socket()
    testcase.addCleanup(holder.close)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return int(holder.getsockname()[1])


class ListenFailureTests(SynchronousTestCase):
    """A listener that cannot bind stops twistd with one line: never a server listening nowhere."""

    def setUp(self) -> None:
        self.certs = PKI.save(Path(self.mktemp()))
        self.terminal = io.StringIO()
        self.patch(sys, "__stderr__", self.terminal)
        self.events = EventCapture(self)

    def test_portInUse(self) -> None:
        """
        --listen on a port in use: privilegedStartService raises ListenError
        (exit 1) naming the port, the OS reason and the endpoint, on the
        terminal's stderr and in the log; nothing says it listens.
        """
        port = held_port(self)
        listen = (
            f"securenet:{port}:interface=127.0.0.1:certKey={self.certs / 'server.pem'}:privateKey={self.certs / 'server.key'}"
        )
        options = tap.Options()
        options.parseOptions(["--listen", listen, "--auth", "anonymous"])
        service = tap.makeService(options)
        errors: list[dict[str, Any]] = []
        observer = cast(ILogObserver, lambda event: errors.append(event) if event.get("log_level") == LogLevel.error else None)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        with self.assertRaises(SystemExit) as caught:
            service.privilegedStartService()
        expected = f"cannot listen on 127.0.0.1:{port}: Address already in use (--listen {listen})"
        self.assertIsInstance(caught.exception, tap.ListenError)
        self.assertIsInstance(caught.exception, Exception)  # so that twistd removes its pidfile
        self.assertEqual((caught.exception.code, str(caught.exception)), (1, expected))
        self.assertEqual(self.terminal.getvalue(), f"twistd securenet: error: {expected}\n")
        self.assertEqual([formatEvent(e) for e in errors], [expected])
        self.assertEqual(self.events.of("service.listening"), [])

    def test_failureLater(self) -> None:
        """A bind that fails once the reactor runs: the one line in the log, and the reactor stops."""
        waiting: Deferred[Any] = Deferred()
        endpoint = cast(Any, type("Later", (), {"listen": lambda self, factory: waiting}))()
        reactor = MemoryReactorClock()
        reactor.running = True
        stopped: list[bool] = []
        self.patch(reactor, "stop", lambda: stopped.append(True))
        listener = tap.Listener(endpoint, Factory(), option="--listen", description="securenet:1:x=y", reactor=reactor)
        errors: list[str] = []
        observer = cast(ILogObserver, lambda e: errors.append(formatEvent(e)) if e["log_level"] >= LogLevel.error else None)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        listener.privilegedStartService()
        self.assertEqual((errors, stopped), ([], []))
        waiting.errback(CannotListenError("::1", 1, OSError(13, "Permission denied")))
        self.assertEqual(errors, ["cannot listen on [::1]:1: Permission denied (--listen securenet:1:x=y); stopping"])
        self.assertEqual(stopped, [True])
        self.assertEqual(self.terminal.getvalue(), "")


class ListeningTests(TestCase):
    def test_listeningLoggedOnceBound(self) -> None:
        """'securenet listening' is logged once the port is bound, with the port the kernel chose."""
        certs = PKI.save(Path(self.mktemp()))
        listen = f"securenet:0:interface=127.0.0.1:certKey={certs / 'server.pem'}:privateKey={certs / 'server.key'}"
        options = tap.Options()
        options.parseOptions(["--listen", listen, "--auth", "anonymous"])
        events = EventCapture(self)
        service = tap.makeService(options)
        self.assertEqual(events.of("service.listening"), [])
        service.privilegedStartService()
        self.addCleanup(service.stopService)
        [child] = list(service)  # type: ignore[call-overload]
        ports: list[IListeningPort] = []

        def bound(port: IListeningPort) -> IListeningPort:
            ports.append(port)
            return port

        child._waitingForPort.addCallback(bound)
        port = cast(IPv4Address, ports[0].getHost()).port
        [event] = events.of("service.listening")
        self.assertEqual(
            (event["kind"], event["endpoint"], event["address"], event["port"]), ("stream", listen, "127.0.0.1", port)
        )
        self.assertNotEqual(port, 0)
        self.assertTrue(formatEvent(event).startswith(f"securenet listening on 127.0.0.1:{port} ({listen}): profile "))


# -- SIGHUP ---------------------------------------------------------------------------------


class HangupTests(SynchronousTestCase):
    def test_sighupReloads(self) -> None:
        """
        While the service runs, SIGHUP (which by default kills the process)
        reloads from the reactor's loop: the reloader's reloadables are
        prepared and committed, and the service keeps running; without a
        reloader it logs one line.  Once it stops, the previous handler is back.
        """
        previous = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        calls: list[tuple[Any, ...]] = []
        reactor = cast(Any, type("Reactor", (), {"callFromThread": lambda self, *call: calls.append(call)}))()
        committed: list[str] = []

        @implementer(IReloadable)
        class Material:
            what = "policy"
            source = "policy.toml"

            def prepare(self) -> Callable[[], None]:
                return lambda: committed.append("policy")

        reloader = Reloader(reactor, [Material()], runner=synchronous_runner)
        service = tap.SecurenetService(reactor, reloader=reloader)
        service.startService()
        self.assertNotIn(signal.getsignal(signal.SIGHUP), (signal.SIG_DFL, previous))
        os.kill(os.getpid(), signal.SIGHUP)
        [(function, *args)] = calls
        lines: list[str] = []
        observer = cast(ILogObserver, lambda event: lines.append(f"{event['log_level'].name} {formatEvent(event)}"))
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.assertEqual(committed, [])
        function(*args)
        self.assertEqual(committed, ["policy"])
        self.assertEqual(lines, ["info reloaded policy (policy.toml)", "info SIGHUP: reloaded 1, refused 0"])
        self.assertTrue(service.running)
        service.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), previous)

        lines.clear()
        bare = tap.SecurenetService(reactor)
        self.assertIsNone(bare.reload())
        self.assertEqual(lines, ["warn SIGHUP received: nothing to reload; ignoring"])

    def test_makeServiceHandlesSighup(self) -> None:
        """The service twistd runs is the one that handles SIGHUP."""
        certs = PKI.save(Path(self.mktemp()))
        options = tap.Options()
        options.parseOptions(
            ["--listen", f"securenet:0:certKey={certs / 'server.pem'}:privateKey={certs / 'server.key'}", "--auth", "anonymous"]
        )
        self.assertIsInstance(tap.makeService(options), tap.SecurenetService)

    def test_everyListenerReloads(self) -> None:
        """
        makeService's reloader holds every listener's files, the HTTP API's
        too; a listener with a CRL file gets a CRL watch at its crlPoll.
        """
        certs = PKI.save(Path(self.mktemp()))
        (certs / "crl.pem").write_bytes(PKI.ca.crl([]).public_bytes(serialization.Encoding.PEM))
        base = f"securenet:0:certKey={certs / 'server.pem'}:privateKey={certs / 'server.key'}"
        with_crl = f"{base}:trustRoots={certs / 'ca.pem'}:crl={certs / 'crl.pem'}:crlPoll=7"
        options = tap.Options()
        options.parseOptions(["--listen", with_crl, "--listen", base, "--http", base, "--auth", "anonymous"])
        service = tap.makeService(options)
        assert isinstance(service, tap.SecurenetService) and service.reloader is not None
        materials = [r for r in service.reloader.reloadables if isinstance(r, ListenerMaterial)]
        self.assertEqual(len(materials), 3)
        endpoints = [listener.tls_endpoint for listener in service.listeners()]
        self.assertEqual([m.endpoint for m in materials], endpoints)
        [watch] = [s for s in service if isinstance(s, CRLWatch)]
        self.assertIs(watch.crl.endpoint, endpoints[0])
        self.assertEqual(watch.interval, 7.0)

    def test_policyTokenKeysAndCheckersReload(self) -> None:
        """SIGHUP also reloads --policy (the object every holder shares), --token-key's keys and --auth jwt's key file."""
        work = Path(self.mktemp())
        certs = PKI.save(work / "certs")
        policy = work / "policy.toml"
        policy.write_text('[roles.reader]\npermissions = ["echo"]\n')
        signing = work / "token.key"
        signing.write_bytes(
            ed25519.Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        os.chmod(signing, 0o600)
        verifying = work / "token.pub"
        verifying.write_bytes(
            ed25519.Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        database = work / "users.db"
        SQLiteStore.open(database).close()
        listen = f"securenet:0:certKey={certs / 'server.pem'}:privateKey={certs / 'server.key'}"
        # The database's and the hasher's threads would start with the next test that runs the reactor, and never stop.
        self.patch(_threads, "thread_runner", lambda reactor: synchronous_runner)
        self.patch(_strcred, "hashing_runner", lambda reactor: synchronous_runner)
        options = tap.Options()
        options.parseOptions(
            ["--listen", listen, "--policy", str(policy), "--auth", f"sqlite:{database}", "--token-key", str(signing)]
        )
        service = tap.makeService(options)
        assert isinstance(service, tap.SecurenetService) and service.reloader is not None
        self.assertEqual([r.what for r in service.reloader.reloadables], ["tls", "policy", "token-keys"])
        jwt = tap.Options()
        jwt.parseOptions(["--listen", listen, "--auth", f"jwt:key={verifying}"])
        jwt_service = tap.makeService(jwt)
        assert isinstance(jwt_service, tap.SecurenetService) and jwt_service.reloader is not None
        self.assertEqual([r.what for r in jwt_service.reloader.reloadables], ["tls", "checker"])

    def test_workers(self) -> None:
        """
        --workers N (default 1: this process serves); bad values are refused
        naming the option; with more than one, makeService checks the whole
        configuration and returns the supervisor, with the listeners (--http's
        too) and the arguments as given.
        """
        from securenet._workers import Supervisor

        certs = PKI.save(Path(self.mktemp()))
        listen = f"securenet:0:certKey={certs / 'server.pem'}:privateKey={certs / 'server.key'}"
        one = tap.Options()
        one.parseOptions(["--listen", listen, "--auth", "anonymous"])
        self.assertEqual(one["workers"], 1)
        self.assertIsInstance(tap.makeService(one), tap.SecurenetService)
        for bad, why in (("0", "must be from 1 to 64"), ("65", "must be from 1 to 64"), ("two", "not a whole number")):
            with self.assertRaises(usage.UsageError) as caught:
                tap.Options().parseOptions(["--workers", bad])
            self.assertEqual(str(caught.exception), f"--workers {bad}: {why}")
        args = ["--workers", "3", "--listen", listen, "--http", listen, "--auth", "anonymous", "--drain", "5"]
        three = tap.Options()
        three.parseOptions(args)
        supervisor = tap.makeService(three)
        assert isinstance(supervisor, Supervisor)
        self.assertEqual(supervisor.count, 3)
        self.assertEqual(supervisor.args, args)
        self.assertEqual(supervisor.listener_specs, [("--listen", listen), ("--http", listen)])
        self.assertEqual(supervisor.drain, 5)
        broken = tap.Options()
        broken.parseOptions(["--workers", "2", "--listen", listen.replace("server.pem", "gone.pem"), "--auth", "anonymous"])
        with self.assertRaises(tap.StartupError):
            tap.makeService(broken)

    def test_expiryMargin(self) -> None:
        """--expiry-margin is days (default 14); a bad value is refused naming it; a certificate inside it warns at start."""
        options = tap.Options()
        options.parseOptions(["--auth", "anonymous", "--http", "securenet:0:certKey=a:privateKey=b"])
        self.assertEqual(options["expiry-margin"], 14 * 86400)
        for bad in ("-1", "soon", "inf"):
            with self.assertRaises(usage.UsageError) as caught:
                tap.Options().parseOptions(["--expiry-margin", bad])
            self.assertIn(f"--expiry-margin {bad}", str(caught.exception))
        certs = PKI.save(Path(self.mktemp()))
        options = tap.Options()
        options.parseOptions(
            [
                "--expiry-margin",
                "400",
                "--listen",
                f"securenet:0:certKey={certs / 'server.pem'}:privateKey={certs / 'server.key'}",
                "--auth",
                "anonymous",
            ]
        )
        lines: list[str] = []
        observer = cast(ILogObserver, lambda event: lines.append(formatEvent(event)))
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        tap.makeService(options)
        [warning] = [line for line in lines if "expires at" in line]
        self.assertIn(str(certs / "server.pem"), warning)


# -- Twisted's own password checkers -----------------------------------------------------------


ADVICE = "use --auth sqlite:PATH (hashed passwords, SCRAM) outside tests"


class TwistedCheckerTests(SynchronousTestCase):
    """--auth memory, file and unix: twisted.cred's IUsernamePassword checkers are offered PLAIN and work."""

    def setUp(self) -> None:
        self.certs = PKI.save(Path(self.mktemp()))
        self.listen = f"securenet:0:certKey={self.certs / 'server.pem'}:privateKey={self.certs / 'server.key'}"

    def service(self, *auth: str) -> SessionFactory:
        options = tap.Options()
        options.parseOptions(["--listen", self.listen, *[a for value in auth for a in ("--auth", value)]])
        [child] = list(tap.makeService(options))  # type: ignore[call-overload]
        return child.factory  # type: ignore[no-any-return]

    def offered(self, session: SessionFactory) -> list[str]:
        return list(offered_mechanisms(session.portal, False, ChannelBindings()))

    def login(self, session: SessionFactory, name: bytes, password: bytes) -> object:
        checker = session.portal.checkers[IUsernamePassword]
        return self.successResultOf(defer.maybeDeferred(checker.requestAvatarId, UsernamePassword(name, password)))

    def warnings(self) -> list[str]:
        lines: list[str] = []
        observer = cast(
            ILogObserver,
            lambda e: (
                lines.append(formatEvent(e))
                if e.get("log_namespace") == "securenet.tap" and e["log_level"] == LogLevel.warn
                else None
            ),
        )
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return lines

    def test_memory(self) -> None:
        """--auth memory:NAME:PASSWORD offers PLAIN, its users log in, and it is warned about at start-up."""
        warnings = self.warnings()
        session = self.service("memory:alice:pw:bob:pw2")
        self.assertEqual(self.offered(session), ["PLAIN"])
        self.assertEqual(self.login(session, b"alice", b"pw"), b"alice")
        self.assertEqual(self.login(session, b"bob", b"pw2"), b"bob")
        self.failureResultOf(session.portal.checkers[IUsernamePassword].requestAvatarId(UsernamePassword(b"alice", b"pw2")))
        self.assertEqual(
            warnings,
            [f"--auth memory: passwords are kept in plaintext (from the command line, in memory); {ADVICE}"],
        )

    def test_file(self) -> None:
        """--auth file:PATH offers PLAIN, its users log in, and it is warned about at start-up, naming the file."""
        path = Path(self.mktemp())
        path.write_text("alice:pw\n")
        warnings = self.warnings()
        session = self.service(f"file:{path}")
        self.assertEqual(self.offered(session), ["PLAIN"])
        self.assertEqual(self.login(session, b"alice", b"pw"), b"alice")
        self.assertEqual(
            warnings,
            [f"--auth file: passwords are kept in plaintext (in {str(path)!r}); {ADVICE}"],
        )

    def test_unix(self) -> None:
        """--auth unix (the system's passwords, not tried here) offers PLAIN; no warning."""
        warnings = self.warnings()
        self.assertEqual(self.offered(self.service("unix")), ["PLAIN"])
        self.assertEqual(warnings, [])

    def test_noWarningOtherwise(self) -> None:
        warnings = self.warnings()
        self.service("anonymous", "certificate")
        self.assertEqual(warnings, [])
