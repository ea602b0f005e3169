"""
Authorization for protocol command handlers: the L{requires} decorator,
and L{can}, the identity-side helper.

The contract with a protocol (SecureAMP, the line base class, your own):

  - the policy is C{self.policy}, else C{self.factory.policy} (an
    L{IPolicy} provider), unless the decorator is given C{policy=};
  - the identity is C{self.identity} (an attribute or property giving the
    L{Identity}), unless the decorator is given C{identity=}; securenet's
    protocol base classes provide C{identity} from C{identity_of(self)};
  - neither may be missing: a handler that cannot be authorized raises
    L{AuthorizationSetupError} and does not run.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from securenet.authz._attributes import Context
from securenet.authz._errors import AuthorizationSetupError
from securenet.authz._patterns import is_action
from securenet.cred._identity import Identity
from securenet.interfaces import IPolicy

P = ParamSpec("P")
R = TypeVar("R")

#: What C{resource=} may be: a fixed resource, None, or a function of the
#: handler's arguments (C{self} included) returning the resource.
ResourceSpec = str | None | Callable[..., str | None]


def can(identity: Identity, action: str, resource: str | None, policy: IPolicy, context: Context | None = None) -> bool:
    """Whether C{policy} allows C{identity} to do C{action} on C{resource} (the decision is logged)."""
    return policy.can(identity, action, resource, context)


def _handler_name(f: Callable[..., Any]) -> str:
    return getattr(f, "__qualname__", repr(f))


def policy_of(obj: object) -> IPolicy | None:
    """C{obj.policy}, else C{obj.factory.policy}, if it provides L{IPolicy}."""
    for candidate in (getattr(obj, "policy", None), getattr(getattr(obj, "factory", None), "policy", None)):
        if candidate is not None and IPolicy.providedBy(candidate):
            return candidate
    return None


def requires(
    action: str,
    resource: ResourceSpec = None,
    *,
    context: Callable[..., Context | None] | None = None,
    policy: Callable[[Any], IPolicy | None] | None = None,
    identity: Callable[[Any], Identity | None] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """
    Decorate a protocol method so it runs only if the policy allows the
    peer C{action} on C{resource}; otherwise it raises
    L{AuthorizationDenied} (naming the missing permission) and its body
    does not run.  Works on plain, Deferred-returning and C{async def}
    methods (a coroutine method raises when awaited)::

        class KV(LineReceiver):
            @requires("kv.write", resource=lambda self, key, value: f"kv/{key}")
            def do_SET(self, key, value): ...

    @param resource: the resource, or a function given the method's
        arguments (C{self} first) that returns it.
    @param context: a function given the method's arguments that returns
        the request's L{Context} (None: the default context).
    @param policy: a function given C{self} that returns the policy
        (default: C{self.policy}, else C{self.factory.policy}).
    @param identity: a function given C{self} that returns the identity
        (default: C{self.identity}).
    @raise ValueError: at decoration, if C{action} is not an action name.
    """
    if not is_action(action):
        raise ValueError(f"requires({action!r}): not an action name (dot-separated names, no wildcards)")

    def check(f: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not args:
            raise AuthorizationSetupError(_handler_name(f), "it must be a method (no self)")
        self = args[0]
        the_policy = policy(self) if policy is not None else policy_of(self)
        if the_policy is None:
            raise AuthorizationSetupError(
                _handler_name(f), f"{type(self).__name__} has no policy (set self.policy or self.factory.policy)"
            )
        the_identity = identity(self) if identity is not None else getattr(self, "identity", None)
        if the_identity is None:
            raise AuthorizationSetupError(_handler_name(f), f"{type(self).__name__} has no identity (self.identity)")
        target = resource(*args, **kwargs) if callable(resource) else resource
        request_context = context(*args, **kwargs) if context is not None else None
        the_policy.require(the_identity, action, target, request_context)

    def decorate(f: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(f):
            coroutine = cast(Callable[..., Any], f)

            @functools.wraps(f)
            async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                check(f, args, kwargs)
                return await coroutine(*args, **kwargs)

            guarded_async.__securenet_requires__ = (action, resource)  # type: ignore[attr-defined]
            return cast(Callable[P, R], guarded_async)

        @functools.wraps(f)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            check(f, args, kwargs)
            return f(*args, **kwargs)

        guarded.__securenet_requires__ = (action, resource)  # type: ignore[attr-defined]
        return guarded

    return decorate
