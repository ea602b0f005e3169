"""
Tests for L{securenet.tls.endpoints}: C{securenet:} endpoint strings.

Every documented key is parsed and takes effect; every bad key or value is
refused naming it; unsafe or mismatched files are refused with the PKI
layer's typed errors.  The endpoints run on a L{MemoryReactorClock}, and a
server and client endpoint are joined in memory to show the factories they
hand the reactor really carry bytes.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from typing import Any, cast

from cryptography.hazmat.primitives.serialization import Encoding
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from securenet.pki._ca import CertificateAuthority
from securenet.pki._errors import FileMissing, InsecurePermissions, KeyMismatch
from securenet.pki._pins import spki_pin
from securenet.session._client import connect
from securenet.session._server import SessionFactory
from securenet.testing import EphemeralPKI
from securenet.tls._endpoints import (
    CLIENT_KEYS,
    SERVER_KEYS,
    EndpointConfigurationError,
    SecureClientEndpoint,
    SecureServerEndpoint,
    client_endpoint,
    server_endpoint,
    split_description,
)
from securenet.tls._errors import MaterialRefused, PinMismatch, TLSConfigurationError
from securenet.tls._guard import TLSGuardFactory
from securenet.tls._profiles import INTERMEDIATE, MODERN
from tests.support.tls import CLIENT_DATA, SERVER_DATA, RecordingFactory


@functools.cache
def pki() -> EphemeralPKI:
    """One PKI for the module, with the client certificate the tests use."""
    made = EphemeralPKI.create()
    made.client("alice")
    return made


def escape(value: str) -> str:
    """Escape a value for an endpoint string (Twisted's grammar: backslash before ':' and '\\')."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


def keys_of(description: str) -> set[str]:
    return set(split_description(description)[1])


class EndpointTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = pki().save(Path(self.mktemp()).absolute())
        self.reactor = MemoryReactorClock()
        crl = self.dir / "crl.pem"
        crl.write_bytes(pki().ca.crl([]).public_bytes(Encoding.PEM))

    def path(self, name: str) -> str:
        return escape(str(self.dir / name))

    def server(self, extra: str = "", port: str = "8443") -> str:
        """A minimal valid server description, plus C{extra}."""
        return f"securenet:{port}:certKey={self.path('server.pem')}:privateKey={self.path('server.key')}{extra}"

    def client(self, extra: str = "") -> str:
        """A minimal valid client description, plus C{extra}."""
        return f"securenet:host=localhost:port=8443:trustRoots={self.path('ca.pem')}{extra}"


class ServerEndpointTests(EndpointTestCase):
    """C{securenet:} server strings."""

    def test_everyKey(self) -> None:
        """Every key of SERVER_KEYS is accepted and lands in the policy or the listen call."""
        description = (
            "securenet:port=0:interface=127.0.0.2:backlog=7"
            f":certKey={self.path('server.pem')}:privateKey={self.path('server.key')}"
            f":trustRoots={self.path('ca.pem')}:clientAuth=optional:crl={self.path('crl.pem')}"
            ":profile=modern:handshakeTimeout=2.5:sessionTickets=no:alpn=h2,http/1.1"
            f":expectPins={spki_pin(pki().ca.certificate)}:expectRoots={self.path('ca.pem')}:crlPoll=5"
            ":proxyProtocol=10.0.0.0/8,127.0.0.1"
        )
        # fd= excludes port and interface: test_fdAdoptsListeningSocket.
        self.assertEqual(keys_of(description) | {"fd"}, set(SERVER_KEYS))
        endpoint = server_endpoint(self.reactor, description)
        self.assertIsInstance(endpoint, SecureServerEndpoint)
        policy = endpoint.policy
        self.assertEqual(policy.certificate_chain[0], pki().server.certificate)
        self.assertEqual(policy.trust_roots, (pki().ca.certificate,))
        self.assertEqual(policy.client_auth, "optional")
        self.assertIsNotNone(policy.crl)
        self.assertEqual(policy.crl_source, str(self.dir / "crl.pem"))
        self.assertIs(policy.profile, MODERN)
        self.assertEqual(policy.handshake_timeout, 2.5)
        self.assertFalse(policy.session_tickets)
        self.assertEqual(policy.alpn, (b"h2", b"http/1.1"))
        self.assertEqual(policy.expect_pins, (spki_pin(pki().ca.certificate),))
        self.assertEqual(policy.expect_roots, (pki().ca.certificate,))
        self.assertEqual(endpoint.crl_poll, 5.0)
        self.assertEqual([str(n) for n in endpoint.proxy_sources], ["10.0.0.0/8", "127.0.0.1/32"])

        app = Factory()
        port = self.successResultOf(endpoint.listen(app))
        self.assertIsNotNone(port)
        [(port_number, factory, backlog, interface)] = self.reactor.tcpServers
        self.assertEqual((port_number, backlog, interface), (0, 7, "127.0.0.2"))
        # proxyProtocol: the source filter, then Twisted's PROXY-protocol wrapper, then TLS.
        factory = cast(Any, factory).wrapped.wrappedFactory
        self.assertIsInstance(factory, TLSMemoryBIOFactory)
        guard = cast(TLSMemoryBIOFactory, factory).wrappedFactory
        self.assertIsInstance(guard, TLSGuardFactory)
        self.assertIs(cast(TLSGuardFactory, guard).wrappedFactory, app)
        self.assertIs(cast(TLSGuardFactory, guard).reactor, self.reactor)

    def test_expectPinsRefusesUnpinnedCertificate(self) -> None:
        """
        A server whose certificate (and CA) are not among expectPins does not
        start: the error names the file and the pins it has; a bad pin is
        refused naming it.
        """
        other_pin = spki_pin(CertificateAuthority.create("other CA").certificate)
        with self.assertRaises(MaterialRefused) as caught:
            server_endpoint(self.reactor, self.server(f":expectPins={other_pin}"))
        self.assertEqual(caught.exception.path, str(self.dir / "server.pem"))
        self.assertIn(spki_pin(pki().server.certificate), str(caught.exception))
        self.assertIn("expectPins", str(caught.exception))
        with self.assertRaises(MaterialRefused) as bad:
            server_endpoint(self.reactor, self.server(":expectPins=sha256/nope"))
        self.assertIn("sha256/nope", str(bad.exception))
        with self.assertRaises(EndpointConfigurationError):
            server_endpoint(self.reactor, self.server(":expectPins=,"))
        # The server's own pin, or its CA's (found among trustRoots or expectRoots), will do.
        own = spki_pin(pki().server.certificate)
        self.assertEqual(server_endpoint(self.reactor, self.server(f":expectPins={own}")).policy.expect_pins, (own,))
        ca = spki_pin(pki().ca.certificate)
        for roots in (":trustRoots", ":expectRoots"):
            endpoint = server_endpoint(self.reactor, self.server(f":expectPins={other_pin},{ca}{roots}={self.path('ca.pem')}"))
            self.assertEqual(endpoint.policy.expect_pins, (other_pin, ca))
        with self.assertRaises(MaterialRefused):
            server_endpoint(self.reactor, self.server(f":expectPins={ca}"))

    def test_expectRootsRefusesOtherChain(self) -> None:
        """A certificate that does not verify to expectRoots does not start, naming the file."""
        other = CertificateAuthority.create("other CA")
        roots = self.dir / "other-ca.pem"
        roots.write_bytes(other.certificate.public_bytes(Encoding.PEM))
        with self.assertRaises(MaterialRefused) as caught:
            server_endpoint(self.reactor, self.server(f":expectRoots={escape(str(roots))}"))
        self.assertEqual(caught.exception.path, str(self.dir / "server.pem"))
        self.assertIn("expectRoots", str(caught.exception))

    def test_fdAdoptsListeningSocket(self) -> None:
        """
        fd= adopts an inherited listening TCP socket (systemd socket
        activation, a supervisor): the reactor is asked to adopt that very
        descriptor, with its address family; there is no port to bind.
        """
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            listening = socket.socket(family)
            self.addCleanup(listening.close)
            listening.bind((host, 0))
            listening.listen(5)
            # The endpoint closes the descriptor it adopted (the reactor has its own).
            fd = os.dup(listening.fileno())
            endpoint = server_endpoint(self.reactor, self.server(port=f"fd={fd}"))
            endpoint.listen(Factory())
            fileno, adopted_family, factory = self.reactor.adoptedPorts[-1]
            self.assertEqual((fileno, adopted_family), (fd, family))
            self.assertIsInstance(factory, TLSMemoryBIOFactory)
        self.assertEqual(self.reactor.tcpServers, [])

    def test_fdRefusesWhatIsNotAListeningTCPSocket(self) -> None:
        """fd= names a descriptor that is closed, a file, a UDP socket or a socket not listening: refused, naming it."""
        path = Path(self.mktemp())
        path.write_bytes(b"")
        with open(path, "rb") as f:
            unbound, udp = socket.socket(), socket.socket(type=socket.SOCK_DGRAM)
            self.addCleanup(unbound.close)
            self.addCleanup(udp.close)
            closed = socket.socket()
            closed_fd = closed.fileno()
            closed.close()
            for fd, reason in (
                (closed_fd, "not an open socket"),
                (f.fileno(), "not an open socket"),
                (udp.fileno(), "not a TCP socket"),
                (unbound.fileno(), "the socket is not listening"),
            ):
                with self.assertRaises(EndpointConfigurationError) as caught:
                    server_endpoint(self.reactor, self.server(port=f"fd={fd}"))
                self.assertIn(f"fd={fd}: {reason}", str(caught.exception))
        listening = socket.socket()
        self.addCleanup(listening.close)
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        with self.assertRaises(EndpointConfigurationError) as caught:
            server_endpoint(self.reactor, self.server(f":fd={listening.fileno()}"))
        self.assertIn("give no port", str(caught.exception))

    def test_crlPollNeedsCRL(self) -> None:
        """crlPoll without crl, or a negative one, is refused naming the key; the default is 60 s."""
        with self.assertRaises(EndpointConfigurationError) as caught:
            server_endpoint(self.reactor, self.server(":crlPoll=5"))
        self.assertIn("crlPoll", str(caught.exception))
        with self.assertRaises(EndpointConfigurationError):
            server_endpoint(self.reactor, self.server(f":trustRoots={self.path('ca.pem')}:crl={self.path('crl.pem')}:crlPoll=-1"))
        self.assertEqual(server_endpoint(self.reactor, self.server()).crl_poll, 60.0)

    def test_defaults(self) -> None:
        """The minimal string: port positional, 127.0.0.1, backlog 511, no client auth, intermediate, tickets on."""
        endpoint = server_endpoint(self.reactor, self.server())
        policy = endpoint.policy
        self.assertEqual(policy.client_auth, "none")
        self.assertIs(policy.profile, INTERMEDIATE)
        self.assertTrue(policy.session_tickets)
        self.assertEqual(policy.handshake_timeout, 10.0)
        endpoint.listen(Factory())
        [(port, _, backlog, interface)] = self.reactor.tcpServers
        self.assertEqual((port, backlog, interface), (8443, 511, "127.0.0.1"))

    def test_backlogReachesListen(self) -> None:
        """
        The listen backlog reaches the reactor's listenTCP: 511 by default
        (nginx's; 50 dropped connections under load), or what backlog= says.
        """
        server_endpoint(self.reactor, self.server()).listen(Factory())
        server_endpoint(self.reactor, self.server(":backlog=2048", port="8444")).listen(Factory())
        self.assertEqual([(port, backlog) for port, _, backlog, _ in self.reactor.tcpServers], [(8443, 511), (8444, 2048)])
        self.assertIn("511", SERVER_KEYS["backlog"])

    def test_trustRootsImpliesRequired(self) -> None:
        """Giving trustRoots without clientAuth means clientAuth=required."""
        endpoint = server_endpoint(self.reactor, self.server(f":trustRoots={self.path('ca.pem')}"))
        self.assertEqual(endpoint.policy.client_auth, "required")

    def test_guardFactoryNotWrappedTwice(self) -> None:
        """A factory that is already a TLSGuardFactory (e.g. a SessionFactory) is used as is."""
        guard = TLSGuardFactory(Factory(), self.reactor)
        server_endpoint(self.reactor, self.server()).listen(guard)
        [(_, factory, _, _)] = self.reactor.tcpServers
        self.assertIs(cast(TLSMemoryBIOFactory, factory).wrappedFactory, guard)

    def test_escapedColons(self) -> None:
        """C{\\:} is a literal colon: in a file path, and in an IPv6 interface (which selects TCP6)."""
        odd = Path(self.mktemp()).absolute() / "dir:with:colons"
        pki().save(odd)
        description = (
            f"securenet:8443:interface=\\:\\:1:certKey={escape(str(odd / 'server.pem'))}"
            f":privateKey={escape(str(odd / 'server.key'))}"
        )
        endpoint = server_endpoint(self.reactor, description)
        self.assertEqual(endpoint.policy.certificate_chain[0], pki().server.certificate)
        endpoint.listen(Factory())
        [(_, _, _, interface)] = self.reactor.tcpServers
        self.assertEqual(interface, "::1")

    def test_unknownKey(self) -> None:
        """An unknown key is refused, naming it."""
        with self.assertRaises(EndpointConfigurationError) as caught:
            server_endpoint(self.reactor, self.server(":colour=blue"))
        self.assertIn("'colour'", str(caught.exception))
        self.assertEqual(self.reactor.tcpServers, [])

    def test_portGivenTwice(self) -> None:
        """A port given positionally and as port= is ambiguous: refused."""
        with self.assertRaises(EndpointConfigurationError) as caught:
            server_endpoint(self.reactor, self.server(":port=9"))
        self.assertIn("port is given twice", str(caught.exception))

    def test_badValues(self) -> None:
        """Each bad value is refused with EndpointConfigurationError naming its key."""
        cases = {
            "port": self.server(port="abc"),
            "clientAuth": self.server(f":trustRoots={self.path('ca.pem')}:clientAuth=maybe"),
            "profile": self.server(":profile=ancient"),
            "sessionTickets": self.server(":sessionTickets=perhaps"),
            "handshakeTimeout": self.server(":handshakeTimeout=-1"),
            "backlog": self.server(":backlog=many"),
        }
        for key, description in cases.items():
            with self.assertRaises(EndpointConfigurationError, msg=key) as caught:
                server_endpoint(self.reactor, description)
            self.assertIn(key, str(caught.exception))
        self.assertEqual(self.reactor.tcpServers, [])

    def test_nonFiniteTimeout(self) -> None:
        """handshakeTimeout=inf would disable the deadline and nan breaks timers: both refused."""
        for value in ("inf", "nan", "-inf"):
            with self.assertRaises(EndpointConfigurationError) as caught:
                server_endpoint(self.reactor, self.server(f":handshakeTimeout={value}"))
            self.assertIn("handshakeTimeout", str(caught.exception))

    def test_zeroTimeout(self) -> None:
        """handshakeTimeout=0 is refused by the policy, naming the key."""
        with self.assertRaises(TLSConfigurationError) as caught:
            server_endpoint(self.reactor, self.server(":handshakeTimeout=0"))
        self.assertIn("handshakeTimeout", str(caught.exception))

    def test_missingRequired(self) -> None:
        """No port, no certKey or no privateKey: refused naming what is missing."""
        with self.assertRaises(EndpointConfigurationError) as caught:
            server_endpoint(self.reactor, f"securenet:certKey={self.path('server.pem')}:privateKey={self.path('server.key')}")
        self.assertIn("port", str(caught.exception))
        for missing, description in {
            "certKey": f"securenet:8443:privateKey={self.path('server.key')}",
            "privateKey": f"securenet:8443:certKey={self.path('server.pem')}",
        }.items():
            with self.assertRaises(EndpointConfigurationError) as caught:
                server_endpoint(self.reactor, description)
            self.assertIn(missing, str(caught.exception))

    def test_clientAuthNeedsTrustRoots(self) -> None:
        """clientAuth=required or optional without trustRoots is refused."""
        for mode in ("required", "optional"):
            with self.assertRaises(TLSConfigurationError) as caught:
                server_endpoint(self.reactor, self.server(f":clientAuth={mode}"))
            self.assertIn("trustRoots", str(caught.exception))

    def test_crlNeedsClientAuth(self) -> None:
        """A CRL without client authentication is refused (it would check nothing)."""
        with self.assertRaises(TLSConfigurationError) as caught:
            server_endpoint(self.reactor, self.server(f":crl={self.path('crl.pem')}"))
        self.assertIn("clientAuth", str(caught.exception))

    def test_insecureKeyMode(self) -> None:
        """A private key readable by group/others is refused with InsecurePermissions naming the file."""
        key = self.dir / "server.key"
        os.chmod(key, 0o644)
        with self.assertRaises(InsecurePermissions) as caught:
            server_endpoint(self.reactor, self.server())
        self.assertEqual(caught.exception.path, key)
        self.assertEqual(caught.exception.mode, 0o644)
        self.assertIn(str(key), str(caught.exception))

    def test_missingKeyFile(self) -> None:
        """A key file that does not exist: FileMissing naming it."""
        missing = self.dir / "nope.key"
        with self.assertRaises(FileMissing) as caught:
            server_endpoint(self.reactor, f"securenet:8443:certKey={self.path('server.pem')}:privateKey={escape(str(missing))}")
        self.assertEqual(caught.exception.path, missing)

    def test_certificateKeyMismatch(self) -> None:
        """The server certificate with the CA's key: KeyMismatch naming the key file."""
        with self.assertRaises(KeyMismatch) as caught:
            server_endpoint(self.reactor, f"securenet:8443:certKey={self.path('server.pem')}:privateKey={self.path('ca.key')}")
        self.assertEqual(caught.exception.path, self.dir / "ca.key")


class ClientEndpointTests(EndpointTestCase):
    """C{securenet:} client strings."""

    def test_everyKey(self) -> None:
        """Every key of CLIENT_KEYS is accepted and lands in the policy, the creator or the connect call."""
        tofu = Path(self.mktemp()).absolute()
        description = (
            "securenet:host=127.0.0.1:port=8443:serverName=localhost"
            f":trustRoots={self.path('ca.pem')}:pin={spki_pin(pki().ca.certificate)},{spki_pin(pki().server.certificate)}"
            f":tofu={escape(str(tofu))}:certificate={self.path('alice.pem')}:privateKey={self.path('alice.key')}"
            ":profile=modern:handshakeTimeout=4:timeout=5:bindAddress=127.0.0.3:alpn=h2"
        )
        self.assertEqual(keys_of(description), set(CLIENT_KEYS))
        endpoint = client_endpoint(self.reactor, description)
        self.assertIsInstance(endpoint, SecureClientEndpoint)
        policy = endpoint.policy
        self.assertEqual(policy.trust_roots, (pki().ca.certificate,))
        self.assertEqual(len(policy.pins), 2)
        assert policy.tofu is not None
        self.assertEqual(policy.tofu.path, tofu)
        self.assertEqual(policy.certificate_chain[0], pki().client("alice").certificate)
        self.assertIs(policy.profile, MODERN)
        self.assertEqual(policy.handshake_timeout, 4.0)
        self.assertEqual(policy.alpn, (b"h2",))
        self.assertEqual(endpoint.server_name, "localhost")

        endpoint.connect(Factory())
        [(host, port, factory, timeout, bind)] = self.reactor.tcpClients
        self.assertEqual((host, port, timeout, bind), ("127.0.0.1", 8443, 5.0, ("127.0.0.3", 0)))
        # TCP4ClientEndpoint wraps the factory it is given; the one we gave it is TLS.
        tls = cast(Any, factory)._wrappedFactory
        self.assertIsInstance(tls, TLSMemoryBIOFactory)
        self.assertIsInstance(tls.wrappedFactory, TLSGuardFactory)

    def test_positionalHostAndPort(self) -> None:
        """C{securenet:HOST:PORT:...} works; the server name defaults to the host."""
        endpoint = client_endpoint(self.reactor, f"securenet:localhost:9000:trustRoots={self.path('ca.pem')}")
        self.assertEqual((endpoint.host, endpoint.port, endpoint.server_name), ("localhost", 9000, "localhost"))
        endpoint.connect(Factory())
        [(host, port, _, timeout, bind)] = self.reactor.tcpClients
        self.assertEqual((host, port, timeout, bind), ("localhost", 9000, 30.0, None))

    def test_unknownKey(self) -> None:
        with self.assertRaises(EndpointConfigurationError) as caught:
            client_endpoint(self.reactor, self.client(":verify=no"))
        self.assertIn("'verify'", str(caught.exception))

    def test_hostGivenTwice(self) -> None:
        """A host given positionally and as host= is ambiguous: refused."""
        with self.assertRaises(EndpointConfigurationError) as caught:
            client_endpoint(self.reactor, "securenet:localhost:8443:host=other:pin=" + "sha256/" + "A" * 43 + "=")
        self.assertIn("given twice", str(caught.exception))
        self.assertEqual(self.reactor.tcpClients, [])

    def test_badValues(self) -> None:
        """Each bad client value is refused naming its key."""
        cases = {
            "port": "securenet:host=localhost:port=abc:trustRoots=x",
            "profile": self.client(":profile=ancient"),
            "handshakeTimeout": self.client(":handshakeTimeout=-1"),
            "timeout": self.client(":timeout=soon"),
        }
        for key, description in cases.items():
            with self.assertRaises(EndpointConfigurationError, msg=key) as caught:
                client_endpoint(self.reactor, description)
            self.assertIn(key, str(caught.exception))

    def test_hostAndPortRequired(self) -> None:
        for missing, description in {
            "host": f"securenet:port=1:trustRoots={self.path('ca.pem')}",
            "port": f"securenet:host=localhost:trustRoots={self.path('ca.pem')}",
        }.items():
            with self.assertRaises(EndpointConfigurationError) as caught:
                client_endpoint(self.reactor, description)
            self.assertIn(missing, str(caught.exception))

    def test_noWayToCheckServer(self) -> None:
        """A client with no trustRoots, pin or tofu is refused."""
        with self.assertRaises(TLSConfigurationError) as caught:
            client_endpoint(self.reactor, "securenet:host=localhost:port=8443")
        for key in ("trustRoots", "pin", "tofu"):
            self.assertIn(key, str(caught.exception))

    def test_badPin(self) -> None:
        """A malformed pin is refused, quoting it."""
        for pin in ("sha1/AAAA", "sha256/not*base64", "sha256/AAAA"):
            with self.assertRaises(TLSConfigurationError) as caught:
                client_endpoint(self.reactor, f"securenet:host=localhost:port=8443:pin={pin}")
            self.assertIn(pin, str(caught.exception))

    def test_certificateWithoutKey(self) -> None:
        """A client certificate without its key is refused."""
        with self.assertRaises(TLSConfigurationError) as caught:
            client_endpoint(self.reactor, self.client(f":certificate={self.path('alice.pem')}"))
        self.assertIn("privateKey", str(caught.exception))

    def test_insecureClientKey(self) -> None:
        """The client's key file mode is checked too."""
        os.chmod(self.dir / "alice.key", 0o640)
        with self.assertRaises(InsecurePermissions) as caught:
            client_endpoint(
                self.reactor,
                self.client(f":certificate={self.path('alice.pem')}:privateKey={self.path('alice.key')}"),
            )
        self.assertEqual(caught.exception.path, self.dir / "alice.key")

    def test_clientCertificateKeyMismatch(self) -> None:
        with self.assertRaises(KeyMismatch):
            client_endpoint(
                self.reactor,
                self.client(f":certificate={self.path('alice.pem')}:privateKey={self.path('server.key')}"),
            )

    def test_ipv6Host(self) -> None:
        """An escaped IPv6 host connects over TCP6 to the bare address."""
        endpoint = client_endpoint(self.reactor, f"securenet:host=\\:\\:1:port=8443:trustRoots={self.path('ca.pem')}")
        endpoint.connect(Factory())
        [(host, port, _, _, _)] = self.reactor.tcpClients
        self.assertEqual((host, port), ("::1", 8443))


class SplitDescriptionTests(SynchronousTestCase):
    """The endpoint-string grammar."""

    def test_split(self) -> None:
        self.assertEqual(
            split_description("securenet:8443:interface=\\:\\:1:certKey=C\\:\\\\x.pem"),
            (["8443"], {"interface": "::1", "certKey": "C:\\x.pem"}),
        )

    def test_valueMayContainEquals(self) -> None:
        self.assertEqual(split_description("securenet:pin=sha256/AB=="), ([], {"pin": "sha256/AB=="}))

    def test_refusals(self) -> None:
        """Another prefix, a repeated key and a positional after key=value are refused."""
        for description, needle in {
            "ssl:8443": "securenet:",
            "securenet": "securenet:",
            "securenet:port=1:port=2": "'port'",
            "securenet:port=1:8443": "'8443'",
        }.items():
            with self.assertRaises(EndpointConfigurationError) as caught:
                split_description(description)
            self.assertIn(needle, str(caught.exception))


class EndpointRoundTripTests(EndpointTestCase):
    """A server and a client endpoint built from strings, joined in memory, carry bytes both ways."""

    def test_mutualTLSThroughStrings(self) -> None:
        """
        The factories the endpoints give the reactor make a working
        mutual-TLS connection, and their timers (including Twisted's TLS write
        aggregation) run on the endpoint's reactor, not the global one.
        """
        server_apps = RecordingFactory(SERVER_DATA)
        server_endpoint(self.reactor, self.server(f":trustRoots={self.path('ca.pem')}:handshakeTimeout=3")).listen(
            SessionFactory(server_apps, pki().certificate_portal(), self.reactor)
        )
        client_apps = RecordingFactory(CLIENT_DATA)
        ready = connect(
            self.reactor,
            self.client(
                f":pin={spki_pin(pki().server.certificate)}"
                f":certificate={self.path('alice.pem')}:privateKey={self.path('alice.key')}"
            ),
            client_apps,
        )
        [(_, server_factory, _, _)] = self.reactor.tcpServers
        [(_, _, client_factory, _, _)] = self.reactor.tcpClients
        server = server_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        client = client_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8443))
        pump = iosim.connect(
            server,
            iosim.FakeTransport(server, isServer=True),
            client,
            iosim.FakeTransport(client, isServer=False),
            greet=False,
            clock=self.reactor,
        )
        pump.flush()
        app = self.successResultOf(ready)
        self.assertIs(app, client_apps.built[0])
        self.assertEqual(server_apps.received, CLIENT_DATA)
        self.assertEqual(client_apps.received, SERVER_DATA)
        # Only the handshake deadlines were ever scheduled, and they are cancelled.
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        from twisted.internet import reactor as global_reactor

        pending = [c for c in global_reactor.getDelayedCalls() if "_AggregateSmallWrites" in repr(c)]
        self.assertEqual(pending, [])

    def join(self) -> iosim.IOPump:
        """Join the last client attempt to the listening server, TCP only (nothing moves until flushed)."""
        [(_, server_factory, _, _)] = self.reactor.tcpServers
        _, _, client_factory, _, _ = self.reactor.tcpClients[-1]
        server = server_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        client = client_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8443))
        pump: iosim.IOPump = iosim.connect(
            server,
            iosim.FakeTransport(server, isServer=True),
            client,
            iosim.FakeTransport(client, isServer=False),
            greet=False,
            clock=self.reactor,
        )
        return pump

    def proxied(self, header: bytes, source: str = "10.1.2.3") -> tuple[iosim.IOPump, RecordingFactory, Any]:
        """A mutual-TLS session through proxyProtocol=10.0.0.0/8: the client sends C{header} first, from C{source}."""
        server_apps = RecordingFactory(SERVER_DATA)
        sessions = SessionFactory(server_apps, pki().certificate_portal(), self.reactor)
        server_endpoint(self.reactor, self.server(f":trustRoots={self.path('ca.pem')}:proxyProtocol=10.0.0.0/8")).listen(sessions)
        client_apps = RecordingFactory(CLIENT_DATA)
        ready = connect(
            self.reactor,
            self.client(f":certificate={self.path('alice.pem')}:privateKey={self.path('alice.key')}"),
            client_apps,
        )
        _, server_factory, _, _ = self.reactor.tcpServers[-1]
        _, _, client_factory, _, _ = self.reactor.tcpClients[-1]
        server = server_factory.buildProtocol(IPv4Address("TCP", source, 50000))
        client = client_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8443))
        if server is None:
            return cast(iosim.IOPump, None), server_apps, ready
        server_transport = iosim.FakeTransport(server, isServer=True, peerAddress=IPv4Address("TCP", source, 50000))
        client_transport = iosim.FakeTransport(client, isServer=False)
        client_transport.write(header)
        pump = iosim.connect(server, server_transport, client, client_transport, greet=False, clock=self.reactor)
        pump.flush()
        return pump, server_apps, ready

    def test_proxyProtocolClientAddress(self) -> None:
        """
        Behind a PROXY-protocol balancer (v1 and v2 headers), the session's
        peer is the client the header names, not the balancer.
        """
        v1 = b"PROXY TCP4 203.0.113.7 127.0.0.1 40001 8443\r\n"
        v2 = (
            b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c"
            + bytes([203, 0, 113, 8, 127, 0, 0, 1])
            + (40002).to_bytes(2, "big")
            + (8443).to_bytes(2, "big")
        )
        for header, peer in ((v1, "203.0.113.7:40001"), (v2, "203.0.113.8:40002")):
            _, server_apps, ready = self.proxied(header)
            self.successResultOf(ready)
            self.assertEqual(server_apps.received, CLIENT_DATA)
            [app] = server_apps.built[-1:]
            session = cast(Any, app.transport)
            self.assertEqual(session.identity.peer, peer)
            self.assertEqual(session.handshake.peer, peer)

    def test_proxyProtocolRefusesOtherSources(self) -> None:
        """A connection from outside proxyProtocol's networks is refused before a byte is read; no application."""
        pump, server_apps, ready = self.proxied(b"PROXY TCP4 203.0.113.7 127.0.0.1 40001 8443\r\n", source="192.0.2.1")
        self.assertIsNone(pump)
        self.assertEqual(server_apps.built, [])

    def test_proxyProtocolRefusesMissingHeader(self) -> None:
        """From a balancer's address but without a header, the connection is closed: no application, no handshake."""
        _, server_apps, ready = self.proxied(b"")
        self.failureResultOf(ready)
        self.assertEqual(server_apps.built, [])

    def test_tlsEndpointFiresWithApplication(self) -> None:
        """
        The TLS endpoint alone keeps the endpoint contract too: not the guard
        when TCP is up, but the application protocol, connected, once the
        server is verified.
        """
        server_apps = RecordingFactory(SERVER_DATA)
        server_endpoint(self.reactor, self.server()).listen(server_apps)
        client_apps = RecordingFactory(CLIENT_DATA)
        d = client_endpoint(self.reactor, self.client()).connect(client_apps)
        pump = self.join()
        self.assertNoResult(d)
        pump.flush()
        [app] = client_apps.built
        self.assertIs(self.successResultOf(d), app)
        self.assertEqual((server_apps.received, client_apps.received), (CLIENT_DATA, SERVER_DATA))

    def test_tlsEndpointPinMismatch(self) -> None:
        """A wrong pin fails the TLS endpoint's Deferred with PinMismatch; no application on either side."""
        server_apps = RecordingFactory(SERVER_DATA)
        server_endpoint(self.reactor, self.server()).listen(server_apps)
        client_apps = RecordingFactory(CLIENT_DATA)
        d = client_endpoint(self.reactor, self.client(":pin=sha256/" + "A" * 43 + "=")).connect(client_apps)
        self.join().flush()
        self.failureResultOf(d, PinMismatch)
        self.assertEqual((server_apps.built, client_apps.built), ([], []))

    def test_tlsEndpointCancelDuringHandshake(self) -> None:
        """Cancelling once TCP is up closes the connection before any application is built."""
        server_apps = RecordingFactory(SERVER_DATA)
        server_endpoint(self.reactor, self.server()).listen(server_apps)
        client_apps = RecordingFactory(CLIENT_DATA)
        d = client_endpoint(self.reactor, self.client()).connect(client_apps)
        pump = self.join()
        d.cancel()
        pump.flush()
        self.failureResultOf(d, CancelledError)
        self.assertEqual((server_apps.built, client_apps.built), ([], []))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_handshakeDeadlineOnEndpointReactor(self) -> None:
        """The server's handshake deadline from handshakeTimeout= runs on the endpoint's reactor."""
        server_endpoint(self.reactor, self.server(":handshakeTimeout=3")).listen(RecordingFactory())
        [(_, server_factory, _, _)] = self.reactor.tcpServers
        server = server_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        assert server is not None
        transport = iosim.FakeTransport(server, isServer=True)
        server.makeConnection(transport)
        [call] = self.reactor.getDelayedCalls()
        self.assertEqual(call.getTime(), self.reactor.seconds() + 3)
        self.reactor.advance(3)
        self.assertTrue(transport.disconnecting)
