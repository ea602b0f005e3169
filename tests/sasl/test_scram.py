"""
SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (securenet.sasl, securenet.cred) and the TLS
channel bindings they bind to (securenet.cred.channel).

Our client against our server, both against scramp (an independent
implementation), the RFC 7677 test vector, every refusal, and -PLUS across
two real in-memory TLS connections (a relay must fail).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import re
import warnings
from typing import Any, cast

import attrs
import scramp
import scramp.core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from securenet._threads import Runner
from securenet.cred._identity import AuthenticationContext, IdentityRealm
from securenet.cred._passwords import GENERIC_REFUSAL, LoginRefused
from securenet.cred._saslprep import PasswordError
from securenet.cred._scram import MAX_ITERATIONS, ScramChecker, ScramCredentials, derive_scram_keys
from securenet.interfaces import (
    IClientMechanism,
    IIdentity,
    IMechanismFactory,
    IScramChecker,
    IScramCredentials,
    IServerMechanism,
)
from securenet.sasl._channel import channel_bindings, tls_server_end_point
from securenet.sasl._mechanism import Challenge, ChannelBindings, Complete, MechanismError
from securenet.sasl._offer import offered_mechanisms
from securenet.sasl._scram import (
    SCRAM_SHA_256,
    SCRAM_SHA_256_PLUS,
    ChannelBindingError,
    ScramClientMechanism,
    ScramServerMechanism,
)
from securenet.store._memory import MemoryStore
from securenet.store._records import ScramKeys, User
from securenet.testing import EphemeralPKI, connect_in_memory
from securenet.tls._profiles import INTERMEDIATE

ITERATIONS = 4096
PEER = "192.0.2.7:40000"

# Channel bindings for exchanges that do not need a real TLS connection.
BINDINGS = ChannelBindings(tls_exporter=b"E" * 32, tls_server_end_point=b"S" * 32)


def make_keys(password: str, *, salt: bytes | None = None) -> ScramKeys:
    """What the server stores for C{password}, made fast for tests (4096 iterations)."""
    return derive_scram_keys(password, salt=salt, iterations=ITERATIONS)


class CountingStore(MemoryStore):
    """A MemoryStore that counts user look-ups (malformed messages must cause none)."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    def get_user(self, name: str) -> defer.Deferred[User | None]:
        self.lookups += 1
        return super().get_user(name)


class StalledStore(MemoryStore):
    """A store that never answers."""

    def get_user(self, name: str) -> defer.Deferred[User | None]:
        return defer.Deferred()


def make_store(**passwords: str) -> CountingStore:
    store = CountingStore()
    for name, password in passwords.items():
        store.users[name] = User(name, scram=make_keys(password))
    return store


def offered(checker: ScramChecker, bindings: ChannelBindings = BINDINGS) -> dict[str, Any]:
    """The mechanisms a session offers for a portal with C{checker}."""
    return offered_mechanisms(Portal(IdentityRealm(MemoryStore()), [checker]), False, bindings)


def server_mechanism(checker: ScramChecker, *, plus: bool, bindings: ChannelBindings = BINDINGS) -> Any:
    """The server side of one attempt, made the way the session does: through the checker's factories."""
    factories = offered(checker, bindings)
    return factories[SCRAM_SHA_256_PLUS if plus else SCRAM_SHA_256](bindings, PEER)


def client_final_parts(message: bytes) -> dict[str, str]:
    return dict(part.split("=", 1) for part in message.decode().split(","))


def self_signed(key: Any, algorithm: Any) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scram test")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, algorithm)
    )


def legacy_signed(digest: str) -> x509.Certificate:
    """
    A certificate signed with MD5 or SHA-1, which cryptography refuses to
    make: pyOpenSSL's deprecated X509 API still can.
    """
    key = crypto.PKey.from_cryptography_key(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"X509\.\w+ is deprecated", category=DeprecationWarning)
        cert = crypto.X509()
        cert.get_subject().CN = "scram legacy test"
        cert.set_issuer(cert.get_subject())
        cert.set_pubkey(key)
        cert.set_serial_number(1)
        cert.gmtime_adj_notBefore(0)
        cert.gmtime_adj_notAfter(3600)
        cert.sign(key, digest)
        return cert.to_cryptography()


def scramp_end_point(certificate: x509.Certificate) -> bytes:
    """scramp's own tls-server-end-point computation, for an independent check."""
    data: bytes = scramp.core.CBindData.from_der(certificate.public_bytes(serialization.Encoding.DER)).data
    return data


class ScramTestCase(SynchronousTestCase):
    def exchange(self, checker: ScramChecker, server: Any, client: ScramClientMechanism) -> str:
        """Run a whole exchange; returns the avatar id, after the client verified the server."""
        first = self.successResultOf(server.step(client.initial()))
        assert isinstance(first, Challenge)
        final = self.successResultOf(server.step(client.respond(first.data)))
        assert isinstance(final, Complete)
        avatar: str = self.successResultOf(checker.requestAvatarId(final.credentials))
        assert final.success_data is not None
        client.verify_success(final.success_data())
        return avatar

    def refused_login(self, checker: ScramChecker, server: Any, client: ScramClientMechanism) -> Failure:
        """Run an exchange whose messages are well-formed but whose login must fail."""
        first = self.successResultOf(server.step(client.initial()))
        final = self.successResultOf(server.step(client.respond(first.data)))
        failure: Failure = self.failureResultOf(checker.requestAvatarId(final.credentials), UnauthorizedLogin)
        # One message for every refusal (as for PLAIN); the reason is for the audit log only.
        self.assertIsInstance(failure.value, LoginRefused)
        self.assertEqual(str(failure.value), GENERIC_REFUSAL)
        self.assertIsNone(final.credentials.server_signature)
        self.assertIsNone(final.success_data())
        return failure

    def tls_connection(self, pki: EphemeralPKI, *, tls12: bool = False) -> tuple[SSL.Connection, SSL.Connection]:
        """A real TLS connection in memory: (server handle, client handle), handshake done."""
        profile = attrs.evolve(INTERMEDIATE, max_version=SSL.TLS1_2_VERSION) if tls12 else INTERMEDIATE
        conn = connect_in_memory(
            server_policy=pki.server_policy(),
            client_policy=pki.client_policy(profile=profile),
            server_factory=Factory.forProtocol(Protocol),
            client_factory=Factory.forProtocol(Protocol),
            clock=Clock(),
        )
        conn.pump.flush()
        self.successResultOf(conn.client_ready)
        server: SSL.Connection = conn.server_tls.getHandle()
        client: SSL.Connection = conn.client_tls.getHandle()
        self.assertEqual(client.get_protocol_version_name(), "TLSv1.2" if tls12 else "TLSv1.3")
        return server, client


class ChannelBindingsTests(ScramTestCase):
    def test_both_ends_agree(self) -> None:
        """Server and client of one TLS 1.3 connection compute the same bindings of both types."""
        pki = EphemeralPKI.create()
        server, client = self.tls_connection(pki)
        ours = channel_bindings(server, "server")
        self.assertEqual(ours, channel_bindings(client, "client"))
        assert ours.tls_exporter is not None
        self.assertEqual(len(ours.tls_exporter), 32)
        self.assertEqual(ours.tls_exporter, server.export_keying_material(b"EXPORTER-Channel-Binding", 32))
        # The test CA signs with ecdsa-with-SHA256: SHA-256 of the DER, as scramp computes it too.
        der = pki.server.certificate.public_bytes(serialization.Encoding.DER)
        self.assertEqual(ours.tls_server_end_point, hashlib.sha256(der).digest())
        self.assertEqual(ours.tls_server_end_point, scramp_end_point(pki.server.certificate))

    def test_exporter_differs_per_connection(self) -> None:
        """
        tls-exporter is unique to a connection; tls-server-end-point names
        only the server's certificate, so it is the same on two connections
        to one server.
        """
        pki = EphemeralPKI.create()
        a = channel_bindings(self.tls_connection(pki)[0], "server")
        b = channel_bindings(self.tls_connection(pki)[0], "server")
        self.assertNotEqual(a.tls_exporter, b.tls_exporter)
        self.assertEqual(a.tls_server_end_point, b.tls_server_end_point)

    def test_tls12_has_no_exporter(self) -> None:
        """Under TLS 1.2 only tls-server-end-point is provided."""
        server, client = self.tls_connection(EphemeralPKI.create(), tls12=True)
        for bindings in (channel_bindings(server, "server"), channel_bindings(client, "client")):
            self.assertIsNone(bindings.tls_exporter)
            self.assertIsNotNone(bindings.tls_server_end_point)
        self.assertEqual(channel_bindings(server, "server"), channel_bindings(client, "client"))

    def test_refuses_before_handshake_and_bad_role(self) -> None:
        context = SSL.Context(SSL.TLS_METHOD)
        unconnected = SSL.Connection(context, None)
        e = self.assertRaises(ValueError, channel_bindings, unconnected, "client")
        self.assertIn("handshake has not finished", str(e))
        server, _ = self.tls_connection(EphemeralPKI.create())
        e = self.assertRaises(ValueError, channel_bindings, server, "peer")
        self.assertIn("'server' or 'client'", str(e))

    def test_end_point_hash_follows_signature(self) -> None:
        """RFC 5929 section 4.1: the signature's hash, SHA-256 for MD5 and SHA-1."""
        key = ec.generate_private_key(ec.SECP384R1())
        cases: list[tuple[x509.Certificate, str]] = [
            (self_signed(key, hashes.SHA256()), "sha256"),
            (self_signed(key, hashes.SHA384()), "sha384"),
            (self_signed(key, hashes.SHA512()), "sha512"),
            (legacy_signed("sha1"), "sha256"),
            (legacy_signed("md5"), "sha256"),
        ]
        for cert, expected in cases:
            der = cert.public_bytes(serialization.Encoding.DER)
            self.assertEqual(tls_server_end_point(cert), hashlib.new(expected, der).digest(), expected)
            self.assertEqual(tls_server_end_point(cert), scramp_end_point(cert), expected)

    def test_end_point_undefined_without_a_hash(self) -> None:
        """Ed25519 signatures use no separate hash: RFC 5929 leaves the binding undefined."""
        self.assertIsNone(tls_server_end_point(self_signed(ed25519.Ed25519PrivateKey.generate(), None)))


class ExchangeTests(ScramTestCase):
    def test_interfaces(self) -> None:
        checker = ScramChecker(make_store(), default_iterations=ITERATIONS)
        verifyObject(ICredentialsChecker, checker)
        verifyObject(IScramChecker, checker)
        self.assertEqual(list(offered(checker)), [SCRAM_SHA_256_PLUS, SCRAM_SHA_256])
        for factory in offered(checker).values():
            verifyObject(IMechanismFactory, factory)
            self.assertTrue(factory.second_factor_allowed)
            verifyObject(IServerMechanism, factory(BINDINGS, PEER))
        verifyObject(IClientMechanism, ScramClientMechanism("u", "p", plus=True, bindings=BINDINGS))
        verifyObject(IScramCredentials, ScramCredentials("u", b"m", b"p"))
        self.assertEqual(list(offered(ScramChecker(MemoryStore(), plus=False))), [SCRAM_SHA_256])
        self.assertEqual(list(offered(checker, ChannelBindings())), [SCRAM_SHA_256])

    def test_plain_without_binding(self) -> None:
        """SCRAM-SHA-256 with a client that cannot bind (GS2 flag n)."""
        checker = ScramChecker(make_store(alice="correct horse"), default_iterations=ITERATIONS)
        client = ScramClientMechanism("alice", "correct horse", plus=False, bindings=ChannelBindings())
        self.assertTrue(client.initial().startswith(b"n,,n=alice,r="))
        client = ScramClientMechanism("alice", "correct horse", plus=False, bindings=ChannelBindings())
        self.assertEqual(self.exchange(checker, server_mechanism(checker, plus=False), client), "alice")

    def test_plain_client_could_bind(self) -> None:
        """A client that could bind, to a server that does not offer -PLUS, says y and is accepted."""
        checker = ScramChecker(make_store(alice="pw"), default_iterations=ITERATIONS, plus=False)
        client = ScramClientMechanism("alice", "pw", plus=False, bindings=BINDINGS, server_offers_plus=False)
        server = server_mechanism(checker, plus=False)
        first = self.successResultOf(server.step(client.initial()))
        self.assertEqual(client_final_parts(cast(bytes, client.respond(first.data)))["c"], "eSws")  # base64("y,,")

        client = ScramClientMechanism("alice", "pw", plus=False, bindings=BINDINGS, server_offers_plus=False)
        self.assertEqual(self.exchange(checker, server_mechanism(checker, plus=False), client), "alice")

    def test_plus_both_binding_types(self) -> None:
        checker = ScramChecker(make_store(alice="pw"), default_iterations=ITERATIONS)
        for cb_name, data in (("tls-exporter", b"E" * 32), ("tls-server-end-point", b"S" * 32)):
            client = ScramClientMechanism("alice", "pw", plus=True, bindings=BINDINGS, cb_name=cb_name)
            self.assertEqual(client.name, SCRAM_SHA_256_PLUS)
            server = server_mechanism(checker, plus=True)
            first = self.successResultOf(server.step(client.initial()))
            final_message = cast(bytes, client.respond(first.data))
            expected_c = base64.b64encode(f"p={cb_name},,".encode() + data).decode()
            self.assertEqual(client_final_parts(final_message)["c"], expected_c)
            final = self.successResultOf(server.step(final_message))
            self.assertEqual(self.successResultOf(checker.requestAvatarId(final.credentials)), "alice")
            client.verify_success(final.success_data())

    def test_plus_with_real_tls(self) -> None:
        """-PLUS over one real TLS connection, with each binding type."""
        pki = EphemeralPKI.create()
        server_handle, client_handle = self.tls_connection(pki)
        checker = ScramChecker(make_store(alice="pw"), default_iterations=ITERATIONS)
        for cb_name in ("tls-exporter", "tls-server-end-point"):
            client = ScramClientMechanism(
                "alice", "pw", plus=True, bindings=channel_bindings(client_handle, "client"), cb_name=cb_name
            )
            server = server_mechanism(checker, plus=True, bindings=channel_bindings(server_handle, "server"))
            self.assertEqual(self.exchange(checker, server, client), "alice")

    def test_no_initial_response(self) -> None:
        """Without an initial response the server sends an empty challenge and waits for client-first."""
        checker = ScramChecker(make_store(alice="pw"), default_iterations=ITERATIONS)
        server = server_mechanism(checker, plus=False)
        client = ScramClientMechanism("alice", "pw", plus=False, bindings=ChannelBindings())
        self.assertEqual(self.successResultOf(server.step(None)), Challenge(b""))
        first = self.successResultOf(server.step(client.respond(b"")))
        final = self.successResultOf(server.step(client.respond(first.data)))
        self.assertEqual(self.successResultOf(checker.requestAvatarId(final.credentials)), "alice")
        client.verify_success(final.success_data())

    def test_through_portal(self) -> None:
        """The credentials log in through a twisted.cred portal; the server signature is set by then."""
        checker = ScramChecker(make_store(alice="pw"), default_iterations=ITERATIONS)
        portal = Portal(IdentityRealm(), [checker])
        client = ScramClientMechanism("alice", "pw", plus=True, bindings=BINDINGS)
        server = server_mechanism(checker, plus=True)
        first = self.successResultOf(server.step(client.initial()))
        final = self.successResultOf(server.step(client.respond(first.data)))
        result: Any = self.successResultOf(
            portal.login(final.credentials, AuthenticationContext(mechanism=SCRAM_SHA_256_PLUS, peer=PEER), IIdentity)
        )
        self.assertEqual(result[1].avatar_id, "alice")
        client.verify_success(final.success_data())

    def test_escaped_and_prepared_names(self) -> None:
        """
        ',' and '=' in names travel escaped (=2C, =3D); names and passwords
        are SASLprep'd (RFC 4013: soft hyphen maps to nothing, U+2168 ROMAN
        NUMERAL NINE to "IX").
        """
        store = make_store(**{"a,b=c": "pw"})
        store.users["IX"] = User("IX", scram=make_keys("IX"))
        checker = ScramChecker(store, default_iterations=ITERATIONS)
        client = ScramClientMechanism("a,b=c", "pw", plus=False, bindings=ChannelBindings())
        self.assertIn(b",n=a=2Cb=3Dc,", b"," + client.initial())
        client = ScramClientMechanism("a,b=c", "pw", plus=False, bindings=ChannelBindings())
        self.assertEqual(self.exchange(checker, server_mechanism(checker, plus=False), client), "a,b=c")
        client = ScramClientMechanism("I\u00adX", "\u2168", plus=False, bindings=ChannelBindings())
        self.assertEqual(self.exchange(checker, server_mechanism(checker, plus=False), client), "IX")

    def test_authzid(self) -> None:
        """An authorization identity equal to the user is accepted; another is refused before any look-up."""
        store = make_store(alice="pw", bob="pw")
        checker = ScramChecker(store, default_iterations=ITERATIONS)
        server = server_mechanism(checker, plus=False)
        self.assertIsInstance(self.successResultOf(server.step(b"n,a=alice,n=alice,r=abc")), Challenge)
        store.lookups = 0
        server = server_mechanism(checker, plus=False)
        failure = self.failureResultOf(server.step(b"n,a=bob,n=alice,r=abc"), MechanismError)
        self.assertIn("authorization identity", str(failure.value))
        self.assertEqual(store.lookups, 0)


class RFC7677Tests(ScramTestCase):
    """RFC 7677 section 3: user 'user', password 'pencil'."""

    CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
    SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    SERVER_FIRST = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    CLIENT_FINAL = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

    def test_client(self) -> None:
        client = ScramClientMechanism("user", "pencil", plus=False, bindings=ChannelBindings(), nonce=self.CLIENT_NONCE)
        self.assertEqual(client.initial(), self.CLIENT_FIRST)
        self.assertEqual(client.respond(self.SERVER_FIRST), self.CLIENT_FINAL)
        client.verify_success(self.SERVER_FINAL)

    def test_server(self) -> None:
        store = MemoryStore()
        store.users["user"] = User("user", scram=make_keys("pencil", salt=base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")))
        checker = ScramChecker(store, default_iterations=ITERATIONS)
        server = ScramServerMechanism(checker, ChannelBindings(), PEER, plus=False, offers_plus=False, nonce=self.SERVER_NONCE)
        self.assertEqual(self.successResultOf(server.step(self.CLIENT_FIRST)), Challenge(self.SERVER_FIRST))
        final = self.successResultOf(server.step(self.CLIENT_FINAL))
        assert isinstance(final, Complete)
        self.assertEqual(self.successResultOf(checker.requestAvatarId(final.credentials)), "user")
        assert final.success_data is not None
        self.assertEqual(final.success_data(), self.SERVER_FINAL)


class ScrampInteropTests(ScramTestCase):
    """scramp (an independent implementation) against ours, both ways."""

    def test_key_derivation_agrees(self) -> None:
        salt = os.urandom(16)
        salt_, stored, server_key, iterations = scramp.ScramMechanism("SCRAM-SHA-256").make_auth_info(
            "pw", iteration_count=ITERATIONS, salt=salt
        )
        self.assertEqual(make_keys("pw", salt=salt), ScramKeys(salt_, iterations, stored, server_key))

    def scramp_client_against_ours(
        self, mechanism: str, channel_binding: tuple[str, bytes] | None, bindings: ChannelBindings
    ) -> None:
        checker = ScramChecker(make_store(alice="pw"), default_iterations=ITERATIONS)
        theirs = scramp.ScramClient([mechanism], "alice", "pw", channel_binding=channel_binding)
        server = server_mechanism(checker, plus=mechanism.endswith("-PLUS"), bindings=bindings)
        first = self.successResultOf(server.step(theirs.get_client_first().encode()))
        theirs.set_server_first(first.data.decode())
        final = self.successResultOf(server.step(theirs.get_client_final().encode()))
        self.assertEqual(self.successResultOf(checker.requestAvatarId(final.credentials)), "alice")
        theirs.set_server_final(final.success_data().decode())  # raises if our signature is wrong

    def test_scramp_client_plain(self) -> None:
        self.scramp_client_against_ours("SCRAM-SHA-256", None, BINDINGS)

    def test_scramp_client_plus_end_point(self) -> None:
        """scramp hashes the server's certificate itself; our server uses channel_bindings()."""
        pki = EphemeralPKI.create()
        server_handle, _ = self.tls_connection(pki)
        self.scramp_client_against_ours(
            "SCRAM-SHA-256-PLUS",
            ("tls-server-end-point", scramp_end_point(pki.server.certificate)),
            channel_bindings(server_handle, "server"),
        )

    def our_client_against_scramp(
        self, mechanism: str, channel_binding: tuple[str, bytes] | None, client: ScramClientMechanism
    ) -> None:
        m = scramp.ScramMechanism(mechanism)
        salt, stored, server_key, iterations = m.make_auth_info("pw", iteration_count=ITERATIONS)
        theirs = m.make_server(
            lambda name: (salt, stored, server_key, iterations) if name == "alice" else None, channel_binding=channel_binding
        )
        theirs.set_client_first(client.initial().decode())
        theirs.set_client_final(cast(bytes, client.respond(theirs.get_server_first().encode())).decode())  # raises on a bad proof
        client.verify_success(theirs.get_server_final().encode())

    def test_our_client_plain(self) -> None:
        self.our_client_against_scramp(
            "SCRAM-SHA-256", None, ScramClientMechanism("alice", "pw", plus=False, bindings=ChannelBindings())
        )

    def test_our_client_plain_could_bind(self) -> None:
        """Our 'y' flag is what scramp expects from a binding-capable client of a non-binding server."""
        self.our_client_against_scramp("SCRAM-SHA-256", None, ScramClientMechanism("alice", "pw", plus=False, bindings=BINDINGS))

    def test_our_client_plus_end_point(self) -> None:
        pki = EphemeralPKI.create()
        _, client_handle = self.tls_connection(pki)
        client = ScramClientMechanism(
            "alice", "pw", plus=True, bindings=channel_bindings(client_handle, "client"), cb_name="tls-server-end-point"
        )
        self.our_client_against_scramp(
            "SCRAM-SHA-256-PLUS", ("tls-server-end-point", scramp_end_point(pki.server.certificate)), client
        )

    def test_scramp_refuses_our_client_with_a_wrong_password(self) -> None:
        """The interop harness can fail."""
        client = ScramClientMechanism("alice", "wrong", plus=False, bindings=ChannelBindings())
        self.assertRaises(scramp.ScramException, self.our_client_against_scramp, "SCRAM-SHA-256", None, client)


class LoginFailureTests(ScramTestCase):
    """Every reason a well-formed exchange fails is the same UnauthorizedLogin."""

    def test_wrong_password(self) -> None:
        checker = ScramChecker(make_store(alice="pw"), default_iterations=ITERATIONS)
        client = ScramClientMechanism("alice", "not pw", plus=True, bindings=BINDINGS)
        failure = self.refused_login(checker, server_mechanism(checker, plus=True), client)
        self.assertEqual(cast(LoginRefused, failure.value).reason, "wrong SCRAM proof for 'alice'")

    def server_first(self, checker: ScramChecker, name: str) -> dict[str, str]:
        server = server_mechanism(checker, plus=False)
        first = self.successResultOf(server.step(f"n,,n={name},r=abc".encode()))
        match = re.fullmatch(r"r=abc[A-Za-z0-9_-]{32},s=([A-Za-z0-9+/=]+),i=(\d+)", first.data.decode())
        assert match is not None, first.data
        return {"salt": match.group(1), "iterations": match.group(2)}

    def test_unknown_user_gets_a_stable_fake_salt(self) -> None:
        """The challenge to an unknown user looks like a real one: same shape, salt length and iterations."""
        checker = ScramChecker(make_store(alice="pw"), default_iterations=ITERATIONS)
        real = self.server_first(checker, "alice")
        fake = self.server_first(checker, "mallory")
        self.assertEqual(fake["iterations"], real["iterations"])
        self.assertEqual(len(base64.b64decode(fake["salt"])), len(base64.b64decode(real["salt"])))
        self.assertEqual(self.server_first(checker, "mallory"), fake)
        self.assertNotEqual(self.server_first(checker, "trudy")["salt"], fake["salt"])
        other = ScramChecker(make_store(), default_iterations=ITERATIONS)
        self.assertNotEqual(self.server_first(other, "mallory")["salt"], fake["salt"])
        same_secret = [ScramChecker(make_store(), secret=b"k" * 32) for _ in range(2)]
        self.assertEqual(self.server_first(same_secret[0], "mallory"), self.server_first(same_secret[1], "mallory"))

    def test_unknown_user_fails_like_a_wrong_password(self) -> None:
        checker = ScramChecker(make_store(alice="pw"), default_iterations=ITERATIONS)
        unknown = self.refused_login(
            checker, server_mechanism(checker, plus=True), ScramClientMechanism("mallory", "pw", plus=True, bindings=BINDINGS)
        )
        wrong = self.refused_login(
            checker, server_mechanism(checker, plus=True), ScramClientMechanism("alice", "nope", plus=True, bindings=BINDINGS)
        )
        self.assertIs(type(unknown.value), type(wrong.value))
        self.assertEqual(str(unknown.value), str(wrong.value))
        self.assertEqual(cast(LoginRefused, unknown.value).reason, "no user 'mallory'")

    def test_disabled_user(self) -> None:
        store = make_store(alice="pw")
        store.users["alice"] = attrs.evolve(store.users["alice"], disabled=True)
        checker = ScramChecker(store, default_iterations=ITERATIONS)
        client = ScramClientMechanism("alice", "pw", plus=False, bindings=ChannelBindings())
        failure = self.refused_login(checker, server_mechanism(checker, plus=False), client)
        self.assertEqual(cast(LoginRefused, failure.value).reason, "user 'alice' is disabled")

    def test_user_without_scram_keys(self) -> None:
        """A user who has only an argon2 hash gets a fake salt, and fails like anyone else."""
        store = make_store()
        store.users["alice"] = User("alice", password_hash="$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA")
        checker = ScramChecker(store, default_iterations=ITERATIONS)
        self.assertEqual(self.server_first(checker, "alice"), self.server_first(checker, "alice"))
        client = ScramClientMechanism("alice", "pw", plus=False, bindings=ChannelBindings())
        failure = self.refused_login(checker, server_mechanism(checker, plus=False), client)
        self.assertEqual(cast(LoginRefused, failure.value).reason, "user 'alice' has no SCRAM keys")

    def test_tampered_proof(self) -> None:
        checker = ScramChecker(make_store(alice="pw"), default_iterations=ITERATIONS)
        server = server_mechanism(checker, plus=True)
        client = ScramClientMechanism("alice", "pw", plus=True, bindings=BINDINGS)
        first = self.successResultOf(server.step(client.initial()))
        message = cast(bytes, client.respond(first.data))
        head, _, proof = message.rpartition(b",p=")
        flipped = bytearray(base64.b64decode(proof))
        flipped[0] ^= 1
        final = self.successResultOf(server.step(head + b",p=" + base64.b64encode(bytes(flipped))))
        failure = self.failureResultOf(checker.requestAvatarId(final.credentials), LoginRefused)
        self.assertEqual(str(failure.value), GENERIC_REFUSAL)
        self.assertEqual(failure.value.reason, "wrong SCRAM proof for 'alice'")
        self.assertIsNone(final.success_data())

    def test_proof_of_the_wrong_length(self) -> None:
        """The checker refuses a proof it cannot XOR (credentials built by someone other than our mechanism)."""
        checker = ScramChecker(make_store(alice="pw"), default_iterations=ITERATIONS)
        self.failureResultOf(checker.requestAvatarId(ScramCredentials("alice", b"m", b"short")), UnauthorizedLogin)

    def test_default_iterations_too_low(self) -> None:
        self.assertRaises(ValueError, ScramChecker, MemoryStore(), default_iterations=4095)


class MessageTests(ScramTestCase):
    """Malformed or refused messages fail with MechanismError, the same whether the user exists or not."""

    def client_first_error(self, message: bytes, *, plus: bool, bindings: ChannelBindings = BINDINGS) -> MechanismError:
        """The error for C{message}; the same with and without the user, and no look-up happened."""
        errors = []
        for store in (make_store(user="pw"), make_store()):
            checker = ScramChecker(store, default_iterations=ITERATIONS)
            server = server_mechanism(checker, plus=plus, bindings=bindings)
            failure = self.failureResultOf(server.step(message), MechanismError)
            self.assertEqual(store.lookups, 0, message)
            # The exchange is over: even a good message is now refused.
            self.failureResultOf(server.step(b"n,,n=user,r=abc" if not plus else b"p=tls-exporter,,n=user,r=abc"), MechanismError)
            errors.append(failure.value)
        self.assertEqual(str(errors[0]), str(errors[1]))
        self.assertIs(type(errors[0]), type(errors[1]))
        error: MechanismError = errors[0]
        return error

    def test_malformed_client_first(self) -> None:
        cases = [
            b"",
            b"\xff\xfen,,n=user,r=abc",
            b"n=user,r=abc",
            b"x,,n=user,r=abc",
            b"n,b=user,n=user,r=abc",
            b"n,a=bob,n=user,r=abc",
            b"n,,r=abc,n=user",
            b"n,,n=user",
            b"n,,n=,r=abc",
            b"n,,n=us=2Der,r=abc",
            b"n,,n=us\x07er,r=abc",
            b"n,,n=\xc2\xad,r=abc",
            b"n,,n=user,r=",
            b"n,,n=user,r=a b",
            b"n,,n=user,r=ab\x7f",
            b"n,,n=user,r=caf\xc3\xa9",
            b"n,,m=ext,n=user,r=abc",
            b"n,,n=user,r=abc,junk",
            b"n,,n=user,,r=abc",
            b"n,,n=user,r=abc,\xe2\x84\xaa=1",  # KELVIN SIGN is no ASCII letter
        ]
        for message in cases:
            error = self.client_first_error(message, plus=False)
            self.assertFalse(isinstance(error, ChannelBindingError), message)

    def test_binding_flags(self) -> None:
        """The GS2 flag must fit the mechanism and the connection."""
        cases: list[tuple[bytes, bool, ChannelBindings, str]] = [
            (b"p=tls-exporter,,n=user,r=abc", False, BINDINGS, "use SCRAM-SHA-256-PLUS"),
            (b"n,,n=user,r=abc", True, BINDINGS, "requires channel binding"),
            (b"y,,n=user,r=abc", True, BINDINGS, "requires channel binding"),
            (b"p=tls-unique,,n=user,r=abc", True, BINDINGS, "unsupported channel-binding type"),
            (b"p=,,n=user,r=abc", True, BINDINGS, "unsupported channel-binding type"),
            (
                b"p=tls-exporter,,n=user,r=abc",
                True,
                ChannelBindings(tls_server_end_point=b"S" * 32),
                "tls-exporter is not available",
            ),
        ]
        for message, plus, bindings, text in cases:
            error = self.client_first_error(message, plus=plus, bindings=bindings)
            self.assertIsInstance(error, ChannelBindingError, message)
            self.assertIn(text, str(error))

    def test_downgrade_refused(self) -> None:
        """RFC 5802 section 6: flag y while the server offers -PLUS means someone removed -PLUS from the offer."""
        error = self.client_first_error(b"y,,n=user,r=abc", plus=False)
        self.assertIsInstance(error, ChannelBindingError)
        self.assertIn("downgrade", str(error))
        # The same y is fine where -PLUS is not offered: no bindings, or a checker without -PLUS.
        checker = ScramChecker(make_store(user="pw"), default_iterations=ITERATIONS)
        server = server_mechanism(checker, plus=False, bindings=ChannelBindings())
        self.assertIsInstance(self.successResultOf(server.step(b"y,,n=user,r=abc")), Challenge)
        checker = ScramChecker(make_store(user="pw"), default_iterations=ITERATIONS, plus=False)
        server = server_mechanism(checker, plus=False)
        self.assertIsInstance(self.successResultOf(server.step(b"y,,n=user,r=abc")), Challenge)

    def final_error(self, tamper: Any, *, plus: bool = True) -> MechanismError:
        """Run a good client-first, then send C{tamper(good client-final)}; no credentials come out."""
        checker = ScramChecker(make_store(alice="pw"), default_iterations=ITERATIONS)
        server = server_mechanism(checker, plus=plus)
        client = ScramClientMechanism("alice", "pw", plus=plus, bindings=BINDINGS if plus else ChannelBindings())
        first = self.successResultOf(server.step(client.initial()))
        good = client.respond(first.data)
        failure = self.failureResultOf(server.step(tamper(good)), MechanismError)
        # The exchange is over: the genuine message is refused too.
        self.failureResultOf(server.step(good), MechanismError)
        error: MechanismError = failure.value
        return error

    def test_wrong_combined_nonce(self) -> None:
        error = self.final_error(lambda m: re.sub(rb",r=([^,]*)", rb",r=\1x", m))
        self.assertIn("nonce", str(error))
        error = self.final_error(lambda m: re.sub(rb",r=([^,]*)", rb",r=abc", m))
        self.assertIn("nonce", str(error))

    def test_channel_binding_mismatch(self) -> None:
        """c= must be exactly base64(GS2 header + binding data)."""
        other = base64.b64encode(b"p=tls-exporter,," + b"X" * 32)
        for replacement in (b"c=" + other, b"c=eSws", b"c=biws", b"c=" + other.rstrip(b"=")):
            error = self.final_error(lambda m, r=replacement: re.sub(rb"^c=[^,]*", r, m))
            self.assertIsInstance(error, ChannelBindingError)
        error = self.final_error(lambda m: re.sub(rb"^c=[^,]*", b"c=eSws", m), plus=False)
        self.assertIsInstance(error, ChannelBindingError)

    def test_malformed_client_final(self) -> None:
        proof16 = base64.b64encode(b"x" * 16)
        cases = [
            lambda m: b"\xff" + m,
            lambda m: m.rpartition(b",p=")[0],
            lambda m: re.sub(rb"^(c=[^,]*),(r=[^,]*),(p=.*)$", rb"\2,\1,\3", m),
            lambda m: re.sub(rb"^(c=[^,]*),(r=[^,]*),(p=.*)$", rb"\1,\3,\2", m),
            lambda m: m.rpartition(b",p=")[0] + b",p=!!!!",
            lambda m: m.rpartition(b",p=")[0] + b",p=" + proof16,
            lambda m: m.rpartition(b",p=")[0] + b",p=",
            lambda m: m + b",",
            lambda m: b"",
        ]
        for tamper in cases:
            self.final_error(tamper)

    def test_out_of_order(self) -> None:
        checker = ScramChecker(make_store(alice="pw"), default_iterations=ITERATIONS)
        client = ScramClientMechanism("alice", "pw", plus=False, bindings=ChannelBindings())
        server = server_mechanism(checker, plus=False)
        first = self.successResultOf(server.step(client.initial()))
        self.failureResultOf(server.step(None), MechanismError)
        self.failureResultOf(server.step(client.respond(first.data)), MechanismError)

        # After completion, nothing more is accepted.
        client = ScramClientMechanism("alice", "pw", plus=False, bindings=ChannelBindings())
        server = server_mechanism(checker, plus=False)
        first = self.successResultOf(server.step(client.initial()))
        final_message = client.respond(first.data)
        self.assertIsInstance(self.successResultOf(server.step(final_message)), Complete)
        self.failureResultOf(server.step(final_message), MechanismError)

        # A message while the store is still looking the user up.
        stalled = ScramChecker(StalledStore(), default_iterations=ITERATIONS)
        server = server_mechanism(stalled, plus=False)
        self.assertNoResult(server.step(b"n,,n=alice,r=abc"))
        self.failureResultOf(server.step(b"c=biws,r=abc,p=" + base64.b64encode(b"x" * 32)), MechanismError)


class RelayTests(ScramTestCase):
    """
    -PLUS across two real TLS connections: the client's bindings come from
    connection A, the server's from connection B, as a relay in the middle
    would arrange.  The exchange must fail; on one connection it succeeds.
    """

    def relayed(self, cb_name: str, server_pki: EphemeralPKI, client_pki: EphemeralPKI) -> None:
        server_a, client_a = self.tls_connection(client_pki)  # the client's connection (to the relay)
        server_b, _ = self.tls_connection(server_pki)  # the relay's connection to the server
        checker = ScramChecker(make_store(alice="pw"), default_iterations=ITERATIONS)
        server = server_mechanism(checker, plus=True, bindings=channel_bindings(server_b, "server"))
        client = ScramClientMechanism("alice", "pw", plus=True, bindings=channel_bindings(client_a, "client"), cb_name=cb_name)
        first = self.successResultOf(server.step(client.initial()))
        failure = self.failureResultOf(server.step(client.respond(first.data)), MechanismError)
        self.assertIsInstance(failure.value, ChannelBindingError)

        # Without the relay, on the connection the client really has, the same exchange succeeds.
        server = server_mechanism(checker, plus=True, bindings=channel_bindings(server_a, "server"))
        client = ScramClientMechanism("alice", "pw", plus=True, bindings=channel_bindings(client_a, "client"), cb_name=cb_name)
        self.assertEqual(self.exchange(checker, server, client), "alice")

    def test_tls_exporter_relay(self) -> None:
        """tls-exporter differs between any two connections, even to the same server certificate."""
        pki = EphemeralPKI.create()
        self.relayed("tls-exporter", pki, pki)

    def test_tls_server_end_point_relay(self) -> None:
        """tls-server-end-point catches a relay whose client-facing certificate differs from the server's."""
        self.relayed("tls-server-end-point", EphemeralPKI.create(), EphemeralPKI.create())

    def test_tls12_end_point(self) -> None:
        """Under TLS 1.2 -PLUS binds with tls-server-end-point; tls-exporter is not available."""
        pki = EphemeralPKI.create()
        server_handle, client_handle = self.tls_connection(pki, tls12=True)
        client_bindings = channel_bindings(client_handle, "client")
        self.assertRaises(ValueError, ScramClientMechanism, "alice", "pw", plus=True, bindings=client_bindings)
        checker = ScramChecker(make_store(alice="pw"), default_iterations=ITERATIONS)
        server = server_mechanism(checker, plus=True, bindings=channel_bindings(server_handle, "server"))
        client = ScramClientMechanism("alice", "pw", plus=True, bindings=client_bindings, cb_name="tls-server-end-point")
        self.assertEqual(self.exchange(checker, server, client), "alice")


class ClientTests(ScramTestCase):
    """The client refuses servers that cannot prove themselves and weak or malformed parameters."""

    NONCE = "clientnonce"

    def client(self) -> ScramClientMechanism:
        client = ScramClientMechanism("alice", "pw", plus=False, bindings=ChannelBindings(), nonce=self.NONCE)
        client.initial()
        return client

    def server_first(self, *, nonce: str = NONCE + "server", salt: str = "c2FsdHNhbHRzYWx0", iterations: str = "4096") -> bytes:
        return f"r={nonce},s={salt},i={iterations}".encode()

    def test_bad_server_signature(self) -> None:
        """Mutual authentication: a server that does not know the ServerKey is refused."""
        for data in (
            None,
            b"v=" + base64.b64encode(b"\0" * 32),
            b"v=" + base64.b64encode(b"\0" * 31),
            b"v=!!!",
            b"e=invalid-proof",
            b"",
            b"x=1",
            b"\xff",
        ):
            client = self.client()
            client.respond(self.server_first())
            self.assertRaises(MechanismError, client.verify_success, data)

    def test_signature_from_another_exchange(self) -> None:
        """A server signature is only good for its own exchange."""
        checker = ScramChecker(make_store(alice="pw"), default_iterations=ITERATIONS)
        server = server_mechanism(checker, plus=False)
        one = ScramClientMechanism("alice", "pw", plus=False, bindings=ChannelBindings())
        first = self.successResultOf(server.step(one.initial()))
        final = self.successResultOf(server.step(one.respond(first.data)))
        self.successResultOf(checker.requestAvatarId(final.credentials))
        other = self.client()
        other.respond(self.server_first())
        self.assertRaises(MechanismError, other.verify_success, final.success_data())

    def test_iterations(self) -> None:
        """Fewer than 4096 (RFC 7677) or absurdly many iterations are refused before any hashing."""
        for iterations in ("4095", "1", str(MAX_ITERATIONS + 1), "0", "04096", "-4096", "4096.0", "x", "99999999999"):
            e = self.assertRaises(MechanismError, self.client().respond, self.server_first(iterations=iterations))
            self.assertIn("iteration count", str(e))
        self.client().respond(self.server_first(iterations="4096"))

    def test_malformed_server_first(self) -> None:
        for message in (
            self.server_first(nonce="othernonceserver"),
            self.server_first(nonce=self.NONCE),
            self.server_first(nonce=self.NONCE + "a b"),
            self.server_first(salt="!!!!"),
            b"r=clientnonceserver,i=4096",
            b"s=c2FsdA==,r=clientnonceserver,i=4096",
            b"r=clientnonceserver,s=,i=4096",
            b"m=x,r=clientnonceserver,s=c2FsdA==,i=4096",
            b"e=other-error",
            b"\xff",
            b"",
        ):
            self.assertRaises(MechanismError, self.client().respond, message)

    def test_out_of_order(self) -> None:
        client = ScramClientMechanism("alice", "pw", plus=False, bindings=ChannelBindings())
        self.assertRaises(MechanismError, client.respond, self.server_first())
        client = ScramClientMechanism("alice", "pw", plus=False, bindings=ChannelBindings(), nonce=self.NONCE)
        self.assertRaises(MechanismError, client.verify_success, b"v=AAAA")
        client.initial()
        self.assertRaises(MechanismError, client.initial)
        client.respond(self.server_first())
        self.assertRaises(MechanismError, client.respond, self.server_first())

    def test_construction(self) -> None:
        """Conflicting or unusable arguments are refused when the mechanism is made."""
        e = self.assertRaises(ValueError, ScramClientMechanism, "alice", "pw", plus=True, bindings=ChannelBindings())
        self.assertIn("tls-exporter", str(e))
        e = self.assertRaises(
            ValueError, ScramClientMechanism, "alice", "pw", plus=False, bindings=BINDINGS, server_offers_plus=True
        )
        self.assertIn("plus=True", str(e))
        self.assertRaises(ValueError, ScramClientMechanism, "alice", "pw", plus=True, bindings=BINDINGS, cb_name="tls-unique")
        self.assertRaises(ValueError, ScramClientMechanism, "", "pw", plus=False, bindings=ChannelBindings())
        self.assertRaises(ValueError, ScramClientMechanism, "\u00ad", "pw", plus=False, bindings=ChannelBindings())
        self.assertRaises(PasswordError, ScramClientMechanism, "alice", "p\x07w", plus=False, bindings=ChannelBindings())
        self.assertRaises(PasswordError, ScramClientMechanism, "alice", "", plus=False, bindings=ChannelBindings())
        self.assertRaises(ValueError, ScramClientMechanism, "alice", "pw", plus=False, bindings=ChannelBindings(), nonce="a,b")
        # A client that opts out of binding on purpose passes no bindings: flag n.
        client = ScramClientMechanism("alice", "pw", plus=False, bindings=ChannelBindings(), server_offers_plus=True)
        self.assertTrue(client.initial().startswith(b"n,,"))

    def test_secrets_not_in_repr(self) -> None:
        client = ScramClientMechanism("alice", "hunter2", plus=False, bindings=ChannelBindings())
        self.assertNotIn("hunter2", repr(client))
        credentials = ScramCredentials("alice", b"m", b"proofbytes", server_signature=b"sigbytes")
        self.assertNotIn("proofbytes", repr(credentials))
        self.assertNotIn("sigbytes", repr(credentials))


class ClientRunnerTests(SynchronousTestCase):
    """With a runner, the client derives its keys there and answers with a Deferred."""

    def test_runnerUsedAndAnswerDeferred(self) -> None:
        from twisted.internet import defer

        from securenet.sasl._mechanism import ChannelBindings
        from securenet.sasl._scram import ScramClientMechanism

        calls: list[tuple[object, ...]] = []
        pending: list[defer.Deferred[bytes]] = []

        def runner(f: object, *args: object) -> defer.Deferred[bytes]:
            calls.append((f, *args))
            d: defer.Deferred[bytes] = defer.Deferred()
            pending.append(d)
            return d

        client = ScramClientMechanism("user", "pencil", plus=False, bindings=ChannelBindings(), runner=cast(Runner, runner))
        client.initial()
        nonce = client._nonce  # the test plays the server
        server_first = f"r={nonce}abc,s={base64.b64encode(b'salt' * 4).decode()},i=4096".encode()
        answer = client.respond(server_first)
        self.assertIsInstance(answer, defer.Deferred)
        self.assertEqual(len(calls), 1)
        self.assertEqual(calls[0][1:], ("pencil", b"salt" * 4, 4096))
        self.assertNoResult(answer)
        from securenet.cred._scram import salted_password

        pending[0].callback(salted_password("pencil", b"salt" * 4, 4096))
        final = self.successResultOf(answer)  # type: ignore[arg-type]
        self.assertTrue(final.startswith(b"c=biws,r=" + nonce.encode() + b"abc,p="))
