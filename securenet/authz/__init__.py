"""
Authorization: roles, permissions and attribute conditions from a TOML
policy (docs/authz.md), and one decision API::

    policy = Policy.load("policy.toml", clock=reactor)
    policy.decide(identity, "kv.write", "data/x")   # -> Decision (allowed, rule, reason), logged
    policy.can(identity, "kv.write", "data/x")      # -> bool
    policy.require(identity, "kv.write", "data/x")  # raises AuthorizationDenied

    @requires("kv.write", resource=lambda self, key: key)
    def set(self, key): ...

A service holds a L{ReloadablePolicy} (C{ReloadablePolicy.load(path,
clock=reactor)}, the same API), which a reload points at the file's new
policy for every holder at once.

Deny by default; a deny rule wins over any allow.  Every decision is a
C{securenet_event="authz.decision"} log event (denies at warn).
"""

from securenet.authz._attributes import Context, SpiffeID, parse_spiffe_id, peer_address, spiffe_id_of
from securenet.authz._decisions import Decision, Location, MatchedRule
from securenet.authz._errors import AuthorizationDenied, AuthorizationError, AuthorizationSetupError, PolicyError
from securenet.authz._handlers import can, policy_of, requires
from securenet.authz._patterns import Glob, Permission
from securenet.authz._policy import Policy
from securenet.authz._reloadable import ReloadablePolicy

__all__ = [
    "AuthorizationDenied",
    "AuthorizationError",
    "AuthorizationSetupError",
    "Context",
    "Decision",
    "Glob",
    "Location",
    "MatchedRule",
    "Permission",
    "Policy",
    "PolicyError",
    "ReloadablePolicy",
    "SpiffeID",
    "can",
    "parse_spiffe_id",
    "peer_address",
    "policy_of",
    "requires",
    "spiffe_id_of",
]
