"""
Decisions: what the policy answered, which rule made it so, and why; and
the audit event every decision is.
"""

from __future__ import annotations

from typing import Literal

import attrs

from securenet import audit as _audit
from securenet._logs import SecurenetLogger
from securenet.authz._errors import AuthorizationDenied

log = SecurenetLogger(namespace="securenet.authz")

Effect = Literal["allow", "deny"]

#: The log level of allowed decisions; denies are always logged at warn.
AllowLogLevel = Literal["debug", "info"]


@attrs.frozen
class Location:
    """Where a rule or permission is written: the policy file and line."""

    source: str
    line: int | None

    def __str__(self) -> str:
        return self.source if self.line is None else f"{self.source}:{self.line}"


@attrs.frozen
class MatchedRule:
    """
    The rule that decided a request.

    @ivar kind: C{"role"} for a role's permissions (C{[roles.NAME]}),
        C{"rule"} for an entry of C{[[rules]]}.
    @ivar name: the role's name, or the rule's C{name} (None if it has none).
    @ivar number: for a rule, its position among the C{[[rules]]} (from 1).
    @ivar effect: C{"allow"} or C{"deny"}.
    @ivar permission: the permission of the rule that covered the request, as written.
    @ivar location: the file and line of that permission (in the role's or
        the rule's C{permissions}).
    @ivar conditions: the rule's C{when}/C{unless} in words, or C{""}.
    """

    kind: Literal["role", "rule"]
    name: str | None
    number: int | None
    effect: Effect
    permission: str
    location: Location
    conditions: str = ""

    @property
    def label(self) -> str:
        """C{role writer}, C{rule 2 "office-hours"}, or C{rule 3}."""
        if self.kind == "role":
            return f"role {self.name}"
        return f'rule {self.number} "{self.name}"' if self.name else f"rule {self.number}"


@attrs.frozen
class Decision:
    """
    The answer to one request, with its explanation.  Truthy if allowed.

    @ivar allowed: whether the request is allowed.
    @ivar identity: the avatar id of the identity that asked.
    @ivar action: the action requested.
    @ivar resource: the resource, or None.
    @ivar permission: the permission the request needs (C{action} or
        C{action:resource}); when denied, the missing permission.
    @ivar rule: the rule that decided, or None when no rule matched (denied
        by default) or the request itself was refused.
    @ivar reason: why, in words (for logs and operators; it names rules).
    @ivar mechanism: how the identity authenticated.
    @ivar peer: the peer's address.
    @ivar reusable: the decision did not depend on the time: the same
        identity asking the same thing in the same context gets the same
        answer (a connection may keep it; see L{SecureProtocolMixin}).
    """

    allowed: bool
    identity: str
    action: str
    resource: str | None
    permission: str
    rule: MatchedRule | None
    reason: str
    mechanism: str = ""
    peer: str = ""
    reusable: bool = attrs.field(default=False, eq=False, repr=False)

    @property
    def result(self) -> Effect:
        return "allow" if self.allowed else "deny"

    def __bool__(self) -> bool:
        return self.allowed

    def denied(self) -> AuthorizationDenied:
        """The L{AuthorizationDenied} for this (denied) decision."""
        return AuthorizationDenied(self.identity, self.action, self.resource, self.permission, self)

    def explain(self) -> str:
        """
        Three lines: the answer, the rule (with file and line), and the reason::

            DENY: alice may not kv.write secret/x (missing permission kv.write:secret/x)
            rule: none
            reason: no rule matched: denied by default
        """
        target = f" {self.resource}" if self.resource is not None else ""
        if self.allowed:
            head = f"ALLOW: {self.identity} may {self.action}{target}"
        else:
            head = f"DENY: {self.identity} may not {self.action}{target} (missing permission {self.permission})"
        if self.rule is None:
            rule = "rule: none"
        else:
            rule = f"rule: {self.rule.label}, permission {self.rule.permission} ({self.rule.location})"
        return f"{head}\n{rule}\nreason: {self.reason}"


def audit(decision: Decision, allow_level: AllowLogLevel = "debug") -> None:
    """
    Log C{decision} as a C{securenet_event="authz.decision"} event: a deny
    at warn, an allow at C{allow_level}.
    """
    _audit.authz_decision(decision, allow_level)
