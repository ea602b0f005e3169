"""
Base classes for securenet applications: the Twisted protocols you already
know, plus the peer's identity and the service's authorization policy::

    class Chat(SecureLineReceiver):          # a twisted.protocols.basic.LineReceiver
        def lineReceived(self, line):
            if line == b"/rooms" and self.can("chat.rooms.list"):
                ...
            self.sendLine(f"<{self.identity.avatar_id}> ...".encode())

    class Get(SecureCommand):                # a twisted.protocols.amp.Command
        arguments = [(b"key", amp.Unicode())]
        response = [(b"value", amp.Unicode())]
        permission = "kv.read"               # checked before the responder runs,
        resource = "kv/{key}"                # on the resource named by the arguments

    class KV(SecureAMP):                     # a twisted.protocols.amp.AMP
        @Get.responder
        def get(self, key): ...

Nothing else changes: the classes add C{identity}, C{policy}, C{can} and
C{require} (L{SecureProtocolMixin}, which any other protocol class may mix
in), C{drain} and C{draining} for a graceful stop, and L{SecureAMP}
authorizes commands.  A protocol that subclasses none
of them still finds its peer with C{securenet.identity_of(self)}.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from types import CoroutineType
from typing import Any, ClassVar, cast

from twisted.internet.defer import Deferred, fail
from twisted.protocols import amp
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from securenet._logs import SecurenetLogger
from securenet.authz._attributes import Context
from securenet.authz._decisions import Decision, audit
from securenet.authz._errors import AuthorizationDenied, AuthorizationError, AuthorizationSetupError
from securenet.authz._patterns import is_action
from securenet.cred._identity import Identity
from securenet.interfaces import IDrainable, IPolicy, ISession
from securenet.session._server import identity_of

log = SecurenetLogger(namespace="securenet.protocols")

#: The AMP error code of a command the policy refused.
COMMAND_DENIED = b"COMMAND-DENIED"

#: What the peer is told when the server cannot authorize at all (no policy):
#: the details are in the server's log, not on the wire.
NOT_CONFIGURED = "authorization is not configured on the server"

#: How many allowing decisions one connection keeps (see SecureProtocolMixin).
MAX_KEPT_DECISIONS = 1024

_MISSING = re.compile(r"missing permission (\S+)$")


class CommandDenied(AuthorizationError):
    """
    An AMP command was refused by the server's policy: what a client's
    C{callRemote} Deferred fails with, for every command that declares it
    (every L{SecureCommand} does).  C{str()} is the server's message, which
    names the missing permission and never the policy's rules:
    C{alice may not kv.write users/bob/x: missing permission kv.write:users/bob/x}.
    """

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    @property
    def permission(self) -> str | None:
        """The missing permission named in the message (C{kv.write:users/bob/x}), if any."""
        found = _MISSING.search(self.message)
        return found.group(1) if found else None


@implementer(IDrainable)
class SecureProtocolMixin:
    """
    The peer's identity and the service's policy, for any protocol class.

    Mix it in before the Twisted class (C{class P(SecureProtocolMixin,
    Int32StringReceiver)}); L{SecureLineReceiver} and L{SecureAMP} are
    exactly that.  It satisfies the contract of L{securenet.authz.requires},
    so decorated methods work unchanged.

      - C{identity}: the peer's L{Identity}, from the session
        (C{identity_of(self)}), looked up at C{connectionMade} and kept;
        raises L{securenet.session.NotASecureSession} on a
        connection securenet did not authenticate.
      - C{policy}: the policy the service runs with (C{twistd securenet
        --policy}, i.e. C{ISession(self.transport).policy}), else
        C{self.factory.policy}; or one assigned to C{self.policy}.  None
        when there is none (every check then raises
        L{AuthorizationSetupError}: a missing policy never allows).  Once
        found it is kept for the connection (checked on every call).
      - C{can(action, resource)} / C{require(action, resource)}: the
        policy's decision for the peer, logged as an C{authz.decision}
        event.
      - C{drain()} (L{IDrainable}): the server is stopping gracefully
        (SIGTERM).  The default sets C{draining} and does nothing else: the
        connection goes on until it ends or the drain time ends (then the
        server closes it).  Override it to say goodbye in your protocol
        and close, or check C{self.draining} when an exchange ends; call
        C{super().drain()} to keep the flag.
    """

    #: True once the server asked this connection to wind down (L{drain}).
    draining: bool = False

    _securenet_identity: Identity | None = None
    _securenet_policy: IPolicy | None = None
    _securenet_decisions: dict[tuple[str, str | None], Decision] | None = None

    def connectionMade(self) -> None:
        # Fail at once, not at the first command, on a connection that
        # securenet did not authenticate.
        _ = self.identity
        super().connectionMade()  # type: ignore[misc]

    def drain(self) -> None:
        """The server is stopping gracefully: set C{draining} (see the class docstring)."""
        self.draining = True

    @property
    def identity(self) -> Identity:
        if self._securenet_identity is None:
            self._securenet_identity = identity_of(cast(Any, self))
        return self._securenet_identity

    @property
    def policy(self) -> IPolicy | None:
        if self._securenet_policy is not None:
            return self._securenet_policy
        session = ISession(getattr(self, "transport", None), None)
        factory = getattr(self, "factory", None)
        for candidate in (getattr(session, "policy", None), getattr(factory, "policy", None)):
            if candidate is not None and IPolicy.providedBy(candidate):
                self._securenet_policy = candidate
                return self._securenet_policy
        return None

    @policy.setter
    def policy(self, policy: IPolicy | None) -> None:
        self._securenet_policy = policy

    def _policyFor(self, what: str) -> IPolicy:
        policy = self.policy
        if policy is None:
            raise AuthorizationSetupError(
                f"{type(self).__name__}.{what}",
                "no authorization policy (run twistd securenet with --policy FILE, or set factory.policy)",
            )
        return policy

    def can(self, action: str, resource: str | None = None, context: Context | None = None) -> bool:
        """Whether the policy allows the peer C{action} on C{resource} (the decision is logged)."""
        return self._decide("can", action, resource, context).allowed

    def require(self, action: str, resource: str | None = None, context: Context | None = None) -> Decision:
        """
        The allowing decision (logged); raises L{AuthorizationDenied}, whose
        message may be sent to the peer, when the policy denies.
        """
        decision = self._decide("require", action, resource, context)
        if not decision.allowed:
            raise decision.denied()
        return decision

    def _decide(self, what: str, action: str, resource: str | None, context: Context | None) -> Decision:
        """
        The policy's decision.  A connection keeps the allowing decisions
        that did not depend on the time (L{Decision.reusable}: the identity
        and the policy do not change while it lasts), so a command called
        again is not decided again; each use is still logged as a decision.
        Refusals are always decided afresh.
        """
        policy = self._securenet_policy
        if policy is None:
            policy = self._policyFor(what)
        kept = self._securenet_decisions
        if context is None and kept is not None:
            decision = kept.get((action, resource))
            if decision is not None:
                audit(decision, getattr(policy, "log_allows", "debug"))
                return decision
        decision = policy.decide(self.identity, action, resource, context)
        if context is None and decision.allowed and getattr(decision, "reusable", False):
            if kept is None:
                kept = self._securenet_decisions = {}
            if len(kept) < MAX_KEPT_DECISIONS:
                kept[(action, resource)] = decision
        return decision


class SecureLineReceiver(SecureProtocolMixin, LineReceiver):
    """
    A C{LineReceiver} that knows its peer (C{self.identity}) and can ask the
    policy (C{self.can}, C{self.require}, C{@requires} on its methods).
    Everything else is LineReceiver's, defaults included (a C{\\r\\n}
    delimiter: set C{delimiter = b"\\n"} for line-at-a-time terminals).
    """


# -- AMP -----------------------------------------------------------------------

#: What a command's C{resource} may be: a template over its arguments
#: (C{"kv/{key}"}), or a function given the parsed arguments returning the
#: resource.
ResourceSpec = str | Callable[..., str | None] | None


class CommandSetupError(AuthorizationError, TypeError):
    """A command's C{permission} or C{resource} cannot work (raised when the command class is defined)."""


def _template_fields(template: str) -> list[str]:
    fields = []
    for _, field, spec, conversion in string.Formatter().parse(template):
        if field is None:
            continue
        if not field.isidentifier() or spec or conversion:
            raise ValueError(f"{{{field}}} is not a plain argument name")
        fields.append(field)
    return fields


def _python_name(wire: bytes) -> str:
    """The keyword AMP passes an argument as (C{foo-bar} is C{foo_bar})."""
    name: str = amp._wireNameToPythonIdentifier(wire)
    return name


def validate_command(command: type[amp.Command]) -> None:
    """
    Check a command's C{permission} and C{resource} declarations: the
    permission is an action name, and a resource template names only
    required arguments of the command.

    @raise CommandSetupError: naming the command and the problem.
    """
    name = command.__name__
    permission = getattr(command, "permission", None)
    spec = getattr(command, "resource", None)
    if permission is None:
        if spec is not None:
            raise CommandSetupError(f"command {name}: a resource without a permission")
        return
    if not isinstance(permission, str) or not is_action(permission):
        raise CommandSetupError(f"command {name}: permission {permission!r} is not an action name such as 'kv.read'")
    if spec is None or callable(spec):
        return
    if not isinstance(spec, str):
        raise CommandSetupError(f"command {name}: resource must be a template string or a function, not {spec!r}")
    try:
        fields = _template_fields(spec)
    except ValueError as e:
        raise CommandSetupError(f"command {name}: resource {spec!r}: {e}") from None
    required = {_python_name(wire): argument for wire, argument in command.arguments}
    for field in fields:
        if field not in required:
            raise CommandSetupError(
                f"command {name}: resource {spec!r} names {field!r}, which is not one of its arguments "
                f"({', '.join(required) or 'none'})"
            )
        if required[field].optional:
            raise CommandSetupError(f"command {name}: resource {spec!r} names the optional argument {field!r}")


def _text(command: type[amp.Command], field: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8")  # UnicodeDecodeError: refused by SecureAMP
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise CommandSetupError(f"command {command.__name__}: argument {field!r} ({type(value).__name__}) cannot name a resource")


def command_resource(command: type[amp.Command], arguments: Mapping[str, Any]) -> str | None:
    """
    The resource a call of C{command} with C{arguments} is about (see
    L{SecureCommand}): its C{resource} template filled with the arguments
    (text, UTF-8 bytes or integers), or its C{resource} function's answer.
    """
    spec = getattr(command, "resource", None)
    if spec is None:
        return None
    if callable(spec):
        return cast(Callable[[Mapping[str, Any]], "str | None"], spec)(arguments)
    return cast(str, spec.format_map({field: _text(command, field, arguments[field]) for field in _template_fields(spec)}))


class SecureCommand(amp.Command):
    """
    An AMP command that declares the permission its responder needs; a
    L{SecureAMP} server checks it before the responder runs.

    It also declares L{CommandDenied} (C{COMMAND-DENIED}) among its C{errors},
    so a client's C{callRemote} fails with that type.  Mistakes in the
    declarations are refused when the class is defined
    (L{CommandSetupError}).

    @cvar permission: the action (C{"kv.read"}), or None for a command
        anyone authenticated may call.
    @cvar resource: what the action is on: a template over the command's
        (required) arguments, C{"{key}"} or C{"kv/{key}"}, or a function
        given the parsed arguments; None for no resource.
    """

    permission: ClassVar[str | None] = None
    resource: ClassVar[ResourceSpec] = None
    errors: ClassVar[dict[type[Exception], bytes]] = {CommandDenied: COMMAND_DENIED}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        validate_command(cls)


class SecureAMP(SecureProtocolMixin, amp.AMP):
    """
    An C{amp.AMP} that authorizes every command it answers:

      1. the command's C{permission} on its C{resource}
         (L{SecureCommand}; any C{amp.Command} with those attributes works);
      2. then the responder, which may be guarded with C{@requires} (put it
         under C{@Command.responder}) or call C{self.require}.

    A refused call is answered with the AMP error C{COMMAND-DENIED}, whose
    description is the L{AuthorizationDenied} message (the missing
    permission, never the policy's rules); the connection stays open for
    the next call.  Every decision is an C{authz.decision} event.  Without a
    policy, protected commands are refused and the server logs why.

    Only C{amp.Command} responders are checked; low-level C{amp_NAME}
    box responders are not (do not use them for protected operations).
    """

    _securenet_responders: dict[bytes, Any] | None = None

    def locateResponder(self, name: bytes) -> Any:
        """
        AMP's responder for command C{name}, looked up (and wrapped) once
        per connection rather than for every box: a connection's responders
        do not change.  Unknown names are not remembered (a peer could send
        any number of them).
        """
        found = self._securenet_responders.get(name) if self._securenet_responders is not None else None
        if found is None:
            found = super().locateResponder(name)
            if found is not None:
                if self._securenet_responders is None:
                    self._securenet_responders = {}
                self._securenet_responders[name] = found
        return found

    # The one place that reaches into AMP's internals: CommandLocator wraps
    # every responder (called with the parsed arguments) with its command's
    # (de)serialization here, so wrapping the responder first sees both the
    # command and its arguments.  tests/test_secure_protocols.py fails if a
    # Twisted release stops calling it.
    def _wrapWithSerialization(self, aCallable: Callable[..., Any], command: type[amp.Command]) -> Any:
        def authorized(**arguments: Any) -> Any:
            # AMP runs this through maybeDeferred: a plain answer needs no
            # Deferred of ours (this runs on every call).
            try:
                self.authorizeCommand(command, arguments)
                answer = aCallable(**arguments)
            except Exception:
                return fail(self._refusal(Failure(), command))
            if type(answer) is dict:
                # The usual answer.  (Deferred is an ABC: isinstance against
                # it is slow for anything that is not one.)
                return answer
            if isinstance(answer, CoroutineType):
                answer = Deferred.fromCoroutine(answer)
            if isinstance(answer, Deferred):
                return answer.addErrback(self._refusal, command)
            return answer

        return super()._wrapWithSerialization(authorized, command)

    def authorizeCommand(self, command: type[amp.Command], arguments: Mapping[str, Any]) -> Decision | None:
        """
        Check C{command}'s declared permission for a call with C{arguments}
        (the allowing decision, or None if it declares none); raises
        L{AuthorizationDenied} when denied.
        """
        if not issubclass(command, SecureCommand):
            validate_command(command)  # a SecureCommand was checked when defined
        permission = getattr(command, "permission", None)
        if permission is None:
            return None
        try:
            resource = command_resource(command, arguments)
        except UnicodeDecodeError:
            # Not a name a policy could match: refuse rather than guess.
            raise CommandDenied(f"{self.identity.avatar_id} may not {permission}: the resource is not UTF-8 text") from None
        return self.require(permission, resource, self.commandContext(command, arguments))

    def commandContext(self, command: type[amp.Command], arguments: Mapping[str, Any]) -> Context | None:
        """
        The L{Context} a command is decided in (default: none, i.e. the
        clock's time and the identity's peer).  Override to pass facts for
        C{resource.attributes.*} / C{context.attributes.*} conditions, such
        as the owner of the record a call is about.
        """
        return None

    def _refusal(self, failure: Failure, command: type[amp.Command]) -> Failure:
        """A refusal becomes a non-fatal C{COMMAND-DENIED} error; anything else passes through."""
        if failure.check(AuthorizationDenied, CommandDenied):
            description = str(failure.value)
        elif failure.check(AuthorizationSetupError, CommandSetupError):
            log.failure(
                "cannot authorize {command} for {identity}",
                failure,
                command=command.__name__,
                identity=self.identity.avatar_id,
            )
            description = NOT_CONFIGURED
        else:
            return failure
        return Failure(amp.RemoteAmpError(COMMAND_DENIED, description, False, local=None))


__all__ = [
    "CommandSetupError",
    "NOT_CONFIGURED",
    "ResourceSpec",
    "SecureAMP",
    "SecureCommand",
    "SecureLineReceiver",
    "SecureProtocolMixin",
    "COMMAND_DENIED",
    "CommandDenied",
    "command_resource",
    "validate_command",
]
