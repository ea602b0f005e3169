"""
The mechanism matrix: every real mechanism -- PLAIN, SCRAM-SHA-256,
SCRAM-SHA-256-PLUS (tls-exporter and tls-server-end-point), OAUTHBEARER,
APIKEY, EXTERNAL -- through one real portal (L{IdentityRealm} over a
L{MemoryStore}, L{StoreChecker}, L{TokenChecker} with an Ed25519 key,
L{CertificateChecker}) and our own client, in memory (TLS through iosim, a
fake clock), case by case: success, wrong secret, unknown user, disabled
user, malformed base64, over-long lines, too many attempts, the deadline,
and the TOTP second factor.

Each mechanism is a L{Driver}: how to make good, wrong, unknown, disabled
and TOTP-enrolled credentials for it (as a client mechanism, which the raw
client also uses to write the exact lines by hand), what the audit log says
for each refusal, and how to start an attempt and leave it waiting.  Each
case is a class with a C{check(driver)} method; L{per_driver} turns it into
one test method per mechanism (C{test_PLAIN}, C{test_SCRAM_SHA_256_PLUS_tls_exporter},
...), and every assertion message names the mechanism too.

Cheap test hashing only (argon2id with insecurely_weak parameters, SCRAM
with 4096 iterations, everything run synchronously), so the whole matrix
runs in a few seconds.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, cast

import attrs
import pyotp
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from securenet._threads import Runner, synchronous_runner
from securenet.cred._apikeys import create_api_key, parse_api_key
from securenet.cred._checkers import CertificateChecker
from securenet.cred._identity import Identity, IdentityRealm
from securenet.cred._jwt import TokenChecker, TokenIssuer, TokenSettings
from securenet.cred._passwords import PasswordHasher
from securenet.cred._storechecker import StoreChecker
from securenet.cred._users import new_user
from securenet.interfaces import IClientMechanism
from securenet.pki._tokenkeys import TokenKey
from securenet.sasl._apikey import APIKeyClientMechanism
from securenet.sasl._builtin import ExternalClientMechanism
from securenet.sasl._channel import channel_bindings
from securenet.sasl._mechanism import ChannelBindings
from securenet.sasl._oauthbearer import OAuthBearerClientMechanism
from securenet.sasl._plain import PlainClientMechanism
from securenet.sasl._scram import SCRAM_SHA_256, SCRAM_SHA_256_PLUS, ScramClientMechanism
from securenet.session._client import ClientSession
from securenet.session._errors import AuthenticationFailed
from securenet.session._exchange import MAX_LINE, ExchangeSettings, b64decode, b64encode
from securenet.session._server import ServerSession, SessionFactory, identity_of
from securenet.store._memory import MemoryStore
from securenet.store._records import User
from securenet.testing import EphemeralPKI, EventCapture, MemoryConnection, connect_in_memory
from securenet.tls._client import ClientTLSPolicy
from securenet.tls._server import ServerTLSPolicy
from tests.support.tls import SERVER_DATA, RecordingFactory, RecordingProtocol

#: The fake clock's start, as POSIX time: tokens, API keys and TOTP all read it.
START = 1_750_000_000.0
SCRAM_ITERATIONS = 4096
TOKEN_SCOPES = ("read",)
API_KEY_SCOPES = ("deploy", "read")
DEADLINE = ExchangeSettings().deadline

AUTH_FAILED = "NO AUTH-FAILED authentication failed"
MALFORMED = "NO MALFORMED payload is not valid base64"
LINE_TOO_LONG = f"NO LINE-TOO-LONG lines are limited to {MAX_LINE} bytes"
TOO_MANY = "NO TOO-MANY-ATTEMPTS 3 failed attempts; closing"
TIMEOUT = "NO TIMEOUT authentication took too long"
GREETING_WITHOUT_CERTIFICATE = "SECURENET 1 AUTH SCRAM-SHA-256-PLUS SCRAM-SHA-256 OAUTHBEARER APIKEY PLAIN"
GREETING_WITH_CERTIFICATE = "SECURENET 1 AUTH EXTERNAL SCRAM-SHA-256-PLUS SCRAM-SHA-256 OAUTHBEARER APIKEY PLAIN"

#: Which credentials a driver makes:
#: good      - alice's, right;
#: wrong     - alice's, with a wrong secret (or, for EXTERNAL, claiming to be bob);
#: unknown   - someone the server does not know (user, key id, token key; for EXTERNAL claiming a name nobody has);
#: disabled  - carol's, right, but carol is disabled;
#: enrolled  - tom's, right; tom is enrolled in TOTP.
Kind = Literal["good", "wrong", "unknown", "disabled", "enrolled"]

PASSWORDS = {"alice": "wonderland", "bob": "builder", "carol": "carol-pw", "tom": "tom-pw"}
ROLES = {"alice": ("admin", "ops"), "bob": ("dev",), "carol": ("ops",), "tom": ("staff",)}
USER_OF: dict[Kind, str] = {"good": "alice", "wrong": "alice", "unknown": "nobody", "disabled": "carol", "enrolled": "tom"}


# -- shared, immutable test material (made once per run) ---------------------------


@functools.cache
def pki() -> EphemeralPKI:
    return EphemeralPKI.create()


@functools.cache
def server_policy() -> ServerTLSPolicy:
    return pki().server_policy(client_auth="optional")


@functools.cache
def client_policy(certificate: str | None) -> ClientTLSPolicy:
    return pki().client_policy(client=certificate)


@functools.cache
def hasher() -> PasswordHasher:
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, insecurely_weak=True)


@functools.cache
def totp_secret() -> str:
    return pyotp.random_base32()


@functools.cache
def users() -> tuple[User, ...]:
    """alice and bob (enabled), carol (disabled), tom (enrolled in TOTP)."""
    records = []
    for name, password in PASSWORDS.items():
        user = new_user(name, password, roles=ROLES[name], hasher=hasher(), scram_iterations=SCRAM_ITERATIONS)
        if name == "carol":
            user = attrs.evolve(user, disabled=True)
        if name == "tom":
            user = attrs.evolve(user, totp_secret=totp_secret())
        records.append(user)
    return tuple(records)


@functools.cache
def token_key(name: str) -> TokenKey:
    """C{server}: the key the server trusts; C{other}: an untrusted key; C{rogue}: an untrusted key with a kid."""
    return TokenKey.private(ed25519.Ed25519PrivateKey.generate(), kid="rogue" if name == "rogue" else None)


@functools.cache
def token_settings(name: str = "server") -> TokenSettings:
    return TokenSettings(keys=(token_key(name),))


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode("utf-8") if isinstance(data, str) else data).decode("ascii")


# -- the drivers -------------------------------------------------------------------


ClientMaker = Callable[["MechanismTestCase", Kind, ChannelBindings], IClientMechanism]


@attrs.frozen
class Driver:
    """
    One mechanism as the matrix drives it.

    @ivar label: names the generated tests and every assertion message.
    @ivar name: the mechanism on the wire and on the identity.
    @ivar client: makes a client mechanism for a kind of credentials, given
        the client's channel bindings.
    @ivar reasons: what the denied C{auth.decision} says for each refused kind.
    @ivar attempted: whether the decision names the attempted user (the
        mechanisms that carry a user name do).
    @ivar scopes: the scopes an accepted credential puts on the identity.
    @ivar certificates: whether the client presents a certificate (the
        kind's user's); only EXTERNAL needs one.
    @ivar challenges: whether an attempt can be left waiting on a server
        challenge (all but EXTERNAL, which completes on its AUTH line).
    @ivar totp: whether a TOTP second factor follows for an enrolled user.
    """

    label: str
    name: str
    client: ClientMaker
    reasons: Mapping[Kind, str]
    attempted: bool = False
    scopes: tuple[str, ...] = ()
    certificates: bool = False
    challenges: bool = True
    totp: bool = False

    def certificate(self, kind: Kind) -> str | None:
        if not self.certificates:
            return None
        return USER_OF[kind] if kind in ("disabled", "enrolled") else "alice"

    def greeting(self) -> str:
        return GREETING_WITH_CERTIFICATE if self.certificates else GREETING_WITHOUT_CERTIFICATE

    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9]+", "_", self.label)


def password_of(kind: Kind) -> str:
    return "not-the-password" if kind == "wrong" else PASSWORDS.get(USER_OF[kind], "some-password")


def plain(case: MechanismTestCase, kind: Kind, bindings: ChannelBindings) -> IClientMechanism:
    return PlainClientMechanism(USER_OF[kind], password_of(kind))


def scram(plus: bool, cb_name: str = "tls-exporter") -> ClientMaker:
    def make(case: MechanismTestCase, kind: Kind, bindings: ChannelBindings) -> IClientMechanism:
        # Plain SCRAM opts out of binding on purpose (empty bindings: GS2 flag n),
        # since the server offers -PLUS and this client could bind.
        return ScramClientMechanism(
            USER_OF[kind],
            password_of(kind),
            plus=plus,
            bindings=bindings if plus else ChannelBindings(),
            cb_name=cb_name,
        )

    return make


def oauthbearer(case: MechanismTestCase, kind: Kind, bindings: ChannelBindings) -> IClientMechanism:
    return OAuthBearerClientMechanism(case.token(kind))


def apikey(case: MechanismTestCase, kind: Kind, bindings: ChannelBindings) -> IClientMechanism:
    return APIKeyClientMechanism(case.api_key(kind))


def external(case: MechanismTestCase, kind: Kind, bindings: ChannelBindings) -> IClientMechanism:
    return ExternalClientMechanism({"wrong": "bob", "unknown": "nobody"}.get(kind, ""))


PASSWORD_REASONS: Mapping[Kind, str] = {
    "wrong": "wrong password for 'alice'",
    "unknown": "no user 'nobody'",
    "disabled": "user 'carol' is disabled",
}
SCRAM_REASONS: Mapping[Kind, str] = {
    "wrong": "wrong SCRAM proof for 'alice'",
    "unknown": "no user 'nobody'",
    "disabled": "user 'carol' is disabled",
}

PLAIN_DRIVER = Driver("PLAIN", "PLAIN", plain, PASSWORD_REASONS, attempted=True, totp=True)
SCRAM_DRIVER = Driver(SCRAM_SHA_256, SCRAM_SHA_256, scram(False), SCRAM_REASONS, attempted=True, totp=True)
SCRAM_PLUS_EXPORTER = Driver(
    "SCRAM-SHA-256-PLUS tls-exporter", SCRAM_SHA_256_PLUS, scram(True), SCRAM_REASONS, attempted=True, totp=True
)
SCRAM_PLUS_END_POINT = Driver(
    "SCRAM-SHA-256-PLUS tls-server-end-point",
    SCRAM_SHA_256_PLUS,
    scram(True, "tls-server-end-point"),
    SCRAM_REASONS,
    attempted=True,
    totp=True,
)
OAUTHBEARER_DRIVER = Driver(
    "OAUTHBEARER",
    "OAUTHBEARER",
    oauthbearer,
    {"wrong": "bad signature", "unknown": "unknown kid 'rogue'", "disabled": "user disabled"},
    scopes=TOKEN_SCOPES,
)
APIKEY_DRIVER = Driver(
    "APIKEY",
    "APIKEY",
    apikey,
    {"wrong": "wrong secret", "unknown": "unknown key id", "disabled": "owner disabled"},
    scopes=API_KEY_SCOPES,
)
EXTERNAL_DRIVER = Driver(
    "EXTERNAL",
    "EXTERNAL",
    external,
    {
        "wrong": "authorization id 'bob' is not 'alice'",
        "unknown": "authorization id 'nobody' is not 'alice'",
        "disabled": "disabled",
    },
    certificates=True,
    challenges=False,
)

PASSWORD_DRIVERS = (PLAIN_DRIVER, SCRAM_DRIVER, SCRAM_PLUS_EXPORTER, SCRAM_PLUS_END_POINT)
DRIVERS = (*PASSWORD_DRIVERS, OAUTHBEARER_DRIVER, APIKEY_DRIVER, EXTERNAL_DRIVER)


def per_driver(*drivers: Driver) -> Callable[[type[MechanismTestCase]], type[MechanismTestCase]]:
    """
    Give the decorated case class one test method per driver, named after
    it, each calling C{check(driver)}: a failure names the mechanism.
    """

    def decorate(cls: type[MechanismTestCase]) -> type[MechanismTestCase]:
        check: Callable[[Any, Driver], None] = cls.check  # type: ignore[attr-defined]
        for driver in drivers:

            def test(self: MechanismTestCase, driver: Driver = driver) -> None:
                self.label = driver.label
                check(self, driver)

            test.__name__ = f"test_{driver.slug()}"
            test.__qualname__ = f"{cls.__qualname__}.{test.__name__}"
            test.__doc__ = f"{driver.label}: {(check.__doc__ or '').strip()}"
            setattr(cls, test.__name__, test)
        return cls

    return decorate


# -- the harness -------------------------------------------------------------------


class MechanismTestCase(SynchronousTestCase):
    """A real portal over a fresh store, a fake clock at L{START}, and helpers."""

    label = "?"

    def setUp(self) -> None:
        self.log = EventCapture(self)
        self.clock = Clock()
        self.clock.advance(START)
        self.store = MemoryStore()
        for user in users():
            self.successResultOf(self.store.add_user(user))
        self.api_keys = {
            name: self.successResultOf(create_api_key(self.store, name, scopes=API_KEY_SCOPES, clock=self.clock))[0]
            for name in ("alice", "carol", "tom")
        }
        self.store_checker = StoreChecker(
            self.store, self.clock, runner=synchronous_runner, hasher=hasher(), scram_iterations=SCRAM_ITERATIONS
        )
        self.portal = Portal(
            IdentityRealm(self.store),
            [self.store_checker, TokenChecker(token_settings(), self.store, self.clock), CertificateChecker()],
        )
        self.connections: list[MemoryConnection] = []

    # credentials

    def token(self, kind: Kind) -> str:
        """A token for the kind's user: signed by the trusted key, another key (wrong) or an unknown kid's (unknown)."""
        key = {"wrong": "other", "unknown": "rogue"}.get(kind, "server")
        subject = "alice" if kind in ("wrong", "unknown") else USER_OF[kind]
        return TokenIssuer(token_settings(key), self.clock).issue(subject, ttl=3600, scopes=TOKEN_SCOPES)

    def api_key(self, kind: Kind) -> str:
        """The kind's user's key; alice's id with another secret (wrong); a well-formed unknown id (unknown)."""
        good = self.api_keys["alice" if kind in ("wrong", "unknown") else USER_OF[kind]]
        parsed = parse_api_key(good)
        assert parsed is not None
        key_id, secret = parsed
        other_secret = ("B" if secret[0] == "A" else "A") + secret[1:]
        if kind == "wrong":
            return f"sn_{key_id}.{other_secret}"
        if kind == "unknown":
            unknown_id = "".join("Z" if c != "Z" else "Y" for c in key_id)
            return f"sn_{unknown_id}.{secret}"
        return good

    def totp_code(self, offset: int = 0) -> str:
        return pyotp.TOTP(totp_secret()).at(self.clock.seconds() + offset)

    def wrong_totp_code(self) -> str:
        """A code that no step within 10 steps of now has (so the refusal says 'wrong code')."""
        totp = pyotp.TOTP(totp_secret())
        near = {totp.at(self.clock.seconds() + 30 * step) for step in range(-10, 11)}
        return next(code for code in (f"{n:06d}" for n in range(1_000_000)) if code not in near)

    # connecting

    def connect(
        self, driver: Driver, kind: Kind, *, raw: bool = False, totp: Callable[[], str] | None = None
    ) -> MemoryConnection:
        """
        A new connection (new server and client app factories, new decision
        mark), with our client authenticating with C{kind} credentials, or
        with C{raw} a client that speaks the exchange by hand.
        """

        def choose(offered: Sequence[str], bindings: ChannelBindings, has_certificate: bool) -> IClientMechanism:
            return driver.client(self, kind, bindings)

        self.apps = RecordingFactory(SERVER_DATA)
        self.client_apps = RecordingFactory()
        self.mark = len(self.log.events)
        self.conn = connect_in_memory(
            server_policy=server_policy(),
            client_policy=client_policy(driver.certificate(kind)),
            server_factory=SessionFactory(self.apps, self.portal, self.clock),
            client_factory=self.client_apps,
            clock=self.clock,
            mechanism=None if raw else choose,
            totp=totp,
            raw_client=raw,
        )
        self.connections.append(self.conn)
        self.session = self.conn.server_guard
        self.assertIsInstance(self.session, ServerSession, self.label)
        self.conn.pump.flush()
        return self.conn

    def decisions(self) -> list[dict[str, Any]]:
        """The auth.decision events of the current connection."""
        return [e for e in self.log.events[self.mark :] if e["securenet_event"] == "auth.decision"]

    # the raw client

    def rawClient(self) -> RecordingProtocol:
        [client] = self.client_apps.built
        return client

    def write(self, data: bytes) -> None:
        transport = self.rawClient().transport
        assert transport is not None
        transport.write(data)
        self.conn.pump.flush()

    def send(self, *lines: str) -> None:
        for line in lines:
            self.write(line.encode("ascii") + b"\r\n")

    def transcript(self) -> tuple[list[str], bytes]:
        """The complete lines the raw client received, and the bytes after the last one."""
        *lines, rest = b"".join(self.rawClient().received).split(b"\r\n")
        return [line.decode("ascii") for line in lines], rest

    def lines(self) -> list[str]:
        lines, rest = self.transcript()
        self.assertEqual(rest, b"", self.label)
        return lines

    def clientBindings(self) -> ChannelBindings:
        return channel_bindings(self.conn.client_tls.getHandle(), "client")

    def rawMechanism(self, driver: Driver, kind: Kind) -> IClientMechanism:
        return driver.client(self, kind, self.clientBindings())

    def rawAttempt(self, driver: Driver, kind: Kind) -> list[str]:
        """
        One attempt written by hand with the driver's client mechanism: the
        AUTH line, a response to each challenge; the server's lines of this
        attempt.  On OK, the mechanism checks the server's final data.
        """
        mechanism = self.rawMechanism(driver, kind)
        start = len(self.transcript()[0])
        initial = mechanism.initial()
        self.send(f"AUTH {mechanism.name} {b64encode(initial)}" if initial is not None else f"AUTH {mechanism.name}")
        while True:
            answer = self.transcript()[0][start:]
            self.assertTrue(answer, f"{self.label}: no answer from the server")
            last = answer[-1]
            if last.startswith("+ "):
                self.send(b64encode(cast(bytes, mechanism.respond(b64decode(last[2:])))))
                continue
            if last.startswith("OK "):
                _, _, extra = last[3:].partition(" ")
                mechanism.verify_success(b64decode(extra) if extra else None)
            return answer

    def stall(self, driver: Driver) -> list[str]:
        """
        Start a good attempt and leave it waiting on the server's challenge:
        C{AUTH <mech>} without an initial response (an empty challenge), or
        for SCRAM the client-first message (the server-first challenge).
        Returns the challenge line.
        """
        if driver.name.startswith("SCRAM"):
            mechanism = self.rawMechanism(driver, "good")
            initial = mechanism.initial()
            assert initial is not None
            self.send(f"AUTH {driver.name} {b64encode(initial)}")
            challenge = self.lines()[-1]
            self.assertRegex(
                b64decode(challenge.removeprefix("+ ")).decode("ascii"), rf"^r=[^,]+,s=[^,]+,i={SCRAM_ITERATIONS}$", self.label
            )
            return [challenge]
        self.send(f"AUTH {driver.name}")
        self.assertEqual(self.lines()[-1], "+ =", self.label)
        return ["+ ="]

    # outcomes

    def serverTransportDisconnected(self) -> bool:
        """Whether the server's iosim transport was closed (the TLS layer let go of the connection)."""
        transport = self.conn.server_tls.transport
        assert isinstance(transport, iosim.FakeTransport)
        return bool(transport.disconnected)

    def assertOpen(self) -> None:
        self.assertTrue(self.session.connected, f"{self.label}: the server closed the connection")
        self.assertFalse(self.conn.server_tls.disconnecting, self.label)
        self.assertFalse(self.serverTransportDisconnected(), self.label)

    def assertClosed(self) -> None:
        self.assertTrue(self.serverTransportDisconnected(), f"{self.label}: the connection is still open")
        self.assertFalse(self.session.connected, self.label)

    def assertNoApp(self) -> None:
        """The server application was never built, so it never saw a byte; no identity."""
        self.assertEqual(self.apps.built, [], f"{self.label}: the server application was built")
        self.assertEqual(self.apps.received, b"", self.label)
        self.assertIsNone(self.session.identity, self.label)

    def assertDenied(
        self, decision: dict[str, Any], driver: Driver, reason: str, *, mechanism: str | None, attempted: str | None
    ) -> None:
        self.assertEqual(decision["result"], "denied", self.label)
        self.assertIsNone(decision["identity"], self.label)
        self.assertEqual(decision["mechanism"], mechanism, self.label)
        self.assertEqual(decision["attempted"], attempted, self.label)
        self.assertTrue(decision["reason"], f"{self.label}: a denial without a reason")
        self.assertIn(reason, decision["reason"], self.label)
        self.assertEqual(decision["peer"], "127.0.0.1:54321", self.label)

    def assertOneDenial(self, driver: Driver, reason: str, *, mechanism: str | None, attempted: str | None = None) -> None:
        decisions = self.decisions()
        self.assertEqual(len(decisions), 1, f"{self.label}: {decisions}")
        self.assertDenied(decisions[0], driver, reason, mechanism=mechanism, attempted=attempted)

    def attemptedBy(self, driver: Driver, kind: Kind) -> str | None:
        return USER_OF[kind] if driver.attempted else None

    def assertAuthenticated(self, driver: Driver, kind: Kind, *, second_factor: str | None = None) -> Identity:
        """
        Our client's Deferred fired with its app; the server app was built
        once and sees the identity (name, mechanism, roles from the store,
        the credential's scopes, the second factor); application bytes flow;
        one 'ok' decision.
        """
        client_app = self.successResultOf(self.conn.client_ready)
        assert isinstance(client_app, RecordingProtocol)
        self.assertEqual(self.client_apps.built, [client_app], self.label)
        self.assertEqual(len(self.apps.built), 1, f"{self.label}: the server application was not built")
        identity = identity_of(self.apps.built[0])
        user = USER_OF[kind]
        self.assertEqual(identity.avatar_id, user, self.label)
        self.assertEqual(identity.mechanism, driver.name, self.label)
        self.assertEqual(identity.roles, ROLES[user], self.label)
        self.assertEqual(identity.scopes, driver.scopes, self.label)
        self.assertEqual(identity.second_factor, second_factor, self.label)
        self.assertEqual(identity.peer, "127.0.0.1:54321", self.label)
        client_guard = self.conn.client_guard
        assert isinstance(client_guard, ClientSession)
        self.assertEqual(client_guard.authenticated_as, user, self.label)
        self.assertEqual(b"".join(client_app.received), SERVER_DATA, self.label)
        [decision] = self.decisions()
        self.assertEqual(decision["result"], "ok", self.label)
        self.assertEqual(decision["identity"], user, self.label)
        self.assertEqual(decision["mechanism"], driver.name, self.label)
        self.assertEqual(decision["second_factor"], second_factor, self.label)
        return identity

    def assertRefused(self, driver: Driver, kind: Kind, reason: str) -> tuple[type, str, str]:
        """
        Our client failed with exactly AuthenticationFailed AUTH-FAILED; no
        server app; one denial with C{reason}.  Returns the client's error
        as (type, code, text) for comparisons.
        """
        if self.apps.built:
            self.fail(f"{self.label}: {kind} credentials were ACCEPTED: {identity_of(self.apps.built[0])!r}")
        error = self.failureResultOf(self.conn.client_ready, AuthenticationFailed).value
        self.assertIs(type(error), AuthenticationFailed, f"{self.label}: {error!r}")
        self.assertEqual((error.code, error.text), ("AUTH-FAILED", "authentication failed"), self.label)
        self.assertNoApp()
        self.assertEqual(self.client_apps.built, [], self.label)
        self.assertOneDenial(driver, reason, mechanism=driver.name, attempted=self.attemptedBy(driver, kind))
        return type(error), error.code, error.text


def challenge_shape(line: str) -> str:
    """A line with a SCRAM server-first challenge reduced to its shape (lengths, iteration count)."""
    if not line.startswith("+ ") or line == "+ =":
        return line
    text = b64decode(line[2:]).decode("ascii")
    match = re.fullmatch(r"r=([^,]+),s=([^,]+),i=([0-9]+)", text)
    if match is None:
        return line
    nonce, salt, iterations = match.groups()
    return f"+ r=<{len(nonce)} chars>,s=<{len(b64decode(salt))} bytes>,i={iterations}"


# -- the cases ---------------------------------------------------------------------


@per_driver(*DRIVERS)
class SuccessTests(MechanismTestCase):
    def check(self, driver: Driver) -> None:
        """Right credentials: the app is built and sees the identity, its roles from the store and the credential's scopes."""
        self.connect(driver, "good")
        self.assertAuthenticated(driver, "good")
        self.assertOpen()


@per_driver(*DRIVERS)
class WrongSecretTests(MechanismTestCase):
    def check(self, driver: Driver) -> None:
        """A wrong secret: AUTH-FAILED for our client, no app, one denial saying why."""
        self.connect(driver, "wrong")
        self.assertRefused(driver, "wrong", driver.reasons["wrong"])


@per_driver(*DRIVERS)
class UnknownUserTests(MechanismTestCase):
    def check(self, driver: Driver) -> None:
        """
        An unknown user looks like a wrong secret on the wire: the same
        client error, the same server lines (for SCRAM a challenge of the
        same shape, the same iteration count); only the audit log differs.
        """
        self.connect(driver, "wrong")
        wrong_error = self.assertRefused(driver, "wrong", driver.reasons["wrong"])
        self.connect(driver, "unknown")
        unknown_error = self.assertRefused(driver, "unknown", driver.reasons["unknown"])
        self.assertEqual(unknown_error, wrong_error, self.label)

        transcripts = []
        for kind in ("wrong", "unknown"):
            self.connect(driver, kind, raw=True)
            answer = self.rawAttempt(driver, kind)
            self.assertEqual(answer[-1], AUTH_FAILED, self.label)
            self.assertOpen()
            self.assertNoApp()
            self.assertOneDenial(driver, driver.reasons[kind], mechanism=driver.name, attempted=self.attemptedBy(driver, kind))
            transcripts.append([challenge_shape(line) for line in self.lines()])
        self.assertEqual(transcripts[0], transcripts[1], self.label)
        if driver.name.startswith("SCRAM"):
            self.assertEqual(
                transcripts[0],
                [driver.greeting(), f"+ r=<64 chars>,s=<16 bytes>,i={SCRAM_ITERATIONS}", AUTH_FAILED],
                self.label,
            )
        else:
            self.assertEqual(transcripts[0], [driver.greeting(), AUTH_FAILED], self.label)


@per_driver(*DRIVERS)
class DisabledUserTests(MechanismTestCase):
    def check(self, driver: Driver) -> None:
        """
        A disabled user's right credentials are refused like a wrong secret.

        For EXTERNAL the refusal comes from the realm: a certificate proves
        the name, but a disabled user does not get in however they prove it.
        """
        self.connect(driver, "disabled")
        self.assertRefused(driver, "disabled", driver.reasons["disabled"])


@per_driver(*DRIVERS)
class MalformedBase64Tests(MechanismTestCase):
    def check(self, driver: Driver) -> None:
        """
        C{AUTH <mech> !!!} (and C{!!!} as a response to a challenge) is
        NO MALFORMED; the connection stays open and a good attempt then
        succeeds on it.
        """
        self.connect(driver, "good", raw=True)
        self.send(f"AUTH {driver.name} !!!")
        self.assertEqual(self.lines(), [driver.greeting(), MALFORMED], self.label)
        self.assertOpen()
        self.assertNoApp()
        # The base64 is refused before the mechanism starts: the decision names none.
        self.assertOneDenial(driver, "payload is not valid base64", mechanism=None)
        expected = [driver.greeting(), MALFORMED]
        if driver.challenges:
            expected += self.stall(driver)
            self.send("!!!")
            expected.append(MALFORMED)
            self.assertEqual(self.lines(), expected, self.label)
            self.assertOpen()
            self.assertNoApp()
            self.assertEqual(len(self.decisions()), 2, self.label)
            self.assertDenied(self.decisions()[1], driver, "payload is not valid base64", mechanism=driver.name, attempted=None)
        answer = self.rawAttempt(driver, "good")
        self.assertTrue(answer[-1].startswith("OK alice"), f"{self.label}: {answer}")
        self.assertEqual(len(self.apps.built), 1, self.label)
        identity = identity_of(self.apps.built[0])
        self.assertEqual((identity.avatar_id, identity.mechanism), ("alice", driver.name), self.label)
        self.assertEqual(self.transcript()[1], SERVER_DATA, self.label)


@per_driver(*DRIVERS)
class OverlongAuthLineTests(MechanismTestCase):
    def check(self, driver: Driver) -> None:
        """An AUTH line for the mechanism longer than the limit: NO LINE-TOO-LONG, closed, no app."""
        self.connect(driver, "good", raw=True)
        self.write(f"AUTH {driver.name} ".encode("ascii") + b"A" * MAX_LINE + b"\r\n")
        self.assertEqual(self.lines(), [driver.greeting(), LINE_TOO_LONG], self.label)
        self.assertClosed()
        self.assertNoApp()
        self.assertOneDenial(driver, f"a line exceeded {MAX_LINE} bytes", mechanism=None)


@per_driver(*(d for d in DRIVERS if d.challenges))
class OverlongResponseTests(MechanismTestCase):
    def check(self, driver: Driver) -> None:
        """A response to the mechanism's challenge longer than the limit: NO LINE-TOO-LONG, closed, no app."""
        self.connect(driver, "good", raw=True)
        challenge = self.stall(driver)
        self.write(b"A" * MAX_LINE + b"\r\n")
        self.assertEqual(self.lines(), [driver.greeting(), *challenge, LINE_TOO_LONG], self.label)
        self.assertClosed()
        self.assertNoApp()
        # The refusals that close the connection name no mechanism, even mid-attempt.
        self.assertOneDenial(driver, f"a line exceeded {MAX_LINE} bytes", mechanism=None)


@per_driver(*DRIVERS)
class TooManyAttemptsTests(MechanismTestCase):
    def check(self, driver: Driver) -> None:
        """
        Three wrong secrets on one connection (the mechanism's own lines,
        written by hand): AUTH-FAILED twice, then NO TOO-MANY-ATTEMPTS and
        the connection is closed; no app.
        """
        self.connect(driver, "wrong", raw=True)
        answers = [self.rawAttempt(driver, "wrong") for _ in range(3)]
        self.assertEqual([a[-1] for a in answers], [AUTH_FAILED, AUTH_FAILED, TOO_MANY], self.label)
        self.assertClosed()
        self.assertNoApp()
        decisions = self.decisions()
        self.assertEqual(len(decisions), 3, self.label)
        for decision in decisions:
            self.assertDenied(
                decision, driver, driver.reasons["wrong"], mechanism=driver.name, attempted=self.attemptedBy(driver, "wrong")
            )
        # Nothing more is read on a closed exchange.
        self.write(b"AUTH PLAIN =\r\n")
        self.assertEqual(len(self.decisions()), 3, self.label)
        self.assertNoApp()


@per_driver(*DRIVERS)
class DeadlineTests(MechanismTestCase):
    def check(self, driver: Driver) -> None:
        """
        An attempt started and never finished (left on the challenge; for
        EXTERNAL an AUTH line without its end): open until the deadline,
        then NO TIMEOUT and closed; no app.
        """
        self.connect(driver, "good", raw=True)
        if driver.challenges:
            waiting = [driver.greeting(), *self.stall(driver)]
        else:
            self.write(f"AUTH {driver.name} =".encode("ascii"))
            waiting = [driver.greeting()]
        self.clock.advance(DEADLINE - 1)
        self.conn.pump.flush()
        self.assertEqual(self.lines(), waiting, self.label)
        self.assertOpen()
        self.assertEqual(self.decisions(), [], self.label)
        self.clock.advance(1)
        self.conn.pump.flush()
        self.assertEqual(self.lines(), [*waiting, TIMEOUT], self.label)
        self.assertClosed()
        self.assertNoApp()
        self.assertOneDenial(driver, f"the exchange did not finish within {DEADLINE:g} s", mechanism=None)


# -- the TOTP second factor ------------------------------------------------------------


@attrs.define
class CodeSource:
    """A totp= callable that records how often the client asked it."""

    code: str
    calls: int = 0

    def __call__(self) -> str:
        self.calls += 1
        return self.code


@per_driver(*PASSWORD_DRIVERS)
class TOTPSuccessTests(MechanismTestCase):
    def check(self, driver: Driver) -> None:
        """An enrolled user: the password mechanism, then NEXT TOTP with the current code; the identity says TOTP."""
        code = CodeSource(self.totp_code())
        self.connect(driver, "enrolled", totp=code)
        self.assertEqual(code.calls, 1, self.label)
        identity = self.assertAuthenticated(driver, "enrolled", second_factor="TOTP")
        self.assertTrue(identity.mfa, self.label)
        self.assertEqual(self.store.users["tom"].totp_last_step, int(self.clock.seconds()) // 30, self.label)


@per_driver(*PASSWORD_DRIVERS)
class TOTPWrongCodeTests(MechanismTestCase):
    def check(self, driver: Driver) -> None:
        """A wrong TOTP code after the right password: AUTH-FAILED, no app, the denial says 'TOTP: wrong code'."""
        code = CodeSource(self.wrong_totp_code())
        self.connect(driver, "enrolled", totp=code)
        self.assertEqual(code.calls, 1, self.label)
        self.assertRefused(driver, "enrolled", "TOTP: wrong code")
        self.assertIsNone(self.store.users["tom"].totp_last_step, self.label)


@per_driver(*PASSWORD_DRIVERS)
class TOTPReusedCodeTests(MechanismTestCase):
    def check(self, driver: Driver) -> None:
        """A code accepted once is refused on a second connection within its time step ('code already used')."""
        code = self.totp_code()
        self.connect(driver, "enrolled", totp=CodeSource(code))
        self.assertAuthenticated(driver, "enrolled", second_factor="TOTP")
        self.connect(driver, "enrolled", totp=CodeSource(code))
        self.assertRefused(driver, "enrolled", "TOTP: code already used")
        # The refusal is the reuse, not a spoiled account: the next step's code works.
        self.clock.advance(30)
        self.assertNotEqual(self.totp_code(), code, self.label)
        self.connect(driver, "enrolled", totp=CodeSource(self.totp_code()))
        self.assertAuthenticated(driver, "enrolled", second_factor="TOTP")


@per_driver(OAUTHBEARER_DRIVER, APIKEY_DRIVER, EXTERNAL_DRIVER)
class NoSecondFactorTests(MechanismTestCase):
    def check(self, driver: Driver) -> None:
        """
        A complete credential (token, API key, certificate) of a TOTP-enrolled
        user: no NEXT TOTP, success without a second factor.
        """
        code = CodeSource(self.totp_code())
        self.connect(driver, "enrolled", totp=code)
        self.assertAuthenticated(driver, "enrolled", second_factor=None)
        self.assertEqual(code.calls, 0, f"{self.label}: the server asked for TOTP")
        self.assertIsNone(self.store.users["tom"].totp_last_step, self.label)
        # By hand: OK straight after the AUTH line.
        self.connect(driver, "enrolled", raw=True)
        answer = self.rawAttempt(driver, "enrolled")
        self.assertEqual(answer, ["OK tom"], self.label)


class MatrixTests(SynchronousTestCase):
    def test_everyCaseCoversItsDrivers(self) -> None:
        """The generated methods exist: one per (case, mechanism), none silently missing."""
        expected = {
            SuccessTests: DRIVERS,
            WrongSecretTests: DRIVERS,
            UnknownUserTests: DRIVERS,
            DisabledUserTests: DRIVERS,
            MalformedBase64Tests: DRIVERS,
            OverlongAuthLineTests: DRIVERS,
            OverlongResponseTests: tuple(d for d in DRIVERS if d.challenges),
            TooManyAttemptsTests: DRIVERS,
            DeadlineTests: DRIVERS,
            TOTPSuccessTests: PASSWORD_DRIVERS,
            TOTPWrongCodeTests: PASSWORD_DRIVERS,
            TOTPReusedCodeTests: PASSWORD_DRIVERS,
            NoSecondFactorTests: (OAUTHBEARER_DRIVER, APIKEY_DRIVER, EXTERNAL_DRIVER),
        }
        for cls, drivers in expected.items():
            names = sorted(n for n in vars(cls) if n.startswith("test_"))
            self.assertEqual(names, sorted(f"test_{d.slug()}" for d in drivers), cls.__name__)
        self.assertEqual(len({d.slug() for d in DRIVERS}), len(DRIVERS))


class DeferredClientAnswerTests(MechanismTestCase):
    """A client mechanism that answers later (SCRAM with a runner): the client reads nothing until it has."""

    label = "SCRAM-SHA-256-PLUS with a runner"

    def test_scramKeysDerivedOffTheReactor(self) -> None:
        pending: list[tuple[Deferred[bytes], Callable[..., bytes], tuple[Any, ...]]] = []

        def runner(f: Callable[..., bytes], *args: Any) -> Deferred[bytes]:
            d: Deferred[bytes] = Deferred()
            pending.append((d, f, args))
            return d

        def choose(offered: Sequence[str], bindings: ChannelBindings, has_certificate: bool) -> IClientMechanism:
            return ScramClientMechanism(
                "alice", password_of("good"), plus=True, bindings=bindings, server_offers_plus=True, runner=cast(Runner, runner)
            )

        self.apps = RecordingFactory(SERVER_DATA)
        self.client_apps = RecordingFactory()
        conn = connect_in_memory(
            server_policy=server_policy(),
            client_policy=client_policy(None),
            server_factory=SessionFactory(self.apps, self.portal, self.clock),
            client_factory=self.client_apps,
            clock=self.clock,
            mechanism=choose,
        )
        results: list[object] = []
        conn.client_ready.addBoth(results.append)
        conn.pump.flush()
        self.assertEqual(results, [])
        # The challenge arrived; the answer waits on the runner; nothing more was sent.
        [(d, f, args)] = pending
        self.assertEqual(self.client_apps.built, [])
        self.assertEqual(self.apps.built, [])
        d.callback(f(*args))
        conn.pump.flush()
        self.assertEqual(len(self.apps.built), 1)
        self.assertEqual(len(self.client_apps.built), 1)
        [decision] = [e for e in self.log.of("auth.decision") if e["result"] == "ok"]
        self.assertEqual((decision["identity"], decision["mechanism"]), ("alice", "SCRAM-SHA-256-PLUS"))
