"""
The HTTP side of C{twistd securenet}: C{--http ENDPOINT} serves the
built-in API (L{securenet.web.BuiltinAPI}) on C{securenet:} TLS endpoints, with
the service's portal, throttle and policy; C{--token-key PATH} makes it
issue tokens -- and makes the same key verify bearer tokens everywhere, in
HTTP requests and in stream sessions (C{OAUTHBEARER}).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import attrs
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from zope.interface import implementer

from securenet import audit
from securenet._errors import SecurenetError
from securenet._logs import SecurenetLogger
from securenet._threads import Runner, reactor_thread_pool_runner
from securenet.cred._jwt import MAX_MAX_LIFETIME, TokenChecker, TokenIssuer, TokenSettings, now
from securenet.cred._passwords import PasswordChecker, PasswordHasher
from securenet.cred._scram import DEFAULT_ITERATIONS
from securenet.cred._storechecker import StoreChecker
from securenet.cred._throttle import Throttle
from securenet.cred._tokenkeyfile import TokenKeyFile
from securenet.interfaces import ICredentialStore, IPolicy, IRefreshTokenStore, IReloadable, ITokenCredentials
from securenet.pki._pins import spki_pin
from securenet.store._memory import MemoryRefreshStore
from securenet.tls._endpoints import SecureServerEndpoint, server_endpoint
from securenet.web._api import BuiltinAPI
from securenet.web._auth import WebAuthenticator
from securenet.web._errors import WebConfigurationError
from securenet.web._guard import WebGuard
from securenet.web._site import SecureSite
from securenet.web._tokens import TokenLifetimes, TokenService

log = SecurenetLogger(namespace="securenet.tap")


@attrs.frozen
class WebSettings:
    """
    @ivar endpoints: the C{--http} endpoint strings.
    @ivar max_body: the largest request body, in bytes.
    """

    endpoints: tuple[str, ...] = ()
    max_body: int = 64 * 1024


def _password_settings(checkers: Sequence[object]) -> tuple[PasswordHasher | None, int]:
    """The hasher and SCRAM count of the configured password checker, so new users match the others."""
    for checker in checkers:
        if isinstance(checker, StoreChecker):
            return checker.passwords.hasher, checker.scram.default_iterations
        if isinstance(checker, PasswordChecker):
            return checker.hasher, DEFAULT_ITERATIONS
    return None, DEFAULT_ITERATIONS


@implementer(IReloadable)
class TokenKeyReload:
    """
    The reload of C{--token-key} (C{what} C{token-keys}): read the key file
    again (L{TokenKeyFile.rotate}) and make its key current in the token
    service's checker and issuer at once.  New access tokens are signed with
    the new key (its own C{kid}); tokens signed with the replaced key keep
    verifying for the overlap (by default the access-token lifetime, so
    every token issued before the reload stays valid until it expires).
    """

    what: Literal["token-keys"] = "token-keys"

    def __init__(self, key_file: TokenKeyFile, checker: TokenChecker, tokens: TokenService, clock: Any) -> None:
        self.key_file = key_file
        self.checker = checker
        self.tokens = tokens
        self.clock = clock

    @property
    def source(self) -> str:
        """The key file (for the reload's log line)."""
        return self.key_file.path

    def prepare(self) -> Callable[[], None]:
        """Read and check the key file (blocking); the returned function swaps the new key set in."""
        try:
            settings = self.key_file.rotate(self.checker.settings, now(self.clock))
            issuer = TokenIssuer(settings, self.clock)
        except SecurenetError as e:
            raise WebConfigurationError(f"--token-key: {e}") from None

        def commit() -> None:
            self.checker.settings = settings
            self.tokens.issuer = issuer

        return commit


def token_service(
    reactor: Any,
    key_path: str,
    *,
    portal: Portal,
    store: ICredentialStore | None,
    lifetimes: TokenLifetimes = TokenLifetimes(),
    overlap: float | None = None,
) -> TokenService:
    """
    The token service of C{--token-key}: its key signs access tokens, and a
    L{TokenChecker} over the same key pair (with revocation in C{store}) is
    registered with C{portal}, for HTTP and stream sessions alike.  Its
    C{key_reload} (a L{TokenKeyReload}) reads the key file again.

    @param overlap: how long a key that a reload replaces keeps verifying
        (C{--token-key-overlap}; default the access-token lifetime).
    @raise WebConfigurationError: no credential store, another checker
        already takes bearer tokens (C{--auth jwt}), or C{overlap} is out of
        range.
    @raise SecurenetError: the key file cannot be used.
    """
    if store is None:
        raise WebConfigurationError(f"--token-key {key_path}: issuing tokens needs a credential database (--auth sqlite:PATH)")
    if ITokenCredentials in portal.checkers:
        raise WebConfigurationError(
            f"--token-key {key_path}: bearer tokens are already checked by an --auth jwt checker; "
            "--token-key verifies the tokens it issues itself: use one or the other"
        )
    if overlap is not None and not (0 <= overlap <= MAX_MAX_LIFETIME):
        raise WebConfigurationError(f"--token-key-overlap {overlap}: must be 0 to {int(MAX_MAX_LIFETIME)} seconds (a year)")
    try:
        key_file, key = TokenKeyFile.open(key_path, signing=True, overlap=lifetimes.access_ttl if overlap is None else overlap)
    except SecurenetError as e:
        # The key-file errors name the file themselves.
        raise WebConfigurationError(f"--token-key: {e}") from None
    settings = TokenSettings([key], default_kid=key.kid)
    checker = TokenChecker(settings, store, reactor)
    portal.registerChecker(checker)
    refreshes: IRefreshTokenStore = store.refresh_tokens
    if isinstance(refreshes, MemoryRefreshStore):
        log.warn("refresh tokens are kept in memory: they do not survive a restart")
    tokens = TokenService(TokenIssuer(settings, reactor), store, refreshes, reactor, lifetimes)
    tokens.key_reload = TokenKeyReload(key_file, checker, tokens, reactor)
    return tokens


@implementer(IStreamServerEndpoint)
class _Announced:
    """An endpoint that logs where it listens, once it does (with the port the kernel chose)."""

    def __init__(self, endpoint: SecureServerEndpoint, description: str) -> None:
        self.endpoint = endpoint
        self.description = description

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        def listening(port: IListeningPort) -> IListeningPort:
            address = port.getHost()
            host = getattr(address, "host", "?")
            shown = f"[{host}]" if ":" in host else host
            policy = self.endpoint.policy
            pin = spki_pin(policy.certificate_chain[0])
            port_number = getattr(address, "port", "?")
            audit.service_listening(
                "http",
                f"securenet HTTP API listening on https://{shown}:{port_number}/ ({self.description}):"
                f" profile {policy.profile.name}, clientAuth {policy.client_auth}, server pin {pin}",
                endpoint=self.description,
                profile=policy.profile.name,
                client_auth=policy.client_auth,
                pin=pin,
                address=shown,
                port=port_number,
            )
            return port

        return self.endpoint.listen(protocolFactory).addCallback(listening)


def web_service(
    reactor: Any,
    settings: WebSettings,
    *,
    portal: Portal,
    store: ICredentialStore | None,
    throttle: Throttle | None,
    policy: IPolicy | None,
    checkers: Sequence[object],
    tokens: TokenService | None = None,
    runner: Runner | None = None,
    listener: Callable[[IStreamServerEndpoint, IProtocolFactory, str], IService] | None = None,
) -> MultiService:
    """
    A service listening on every endpoint of C{settings.endpoints} with the
    built-in API.

    @param listener: makes the service of one endpoint, from the endpoint
        (which logs where it listens once it does), the site and the
        endpoint string; C{twistd securenet} passes one that stops twistd
        with one line when the port cannot be bound.  By default a
        C{StreamServerEndpointService}.
    @raise WebConfigurationError: an endpoint string is refused.
    """
    hasher, iterations = _password_settings(checkers)
    authenticator = WebAuthenticator(portal, reactor, throttle=throttle)
    api = BuiltinAPI(
        guard=WebGuard(authenticator, policy),
        store=store,
        tokens=tokens,
        hasher=hasher if hasher is not None else PasswordHasher(),
        runner=runner if runner is not None else reactor_thread_pool_runner(reactor),
        scram_iterations=iterations,
    )
    site = SecureSite(api.resource(), reactor=reactor, max_body=settings.max_body)
    service = MultiService()
    for description in settings.endpoints:
        try:
            endpoint = server_endpoint(reactor, description)
        except SecurenetError as e:
            raise WebConfigurationError(f"--http {description}: {e}") from None
        announced = _Announced(endpoint, description)
        if listener is None:
            StreamServerEndpointService(announced, site).setServiceParent(service)
        else:
            listener(announced, site, description).setServiceParent(service)
    return service


__all__ = ["TokenKeyReload", "WebSettings", "token_service", "web_service"]
