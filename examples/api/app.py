"""
The classic Flask JWT tutorial (flask-jwt-extended's "basic usage" plus
role-based routes), on twisted.web with securenet.web:

==================  ====================================  =================================
route               Flask                                 here
==================  ====================================  =================================
C{POST /login}      C{create_access_token(identity=...)}  C{authenticator.password_login} + C{tokens.issue}
C{GET /protected}   C{@jwt_required()}                    C{@guard.requires()}
C{GET /admin}       an "admin" role check                 C{@guard.requires("example.admin")}
C{GET /user}        a "user" role check                   C{@guard.requires("example.user")}
==================  ====================================  =================================

Differences that matter: passwords are checked against the credential
database (argon2id, off the reactor thread, throttled, TOTP for users who
enrolled), roles come from the database and permissions from a policy file
(C{policy.toml}), the same tokens open securenet stream sessions, and
every route also accepts an API key or a client certificate.

Run it (see the README): C{PYTHONPATH=. .venv/bin/python -m examples.api
--db var/api.db --token-key var/api-token.key}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from twisted.cred.portal import Portal
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from securenet.authz import Policy
from securenet.cred import IdentityRealm, Throttle, TokenChecker, TokenIssuer, TokenSettings
from securenet.interfaces import ICredentialStore, IPolicy, IRefreshTokenStore
from securenet.pki import TokenKey
from securenet.web import (
    BadRequest,
    JSONEndpoint,
    JSONRouter,
    SecureSite,
    TokenService,
    WebAuthenticator,
    WebGuard,
    read_json_object,
    request_identity,
)

POLICY = Path(__file__).with_name("policy.toml")
DEFAULT_LISTEN = "securenet:8444:interface=127.0.0.1:certKey=certs/server.pem:privateKey=certs/server.key"


def make_resource(guard: WebGuard, tokens: TokenService) -> IResource:
    """The four routes of the tutorial."""

    async def login(request: IRequest) -> dict[str, Any]:
        body = read_json_object(request)
        username, password, totp = body.get("username"), body.get("password"), body.get("totp")
        if not isinstance(username, str) or not isinstance(password, str) or not (totp is None or isinstance(totp, str)):
            raise BadRequest('send {"username": ..., "password": ...} (and "totp" if you enrolled)')
        authenticated = await guard.authenticator.password_login(request, username, password, totp)
        pair = await tokens.issue(authenticated.identity.avatar_id)
        return {"access_token": pair.access_token, "refresh_token": pair.refresh_token}

    @guard.requires()
    def protected(request: IRequest) -> dict[str, Any]:
        return {"logged_in_as": request_identity(request).avatar_id}

    @guard.requires("example.admin")
    def admin(request: IRequest) -> dict[str, Any]:
        return {"message": f"hello {request_identity(request).avatar_id}, you are an admin"}

    @guard.requires("example.user")
    def user(request: IRequest) -> dict[str, Any]:
        return {"message": f"hello {request_identity(request).avatar_id}, you are a user"}

    root = JSONRouter()
    root.putChild(b"login", JSONEndpoint({"POST": login}))
    root.putChild(b"protected", JSONEndpoint({"GET": protected}))
    root.putChild(b"admin", JSONEndpoint({"GET": admin}))
    root.putChild(b"user", JSONEndpoint({"GET": user}))
    return root


def make_site(
    *,
    reactor: IReactorTime,
    portal: Portal,
    store: ICredentialStore,
    key: TokenKey,
    refreshes: IRefreshTokenStore,
    policy: IPolicy,
) -> SecureSite:
    """
    The example's site.  C{portal} has the password (and API key, TOTP)
    checkers of C{store}; a token checker for C{key} is added to it.
    """
    settings = TokenSettings([key])
    portal.registerChecker(TokenChecker(settings, store, reactor))
    guard = WebGuard(WebAuthenticator(portal, reactor, throttle=Throttle(store, reactor)), policy)
    tokens = TokenService(TokenIssuer(settings, reactor), store, refreshes, reactor)
    return SecureSite(make_resource(guard, tokens), reactor=reactor)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.api", description="The Flask JWT tutorial on securenet.web.")
    parser.add_argument("--db", type=Path, required=True, help="credential database (securenet users add ... --db PATH)")
    parser.add_argument("--token-key", type=Path, required=True, help="token signing key (securenet tokens keygen --out PATH)")
    parser.add_argument("--listen", default=DEFAULT_LISTEN, help=f"securenet: server endpoint (default {DEFAULT_LISTEN})")
    parser.add_argument("--policy", type=Path, default=POLICY, help="authorization policy (default: the example's policy.toml)")
    args = parser.parse_args(argv)

    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor

    from securenet import SecurenetError, reactor_thread_pool_runner, thread_runner
    from securenet.cred import StoreChecker
    from securenet.pki import load_signing_key
    from securenet.store import SQLiteStore
    from securenet.tls import server_endpoint

    try:
        if not args.db.exists():
            raise SecurenetError(f"{args.db}: no credential database (make one with 'securenet users add NAME --db {args.db}')")
        store = SQLiteStore.open(args.db, runner=thread_runner(reactor))
        refreshes = store.refresh_tokens
        key = load_signing_key(args.token_key)
        policy = Policy.load(args.policy, clock=reactor)
        checker = StoreChecker(store, reactor, runner=reactor_thread_pool_runner(reactor))
        portal = Portal(IdentityRealm(store), [checker])
        site = make_site(reactor=reactor, portal=portal, store=store, key=key, refreshes=refreshes, policy=policy)
        endpoint = server_endpoint(reactor, args.listen)
    except SecurenetError as e:
        print(f"examples.api: error: {e}", file=sys.stderr)
        return 1

    status = [0]

    def listening(port: Any) -> None:
        address = port.getHost()
        print(f"examples.api: listening on https://{address.host}:{address.port}/", flush=True)

    def failed(failure: Any) -> None:
        print(f"examples.api: error: {failure.getErrorMessage()}", file=sys.stderr, flush=True)
        status[0] = 1
        reactor.stop()

    endpoint.listen(site).addCallbacks(listening, failed)
    reactor.run()
    return status[0]
