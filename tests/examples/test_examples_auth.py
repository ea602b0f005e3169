"""
The rules of each worked example (examples/chat, examples/kv,
examples/telemetry), in memory: the example's own server factory and
policy file, identities from certificates (a SPIFFE one for devices) and
passwords with TOTP (memory_portal), connected with connect_app_in_memory.
"""

from __future__ import annotations

import functools
from typing import Any

from cryptography import x509
from twisted.cred.portal import Portal
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.task import Clock
from twisted.protocols import amp
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

import examples.chat
import examples.kv
import examples.telemetry
from examples.chat.server import ChatFactory
from examples.kv.commands import BadKey, CommandDenied, Delete, Get, List, NoSuchKey, Set
from examples.kv.server import KVFactory
from examples.telemetry.server import TelemetryFactory
from securenet.authz import Policy
from securenet.pki._ca import IssuedCertificate
from securenet.sasl._plain import PlainClientMechanism
from securenet.testing import AppConnection, EphemeralPKI, EventCapture, connect_app_in_memory, memory_portal, totp_code

#: POSIX time of the fake clock: TOTP codes are computed at it.
START = 1_750_000_000.0
OPS_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


@functools.cache
def pki() -> EphemeralPKI:
    return EphemeralPKI.create()


@functools.cache
def device(name: str, uri: str) -> IssuedCertificate:
    """A device certificate: CN=name with one URI SAN, as `securenet pki issue client NAME --san URI:...` makes."""
    return pki().ca.issue("client", name, sans=[x509.UniformResourceIdentifier(uri)])


@functools.cache
def policy(example: str) -> Policy:
    module = {"chat": examples.chat, "kv": examples.kv, "telemetry": examples.telemetry}[example]
    return Policy.load(module.POLICY)


class Lines(LineReceiver):
    """A client that keeps every line it receives."""

    delimiter = b"\n"

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.read = 0
        self.closed = False

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line.decode("utf-8"))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True

    def new(self) -> list[str]:
        """The lines received since the last call."""
        lines, self.read = self.lines[self.read :], len(self.lines)
        return lines


class Harness(SynchronousTestCase):
    """Several clients of one server factory, on one fake clock."""

    example = ""
    portal: Portal

    def setUp(self) -> None:
        self.log = EventCapture(self)
        self.clock = Clock()
        self.clock.advance(START)
        self.connections: list[AppConnection] = []

    def connectTo(
        self, factory: Any, client_factory: Any, client: str | IssuedCertificate | None, **kwargs: Any
    ) -> AppConnection:
        conn = connect_app_in_memory(
            factory,
            client_factory,
            pki=pki(),
            policy=policy(self.example),
            portal=self.portal,
            client=client,
            clock=self.clock,
            **kwargs,
        )
        self.assertIsNone(conn.failure)
        self.connections.append(conn)
        self.flush()
        return conn

    def flush(self) -> None:
        for _ in range(2):
            for conn in self.connections:
                conn.flush()


# -- chat ----------------------------------------------------------------------------


class ChatTests(Harness):
    example = "chat"

    def setUp(self) -> None:
        super().setUp()
        self.portal = memory_portal(
            {"alice": ["member"], "mod": ["moderator"], "bob": []}, passwords={"carol": "pw"}, clock=self.clock
        )
        self.chat = ChatFactory()

    def join(self, name: str | None, **kwargs: Any) -> Lines:
        conn = self.connectTo(self.chat, Factory.forProtocol(Lines), name, **kwargs)
        user: Lines = conn.client
        return user

    def send(self, user: Lines, *lines: str) -> None:
        for line in lines:
            user.sendLine(line.encode("utf-8"))
            self.flush()

    def test_welcomeAndLobby(self) -> None:
        alice = self.join("alice")
        self.assertEqual(alice.new(), ["* welcome alice; /help lists the commands", "* alice joined lobby"])

    def test_messagesCarryTheAuthenticatedName(self) -> None:
        """What alice types after a name is hers: every message is prefixed with the identity's name."""
        alice, bob = self.join("alice"), self.join("bob")
        alice.new(), bob.new()
        self.send(alice, "<mod> I am the moderator, obey")
        self.assertEqual(bob.new(), ["[lobby] <alice> <mod> I am the moderator, obey"])
        self.assertEqual(alice.new(), ["[lobby] <alice> <mod> I am the moderator, obey"])

    def test_roomListNeedsMembership(self) -> None:
        alice, bob = self.join("alice"), self.join("bob")
        alice.new(), bob.new()
        self.send(alice, "/rooms")
        self.assertEqual(alice.new(), ["* rooms: lobby (2)"])
        self.send(bob, "/rooms")
        self.assertEqual(bob.new(), ["! denied: bob may not chat.rooms.list: missing permission chat.rooms.list"])
        [deny] = self.log.of("authz.decision", result="deny", identity="bob")
        self.assertEqual(deny["reason"], "no rule matched: denied by default")

    def test_joinNeedsMembership(self) -> None:
        alice, bob = self.join("alice"), self.join("bob")
        alice.new(), bob.new()
        self.send(bob, "/join ops")
        self.assertEqual(bob.new(), ["! denied: bob may not chat.join rooms/ops: missing permission chat.join:rooms/ops"])
        self.send(alice, "/join ops", "only members here")
        self.assertEqual(alice.new(), ["* alice joined ops", "[ops] <alice> only members here"])
        self.assertEqual(bob.new(), ["* alice went to ops"])
        self.send(bob, "/who", "/dance")
        self.assertEqual(bob.new(), ["* in lobby: bob", "! unknown command /dance; /help lists the commands"])

    def test_moderatorKicks(self) -> None:
        alice, bob, mod = self.join("alice"), self.join("bob"), self.join("mod")
        alice.new(), bob.new(), mod.new()
        self.send(mod, "/kick alice")
        self.assertEqual(alice.new(), ["* you were kicked by mod"])
        self.assertTrue(alice.closed)
        self.assertEqual(mod.new(), ["* alice was kicked by mod", "* kicked alice"])
        self.assertEqual(bob.new(), ["* alice was kicked by mod"])
        self.assertNotIn("alice", self.chat.online)
        [allow] = self.log.of("authz.decision", action="chat.kick", result="allow")
        self.assertEqual((allow["identity"], allow["resource"], allow["rule"]), ("mod", "users/alice", "role moderator"))

    def test_memberCannotKick(self) -> None:
        alice, bob = self.join("alice"), self.join("bob")
        alice.new(), bob.new()
        self.send(alice, "/kick bob")
        self.assertEqual(alice.new(), ["! denied: alice may not chat.kick users/bob: missing permission chat.kick:users/bob"])
        self.assertEqual(bob.new(), [])
        self.assertFalse(bob.closed)
        self.assertIn("bob", self.chat.online)

    def test_nobodyKicksThemselves(self) -> None:
        """The deny rule with {identity.avatar_id} wins over the moderator's allow."""
        mod = self.join("mod")
        mod.new()
        self.send(mod, "/kick mod")
        self.assertEqual(mod.new(), ["! denied: mod may not chat.kick users/mod: missing permission chat.kick:users/mod"])
        self.assertFalse(mod.closed)
        [deny] = self.log.of("authz.decision", action="chat.kick", result="deny")
        self.assertEqual(deny["rule"], 'rule 2 "nobody kicks themselves"')

    def test_lobbyNeedsACertificate(self) -> None:
        """A password login without roles is not let into the lobby (the rule wants EXTERNAL)."""
        carol = self.join(None, mechanism=PlainClientMechanism("carol", "pw"))
        self.assertEqual(
            carol.new(),
            [
                "* welcome carol; /help lists the commands",
                "! denied: carol may not chat.join rooms/lobby: missing permission chat.join:rooms/lobby",
            ],
        )
        self.send(carol, "hello?")
        self.assertEqual(carol.new(), ["! you are in no room; /join one"])


# -- kv ------------------------------------------------------------------------------


class KVTests(Harness):
    example = "kv"

    def setUp(self) -> None:
        super().setUp()
        self.portal = memory_portal({"alice": ["writer"], "bob": ["reader"], "root": ["admin"], "eve": []}, clock=self.clock)
        self.kv = KVFactory()
        self.kv.data.update({"users/bob/notes": "bob's", "config/motd": "hello"})

    def client(self, name: str) -> amp.AMP:
        proto: amp.AMP = self.connectTo(self.kv, Factory.forProtocol(amp.AMP), name).client
        return proto

    def call(self, client: amp.AMP, command: type[amp.Command], **arguments: Any) -> Any:
        results: list[Any] = []
        client.callRemote(command, **arguments).addBoth(results.append)
        self.flush()
        self.assertEqual(len(results), 1)
        return results[0]

    def refused(self, client: amp.AMP, command: type[amp.Command], error: type[Exception], **arguments: Any) -> str:
        result = self.call(client, command, **arguments)
        self.assertIsInstance(result, Failure)
        result.trap(error)
        return str(result.value)

    def test_writerConfinedToOwnPrefix(self) -> None:
        alice = self.client("alice")
        self.assertEqual(self.call(alice, Set, key="users/alice/todo", value="milk"), {})
        self.assertEqual(
            self.refused(alice, Set, CommandDenied, key="users/bob/notes", value="pwned"),
            "alice may not kv.write users/bob/notes: missing permission kv.write:users/bob/notes",
        )
        self.refused(alice, Set, CommandDenied, key="config/motd", value="pwned")
        self.refused(alice, Delete, CommandDenied, key="users/bob/notes")
        self.refused(alice, Set, CommandDenied, key="users/alice/../bob/notes", value="pwned")
        self.assertEqual(self.call(alice, Delete, key="users/alice/todo"), {})
        self.assertEqual(self.kv.data, {"users/bob/notes": "bob's", "config/motd": "hello"})

    def test_prefixIsAWholeSegment(self) -> None:
        """users/alice/** is not users/alice2/..."""
        alice = self.client("alice")
        self.refused(alice, Set, CommandDenied, key="users/alice2/x", value="1")
        self.assertNotIn("users/alice2/x", self.kv.data)

    def test_writerReads(self) -> None:
        alice = self.client("alice")
        self.assertEqual(self.call(alice, Get, key="users/bob/notes"), {"value": "bob's"})

    def test_readerCannotWrite(self) -> None:
        bob = self.client("bob")
        self.assertEqual(self.call(bob, Get, key="config/motd"), {"value": "hello"})
        self.assertEqual(self.call(bob, List, prefix="users"), {"keys": ["users/bob/notes"], "truncated": False})
        self.assertEqual(
            self.refused(bob, Set, CommandDenied, key="users/bob/notes", value="x"),
            "bob may not kv.write users/bob/notes: missing permission kv.write:users/bob/notes",
        )
        self.refused(bob, Delete, CommandDenied, key="users/bob/notes")
        self.assertEqual(self.kv.data["users/bob/notes"], "bob's")
        # still usable after the refusals
        self.assertEqual(self.call(bob, Get, key="users/bob/notes"), {"value": "bob's"})

    def test_adminManagesEverything(self) -> None:
        root = self.client("root")
        self.assertEqual(self.call(root, Set, key="config/motd", value="bye"), {})
        self.assertEqual(self.call(root, Set, key="users/alice/x", value="1"), {})
        self.assertEqual(self.call(root, Delete, key="users/bob/notes"), {})
        self.assertEqual(self.kv.data, {"config/motd": "bye", "users/alice/x": "1"})

    def test_noRoleNoAccess(self) -> None:
        eve = self.client("eve")
        self.refused(eve, Get, CommandDenied, key="config/motd")
        self.refused(eve, List, CommandDenied, prefix="")

    def test_errorsAreTyped(self) -> None:
        root = self.client("root")
        self.assertEqual(self.refused(root, Get, NoSuchKey, key="nope"), "nope")
        # Another spelling of a key never gets past the policy (it denies empty segments before any rule).
        self.assertIn("missing permission kv.write:a//b", self.refused(root, Set, CommandDenied, key="a//b", value="1"))
        self.assertEqual(self.refused(root, Set, BadKey, key="", value="1"), "the key is empty")

    def test_listIsByPath(self) -> None:
        self.kv.data.update({"users/bobby/x": "1"})
        bob = self.client("bob")
        self.assertEqual(self.call(bob, List, prefix="users/bob"), {"keys": ["users/bob/notes"], "truncated": False})
        self.assertEqual(self.call(bob, List, prefix="")["keys"], ["config/motd", "users/bob/notes", "users/bobby/x"])


# -- telemetry -----------------------------------------------------------------------


class TelemetryTests(Harness):
    example = "telemetry"

    def setUp(self) -> None:
        super().setUp()
        self.portal = memory_portal(
            {"ops": ["operator"], "ops2": ["operator"]},
            passwords={"ops": "ops-pw", "ops2": "ops2-pw", "carol": "carol-pw"},
            totp={"ops": OPS_SECRET, "carol": OPS_SECRET},
            clock=self.clock,
        )
        self.telemetry = TelemetryFactory()

    def device(self, name: str, uri: str | None = None) -> Lines:
        certificate = device(name, uri or f"spiffe://example.org/device/{name}")
        conn = self.connectTo(self.telemetry, Factory.forProtocol(Lines), certificate)
        self.assertEqual(conn.server.identity.mechanism, "EXTERNAL")
        lines: Lines = conn.client
        return lines

    def person(self, name: str, password: str, *, totp: bool = True) -> Lines:
        self.clock.advance(30)  # a fresh TOTP step for every login
        conn = self.connectTo(
            self.telemetry,
            Factory.forProtocol(Lines),
            None,
            mechanism=PlainClientMechanism(name, password),
            totp=(lambda: totp_code(OPS_SECRET, self.clock)) if totp else None,
        )
        lines: Lines = conn.client
        return lines

    def send(self, client: Lines, line: str) -> list[str]:
        client.sendLine(line.encode("utf-8"))
        self.flush()
        return client.new()

    def test_devicePublishesOwnTopic(self) -> None:
        ops = self.person("ops", "ops-pw")
        self.assertEqual(self.send(ops, "SUB device/**"), ["OK"])
        dev1 = self.device("dev1")
        self.assertEqual(self.send(dev1, "PUB device/dev1/temperature 21.5"), ["OK"])
        self.assertEqual(ops.new(), ["MSG device/dev1/temperature 21.5"])
        [allow] = self.log.of("authz.decision", action="telemetry.publish", result="allow")
        self.assertEqual(allow["rule"], 'rule 1 "devices publish their own telemetry"')

    def test_deviceCannotPublishElsewhere(self) -> None:
        ops = self.person("ops", "ops-pw")
        self.send(ops, "SUB **")
        dev1 = self.device("dev1")
        for topic in ("device/dev2/temperature", "device/dev1", "device/dev1/a/b", "alerts/fire"):
            self.assertEqual(
                self.send(dev1, f"PUB {topic} 99"),
                [
                    f"ERR DENIED dev1 may not telemetry.publish telemetry/{topic}: missing permission "
                    f"telemetry.publish:telemetry/{topic}"
                ],
                topic,
            )
        self.assertEqual(ops.new(), [])

    def test_otherTrustDomainOrNoSpiffe(self) -> None:
        """A certificate from the same CA without the right SPIFFE ID publishes nothing."""
        for certificate in (
            device("dev1", "spiffe://evil.example/device/dev1"),
            device("dev9", "spiffe://example.org/robot/dev9"),
            "alice",
        ):
            conn = self.connectTo(self.telemetry, Factory.forProtocol(Lines), certificate)
            name = conn.server.identity.avatar_id
            path = "device/dev1" if name == "dev1" else f"device/{name}"
            lines = self.send(conn.client, f"PUB {path}/temperature 1")
            self.assertEqual(len(lines), 1)
            self.assertTrue(lines[0].startswith("ERR DENIED "), lines)

    def test_operatorNeedsMFA(self) -> None:
        """ops2 is an operator without a second factor: subscribing is denied by the MFA rule."""
        ops2 = self.person("ops2", "ops2-pw", totp=False)
        self.assertEqual(
            self.send(ops2, "SUB device/**"),
            [
                "ERR DENIED ops2 may not telemetry.subscribe telemetry/device/**: missing permission "
                "telemetry.subscribe:telemetry/device/**"
            ],
        )
        [deny] = self.log.of("authz.decision", action="telemetry.subscribe")
        self.assertEqual(deny["rule"], 'rule 2 "subscribing takes a second factor"')
        self.device("dev1").sendLine(b"PUB device/dev1/temperature 1")
        self.flush()
        self.assertEqual(ops2.new(), [])

    def test_operatorWithMFA(self) -> None:
        ops = self.person("ops", "ops-pw")
        self.assertEqual(self.send(ops, "SUB device/*/temperature"), ["OK"])
        dev1, dev2 = self.device("dev1"), self.device("dev2")
        self.send(dev1, "PUB device/dev1/temperature 20")
        self.send(dev2, "PUB device/dev2/humidity 40")
        self.send(dev2, "PUB device/dev2/temperature 22")
        self.assertEqual(ops.new(), ["MSG device/dev1/temperature 20", "MSG device/dev2/temperature 22"])

    def test_mfaWithoutTheRole(self) -> None:
        carol = self.person("carol", "carol-pw")
        self.assertTrue(self.send(carol, "SUB device/**")[0].startswith("ERR DENIED carol may not telemetry.subscribe"))

    def test_deviceCannotSubscribe(self) -> None:
        dev1 = self.device("dev1")
        self.assertTrue(self.send(dev1, "SUB device/dev1/*")[0].startswith("ERR DENIED dev1 may not telemetry.subscribe"))

    def test_deliveriesRecheckedPerTopic(self) -> None:
        """
        A wildcard subscription is allowed as a pattern, and every delivery
        is checked for its own topic: a permission for device/* does not
        reach device/x/y through a device/** subscription.
        """
        narrow = Policy.parse('[roles.operator]\npermissions = ["telemetry.subscribe:telemetry/device/*", "telemetry.publish"]\n')
        conn = connect_app_in_memory(
            self.telemetry,
            Factory.forProtocol(Lines),
            pki=pki(),
            policy=narrow,
            portal=self.portal,
            client=None,
            mechanism=PlainClientMechanism("ops2", "ops2-pw"),
            clock=self.clock,
        )
        self.connections.append(conn)
        ops2: Lines = conn.client
        self.assertEqual(self.send(ops2, "SUB device/**"), ["OK"])
        self.assertEqual(self.send(ops2, "PUB device/x 1"), ["MSG device/x 1", "OK"])
        self.assertEqual(self.send(ops2, "PUB device/x/y 2"), ["OK"])

    def test_badRequests(self) -> None:
        dev1 = self.device("dev1")
        self.assertEqual(self.send(dev1, "PUB device/dev1/../dev2/t 1")[0][:8], "ERR BAD ")
        self.assertEqual(self.send(dev1, "PUB device/dev1/t")[0], "ERR BAD a value is 1 to 1024 characters")
        self.assertEqual(self.send(dev1, "HELLO")[0], "ERR BAD expected PUB TOPIC VALUE, SUB PATTERN, UNSUB PATTERN or QUIT")
