"""
The built-in HTTP API that C{twistd securenet --http ENDPOINT} serves.

==========================================  =================================  ==========================
route                                       who                                policy action (resource)
==========================================  =================================  ==========================
C{GET /healthz}                             anyone                             --
C{POST /auth/login}, C{/auth/refresh}       anyone (credentials in the body)   --
C{POST /auth/logout}                        the token's holder                 --
C{GET /me}                                  any authenticated identity         --
C{GET /admin/users}                         per policy                         C{admin.users.list}
C{POST /admin/users}                        per policy                         C{admin.users.create} (C{users/NAME})
C{POST /admin/users/NAME/disable}           per policy                         C{admin.users.disable} (C{users/NAME})
==========================================  =================================  ==========================

Without a token key there is no C{/auth}; without a credential database the
C{/admin} routes answer C{503}.
"""

from __future__ import annotations

import functools
import urllib.parse
from typing import Any

import attrs
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from securenet import _metrics, audit
from securenet._logs import SecurenetLogger
from securenet._threads import Runner
from securenet.cred._names import UserRecordError
from securenet.cred._passwords import PasswordHasher
from securenet.cred._saslprep import PasswordError
from securenet.cred._scram import DEFAULT_ITERATIONS
from securenet.cred._users import new_user
from securenet.interfaces import ICredentialStore
from securenet.store._errors import UserExists
from securenet.store._records import User
from securenet.web._auth import Authentication, client_peer
from securenet.web._errors import BadRequest, Conflict, NotFound, ServiceUnavailable
from securenet.web._guard import JSONEndpoint, JSONRouter, WebGuard
from securenet.web._jsonbody import JSONLimits, read_json_object
from securenet.web._responses import JSONResponse
from securenet.web._tokens import TokenEndpoints, TokenService

log = SecurenetLogger(namespace="securenet.web")

ADMIN_LIMITS = JSONLimits(max_bytes=16 * 1024, max_depth=4)


def user_resource(name: str) -> str:
    """
    The policy resource of a user: C{users/NAME}, the name percent-encoded
    so that it is one safe segment whatever it holds (C{/}, C{.}, C{..}).
    """
    quoted = urllib.parse.quote(name, safe="")
    if quoted in (".", ".."):
        quoted = quoted.replace(".", "%2E")
    return f"users/{quoted}"


def describe(authentication: Authentication) -> dict[str, Any]:
    """The C{/me} answer: who the request is, and how it proved it."""
    identity = authentication.identity
    answer: dict[str, Any] = {
        "name": identity.avatar_id,
        "roles": list(identity.roles),
        "mechanism": identity.mechanism,
        "scheme": authentication.scheme,
        "scopes": list(identity.scopes),
        "mfa": identity.mfa,
        "anonymous": identity.anonymous,
    }
    if identity.certificate is not None:
        answer["certificate"] = {"subject": identity.certificate.subject, "pin": identity.certificate.pin}
    if authentication.token is not None:
        amr = authentication.token.claims.get("amr")
        answer["token"] = {
            "expires": int(authentication.token.expires),
            "amr": [a for a in amr if isinstance(a, str)] if isinstance(amr, list) else [],
        }
    return answer


def _user(user: User) -> dict[str, Any]:
    return {
        "name": user.name,
        "roles": list(user.roles),
        "disabled": user.disabled,
        "totp": user.totp_secret is not None,
        "created": user.created.isoformat() if user.created is not None else None,
    }


class BuiltinAPI:
    """
    The routes of the module docstring.

    @param guard: authentication and the authorization policy.
    @param store: the credential database, or None (no C{/admin}).
    @param tokens: the token service, or None (no C{/auth}).
    @param hasher: hashes new users' passwords (the password checker's).
    @param runner: where hashing runs: never the reactor thread in a server.
    @param scram_iterations: the PBKDF2 count new users' SCRAM keys get
        (the one C{--auth sqlite} announces).
    """

    def __init__(
        self,
        *,
        guard: WebGuard,
        store: ICredentialStore | None,
        tokens: TokenService | None,
        hasher: PasswordHasher,
        runner: Runner,
        scram_iterations: int = DEFAULT_ITERATIONS,
    ) -> None:
        self.guard = guard
        self.store = store
        self.tokens = tokens
        self.hasher = hasher
        self.runner = runner
        self.scram_iterations = scram_iterations

    def resource(self) -> IResource:
        root = JSONRouter()
        root.putChild(b"healthz", JSONEndpoint({"GET": self.healthz}, route="/healthz"))
        root.putChild(b"me", JSONEndpoint({"GET": self.me}, route="/me"))
        if self.tokens is not None:
            root.putChild(b"auth", TokenEndpoints(self.guard.authenticator, self.tokens).resource())
        admin = JSONRouter()
        admin.putChild(b"users", _Users(self))
        root.putChild(b"admin", admin)
        return root

    # -- handlers ----------------------------------------------------------------

    def healthz(self, request: IRequest) -> dict[str, Any]:
        return {"status": "ok"}

    async def me(self, request: IRequest) -> dict[str, Any]:
        return describe(await self.guard.check(request))

    def _store(self) -> ICredentialStore:
        if self.store is None:
            raise ServiceUnavailable("no credential database is configured (--auth sqlite:PATH)")
        return self.store

    async def list_users(self, request: IRequest) -> dict[str, Any]:
        await self.guard.check(request, "admin.users.list")
        users = await self._store().list_users()
        return {"users": [_user(u) for u in users]}

    async def create_user(self, request: IRequest) -> JSONResponse:
        authentication = await self.guard.check(request)
        body = read_json_object(request, ADMIN_LIMITS)
        unknown = sorted(set(body) - {"name", "password", "roles"})
        if unknown:
            raise BadRequest(f"unknown member {unknown[0][:40]!r}; expected name, password, roles", error="invalid_request")
        name, password, roles = body.get("name"), body.get("password"), body.get("roles", [])
        if not isinstance(name, str) or not name:
            raise BadRequest("'name' must be a non-empty string", error="invalid_request")
        if not isinstance(password, str) or not password or len(password) > 4096:
            raise BadRequest("'password' must be a non-empty string (at most 4096 characters)", error="invalid_request")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles) or len(roles) > 64:
            raise BadRequest("'roles' must be a list of strings", error="invalid_request")
        self.guard.authorize(request, authentication, "admin.users.create", user_resource(name))
        store = self._store()
        try:
            make = functools.partial(new_user, roles=roles, hasher=self.hasher, scram_iterations=self.scram_iterations)
            user = await self.runner(make, name, password)
        except (UserRecordError, PasswordError) as e:
            raise BadRequest(str(e), error="invalid_user") from None
        try:
            await store.add_user(user)
        except UserExists:
            raise Conflict(f"user {user.name!r} already exists", error="user_exists") from None
        admin, peer = authentication.identity.avatar_id, client_peer(request)
        audit.http_admin(
            "user.create",
            f"{admin} created user {user.name} with roles {list(user.roles)} (HTTP, from {peer})",
            admin=admin,
            user=user.name,
            roles=user.roles,
            peer=peer,
        )
        return JSONResponse(201, _user(user))

    async def disable_user(self, request: IRequest, name: str) -> dict[str, Any]:
        authentication = await self.guard.check(request, "admin.users.disable", user_resource(name))
        store = self._store()
        user = await store.get_user(name)
        if user is None:
            raise NotFound(f"no user {name!r}", error="no_such_user")
        if not user.disabled:
            await store.update_user(attrs.evolve(user, disabled=True))
        admin, peer = authentication.identity.avatar_id, client_peer(request)
        audit.http_admin("user.disable", f"{admin} disabled user {name} (HTTP, from {peer})", admin=admin, user=name, peer=peer)
        return {"name": name, "disabled": True}


#: The route template of C{POST /admin/users/NAME/disable} (the metrics' label: never the name).
DISABLE_ROUTE = "/admin/users/{name}/disable"
_metrics.allow("route", (DISABLE_ROUTE,))


class _Users(JSONEndpoint):
    """C{/admin/users}, and C{/admin/users/NAME/disable} below it."""

    isLeaf = False

    def __init__(self, api: BuiltinAPI) -> None:
        super().__init__({"GET": api.list_users, "POST": api.create_user}, route="/admin/users")
        self.api = api

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        try:
            name = path.decode("utf-8")
        except UnicodeDecodeError:
            return JSONRouter()
        user = JSONRouter()
        disable = JSONEndpoint({"POST": lambda request: self.api.disable_user(request, name)}, route=DISABLE_ROUTE)
        user.putChild(b"disable", disable)
        return user

    def getChildWithDefault(self, path: bytes, request: IRequest) -> IResource:
        if path == b"":
            # /admin/users/ is /admin/users.
            return self
        return self.getChild(path, request)


__all__ = ["BuiltinAPI", "describe", "user_resource"]
