"""
The server's TLS policy: immutable settings (certificate chain, profile,
client authentication, trust roots, CRL, tickets), validated at
construction, building its OpenSSL context once.
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Any

import attrs
from cryptography import x509
from OpenSSL import SSL
from OpenSSL.crypto import X509, X509StoreFlags
from twisted.internet.interfaces import (
    IOpenSSLServerConnectionCreator,
    IReactorTime,
)
from zope.interface import implementer

from securenet.pki._files import PrivateKey, load_crl, load_key_pair
from securenet.pki._pins import spki_digest
from securenet.tls._certificates import as_cryptography
from securenet.tls._context import (
    _STATES,
    CLIENT_AUTH_MODES,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_SESSION_LIFETIME,
    DEFAULT_TICKET_ROTATION,
    MODE_NO_AUTO_CHAIN,
    ClientAuth,
    ConnectionState,
    apply_profile,
    certificate_tuple,
    connection_state,
    internal_error,
    load_chain,
    protocol_tuple,
    verification_error,
)
from securenet.tls._errors import (
    TLSConfigurationError,
)
from securenet.tls._profiles import INTERMEDIATE, TLSProfile

# -- server --------------------------------------------------------------------


@attrs.frozen(slots=False)
class ServerTLSPolicy:
    """
    How a server speaks TLS.

    @ivar client_auth: C{none} (no certificate asked), C{optional} (verified
        if sent), C{required} (no certificate, no connection).
    @ivar trust_roots: CAs that issue client certificates (needed unless
        C{client_auth} is C{none}).
    @ivar crl: a revocation list checked against client certificates; past
        its next-update every client certificate is refused (fail closed).
    """

    certificate_chain: tuple[x509.Certificate, ...] = attrs.field(converter=certificate_tuple)
    private_key: PrivateKey
    profile: TLSProfile = INTERMEDIATE
    client_auth: ClientAuth = "none"
    trust_roots: tuple[x509.Certificate, ...] = attrs.field(default=(), converter=certificate_tuple)
    crl: x509.CertificateRevocationList | None = None
    crl_source: str | None = None
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    session_tickets: bool = True
    session_lifetime: int = DEFAULT_SESSION_LIFETIME
    ticket_rotation: float = DEFAULT_TICKET_ROTATION
    alpn: tuple[bytes, ...] = attrs.field(default=(), converter=protocol_tuple)

    def __attrs_post_init__(self) -> None:
        if not self.certificate_chain:
            raise TLSConfigurationError("a server needs a certificate")
        if self.client_auth not in CLIENT_AUTH_MODES:
            raise TLSConfigurationError(f"clientAuth must be one of {', '.join(CLIENT_AUTH_MODES)}, not {self.client_auth!r}")
        if self.client_auth != "none" and not self.trust_roots:
            raise TLSConfigurationError(
                f"clientAuth={self.client_auth} needs trustRoots (the CA that issues client certificates)"
            )
        if self.crl is not None and self.client_auth == "none":
            raise TLSConfigurationError("a CRL is checked against client certificates: it needs clientAuth=optional or required")
        if not math.isfinite(self.handshake_timeout) or self.handshake_timeout <= 0:
            raise TLSConfigurationError(f"handshakeTimeout must be positive and finite, not {self.handshake_timeout}")

    @classmethod
    def from_files(
        cls,
        certificate: str | os.PathLike[str],
        private_key: str | os.PathLike[str],
        *,
        trust_roots: str | os.PathLike[str] | None = None,
        crl: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> ServerTLSPolicy:
        """Load the files (refusing unsafe keys, mismatches and corrupt files)."""
        chain, key = load_key_pair(certificate, private_key)
        return cls(
            certificate_chain=chain,
            private_key=key,
            trust_roots=load_chain(trust_roots),
            crl=load_crl(crl) if crl is not None else None,
            crl_source=str(crl) if crl is not None else None,
            **kwargs,
        )

    def make_context(self) -> SSL.Context:
        """A new OpenSSL context for this policy (with a fresh ticket key)."""
        ctx = SSL.Context(SSL.TLS_METHOD)
        apply_profile(ctx, self.profile)
        if not self.session_tickets:
            # No resumption at all: no tickets, and no server-side cache
            # (which OpenSSL would otherwise still use for TLS 1.3 and 1.2).
            ctx.set_options(SSL.OP_NO_TICKET)
            ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        # Send the chain of certKey, nothing else.  Without extra chain
        # certificates OpenSSL would complete the chain from the store below,
        # which holds the trust roots for client certificates: it would send
        # the CA itself (an anchor, which a client never needs).
        ctx.set_mode(MODE_NO_AUTO_CHAIN)
        ctx.use_certificate(self.certificate_chain[0])
        for extra in self.certificate_chain[1:]:
            ctx.add_extra_chain_cert(extra)
        ctx.use_privatekey(self.private_key)
        ctx.check_privatekey()
        # A session id context is needed for resumption with client certificates;
        # derive it from the policy's certificate so two services differ.
        ctx.set_session_id(hashlib.sha256(spki_digest(self.certificate_chain[0])).digest()[:32])
        ctx.set_timeout(self.session_lifetime)
        if self.client_auth != "none":
            mode = SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE
            if self.client_auth == "required":
                mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
            ctx.set_verify(mode, self._verify_client)
            store = ctx.get_cert_store()
            assert store is not None
            for root in self.trust_roots:
                store.add_cert(X509.from_cryptography(root))
                ctx.add_client_ca(root)
            if self.crl is not None:
                store.add_crl(self.crl)
                store.set_flags(X509StoreFlags.CRL_CHECK)
        else:
            ctx.set_verify(SSL.VERIFY_NONE)
        if self.alpn:
            offered = list(self.alpn)

            def select(conn: SSL.Connection, protos: list[bytes]) -> Any:
                for p in protos:
                    if p in offered:
                        return p
                return SSL.NO_OVERLAPPING_PROTOCOLS

            ctx.set_alpn_select_callback(select)
        return ctx

    def _verify_client(self, conn: SSL.Connection, cert: Any, errno: int, depth: int, ok: int) -> bool:
        try:
            state = connection_state(conn)
            # Recorded even when refused: the failed tls.handshake event names it.
            state.chain[depth] = cert
            if ok:
                return True
            return state.refuse(verification_error(errno, as_cryptography(cert), depth, self.crl_source))
        except Exception:
            return internal_error(conn, "client certificate verification")


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLSCreator:
    """
    Makes server connections for a L{ServerTLSPolicy}.

    The context is built once and replaced every C{policy.ticket_rotation}
    seconds: each context holds its own random session-ticket key in memory,
    so replacing it rotates the key (tickets from before a rotation fall back
    to a full handshake).
    """

    def __init__(self, policy: ServerTLSPolicy, clock: IReactorTime) -> None:
        self.policy = policy
        self._clock = clock
        self._context = policy.make_context()
        self._born = clock.seconds()

    def context(self) -> SSL.Context:
        if self._clock.seconds() - self._born >= self.policy.ticket_rotation:
            self._context = self.policy.make_context()
            self._born = self._clock.seconds()
        return self._context

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        conn = SSL.Connection(self.context(), None)
        _STATES[conn] = ConnectionState("server", tlsProtocol, self.policy.handshake_timeout)
        return conn
