"""
The protocol base classes (securenet.apps.base) in memory: SecureLineReceiver
and SecureAMP give a protocol its peer's identity and the service's policy;
SecureAMP authorizes every command before its responder runs, refuses with a
typed COMMAND_DENIED error naming the missing permission, and keeps the
connection usable; a protocol that subclasses nothing of ours still finds
its peer with identity_of.  Built on the securenet.testing helpers
(memory_portal, connect_app_in_memory) that users test their own services
with.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, cast

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from securenet import protocols as base_module
from securenet.authz import AuthorizationDenied, AuthorizationSetupError, Context, Policy, requires
from securenet.cred._identity import Identity
from securenet.interfaces import IDrainable, ISession
from securenet.protocols import (
    COMMAND_DENIED,
    NOT_CONFIGURED,
    CommandDenied,
    CommandSetupError,
    SecureAMP,
    SecureCommand,
    SecureLineReceiver,
    command_resource,
)
from securenet.sasl._plain import PlainClientMechanism
from securenet.session._server import NotASecureSession, identity_of
from securenet.testing import AppConnection, EphemeralPKI, EventCapture, connect_app_in_memory, memory_portal

POLICY_TEXT = """
[roles.reader]
permissions = ["kv.read:public/**", "kv.list"]

[roles.writer]
inherits = ["reader"]
permissions = ["kv.write:users/{identity.avatar_id}/**"]

[roles.admin]
permissions = ["kv.*", "admin.*"]

[[rules]]
name = "owners edit their records"
effect = "allow"
permissions = ["records.edit"]
when = { "resource.attributes.owner" = "alice" , "identity.avatar_id" = "alice" }

[[rules]]
name = "secret internal rule"
effect = "deny"
permissions = ["kv.read:public/embargoed/**"]
"""


@functools.cache
def pki() -> EphemeralPKI:
    return EphemeralPKI.create()


@functools.cache
def policy() -> Policy:
    return Policy.parse(POLICY_TEXT, source="test-policy.toml")


class Collect(Protocol):
    def __init__(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


# -- the AMP service under test -------------------------------------------------


class Read(SecureCommand):
    arguments = [(b"key", amp.Unicode())]
    response = [(b"value", amp.Unicode())]
    permission = "kv.read"
    resource = "{key}"


class Write(SecureCommand):
    arguments = [(b"key", amp.Unicode()), (b"value", amp.Unicode())]
    response = [(b"written", amp.Unicode())]
    permission = "kv.write"
    resource = "{key}"


class Count(SecureCommand):
    """No resource: the permission alone."""

    response = [(b"count", amp.Integer())]
    permission = "kv.list"


class Whoami(SecureCommand):
    """No permission: anyone authenticated."""

    response = [(b"name", amp.Unicode()), (b"roles", amp.ListOf(amp.Unicode()))]


class Stop(SecureCommand):
    """Guarded by @requires on the responder instead of a class attribute."""

    arguments = [(b"reason", amp.Unicode())]
    response = []


class Restart(SecureCommand):
    """An async responder under @requires."""

    arguments = [(b"service", amp.Unicode())]
    response = [(b"restarted", amp.Unicode())]


class Ping(SecureCommand):
    """A resource from a function of the arguments."""

    arguments = [(b"host", amp.Unicode()), (b"port", amp.Integer())]
    response = []
    permission = "kv.read"
    resource = staticmethod(lambda arguments: f"public/hosts/{arguments['host']}-{arguments['port']}")


class RawRead(SecureCommand):
    arguments = [(b"key", amp.String())]
    response = []
    permission = "kv.read"
    resource = "{key}"


class PlainRead(amp.Command):
    """A plain AMP command (no CommandDenied in its errors) with a permission attribute."""

    commandName = b"PlainRead"
    arguments = [(b"key", amp.Unicode())]
    response = [(b"value", amp.Unicode())]
    permission = "kv.read"
    resource = "{key}"


class Misdeclared(amp.Command):
    """A plain AMP command whose resource names no argument: only SecureAMP can notice, at the call."""

    arguments = [(b"key", amp.Unicode())]
    response = []
    permission = "kv.read"
    resource = "{name}"


class Owned(SecureCommand):
    """Decided with a Context: the record's owner, as a resource attribute."""

    arguments = [(b"key", amp.Unicode())]
    response = []
    permission = "records.edit"
    resource = "{key}"


class Service(SecureAMP):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, Any]] = []

    @Read.responder
    def read(self, key: str) -> dict[str, str]:
        self.calls.append(("read", key))
        return {"value": f"value of {key}"}

    @Write.responder
    def write(self, key: str, value: str) -> dict[str, str]:
        self.calls.append(("write", key))
        return {"written": key}

    @Count.responder
    def count(self) -> dict[str, int]:
        self.calls.append(("count", None))
        return {"count": 3}

    @Whoami.responder
    def whoami(self) -> dict[str, object]:
        return {"name": self.identity.avatar_id, "roles": list(self.identity.roles)}

    @Stop.responder
    @requires("admin.stop", resource=lambda self, reason: f"reasons/{reason}")
    def stop(self, reason: str) -> dict[str, str]:
        self.calls.append(("stop", reason))
        return {}

    @Restart.responder
    @requires("admin.restart")
    async def restart(self, service: str) -> dict[str, str]:
        self.calls.append(("restart", service))
        return {"restarted": service}

    @Ping.responder
    def ping(self, host: str, port: int) -> dict[str, str]:
        self.calls.append(("ping", host))
        return {}

    @RawRead.responder
    def raw_read(self, key: bytes) -> dict[str, str]:
        self.calls.append(("raw", key))
        return {}

    @PlainRead.responder
    def plain_read(self, key: str) -> dict[str, str]:
        self.calls.append(("plain", key))
        return {"value": key}

    @Misdeclared.responder
    def misdeclared(self, key: str) -> dict[str, str]:
        self.calls.append(("misdeclared", key))
        return {}

    @Owned.responder
    def owned(self, key: str) -> dict[str, str]:
        self.calls.append(("owned", key))
        return {}

    def commandContext(self, command: type[amp.Command], arguments: Mapping[str, Any]) -> Context | None:
        if command is Owned:
            return Context(resource_attributes={"owner": arguments["key"].split("/")[0]})
        return None


class SecureAMPTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.log = EventCapture(self)
        self.clock = Clock()
        self.portal = memory_portal({"alice": ["writer"], "bob": ["reader"], "root": ["admin"], "nobody": []}, clock=self.clock)

    def connect(self, name: str, *, with_policy: Policy | None | bool = True) -> AppConnection:
        chosen = policy() if with_policy is True else (with_policy or None)
        conn = connect_app_in_memory(
            Factory.forProtocol(Service),
            Factory.forProtocol(amp.AMP),
            pki=pki(),
            policy=chosen,
            portal=self.portal,
            client=name,
            clock=self.clock,
        )
        self.assertIsNone(conn.failure)
        return conn

    def call(self, conn: AppConnection, command: type[amp.Command], **arguments: Any) -> Any:
        """The result of one callRemote, or its Failure."""
        results: list[Any] = []
        conn.client.callRemote(command, **arguments).addBoth(results.append)
        conn.flush()
        self.assertEqual(len(results), 1, "no answer")
        return results[0]

    def refused(self, conn: AppConnection, command: type[amp.Command], **arguments: Any) -> Failure:
        result = self.call(conn, command, **arguments)
        self.assertIsInstance(result, Failure, f"{command.__name__} was allowed: {result}")
        return result  # type: ignore[no-any-return]

    def assertOpen(self, conn: AppConnection) -> None:
        self.assertTrue(conn.server.transport is not None and conn.server.transport.connected)
        self.assertFalse(conn.connection.server_tls.disconnecting)

    def decisions(self, **match: object) -> list[dict[str, Any]]:
        return self.log.of("authz.decision", **match)


class DecisionReuseTests(SecureAMPTestCase):
    """
    A connection keeps the allowing decisions that did not depend on the
    time, so a command called again is not decided again; every call is
    still logged; refusals and time-dependent decisions are always decided.
    """

    def spy(self, conn: AppConnection, chosen: Policy) -> list[tuple[str, str | None]]:
        asked: list[tuple[str, str | None]] = []
        decide = chosen.decide

        class Spy:
            log_allows = chosen.log_allows

            def decide(self, identity: Identity, action: str, resource: str | None = None, context: Any = None) -> Any:
                asked.append((action, resource))
                return decide(identity, action, resource, context)

        conn.server.policy = Spy()
        return asked

    def test_allowKeptAndStillLogged(self) -> None:
        conn = self.connect("alice")
        asked = self.spy(conn, policy())
        for _ in range(3):
            self.assertEqual(self.call(conn, Write, key="users/alice/x", value="1"), {"written": "users/alice/x"})
        self.assertEqual(asked, [("kv.write", "users/alice/x")])
        self.assertEqual(len(self.decisions(result="allow", action="kv.write")), 3)
        self.assertEqual(conn.server.calls, [("write", "users/alice/x")] * 3)
        # Another resource is another decision.
        self.call(conn, Write, key="users/alice/y", value="1")
        self.assertEqual(asked, [("kv.write", "users/alice/x"), ("kv.write", "users/alice/y")])

    def test_respondersLocatedOnce(self) -> None:
        """A command's responder is located once per connection; unknown names are never remembered."""
        conn = self.connect("alice")
        located: list[bytes] = []
        original = amp.AMP.locateResponder

        def spy(protocol: amp.AMP, name: bytes) -> Any:
            located.append(name)
            return original(protocol, name)

        self.patch(amp.AMP, "locateResponder", spy)
        for _ in range(3):
            self.assertEqual(self.call(conn, Write, key="users/alice/x", value="1"), {"written": "users/alice/x"})
        self.assertEqual(located, [b"Write"])

        class Nope(amp.Command):
            commandName = b"Nope"

        for _ in range(2):
            self.call(conn, Nope).trap(amp.UnhandledCommand)
        self.assertEqual(located, [b"Write", b"Nope", b"Nope"])
        self.assertOpen(conn)

    def test_keptDecisionsBounded(self) -> None:
        """A connection keeps at most MAX_KEPT_DECISIONS decisions; beyond that it decides again."""
        self.patch(base_module, "MAX_KEPT_DECISIONS", 1)
        conn = self.connect("alice")
        asked = self.spy(conn, policy())
        for key in ("users/alice/x", "users/alice/y", "users/alice/x", "users/alice/y"):
            self.call(conn, Write, key=key, value="1")
        self.assertEqual(asked, [("kv.write", "users/alice/x"), ("kv.write", "users/alice/y"), ("kv.write", "users/alice/y")])

    def test_refusalsDecidedEveryTime(self) -> None:
        conn = self.connect("bob")
        asked = self.spy(conn, policy())
        for _ in range(2):
            self.refused(conn, Write, key="users/bob/x", value="1")
        self.assertEqual(asked, [("kv.write", "users/bob/x")] * 2)
        self.assertEqual(len(self.decisions(result="deny")), 2)
        self.assertEqual(conn.server.calls, [])

    def test_timeDependentNotKept(self) -> None:
        """A rule on the time of day: decided on every call, and the clock moving changes the answer."""
        office = Policy.parse(
            '[[rules]]\neffect = "allow"\npermissions = ["kv.write:**"]\n'
            'when = { "context.time" = { between = ["00:00", "12:00"] } }\n',
            source="office.toml",
            clock=self.clock,
        )
        conn = self.connect("alice", with_policy=office)
        asked = self.spy(conn, office)
        self.call(conn, Write, key="k", value="1")
        self.call(conn, Write, key="k", value="1")
        self.assertEqual(len(asked), 2)
        self.clock.advance(13 * 3600)
        self.refused(conn, Write, key="k", value="1")
        self.assertEqual(conn.server.calls, [("write", "k")] * 2)


class SecureAMPTests(SecureAMPTestCase):
    def test_identityAndPolicy(self) -> None:
        """The server protocol has the peer's identity (with its stored roles) and the session's policy."""
        conn = self.connect("alice")
        server: Service = conn.server
        self.assertIsInstance(server.identity, Identity)
        self.assertEqual(
            (server.identity.avatar_id, server.identity.mechanism, server.identity.roles), ("alice", "EXTERNAL", ("writer",))
        )
        self.assertIs(server.policy, policy())
        self.assertIs(ISession(server.transport).policy, policy())
        self.assertEqual(self.call(conn, Whoami), {"name": "alice", "roles": ["writer"]})

    def test_allowed(self) -> None:
        conn = self.connect("alice")
        self.assertEqual(self.call(conn, Write, key="users/alice/x", value="1"), {"written": "users/alice/x"})
        self.assertEqual(conn.server.calls, [("write", "users/alice/x")])

    def test_deniedTypedAndConnectionStaysUsable(self) -> None:
        """
        A denied command fails with CommandDenied naming the missing
        permission; the responder never ran; the next, allowed, call on the
        same connection succeeds.
        """
        conn = self.connect("alice")
        failure = self.refused(conn, Write, key="users/bob/x", value="1")
        failure.trap(CommandDenied)
        self.assertEqual(str(failure.value), "alice may not kv.write users/bob/x: missing permission kv.write:users/bob/x")
        self.assertEqual(cast(CommandDenied, failure.value).permission, "kv.write:users/bob/x")
        self.assertEqual(conn.server.calls, [])
        self.assertOpen(conn)
        self.assertEqual(self.call(conn, Write, key="users/alice/y", value="2"), {"written": "users/alice/y"})
        self.assertEqual(conn.server.calls, [("write", "users/alice/y")])

    def test_denialHidesThePolicy(self) -> None:
        """A deny by a named rule says what is missing, not which rule, file or line said no."""
        conn = self.connect("bob")
        failure = self.refused(conn, Read, key="public/embargoed/report")
        failure.trap(CommandDenied)
        message = str(failure.value)
        self.assertEqual(
            message, "bob may not kv.read public/embargoed/report: missing permission kv.read:public/embargoed/report"
        )
        for secret in ("secret internal rule", "test-policy.toml", "rule", "reader"):
            self.assertNotIn(secret, message)

    def test_decisionsLogged(self) -> None:
        """Each check is an authz.decision event: the deny at warn with the rule, the allow too."""
        conn = self.connect("bob")
        self.refused(conn, Read, key="public/embargoed/x")
        self.call(conn, Read, key="public/x")
        [deny] = self.decisions(result="deny")
        self.assertEqual(
            (deny["identity"], deny["action"], deny["resource"], deny["permission"], deny["rule"], deny["mechanism"]),
            ("bob", "kv.read", "public/embargoed/x", "kv.read:public/embargoed/x", 'rule 2 "secret internal rule"', "EXTERNAL"),
        )
        self.assertEqual(deny["log_level"].name, "warn")
        [allow] = self.decisions(result="allow")
        self.assertEqual((allow["identity"], allow["resource"], allow["rule"]), ("bob", "public/x", "role reader"))

    def test_commandWithoutResource(self) -> None:
        allowed = self.connect("bob")
        self.assertEqual(self.call(allowed, Count), {"count": 3})
        denied = self.connect("nobody")
        self.refused(denied, Count).trap(CommandDenied)
        self.assertEqual(denied.server.calls, [])

    def test_commandWithoutPermission(self) -> None:
        """A command that declares no permission is for anyone authenticated; no decision is made."""
        conn = self.connect("nobody")
        self.assertEqual(self.call(conn, Whoami), {"name": "nobody", "roles": []})
        self.assertEqual(self.decisions(), [])

    def test_resourceFunction(self) -> None:
        conn = self.connect("bob")
        self.assertEqual(self.call(conn, Ping, host="db1", port=5432), {})
        self.assertEqual(self.decisions()[-1]["resource"], "public/hosts/db1-5432")

    def test_dotSegmentsDenied(self) -> None:
        """A key that climbs out of the allowed prefix is denied before the responder runs."""
        conn = self.connect("alice")
        self.refused(conn, Write, key="users/alice/../bob/x", value="1").trap(CommandDenied)
        self.assertEqual(conn.server.calls, [])

    def test_bytesResource(self) -> None:
        """Bytes arguments name the resource as UTF-8; bytes that are not UTF-8 are refused."""
        conn = self.connect("bob")
        self.assertEqual(self.call(conn, RawRead, key=b"public/x"), {})
        failure = self.refused(conn, RawRead, key=b"public/\xff")
        failure.trap(CommandDenied)
        self.assertEqual(str(failure.value), "bob may not kv.read: the resource is not UTF-8 text")
        self.assertEqual(conn.server.calls, [("raw", b"public/x")])
        self.assertOpen(conn)


class ContextAndSetupTests(SecureAMPTestCase):
    def test_commandContext(self) -> None:
        """commandContext feeds resource.attributes conditions."""
        conn = self.connect("alice")
        self.assertEqual(self.call(conn, Owned, key="alice/r1"), {})
        self.refused(conn, Owned, key="bob/r1").trap(CommandDenied)
        self.assertEqual(conn.server.calls, [("owned", "alice/r1")])

    def test_misdeclaredPlainCommand(self) -> None:
        """A plain amp.Command whose declaration cannot work is refused (not run), the log says why, the connection stays."""
        conn = self.connect("root")
        failure = self.refused(conn, Misdeclared, key="x")
        failure.trap(amp.UnknownRemoteError)
        self.assertEqual(cast(amp.UnknownRemoteError, failure.value).description, NOT_CONFIGURED)
        [error] = self.flushLoggedErrors(CommandSetupError)
        self.assertIn("command Misdeclared: resource '{name}' names 'name'", str(error.value))
        self.assertEqual(conn.server.calls, [])
        self.assertOpen(conn)


class RequiresOnRespondersTests(SecureAMPTestCase):
    def test_requiresDenies(self) -> None:
        conn = self.connect("alice")
        failure = self.refused(conn, Stop, reason="maintenance")
        failure.trap(CommandDenied)
        self.assertEqual(cast(CommandDenied, failure.value).permission, "admin.stop:reasons/maintenance")
        self.assertEqual(conn.server.calls, [])
        self.assertOpen(conn)
        self.assertEqual(self.call(conn, Write, key="users/alice/x", value="1"), {"written": "users/alice/x"})

    def test_requiresAllows(self) -> None:
        conn = self.connect("root")
        self.assertEqual(self.call(conn, Stop, reason="maintenance"), {})
        self.assertEqual(conn.server.calls, [("stop", "maintenance")])
        [allow] = self.decisions(result="allow")
        self.assertEqual(allow["permission"], "admin.stop:reasons/maintenance")

    def test_asyncResponder(self) -> None:
        denied = self.connect("alice")
        self.refused(denied, Restart, service="db").trap(CommandDenied)
        self.assertEqual(denied.server.calls, [])
        allowed = self.connect("root")
        self.assertEqual(self.call(allowed, Restart, service="db"), {"restarted": "db"})


class PlainCommandTests(SecureAMPTestCase):
    def test_plainAmpCommand(self) -> None:
        """
        An amp.Command that declares a permission but not CommandDenied is
        still refused with the COMMAND_DENIED code and the same message, not
        fatally; its client sees an unknown remote error.
        """
        conn = self.connect("bob")
        failure = self.refused(conn, PlainRead, key="private/x")
        failure.trap(amp.UnknownRemoteError)
        self.assertEqual(
            cast(amp.UnknownRemoteError, failure.value).description,
            "bob may not kv.read private/x: missing permission kv.read:private/x",
        )
        self.assertOpen(conn)
        self.assertEqual(self.call(conn, PlainRead, key="public/x"), {"value": "public/x"})

    def test_wireCode(self) -> None:
        """On the wire the error box carries _error_code COMMAND_DENIED."""
        conn = self.connect("bob")
        sent: list[bytes] = []
        original = conn.client.dataReceived

        def spy(data: bytes) -> None:
            sent.append(data)
            original(data)

        conn.client.dataReceived = spy
        self.refused(conn, Read, key="private/x")
        self.assertIn(b"_error_code\x00" + bytes([len(COMMAND_DENIED)]) + COMMAND_DENIED, b"".join(sent))


class NoPolicyTests(SecureAMPTestCase):
    def test_protectedCommandsRefused(self) -> None:
        """Without a policy nothing protected runs: COMMAND_DENIED with a generic message; the log says why."""
        conn = self.connect("root", with_policy=None)
        self.assertIsNone(conn.server.policy)
        failure = self.refused(conn, Write, key="users/root/x", value="1")
        failure.trap(CommandDenied)
        self.assertEqual(str(failure.value), NOT_CONFIGURED)
        errors = self.flushLoggedErrors(AuthorizationSetupError)
        self.assertEqual(len(errors), 1)
        self.assertIn("no authorization policy", str(errors[0].value))
        self.refused(conn, Stop, reason="x").trap(CommandDenied)
        self.assertEqual(len(self.flushLoggedErrors(AuthorizationSetupError)), 1)
        self.assertEqual(conn.server.calls, [])
        self.assertOpen(conn)
        self.assertEqual(self.call(conn, Whoami), {"name": "root", "roles": ["admin"]})

    def test_factoryPolicy(self) -> None:
        """Without a session policy, the factory's is used."""
        factory = Factory.forProtocol(Service)
        factory.policy = policy()  # type: ignore[attr-defined]
        conn = connect_app_in_memory(
            factory, Factory.forProtocol(amp.AMP), pki=pki(), portal=self.portal, client="alice", clock=self.clock
        )
        self.assertIs(conn.server.policy, policy())
        self.refused(conn, Write, key="users/bob/x", value="1").trap(CommandDenied)
        self.assertEqual(self.call(conn, Write, key="users/alice/x", value="1"), {"written": "users/alice/x"})

    def test_assignedPolicyWins(self) -> None:
        conn = self.connect("alice")
        other = Policy.parse('[roles.writer]\npermissions = ["kv.write"]\n')
        conn.server.policy = other
        self.assertIs(conn.server.policy, other)
        self.assertEqual(self.call(conn, Write, key="anywhere", value="1"), {"written": "anywhere"})


class CommandDeclarationTests(SynchronousTestCase):
    def define(self, **attributes: Any) -> Callable[[], type]:
        def make() -> type:
            return type(
                "Bad",
                (SecureCommand,),
                {"arguments": [(b"key", amp.Unicode()), (b"opt", amp.Unicode(optional=True))], **attributes},
            )

        return make

    def test_badPermission(self) -> None:
        e = self.assertRaises(CommandSetupError, self.define(permission="kv.*"))
        self.assertEqual(str(e), "command Bad: permission 'kv.*' is not an action name such as 'kv.read'")

    def test_unknownArgument(self) -> None:
        e = self.assertRaises(CommandSetupError, self.define(permission="kv.read", resource="kv/{name}"))
        self.assertEqual(str(e), "command Bad: resource 'kv/{name}' names 'name', which is not one of its arguments (key, opt)")

    def test_optionalArgument(self) -> None:
        e = self.assertRaises(CommandSetupError, self.define(permission="kv.read", resource="{opt}"))
        self.assertIn("optional argument 'opt'", str(e))

    def test_formatTricks(self) -> None:
        for template in ("{key.__class__}", "{key!r}", "{key:>10}", "{0}", "{}"):
            e = self.assertRaises(CommandSetupError, self.define(permission="kv.read", resource=template))
            self.assertIn("not a plain argument name", str(e))

    def test_resourceWithoutPermission(self) -> None:
        e = self.assertRaises(CommandSetupError, self.define(resource="{key}"))
        self.assertEqual(str(e), "command Bad: a resource without a permission")

    def test_unauthorizedDeclared(self) -> None:
        """Every SecureCommand (and subclass with its own errors) maps COMMAND_DENIED to CommandDenied."""
        from examples.kv.commands import Get, NoSuchKey

        # reverseErrors is made by amp.Command's metaclass, where mypy does not see it.
        self.assertEqual(getattr(Read, "reverseErrors")[COMMAND_DENIED], CommandDenied)  # noqa: B009
        self.assertEqual(getattr(Get, "reverseErrors")[COMMAND_DENIED], CommandDenied)  # noqa: B009
        self.assertEqual(getattr(Get, "reverseErrors")[b"NO_SUCH_KEY"], NoSuchKey)  # noqa: B009

    def test_commandResource(self) -> None:
        self.assertEqual(command_resource(Write, {"key": "a/b", "value": "v"}), "a/b")
        self.assertIsNone(command_resource(Count, {}))
        self.assertEqual(command_resource(Ping, {"host": "h", "port": 1}), "public/hosts/h-1")

    def test_unauthorizedPermission(self) -> None:
        self.assertEqual(CommandDenied("a may not x.y r: missing permission x.y:r").permission, "x.y:r")
        self.assertIsNone(CommandDenied(NOT_CONFIGURED).permission)


# -- the line protocol ---------------------------------------------------------


class Notes(SecureLineReceiver):
    """Answers each line with what the policy says."""

    delimiter = b"\n"

    def connectionMade(self) -> None:
        super().connectionMade()
        self.sendLine(f"hello {self.identity.avatar_id}".encode())

    def lineReceived(self, line: bytes) -> None:
        command, _, key = line.decode().partition(" ")
        try:
            if command == "can":
                self.sendLine(f"can {key}: {self.can('kv.read', key)}".encode())
            elif command == "require":
                self.require("kv.write", key)
                self.sendLine(f"wrote {key}".encode())
            elif command == "stop":
                self.stop()
        except AuthorizationDenied as e:
            self.sendLine(f"denied: {e}".encode())

    @requires("admin.stop")
    def stop(self) -> None:
        self.sendLine(b"stopping")


class SecureLineReceiverTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.log = EventCapture(self)
        self.clock = Clock()
        self.portal = memory_portal({"alice": ["writer"], "root": ["admin"]}, passwords={"carol": "pw"}, clock=self.clock)

    def converse(self, client: str | None, *lines: bytes, **kwargs: Any) -> tuple[Notes, bytes]:
        collect = Collect()
        conn = connect_app_in_memory(
            Factory.forProtocol(Notes),
            Factory.forProtocol(lambda: collect),
            pki=pki(),
            policy=policy(),
            portal=self.portal,
            client=client,
            clock=self.clock,
            **kwargs,
        )
        self.assertIsNone(conn.failure)
        for line in lines:
            collect.transport.write(line + b"\n")  # type: ignore[union-attr]
            conn.flush()
        return conn.server, collect.received

    def test_identityAndPolicy(self) -> None:
        server, received = self.converse("alice")
        self.assertEqual(received, b"hello alice\n")
        self.assertEqual((server.identity.avatar_id, server.identity.roles), ("alice", ("writer",)))
        self.assertIs(server.policy, policy())

    def test_passwordIdentity(self) -> None:
        """The identity is whatever authenticated: here a password, no certificate."""
        server, received = self.converse(None, b"can public/x", mechanism=PlainClientMechanism("carol", "pw"))
        self.assertEqual((server.identity.avatar_id, server.identity.mechanism), ("carol", "PLAIN"))
        self.assertIsNone(server.identity.certificate)
        self.assertEqual(received, b"hello carol\ncan public/x: False\n")

    def test_canAndRequire(self) -> None:
        _, received = self.converse("alice", b"can public/x", b"can secret/x", b"require users/alice/n", b"require users/bob/n")
        self.assertEqual(
            received.decode().splitlines(),
            [
                "hello alice",
                "can public/x: True",
                "can secret/x: False",
                "wrote users/alice/n",
                "denied: alice may not kv.write users/bob/n: missing permission kv.write:users/bob/n",
            ],
        )
        self.assertEqual(
            [e["result"] for e in self.log.of("authz.decision", identity="alice")], ["allow", "deny", "allow", "deny"]
        )

    def test_requiresOnAMethod(self) -> None:
        _, denied = self.converse("alice", b"stop")
        self.assertEqual(denied, b"hello alice\ndenied: alice may not admin.stop: missing permission admin.stop\n")
        _, allowed = self.converse("root", b"stop")
        self.assertEqual(allowed, b"hello root\nstopping\n")

    def test_notASecureSession(self) -> None:
        """Connected to anything but a securenet session, the protocol refuses to start."""
        notes = Notes()
        self.assertRaises(NotASecureSession, notes.makeConnection, StringTransport())

    def test_noPolicy(self) -> None:
        notes = Notes()
        notes._securenet_identity = Identity("alice", "EXTERNAL", "127.0.0.1:1", roles=("admin",))
        self.assertIsNone(notes.policy)
        e = self.assertRaises(AuthorizationSetupError, notes.can, "kv.read", "x")
        self.assertEqual(
            str(e),
            "cannot authorize Notes.can: no authorization policy (run twistd securenet with --policy FILE, or set "
            "factory.policy)",
        )
        self.assertRaises(AuthorizationSetupError, notes.stop)


# -- a protocol that is not ours -------------------------------------------------


class PlainProtocol(Protocol):
    """Subclasses nothing of securenet's: identity_of and ISession are all it needs."""

    def connectionMade(self) -> None:
        self.identity = identity_of(self)
        self.policy = ISession(self.transport).policy
        decision = self.policy.decide(self.identity, "kv.read", "public/x")
        self.transport.write(f"{self.identity.avatar_id} {decision.result}\n".encode())  # type: ignore[union-attr]


class PlainProtocolTests(SynchronousTestCase):
    def test_identityOf(self) -> None:
        clock = Clock()
        collect = Collect()
        conn = connect_app_in_memory(
            Factory.forProtocol(PlainProtocol),
            Factory.forProtocol(lambda: collect),
            pki=pki(),
            policy=policy(),
            portal=memory_portal({"bob": ["reader"]}, clock=clock),
            client="bob",
            clock=clock,
        )
        self.assertEqual(collect.received, b"bob allow\n")
        self.assertEqual(conn.server.identity.roles, ("reader",))
        self.assertIs(conn.server.policy, policy())


class TestingHelperTests(SynchronousTestCase):
    def test_failedAuthentication(self) -> None:
        """connect_app_in_memory reports a refused client as a failure, with no applications."""
        clock = Clock()
        conn = connect_app_in_memory(
            Factory.forProtocol(Notes),
            Factory.forProtocol(Collect),
            pki=pki(),
            portal=memory_portal(passwords={"carol": "pw"}, clock=clock, certificate=False),
            client=None,
            mechanism=PlainClientMechanism("carol", "wrong"),
            clock=clock,
        )
        self.assertIsNone(conn.client)
        self.assertIsNone(conn.server)
        self.assertIsNotNone(conn.failure)

    def test_memoryPortalRejectsTotpWithoutPassword(self) -> None:
        e = self.assertRaises(ValueError, memory_portal, {"x": []}, totp={"x": "JBSWY3DPEHPK3PXP"}, clock=Clock())
        self.assertEqual(str(e), "memory_portal: 'x' has a TOTP secret but no password")


class DrainTests(SynchronousTestCase):
    def test_defaultDrainSetsTheFlag(self) -> None:
        """
        The stream bases are IDrainable; the default drain() only sets
        C{draining} (the connection goes on until it ends or the drain time
        ends), and writes nothing, closes nothing.
        """
        for cls in (SecureLineReceiver, SecureAMP):
            protocol = cls()
            transport = StringTransport()
            protocol.transport = transport
            self.assertTrue(IDrainable.providedBy(protocol))
            self.assertFalse(protocol.draining)
            protocol.drain()
            self.assertTrue(protocol.draining)
            self.assertEqual((transport.value(), transport.disconnecting), (b"", False))

    def test_override(self) -> None:
        """A subclass says goodbye in its own protocol and closes; super().drain() keeps the flag."""

        class Chat(SecureLineReceiver):
            def drain(self) -> None:
                super().drain()
                self.sendLine(b"* server restarting, bye")
                self.transport.loseConnection()  # type: ignore[union-attr]

        protocol = Chat()
        transport = StringTransport()
        protocol.transport = transport
        IDrainable(protocol).drain()
        self.assertEqual(
            (transport.value(), transport.disconnecting, protocol.draining), (b"* server restarting, bye\r\n", True, True)
        )
