"""
The server's TLS policy: immutable settings (certificate chain, profile,
client authentication, trust roots, CRL, resumption), validated at
construction, building its OpenSSL context once; and its creator, which
makes every connection from the current policy and swaps in a new one
(a reload) without touching established connections or the session cache.
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
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
from securenet.tls._errors import MaterialRefused, TLSConfigurationError
from securenet.tls._material import check_expect_pins
from securenet.tls._profiles import INTERMEDIATE, TLSProfile


@attrs.frozen
class ServerTLSFiles:
    """The files a L{ServerTLSPolicy} was loaded from: what a reload reads again."""

    certificate: str
    private_key: str
    trust_roots: str | None = None
    crl: str | None = None
    expect_roots: str | None = None

    def describe(self) -> str:
        """The files, for a log line."""
        return ", ".join(p for p in (self.certificate, self.private_key, self.trust_roots, self.crl) if p)


def _pin_tuple(pins: Any) -> tuple[str, ...]:
    return tuple(pins)


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
    @ivar expect_pins: the pins (C{sha256/...}) the server's clients hold, of
        its key or a CA: a certificate none of whose keys is among them is
        refused (at start-up and on every reload), so that a rotation never
        strands pinned clients (the server-side twin of the client's C{pin}).
    @ivar expect_roots: the CAs the server's clients trust for it: the
        served chain must verify to them (the twin of the client's
        C{trustRoots}).
    @ivar files: where the material was loaded from (L{from_files}): what
        L{reloaded} reads again.
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
    alpn: tuple[bytes, ...] = attrs.field(default=(), converter=protocol_tuple)
    expect_pins: tuple[str, ...] = attrs.field(default=(), converter=_pin_tuple)
    expect_roots: tuple[x509.Certificate, ...] = attrs.field(default=(), converter=certificate_tuple)
    files: ServerTLSFiles | None = attrs.field(default=None, eq=False)

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
        check_expect_pins(self.expect_pins)

    @classmethod
    def from_files(
        cls,
        certificate: str | os.PathLike[str],
        private_key: str | os.PathLike[str],
        *,
        trust_roots: str | os.PathLike[str] | None = None,
        crl: str | os.PathLike[str] | None = None,
        expect_roots: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> ServerTLSPolicy:
        """Load the files (refusing unsafe keys, mismatches and corrupt files)."""
        files = ServerTLSFiles(
            str(certificate),
            str(private_key),
            str(trust_roots) if trust_roots is not None else None,
            str(crl) if crl is not None else None,
            str(expect_roots) if expect_roots is not None else None,
        )
        return cls._load(files, **kwargs)

    @classmethod
    def _load(cls, files: ServerTLSFiles, **kwargs: Any) -> ServerTLSPolicy:
        chain, key = load_key_pair(files.certificate, files.private_key)
        return cls(
            certificate_chain=chain,
            private_key=key,
            trust_roots=load_chain(files.trust_roots),
            crl=load_crl(files.crl) if files.crl is not None else None,
            crl_source=files.crl,
            expect_roots=load_chain(files.expect_roots),
            files=files,
            **kwargs,
        )

    def _settings(self) -> dict[str, Any]:
        """What is not read from files: kept by a reload."""
        return {
            "profile": self.profile,
            "client_auth": self.client_auth,
            "handshake_timeout": self.handshake_timeout,
            "session_tickets": self.session_tickets,
            "session_lifetime": self.session_lifetime,
            "alpn": self.alpn,
            "expect_pins": self.expect_pins,
        }

    def reloaded(self) -> ServerTLSPolicy:
        """
        The same settings with every file read again (blocking: call it off
        the reactor thread), not yet checked as a successor (see
        L{securenet.tls._material.check_policy}).

        @raise MaterialRefused: this policy was not loaded from files.
        @raise SecurenetError: a file is missing, corrupt, unsafe or the key does not match.
        """
        if self.files is None:
            raise MaterialRefused("this TLS policy was not loaded from files: there is nothing to reload")
        return self._load(self.files, **self._settings())

    def crl_reloaded(self) -> ServerTLSPolicy:
        """The same policy with only the CRL file read again (blocking)."""
        if self.files is None or self.files.crl is None:
            raise MaterialRefused("this TLS policy has no CRL file to reload")
        return attrs.evolve(self, crl=load_crl(self.files.crl))

    def session_context_id(self) -> bytes:
        """
        The session id context: sessions resume only under the same one.
        It covers what decided whether a client was let in (client
        authentication, trust roots, CRL) and not the server's own
        certificate: a server-certificate rotation keeps sessions
        resumable, a new CRL or new trust roots make every client verify
        again (a resumed session skips verification, so a client revoked
        since could otherwise resume).
        """
        digest = hashlib.sha256(b"securenet session\0" + self.client_auth.encode())
        for root in self.trust_roots:
            digest.update(hashlib.sha256(spki_digest(root)).digest())
        if self.crl is not None:
            digest.update(hashlib.sha256(self.crl.public_bytes(serialization.Encoding.DER)).digest())
        return digest.digest()

    def make_context(self) -> SSL.Context:
        """A new OpenSSL context for this policy (with an empty session cache)."""
        ctx = SSL.Context(SSL.TLS_METHOD)
        apply_profile(ctx, self.profile)
        # Resumption from the server's session cache (stateful TLS 1.3
        # tickets, TLS 1.2 session ids), never from stateless tickets:
        # pyOpenSSL and cryptography's binding cannot set ticket keys, so
        # each context would encrypt tickets under its own key and a reload
        # (a new context) would drop every outstanding ticket.  The cache
        # lives in the creator's first context, which outlives reloads
        # (ServerTLSCreator), and no long-lived ticket key exists to steal.
        ctx.set_options(SSL.OP_NO_TICKET)
        if not self.session_tickets:
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
        # A session id context is needed for resumption with client certificates.
        ctx.set_session_id(self.session_context_id())
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
    Makes server connections for the current L{ServerTLSPolicy}.

    Every connection is created from the creator's first context, which
    holds the session cache for the listener's life, and then switched to
    the current policy's context (its certificate, key, trust roots and
    CRL): so L{replace} changes what new connections get while sessions
    made before it still resume (unless the new policy's session id
    context differs: see L{ServerTLSPolicy.session_context_id}), and
    established connections keep their own state.

    @ivar policy: the current policy (what new connections get).
    """

    def __init__(self, policy: ServerTLSPolicy, clock: IReactorTime) -> None:
        self.policy = policy
        self._clock = clock
        self._base = policy.make_context()
        self._context = self._base

    def replace(self, policy: ServerTLSPolicy, context: SSL.Context | None = None) -> None:
        """
        Serve C{policy} to new connections from now on (on the reactor
        thread; C{context}, its context, may be built beforehand off it).

        @raise TLSConfigurationError: C{policy} changes a setting a reload
            cannot (the profile, client authentication, resumption, ALPN,
            the handshake timeout): those need a restart.
        """
        if policy._settings() != self.policy._settings():
            raise TLSConfigurationError("a reload changes certificates, keys, trust roots and CRLs, not settings")
        self._context = context if context is not None else policy.make_context()
        self.policy = policy

    def context(self) -> SSL.Context:
        """The current policy's context."""
        return self._context

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        conn = SSL.Connection(self._base, None)
        if self._context is not self._base:
            # The session cache stays the first context's; the certificate,
            # key and verification store become the current policy's.
            conn.set_context(self._context)
        _STATES[conn] = ConnectionState("server", tlsProtocol, self.policy.handshake_timeout)
        return conn
