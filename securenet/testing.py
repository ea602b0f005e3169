"""
Helpers to test secure protocols without sockets: an ephemeral PKI and a TLS
connection between a client and a server factory joined in memory
(C{twisted.test.iosim}), driven by a fake clock::

    pki = EphemeralPKI.create()
    conn = connect_in_memory(
        server_policy=pki.server_policy(client_auth="required"),
        client_policy=pki.client_policy(client="alice"),
        server_factory=SessionFactory(MyFactory(), pki.certificate_portal(), clock),
        client_factory=Factory.forProtocol(MyClient),
        clock=clock,
    )
    conn.pump.flush()

Certificates are made at run time; nothing here is ever written to disk
unless you ask (L{EphemeralPKI.save}).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import attrs
import pyotp
from cryptography import x509
from twisted.cred.portal import Portal
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IReactorTime
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.test import iosim

from securenet import audit
from securenet._threads import synchronous_runner
from securenet.cred._checkers import CertificateChecker
from securenet.cred._identity import IdentityRealm
from securenet.cred._passwords import PasswordHasher
from securenet.cred._storechecker import StoreChecker
from securenet.cred._users import new_user
from securenet.interfaces import IClientMechanism, IPolicy
from securenet.pki._ca import CertificateAuthority, IssuedCertificate, default_server_sans, save_ca
from securenet.session._client import ClientCredentials, ClientSessionFactory, MechanismChooser
from securenet.session._exchange import ExchangeSettings
from securenet.session._server import SessionFactory
from securenet.store._memory import MemoryStore
from securenet.store._records import User
from securenet.tls._client import ClientTLSPolicy
from securenet.tls._guard import TLSGuard, TLSGuardFactory
from securenet.tls._server import ServerTLSCreator, ServerTLSPolicy

SERVER_ADDRESS = IPv4Address("TCP", "127.0.0.1", 8443)
CLIENT_ADDRESS = IPv4Address("TCP", "127.0.0.1", 54321)


@attrs.define
class EphemeralPKI:
    """A CA made for one test run, with a server certificate for localhost."""

    ca: CertificateAuthority
    server: IssuedCertificate
    clients: dict[str, IssuedCertificate] = attrs.field(factory=dict)

    @classmethod
    def create(cls, server_name: str = "localhost") -> EphemeralPKI:
        ca = CertificateAuthority.create("securenet test CA")
        sans = [*default_server_sans(server_name), *default_server_sans("127.0.0.1")]
        return cls(ca, ca.issue("server", server_name, sans=sans))

    def client(self, name: str) -> IssuedCertificate:
        """The client certificate for C{name}, issued on first use."""
        if name not in self.clients:
            self.clients[name] = self.ca.issue("client", name)
        return self.clients[name]

    def server_policy(self, **kwargs: Any) -> ServerTLSPolicy:
        kwargs.setdefault("certificate_chain", (self.server.certificate,))
        kwargs.setdefault("private_key", self.server.key)
        if kwargs.get("client_auth", "none") != "none":
            kwargs.setdefault("trust_roots", (self.ca.certificate,))
        return ServerTLSPolicy(**kwargs)

    def client_policy(self, client: str | IssuedCertificate | None = None, **kwargs: Any) -> ClientTLSPolicy:
        if not kwargs.get("pins") and kwargs.get("tofu") is None:
            kwargs.setdefault("trust_roots", (self.ca.certificate,))
        if client is not None:
            issued = self.client(client) if isinstance(client, str) else client
            kwargs.setdefault("certificate_chain", (issued.certificate, *issued.chain))
            kwargs.setdefault("private_key", issued.key)
        return ClientTLSPolicy(**kwargs)

    def certificate_portal(self, mapping: str = "cn") -> Portal:
        """A portal that accepts verified client certificates, named by C{mapping}."""
        return Portal(IdentityRealm(), [CertificateChecker(mapping)])

    def save(self, directory: Path) -> Path:
        """Write the CA, the server and every client issued so far under C{directory}."""
        directory.mkdir(parents=True, exist_ok=True)
        save_ca(self.ca, directory)
        self.server.save(directory, "server")
        for name, issued in self.clients.items():
            issued.save(directory, name)
        return directory

    @property
    def ca_certificate(self) -> x509.Certificate:
        return self.ca.certificate


@attrs.define
class MemoryConnection:
    """Both ends of an in-memory TLS connection."""

    pump: iosim.IOPump
    server_tls: TLSMemoryBIOProtocol
    client_tls: TLSMemoryBIOProtocol
    client_ready: Deferred[IProtocol]

    @property
    def server_guard(self) -> TLSGuard:
        guard: TLSGuard = self.server_tls.wrappedProtocol  # type: ignore[assignment]
        return guard

    @property
    def client_guard(self) -> TLSGuard:
        guard: TLSGuard = self.client_tls.wrappedProtocol  # type: ignore[assignment]
        return guard


def connect_in_memory(
    *,
    server_policy: ServerTLSPolicy,
    client_policy: ClientTLSPolicy,
    server_factory: IProtocolFactory,
    client_factory: IProtocolFactory,
    clock: Clock,
    hostname: str = "localhost",
    port: int = 8443,
    mechanism: IClientMechanism | MechanismChooser | None = None,
    totp: Callable[[], str] | None = None,
    raw_client: bool = False,
    early_data: bool = False,
) -> MemoryConnection:
    """
    Join a client and a server through TLS in memory.  Nothing moves until
    you call C{pump.flush()} (or C{pump.pump()}); C{client_ready} fires like
    L{securenet.connect}'s Deferred.

    When C{server_factory} is a L{SessionFactory} the client runs the
    authentication exchange with C{mechanism} (default: EXTERNAL with a
    client certificate, else ANONYMOUS) and C{totp}, as L{securenet.connect}
    does; with C{raw_client=True} the client application gets the exchange's
    lines itself (to drive the protocol by hand, as with C{openssl s_client}).
    C{early_data} is L{securenet.connect}'s.
    """
    ready: Deferred[IProtocol] = Deferred()
    client_guard: TLSGuardFactory
    if isinstance(server_factory, SessionFactory) and not raw_client:
        client_guard = ClientSessionFactory(
            client_factory, clock, ClientCredentials(mechanism, totp), early_data=early_data, ready=ready
        )
    else:
        if not isinstance(server_factory, TLSGuardFactory):
            server_factory = TLSGuardFactory(server_factory, clock)
        client_guard = TLSGuardFactory(client_factory, clock, ready=ready)
    # The clock also drives Twisted's write aggregation (callLater(0)); without
    # it application bytes would wait on the global reactor, which never runs.
    server_tls_factory = TLSMemoryBIOFactory(ServerTLSCreator(server_policy, clock), False, server_factory, clock=clock)
    client_tls_factory = TLSMemoryBIOFactory(client_policy.creator(hostname, port), True, client_guard, clock=clock)
    server_tls = server_tls_factory.buildProtocol(CLIENT_ADDRESS)
    client_tls = client_tls_factory.buildProtocol(SERVER_ADDRESS)
    server_transport = iosim.FakeTransport(server_tls, isServer=True, hostAddress=SERVER_ADDRESS, peerAddress=CLIENT_ADDRESS)
    client_transport = iosim.FakeTransport(client_tls, isServer=False, hostAddress=CLIENT_ADDRESS, peerAddress=SERVER_ADDRESS)
    pump = iosim.connect(server_tls, server_transport, client_tls, client_transport, greet=False, clock=clock)
    return MemoryConnection(pump, server_tls, client_tls, ready)


# -- a portal with users, and an application connected in memory ---------------------

#: The SCRAM iteration count of L{memory_portal}'s users (cheap: tests only).
TEST_SCRAM_ITERATIONS = 4096


def weak_hasher() -> PasswordHasher:
    """argon2id with tiny parameters: fast, and never for real passwords."""
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, insecurely_weak=True)


def memory_portal(
    users: Mapping[str, Iterable[str]] | None = None,
    *,
    clock: IReactorTime,
    passwords: Mapping[str, str] | None = None,
    attributes: Mapping[str, Mapping[str, Any]] | None = None,
    totp: Mapping[str, str] | None = None,
    disabled: Iterable[str] = (),
    certificate: bool | str = True,
) -> Portal:
    """
    A portal over an in-memory credential store, as C{twistd securenet
    --auth certificate --auth sqlite:...} builds one, with cheap hashing::

        portal = memory_portal({"alice": ["reader"], "ops": ["operator"]},
                               passwords={"ops": "pw"}, totp={"ops": SECRET}, clock=clock)

    @param users: user name to roles.  A user without a password (and not
        in C{passwords}) can still log in by certificate (EXTERNAL, with the
        name as CN) and gets these roles.
    @param passwords: user name to password: PLAIN and SCRAM-SHA-256(-PLUS)
        logins.  Users named only here have no roles.
    @param attributes: user name to stored attributes (C{identity.attributes}).
    @param totp: user name to a base32 TOTP secret (the user must have a
        password); L{totp_code} makes a code for it.
    @param disabled: users whose every login is refused.
    @param certificate: accept verified client certificates (EXTERNAL),
        named by C{"cn"} (True) or the given mapping; False: no certificates.
    @return: the portal; C{portal.realm.store} is its L{MemoryStore}.
    """
    store = MemoryStore()
    roles = {name: tuple(r) for name, r in (users or {}).items()}
    passwords = dict(passwords or {})
    names = list(dict.fromkeys([*roles, *passwords, *(attributes or {}), *(totp or {})]))
    off = set(disabled)
    hasher = weak_hasher()
    for name in names:
        record: User
        if name in passwords:
            record = new_user(
                name,
                passwords[name],
                roles=roles.get(name, ()),
                hasher=hasher,
                scram_iterations=TEST_SCRAM_ITERATIONS,
                attributes=(attributes or {}).get(name),
            )
        elif name in (totp or {}):
            raise ValueError(f"memory_portal: {name!r} has a TOTP secret but no password")
        else:
            record = User(name=name, roles=roles.get(name, ()), attributes=dict((attributes or {}).get(name, {})))
        if name in (totp or {}):
            record = attrs.evolve(record, totp_secret=(totp or {})[name])
        if name in off:
            record = attrs.evolve(record, disabled=True)
        store.add_user(record)
    checkers: list[Any] = [
        StoreChecker(store, clock, runner=synchronous_runner, hasher=hasher, scram_iterations=TEST_SCRAM_ITERATIONS)
    ]
    if certificate:
        checkers.append(CertificateChecker("cn" if certificate is True else str(certificate)))
    return Portal(IdentityRealm(store), checkers)


def totp_code(secret: str, clock: IReactorTime, offset: float = 0) -> str:
    """The TOTP code of C{secret} at C{clock}'s time (plus C{offset} seconds)."""
    return pyotp.TOTP(secret).at(clock.seconds() + offset)


@attrs.define
class AppConnection:
    """
    A client application connected to a server application through a
    securenet session, in memory (L{connect_app_in_memory}).

    @ivar server: the server's application protocol, or None if the client
        did not get through (TLS or authentication failed) or the
        application closed the connection at once.
    @ivar client: the client's application protocol, or None likewise.
    @ivar failure: why the client did not get through, or None.
    @ivar connection: the TLS connection underneath (its C{pump}, both
        guards).
    """

    connection: MemoryConnection
    clock: Clock
    server: Any
    client: Any
    failure: Failure | None

    def flush(self) -> None:
        """Deliver everything written so far, both ways."""
        self.connection.pump.flush()

    def advance(self, seconds: float) -> None:
        """Move the fake clock on, then deliver."""
        self.clock.advance(seconds)
        self.flush()


def connect_app_in_memory(
    server_app: IProtocolFactory,
    client_app: IProtocolFactory,
    *,
    pki: EphemeralPKI,
    policy: IPolicy | None = None,
    portal: Portal | None = None,
    client: str | IssuedCertificate | None = "alice",
    mechanism: IClientMechanism | MechanismChooser | None = None,
    totp: Callable[[], str] | None = None,
    clock: Clock | None = None,
    settings: ExchangeSettings = ExchangeSettings(),
) -> AppConnection:
    """
    Serve C{server_app} as C{twistd securenet --policy} would (TLS with
    optional client certificates, the authentication exchange through
    C{portal}, C{policy} on the session) and connect C{client_app} to it,
    in memory; everything up to the applications' first bytes is delivered::

        conn = connect_app_in_memory(KVFactory(), Factory.forProtocol(amp.AMP),
                                     pki=pki, policy=policy, portal=portal, client="alice")
        conn.client.callRemote(Get, key="x")    # then conn.flush()

    @param portal: default: certificates only (C{pki.certificate_portal()}).
    @param client: the name of a client certificate of C{pki} (issued on
        first use), an issued certificate, or None to present none.
    @param mechanism: how the client authenticates (default EXTERNAL with a
        certificate, else ANONYMOUS); C{totp} answers a TOTP request.
    @param clock: the fake clock (default a new one).
    """
    clock = clock if clock is not None else Clock()
    session = SessionFactory(
        server_app, portal if portal is not None else pki.certificate_portal(), clock, settings=settings, policy=policy
    )
    conn = connect_in_memory(
        server_policy=pki.server_policy(client_auth="optional"),
        client_policy=pki.client_policy(client),
        server_factory=session,
        client_factory=client_app,
        clock=clock,
        mechanism=mechanism,
        totp=totp,
    )
    outcome: list[Any] = []
    conn.client_ready.addBoth(outcome.append)
    guard = conn.server_guard  # the TLS layer lets go of it if the connection closes
    conn.pump.flush()
    result = outcome[0] if outcome else None
    failure = result if isinstance(result, Failure) else None
    if not outcome:
        failure = Failure(RuntimeError("the client neither connected nor failed (is something waiting on the clock?)"))
    return AppConnection(
        connection=conn,
        clock=clock,
        server=guard.wrappedProtocol,
        client=None if failure is not None else result,
        failure=failure,
    )


def debug_events(testcase: Any) -> None:
    """Let securenet emit its debug events until C{testcase} (a trial or unittest TestCase) ends."""
    previous = audit.level()
    audit.set_level("debug")
    testcase.addCleanup(audit.set_level, previous)


class EventCapture:
    """
    Collects every securenet audit event (L{securenet.audit}) logged while a
    test runs, debug events included (securenet's level is lowered to debug
    meanwhile, and restored when the test ends)::

        events = EventCapture(self)
        ...
        [decision] = events.of("auth.decision", result="denied")
    """

    def __init__(self, testcase: Any) -> None:
        debug_events(testcase)
        self.events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, self._observe)
        globalLogPublisher.addObserver(observer)
        testcase.addCleanup(globalLogPublisher.removeObserver, observer)

    def _observe(self, event: dict[str, Any]) -> None:
        if "securenet_event" in event:
            self.events.append(event)

    def of(self, kind: str, **match: object) -> list[dict[str, Any]]:
        """The events of C{kind} whose fields equal C{match}."""
        return [e for e in self.events if e["securenet_event"] == kind and all(e.get(k) == v for k, v in match.items())]
