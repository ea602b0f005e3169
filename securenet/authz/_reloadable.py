"""
L{ReloadablePolicy}: the policy a running service holds, which a reload
(SIGHUP) replaces.

Why a second policy class: a L{Policy} is immutable (its rules are compiled
once, and a decision is reproducible from it), and every holder -- each
listener's session factory, every session (C{ISession(transport).policy}),
the HTTP API's guard -- keeps the object it was given.  A reload that built a
new L{Policy} would have to find and change each of them.  Instead they all
hold this one object, which decides with the current compiled L{Policy};
a reload swaps that, and reaches every holder at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from zope.interface import implementer

from securenet.authz._attributes import Context
from securenet.authz._decisions import Decision
from securenet.authz._policy import Clock, Policy
from securenet.cred._identity import Identity
from securenet.interfaces import IPolicy, IReloadable


@implementer(IPolicy, IReloadable)
class ReloadablePolicy:
    """
    A policy file's current L{Policy}, as an L{IPolicy} every holder shares,
    and the L{IReloadable} (C{what} C{policy}) that reads the file again.

    A decision uses the policy that was current when it started, to its end;
    a reload that L{Policy.load} refuses (TOML syntax, an unknown role, a bad
    condition, a missing file: a L{PolicyError} naming file and line) changes
    nothing: the old policy keeps deciding.

    @ivar current: the L{Policy} deciding now.
    @ivar path: the policy file.
    """

    what: Literal["policy"] = "policy"

    def __init__(self, policy: Policy, path: str | Path) -> None:
        self.current = policy
        self.path = path

    @classmethod
    def load(cls, path: str | Path, *, clock: Clock = time.time) -> ReloadablePolicy:
        """Load the policy file at C{path} (blocking), as L{Policy.load} does; a bad one raises L{PolicyError}."""
        return cls(Policy.load(path, clock=clock), path)

    @property
    def source(self) -> str:
        """The policy file (for the reload's log line)."""
        return str(self.path)

    def prepare(self) -> Callable[[], None]:
        """Read and compile the policy file again (blocking); the returned function makes it current."""
        policy = Policy.load(self.path, clock=self.current.clock)

        def commit() -> None:
            self.current = policy

        return commit

    def decide(
        self,
        identity: Identity,
        action: str,
        resource: str | None = None,
        context: Context | None = None,
        *,
        audit: bool = True,
    ) -> Decision:
        """L{Policy.decide} of the current policy."""
        return self.current.decide(identity, action, resource, context, audit=audit)

    def can(self, identity: Identity, action: str, resource: str | None = None, context: Context | None = None) -> bool:
        """L{Policy.can} of the current policy."""
        return self.current.can(identity, action, resource, context)

    def require(self, identity: Identity, action: str, resource: str | None = None, context: Context | None = None) -> Decision:
        """L{Policy.require} of the current policy."""
        return self.current.require(identity, action, resource, context)

    def summary(self) -> str:
        """L{Policy.summary} of the current policy."""
        return self.current.summary()
