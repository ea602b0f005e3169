"""
The authorization layer's exceptions.

L{PolicyError} is the operator's: a policy file was refused at load, and its
C{str()} names the file, the line and the reason.  L{AuthorizationDenied} is
the peer's: its C{str()} says who may not do what and which permission that
takes, and never the policy's internals (rule names, lines, conditions), so
a protocol may send it to the peer as is.  The full L{Decision} stays on the
exception for logs and tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from securenet._errors import SecurenetError

if TYPE_CHECKING:
    from securenet.authz._decisions import Decision


class AuthorizationError(SecurenetError):
    """Base class of the authorization layer's errors."""


@attrs.define(auto_exc=True, str=False)
class PolicyError(AuthorizationError):
    """
    A policy was refused when loaded.

    @ivar source: the policy file (or the name given for a policy's text).
    @ivar line: the 1-based line of the offending table, key or value, or
        None when the problem is not on one line (e.g. the file is missing).
    @ivar reason: what is wrong, in a few words.
    """

    source: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.source}: {self.reason}"
        return f"{self.source}:{self.line}: {self.reason}"


def requested_permission(action: str, resource: str | None) -> str:
    """The permission a request needs, as a policy would write it: C{action} or C{action:resource}."""
    return action if resource is None else f"{action}:{resource}"


@attrs.define(auto_exc=True, str=False)
class AuthorizationDenied(AuthorizationError):
    """
    The policy denied a request.

    @ivar identity: the avatar id of the identity that asked.
    @ivar action: the action requested (C{kv.write}).
    @ivar resource: the resource it was requested on, or None.
    @ivar permission: the permission that would have allowed it
        (C{kv.write:data/x}): the missing permission.
    @ivar decision: the full L{Decision}, with the rule and reason; not part
        of C{str()} or C{repr()}.
    """

    identity: str
    action: str
    resource: str | None
    permission: str
    decision: Decision | None = attrs.field(default=None, repr=False, eq=False)

    def __str__(self) -> str:
        target = f" {self.resource}" if self.resource is not None else ""
        return f"{self.identity} may not {self.action}{target}: missing permission {self.permission}"


@attrs.define(auto_exc=True, str=False)
class AuthorizationSetupError(AuthorizationError):
    """
    A protected handler cannot be authorized because its object does not
    provide what L{securenet.authz.requires} needs (a policy, an identity).
    The handler does not run: a missing policy never means "allow".
    """

    handler: str
    problem: str

    def __str__(self) -> str:
        return f"cannot authorize {self.handler}: {self.problem}"
