"""
Protecting resources and handlers: authentication (L{WebAuthenticator})
then authorization (a L{securenet.authz} policy), with JSON answers::

    guard = WebGuard(WebAuthenticator(portal, reactor, throttle=throttle), policy)

    # any twisted.web resource:
    root.putChild(b"reports", guard.protect(ReportsResource(), action="report.run"))

    # a handler (a JSON endpoint here; Klein routes take it too):
    @guard.requires("kv.write", resource=lambda request, key: f"data/{key}")
    async def put(request, key): ...

A request without acceptable credentials is answered C{401} (with
C{WWW-Authenticate}); an authenticated one the policy denies, C{403} with
the missing permission::

    {"error": "forbidden", "message": "bob may not admin.users.list: missing permission admin.users.list",
     "permission": "admin.users.list"}

-- the policy's rules, names and lines stay in the audit log.  A guard
without a policy authenticates only; asked to authorize, it denies (a
missing policy never means "allow").
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource, getChildForRequest
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from securenet import _metrics
from securenet.authz import AuthorizationDenied, Context, Policy
from securenet.authz._decisions import Decision
from securenet.interfaces import IPolicy
from securenet.web._auth import Authentication, WebAuthenticator, client_peer
from securenet.web._errors import Forbidden, MethodNotAllowed, NotFound, WebError
from securenet.web._responses import (
    JSON_TYPE,
    JSONResponse,
    apply_security_headers,
    disconnect_watch,
    render_error,
    render_json,
    send,
    send_failure,
)

_F = TypeVar("_F", bound=Callable[..., Any])

#: A policy resource for a request: fixed, or computed from it.
ResourceSpec = str | None | Callable[..., str | None]

#: What a deny-everything guard decides with (no policy configured).
_NO_POLICY = Policy.parse("", source="<no policy>")


class WebGuard:
    """
    Authentication and authorization for resources and handlers.

    @param authenticator: how requests authenticate.
    @param policy: the authorization policy (an L{IPolicy}), or None:
        every authorization is then denied.
    """

    def __init__(self, authenticator: WebAuthenticator, policy: IPolicy | None = None) -> None:
        self.authenticator = authenticator
        self.policy = policy

    def authorize(self, request: IRequest, authentication: Authentication, action: str, resource: str | None = None) -> Decision:
        """
        Decide C{action} on C{resource} for the request's identity (an
        C{authz.decision} event).

        @raise Forbidden: denied; C{details["permission"]} names the missing
            permission.
        """
        policy = self.policy if self.policy is not None else _NO_POLICY
        context = Context(peer=client_peer(request))
        try:
            return policy.require(authentication.identity, action, resource, context)
        except AuthorizationDenied as denied:
            raise Forbidden(str(denied), details={"permission": denied.permission}, reason=_reason(denied)) from None

    async def check(self, request: IRequest, action: str | None = None, resource: str | None = None) -> Authentication:
        """Authenticate C{request} and, if C{action} is given, authorize it; raises L{WebError}."""
        authentication = await self.authenticator.authenticate(request)
        if action is not None:
            self.authorize(request, authentication, action, resource)
        return authentication

    def protect(self, wrapped: IResource, *, action: str | None = None, resource: ResourceSpec = None) -> ProtectedResource:
        """
        C{wrapped}, reachable only by authenticated requests (and, with
        C{action}, only those the policy allows C{action} on C{resource}: a
        string, or a function of the request).
        """
        return ProtectedResource(wrapped, self, action=action, resource=resource)

    def requires(self, action: str | None = None, *, resource: ResourceSpec = None) -> Callable[[_F], _F]:
        """
        Decorate a handler C{f(request, ...)} (or a method C{f(self,
        request, ...)}): it runs only for an authenticated request (and one
        the policy allows C{action} on C{resource}; a C{resource} function
        gets the handler's arguments).

        The decorated handler returns a Deferred, as Klein expects: of the
        handler's result, with a C{dict} or C{list} encoded as a JSON
        answer; on refusal, of the JSON error body, the status and headers
        set on the request.  L{JSONEndpoint} takes such handlers too.
        """

        def decorate(f: _F) -> _F:
            @functools.wraps(f)
            def guarded(*args: Any, **kwargs: Any) -> defer.Deferred[Any]:
                request = _find_request(args, kwargs)

                async def run() -> Any:
                    try:
                        target = resource(*args, **kwargs) if callable(resource) else resource
                        await self.check(request, action, target)
                        result = f(*args, **kwargs)
                        if inspect.isawaitable(result):
                            result = await result
                    except WebError as e:
                        # The guard's refusals and the handler's own (a bad body...).
                        return render_error(request, e)
                    if isinstance(result, (dict, list)):
                        return render_json(request, 200, result)
                    if isinstance(result, JSONResponse):
                        return render_json(request, result.code, result.body, headers=result.headers)
                    return result

                return defer.Deferred.fromCoroutine(run())

            guarded.securenet_guarded = True  # type: ignore[attr-defined]
            return guarded  # type: ignore[return-value]

        return decorate


def _reason(denied: AuthorizationDenied) -> str | None:
    decision = denied.decision
    return decision.reason if decision is not None else None


def _find_request(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> IRequest:
    for value in (*args, *kwargs.values()):
        # Duck-typed too: test doubles (DummyRequest) do not declare IRequest.
        if IRequest.providedBy(value) or (hasattr(value, "requestHeaders") and hasattr(value, "setResponseCode")):
            return cast(IRequest, value)
    raise TypeError("a guarded handler must be called with the request (an IRequest) among its arguments")


# -- resources ---------------------------------------------------------------------


class _Answer(Resource):
    """A leaf that answers with a L{WebError}."""

    isLeaf = True

    def __init__(self, error: WebError) -> None:
        super().__init__()
        self.error = error

    def render(self, request: IRequest) -> bytes:
        return render_error(request, self.error)


class _Pending(Resource):
    """
    A leaf standing in for a resource that is known only once a Deferred
    fires (authentication is asynchronous; traversal is not): then
    traversal resumes from it with the request's remaining path.
    """

    isLeaf = True

    def __init__(self, pending: defer.Deferred[IResource]) -> None:
        super().__init__()
        self.pending = pending

    def render(self, request: IRequest) -> object:
        gone = disconnect_watch(request)

        def resume(resource: IResource) -> None:
            if not gone():
                request.render(getChildForRequest(resource, request))  # type: ignore[attr-defined]

        self.pending.addCallback(resume).addErrback(lambda f: send_failure(request, f, gone))
        return NOT_DONE_YET


@implementer(IResource)
class ProtectedResource(Resource):
    """
    A resource wrapper (like C{twisted.web.guard.HTTPAuthSessionWrapper}):
    requests reach C{wrapped} and its children only once they authenticated
    (and were authorized); else they get the JSON 401 or 403.
    """

    isLeaf = False

    def __init__(self, wrapped: IResource, guard: WebGuard, *, action: str | None = None, resource: ResourceSpec = None) -> None:
        super().__init__()
        self.wrapped = wrapped
        self.guard = guard
        self.action = action
        self.resource = resource

    def _guarded(self, request: IRequest) -> IResource:
        try:
            target = self.resource(request) if callable(self.resource) else self.resource
        except WebError as e:
            return _Answer(e)
        d = defer.Deferred.fromCoroutine(self.guard.check(request, self.action, target))

        def allowed(_: Authentication) -> IResource:
            return self.wrapped

        def refused(failure: Failure) -> IResource:
            failure.trap(WebError)
            return _Answer(cast(WebError, failure.value))

        return _Pending(d.addCallbacks(allowed, refused))

    def getChildWithDefault(self, path: bytes, request: IRequest) -> IResource:
        # Put the segment back: traversal resumes at the wrapped resource.
        request.postpath.insert(0, request.prepath.pop())
        return self._guarded(request)

    def render(self, request: IRequest) -> object:
        return self._guarded(request).render(request)


#: A handler: gets the request; returns (or fires with) a JSON-able value
#: (200), a L{JSONResponse}, or bytes already rendered (a guarded handler's
#: refusal).
Handler = Callable[[IRequest], Any | Awaitable[Any]]


class JSONEndpoint(Resource):
    """
    A leaf answering each method with a handler (a plain or async function
    of the request).  Errors raised as L{WebError} become their JSON
    answers; anything else is logged and answered C{500}.  C{HEAD} is
    answered like C{GET}; other methods, C{405} with C{Allow}.

    @param route: the route template it answers (C{/admin/users/{name}/disable}),
        the label of its requests in the metrics (C{other} without one).
    """

    isLeaf = True

    def __init__(self, handlers: Mapping[str, Handler], *, no_store: bool = True, route: str | None = None) -> None:
        super().__init__()
        self.route = route
        if route is not None:
            _metrics.allow("route", (route,))
        self.handlers = {method.upper().encode("ascii"): handler for method, handler in handlers.items()}
        if b"GET" in self.handlers and b"HEAD" not in self.handlers:
            self.handlers[b"HEAD"] = self.handlers[b"GET"]
        self.no_store = no_store

    def render(self, request: IRequest) -> object:
        gone = disconnect_watch(request)
        handler = self.handlers.get(request.method or b"")
        if handler is None:
            allow = b", ".join(sorted(self.handlers))
            return render_error(request, MethodNotAllowed("method not allowed", headers=[(b"Allow", allow)]))

        def answer(result: Any) -> None:
            if gone() or getattr(request, "finished", False):
                return
            if isinstance(result, bytes):
                apply_security_headers(request, no_store=self.no_store)
                if request.responseHeaders.getRawHeaders(b"content-type") is None:
                    request.setHeader(b"Content-Type", JSON_TYPE)
                request.setHeader(b"Content-Length", b"%d" % len(result))
                send(request, result, gone)
            elif isinstance(result, JSONResponse):
                send(
                    request, render_json(request, result.code, result.body, headers=result.headers, no_store=self.no_store), gone
                )
            else:
                send(request, render_json(request, 200, result, no_store=self.no_store), gone)

        d = defer.Deferred.fromCoroutine(_call(handler, request))
        d.addCallback(answer).addErrback(lambda f: send_failure(request, f, gone))
        return NOT_DONE_YET


async def _call(handler: Handler, request: IRequest) -> Any:
    result = handler(request)
    if inspect.isawaitable(result):
        result = await result
    return result


class JSONRouter(Resource):
    """
    A resource whose children are named in C{putChild}; any other path (and
    the router itself) is a JSON C{404}.
    """

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        return _Answer(NotFound("no such resource"))

    def render(self, request: IRequest) -> bytes:
        return render_error(request, NotFound("no such resource"))


__all__ = [
    "Handler",
    "JSONEndpoint",
    "JSONRouter",
    "ProtectedResource",
    "ResourceSpec",
    "WebGuard",
]
