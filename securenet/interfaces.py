"""
The seams: the zope interfaces users plug into, in the lowest module.

A store, a checker's credentials, a SASL mechanism, a policy or a session
is typed by its interface here, so no layer names another layer's class
where it only needs a contract, and every layer can depend on these without
importing anything above it.  The value types named in signatures
(C{User}, C{Decision}, C{Step}, ...) live in their layers and are imported
for type checkers only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ICredentials
from twisted.internet import defer
from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    import datetime

    from securenet.authz import Context, Decision
    from securenet.cred import Identity
    from securenet.sasl import ChannelBindings, Step
    from securenet.store import APIKey, RefreshToken, User


# -- the credential store ------------------------------------------------------


class ICredentialStore(Interface):
    """
    Persistence for credentials.  Every method returns a Deferred; names are
    case-sensitive exact strings.
    """

    refresh_tokens = Attribute("The store's L{IRefreshTokenStore}: the HTTP API's refresh tokens, in the same database.")

    def secret(name: str) -> defer.Deferred[bytes]:
        """
        A random 32-byte secret kept in the store under C{name}, made on first
        use and the same ever after (e.g. the key of SCRAM's fake salts, which
        must survive restarts like real salts do).
        """

    def get_user(name: str) -> defer.Deferred[User | None]:
        """The user called C{name}, or None."""

    def add_user(user: User) -> defer.Deferred[None]:
        """Create C{user}; fails with L{UserExists}."""

    def update_user(user: User) -> defer.Deferred[None]:
        """
        Replace the record of C{user.name}; fails with L{NoSuchUser}.  While
        the TOTP secret is unchanged, C{totp_last_step} never moves backwards
        (a stale record must not make a used code valid again).
        """

    def delete_user(name: str) -> defer.Deferred[None]:
        """Delete a user and their API keys; fails with L{NoSuchUser}."""

    def list_users() -> defer.Deferred[list[User]]:
        """All users, by name."""

    def mark_totp_step(name: str, step: int) -> defer.Deferred[bool]:
        """
        Atomically record that TOTP time step C{step} was used by C{name},
        only if it is later than the last recorded one.  True if recorded
        (the code may be accepted), False if it was already used or older.
        """

    def add_api_key(key: APIKey) -> defer.Deferred[None]:
        """Store a new API key record."""

    def get_api_key(key_id: str) -> defer.Deferred[APIKey | None]:
        """The API key with that id, or None."""

    def list_api_keys(user: str | None = None) -> defer.Deferred[list[APIKey]]:
        """API keys, all or of one user."""

    def revoke_api_key(key_id: str) -> defer.Deferred[None]:
        """Mark an API key revoked; fails with L{NoSuchAPIKey}."""

    def revoke_token(jti: str, expires: datetime.datetime) -> defer.Deferred[None]:
        """Remember that token id C{jti} is revoked (until C{expires}, after which it is moot)."""

    def is_token_revoked(jti: str) -> defer.Deferred[bool]:
        """Whether C{jti} was revoked."""

    def record_failure(key: str, when: float) -> defer.Deferred[int]:
        """
        Atomically add one failure for C{key} (e.g. C{user:alice},
        C{addr:192.0.2.1}) at time C{when}; returns the consecutive count.
        """

    def forgive_failure(key: str) -> defer.Deferred[int]:
        """
        Atomically take one failure back from C{key} (an attempt counted when
        it was admitted turned out to succeed); returns the new count.  The
        time of the last failure is kept.
        """

    def get_failures(key: str) -> defer.Deferred[tuple[int, float]]:
        """C{(consecutive failures, time of the last)} for C{key} (C{(0, 0.0)} if none)."""

    def reset_failures(key: str) -> defer.Deferred[None]:
        """Forget the failures of C{key} (after a success)."""


class IRefreshTokenStore(Interface):
    """Persistence of refresh-token families.  Every method returns a Deferred."""

    def add(token: RefreshToken) -> defer.Deferred[None]:
        """
        Store a new token; its family is created with it if new.  Fails with
        L{StoreError} if the family is revoked (a refresh racing a revocation
        must not revive it).
        """

    def get(token_id: str) -> defer.Deferred[RefreshToken | None]:
        """The token with that id, or None."""

    def consume(token_id: str, when: float) -> defer.Deferred[bool]:
        """
        Atomically mark the token used at C{when}, only if it is unused and
        its family not revoked.  True if this call consumed it; False if it
        was already used (a reuse) or its family is revoked.
        """

    def revoke_family(family_id: str, when: float) -> defer.Deferred[list[tuple[str, float]]]:
        """
        Revoke a family (idempotent).  Fires with the C{(access jti, expiry)}
        of every access token issued in it, for the caller to revoke.
        """

    def is_family_revoked(family_id: str) -> defer.Deferred[bool]:
        """Whether the family was revoked (an unknown family counts as revoked)."""

    def prune(before: float) -> defer.Deferred[int]:
        """Forget families whose session ended before C{before}; fires with how many."""


# -- authorization and sessions ---------------------------------------------------


class IPolicy(Interface):
    """An authorization policy: what protocols, the decorator and the web layer ask."""

    def decide(
        identity: Identity, action: str, resource: str | None = None, context: Context | None = None, *, audit: bool = True
    ) -> Decision:
        """
        Decide whether C{identity} may do C{action} on C{resource}; never
        raises for a bad request (it is denied).  With C{audit}, the
        decision is logged as an C{authz.decision} event.
        """

    def can(identity: Identity, action: str, resource: str | None = None, context: Context | None = None) -> bool:
        """Whether the request is allowed (the decision is logged)."""

    def require(identity: Identity, action: str, resource: str | None = None, context: Context | None = None) -> Decision:
        """The allowing decision; raises L{AuthorizationDenied} when denied."""


class ISession(Interface):
    """What the application's transport offers besides the usual ITransport."""

    identity = Attribute("The peer's Identity (set before the application is connected).")
    handshake = Attribute("The HandshakeFacts of the connection's TLS handshake.")
    policy = Attribute("The service's authorization policy (securenet.authz.IPolicy), or None.")


class IIdentity(Interface):
    """Who the peer is, and how they proved it."""

    avatar_id = Attribute("The identity's name (str).")
    mechanism = Attribute("How the peer authenticated, as a SASL mechanism name: EXTERNAL, PLAIN, SCRAM-SHA-256-PLUS, ...")
    second_factor = Attribute("The second factor passed after the mechanism ('TOTP'), or None.")
    peer = Attribute("The peer's address, as host:port.")
    certificate = Attribute("CertificateFacts of the peer's verified certificate, or None.")


# -- credentials (what a checker checks) -----------------------------------------

# The interfaces that extend Twisted's also name Interface: pydoctor reads
# only securenet's source, so it cannot see that Twisted's are interfaces.


class ICertificateCredentials(ICredentials, Interface):
    """
    A client certificate that the TLS layer verified (the SASL C{EXTERNAL}
    case): the peer proved possession of its key during the handshake.
    """

    chain = Attribute("The peer's verified chain, leaf first (cryptography certificates).")
    verified = Attribute("True only if TLS verified the chain against the server's trust roots.")
    facts = Attribute("CertificateFacts of the leaf.")


class IAPIKeyCredentials(ICredentials, Interface):
    """An API key as presented: C{<key id>.<secret>} (SASL mechanism C{APIKEY})."""

    key = Attribute("The full key string as the client sent it (str).")


class ITokenCredentials(ICredentials, Interface):
    """A bearer token (a JWT) as presented (SASL mechanism C{OAUTHBEARER})."""

    token = Attribute("The token string (str).")


class ITOTPCredentials(ICredentials, Interface):
    """A TOTP code for a user who already passed a first factor."""

    username = Attribute("The user, as established by the first factor (str).")
    code = Attribute("The 6-digit code the user typed (str).")


# -- SASL mechanisms and second factors ---------------------------------------------


class IServerMechanism(Interface):
    """One run of a mechanism on the server, for one authentication attempt."""

    def step(response: bytes | None) -> defer.Deferred[Step]:
        """
        Advance with the client's data: the initial response (None if the
        client sent none) on the first call, then each response.  Fails with
        L{MechanismError} for malformed data.
        """


class IMechanismFactory(Interface):
    """Makes a fresh L{IServerMechanism} for each attempt."""

    name = Attribute("The SASL mechanism name, e.g. 'PLAIN' or 'SCRAM-SHA-256-PLUS'.")
    second_factor_allowed = Attribute("True if a user who enrolled TOTP must pass it after this mechanism (password mechanisms).")

    def __call__(bindings: ChannelBindings, peer: str) -> IServerMechanism:
        """A mechanism run for a connection with these channel bindings."""


class IMechanismProvider(Interface):
    """
    A checker of credentials that no standard mechanism produces: it offers
    its own mechanisms (securenet offers the standard ones by the
    credential interfaces the portal's checkers accept).
    """

    def mechanisms() -> list[IMechanismFactory]:
        """The mechanisms whose credentials this checker checks."""


class IScramChecker(ICredentialsChecker, Interface):
    """
    A checker of L{IScramCredentials} that can also tell the SCRAM
    mechanism what to announce to a user before any proof: SCRAM-SHA-256
    is offered for every portal checker that provides this.
    """

    plus = Attribute("Whether SCRAM-SHA-256-PLUS is offered (when the connection has channel bindings).")

    def scram_parameters(username: str) -> defer.Deferred[tuple[bytes, int]]:
        """The salt and iteration count to announce to C{username} (fake ones for unknown users)."""


class ISecondFactor(Interface):
    """
    A checker that can demand and check a second factor (TOTP) after a
    first factor succeeded.
    """

    def required(avatar_id: str) -> defer.Deferred[bool]:
        """Whether C{avatar_id} must pass a second factor."""


class IClientMechanism(Interface):
    """One run of a mechanism on the client."""

    name = Attribute("The SASL mechanism name.")

    def initial() -> bytes | None:
        """The initial response to send with C{AUTH}, or None."""

    def respond(challenge: bytes) -> bytes | defer.Deferred[bytes]:
        """
        Answer a server challenge, now or later (a Deferred, for expensive
        work done off the reactor thread).  Raises (or fails with)
        L{MechanismError} on a bad challenge.
        """

    def verify_success(data: bytes | None) -> None:
        """
        Check the server's additional data with success (SCRAM's server
        signature); raises L{MechanismError} if the server is not who it
        claims, in which case the client must not use the connection.
        """


class IScramCredentials(Interface):
    """
    The outcome of a SCRAM exchange, to be checked against the user's
    L{ScramKeys}: the proof and the AuthMessage it signs.
    """

    username = Attribute("The user, SASLprep'd and unescaped (str).")
    auth_message = Attribute("AuthMessage: client-first-bare,server-first,client-final-without-proof (bytes).")
    client_proof = Attribute("ClientProof from the client-final message (bytes).")
    server_signature = Attribute("Set by the checker when the proof is right: ServerSignature (bytes), else None.")

    def server_final() -> bytes | None:
        """The server-final message (C{v=...}), or None before a successful check."""


# -- a running service -----------------------------------------------------------


class IReloadable(Interface):
    """
    Material a running service re-reads without a restart (on SIGHUP, and
    some when their file changes): a listener's certificate, key, trust
    roots and CRL, the authorization policy, token keys.

    A reload happens in two steps so that one that fails changes nothing:
    L{prepare} reads and validates the new material off the reactor
    thread; the function it returns swaps it in, atomically, on the reactor
    thread.
    """

    what = Attribute(
        "What this is, from a closed set ('tls', 'crl', 'policy', 'token-keys', 'checker'): the reload metric's"
        " label and the first word of a reload's log line."
    )
    source = Attribute("What to name in a log line: the file (or files) it is read from (str).")

    def prepare() -> Callable[[], None]:
        """
        Read and validate the new material; blocking (file I/O, a test
        handshake), so called in a thread.  Raise a L{SecurenetError} whose
        C{str} names the file and the reason to refuse the reload; otherwise
        return the function that makes it current, which must not fail.
        """


class IDrainable(Interface):
    """
    An application protocol that wants to know when the server stops
    gracefully (SIGTERM): it may finish the exchange in progress, say goodbye
    in its own protocol, and close.  Connections still open when the drain
    time ends are closed by the server.
    """

    def drain() -> None:
        """The server is stopping: wind this connection down."""
