"""
Server and client TLS policies: immutable settings, validated at
construction, each building its OpenSSL context once.

A policy becomes connections through a I{creator}
(L{ServerTLSCreator}, L{ClientTLSCreator}), which Twisted's
C{TLSMemoryBIOFactory} asks for one C{OpenSSL.SSL.Connection} per
connection.  Verification runs in OpenSSL's verify callback; a refusal is
recorded as a typed error on the connection's L{ConnectionState} (read back by
L{securenet.tls._guard.TLSGuard}) and OpenSSL sends the peer the matching
alert.  Every callback is wrapped so that a bug in it refuses the connection.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import os
import weakref
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property, partial
from typing import Any, Literal

import attrs
import service_identity
from cryptography import x509
from OpenSSL import SSL
from OpenSSL.crypto import X509, X509StoreFlags
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IReactorTime,
)
from zope.interface import implementer

from securenet._logs import SecurenetLogger
from securenet.pki._facts import CertificateFacts
from securenet.pki._files import PrivateKey, load_certificates, load_crl, load_key_pair
from securenet.pki._pins import InvalidPin, format_pin, parse_pin, pin_matches, spki_digest, spki_pin
from securenet.tls._binding import set_groups
from securenet.tls._certificates import as_cryptography
from securenet.tls._errors import (
    CertificateError,
    CertificateExpired,
    CertificateNotYetValid,
    CertificateRejected,
    CertificateRevoked,
    CRLExpired,
    HostnameMismatch,
    PinMismatch,
    TLSConfigurationError,
    TofuMismatch,
    UntrustedCertificate,
)
from securenet.tls._profiles import INTERMEDIATE, TLSProfile
from securenet.tls._tofu import TofuStore

log = SecurenetLogger(namespace="securenet.tls")

ClientAuth = Literal["none", "optional", "required"]
CLIENT_AUTH_MODES: tuple[ClientAuth, ...] = ("none", "optional", "required")

DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: How long a session ticket may be used to resume (seconds).
DEFAULT_SESSION_LIFETIME = 3600
#: How often the server makes a new context, and so a new ticket key.
DEFAULT_TICKET_ROTATION = 3600.0

# OpenSSL X509_V_ERR_* codes we name.
_UNABLE_TO_GET_ISSUER_CERT = 2
_UNABLE_TO_GET_CRL = 3
_CERT_NOT_YET_VALID = 9
_CERT_HAS_EXPIRED = 10
_CRL_NOT_YET_VALID = 11
_CRL_HAS_EXPIRED = 12
_DEPTH_ZERO_SELF_SIGNED_CERT = 18
_SELF_SIGNED_CERT_IN_CHAIN = 19
_UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
_UNABLE_TO_VERIFY_LEAF_SIGNATURE = 21
_CERT_REVOKED = 23
_INVALID_CA = 24
_INVALID_PURPOSE = 26

#: Chain-building errors: what pin-only mode ignores (the pin is the trust).
_CHAIN_ERRORS = frozenset(
    {
        _UNABLE_TO_GET_ISSUER_CERT,
        _DEPTH_ZERO_SELF_SIGNED_CERT,
        _SELF_SIGNED_CERT_IN_CHAIN,
        _UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
        _UNABLE_TO_VERIFY_LEAF_SIGNATURE,
        _INVALID_CA,
    }
)


def verification_error(
    code: int, certificate: x509.Certificate | None, depth: int, crl_source: str | None = None
) -> CertificateError:
    """The typed error for OpenSSL's X509_V_ERR C{code} on C{certificate}."""
    subject = certificate.subject.rfc4514_string() if certificate is not None else None
    kw: dict[str, Any] = {"subject": subject, "depth": depth, "code": code}
    what = "certificate" if depth == 0 else f"certificate at chain depth {depth}"
    if code == _CERT_HAS_EXPIRED:
        when = certificate.not_valid_after_utc.isoformat() if certificate is not None else "?"
        return CertificateExpired(f"{what} expired at {when}", **kw)
    if code == _CERT_NOT_YET_VALID:
        when = certificate.not_valid_before_utc.isoformat() if certificate is not None else "?"
        return CertificateNotYetValid(f"{what} is not valid before {when}", **kw)
    if code in (_DEPTH_ZERO_SELF_SIGNED_CERT, _SELF_SIGNED_CERT_IN_CHAIN):
        return UntrustedCertificate(f"{what} is self-signed and not a trusted root", **kw)
    if code in _CHAIN_ERRORS:
        issuer = certificate.issuer.rfc4514_string() if certificate is not None else "?"
        return UntrustedCertificate(f"{what} was issued by {issuer!r}, which is not trusted", **kw)
    if code == _CERT_REVOKED:
        return CertificateRevoked(f"{what} is revoked", **kw)
    if code == _CRL_HAS_EXPIRED:
        src = f" {crl_source}" if crl_source else ""
        return CRLExpired(
            f"the CRL{src} is past its next-update; refusing client certificates until it is renewed",
            **kw,
        )
    if code == _CRL_NOT_YET_VALID:
        return CertificateRejected("the CRL is not yet valid", **kw)
    if code == _UNABLE_TO_GET_CRL:
        return CertificateRejected("no CRL from the certificate's issuer is loaded", **kw)
    if code == _INVALID_PURPOSE:
        return CertificateRejected(f"{what} is not valid for this purpose (extended key usage)", **kw)
    return CertificateRejected(f"{what} failed verification (OpenSSL error {code})", **kw)


@attrs.define(eq=False)
class ConnectionState:
    """
    Per-connection verification state (see L{state_of}).  C{error} is the
    first refusal; L{TLSGuard} reads it.  C{chain} holds the certificates
    verification saw, by depth, including one it refused, as pyOpenSSL gave
    them (converted on demand by L{certificate}).
    """

    role: Literal["server", "client"]
    protocol: Any
    handshake_timeout: float
    hostname: str | None = None
    port: int | None = None
    error: CertificateError | None = None
    leaf_checked: bool = False
    chain: dict[int, X509] = attrs.field(factory=dict)
    on_handshake: list[Callable[[], None]] = attrs.field(factory=list)
    session_cache: Any = None

    def certificate(self, depth: int) -> x509.Certificate | None:
        """The certificate verification saw at C{depth}, if it saw one."""
        certificate = self.chain.get(depth)
        return as_cryptography(certificate) if certificate is not None else None

    def seen_chain(self) -> list[x509.Certificate]:
        """Every certificate verification saw, leaf first."""
        return [as_cryptography(self.chain[depth]) for depth in sorted(self.chain)]

    def refuse(self, error: CertificateError) -> bool:
        if self.error is None:
            self.error = error
        return False

    def connection_closed(self, connection: SSL.Connection, clean: bool) -> None:
        """
        A client connection ended: keep its session for resumption if it was
        verified and closed cleanly, forget any session for the server if not.
        """
        if self.session_cache is None or self.hostname is None or self.port is None:
            return
        session = connection.get_session() if clean and self.error is None else None
        if session is not None:
            self.session_cache.put(self.hostname, self.port, session)
        else:
            self.session_cache.forget(self.hostname, self.port)

    def handshake_done(self) -> None:
        """
        Run what had to wait for the end of the handshake: the peer has now
        proven it holds the key of the certificate verification saw.
        """
        actions, self.on_handshake = self.on_handshake, []
        for action in actions:
            action()


# Twisted's TLS layer sets each connection's app data to its own transport,
# so our per-connection state is kept here, dropped with the connection.
_STATES: weakref.WeakKeyDictionary[SSL.Connection, ConnectionState] = weakref.WeakKeyDictionary()


def state_of(connection: SSL.Connection | None) -> ConnectionState | None:
    """The L{ConnectionState} of a connection made by a securenet creator."""
    if connection is None:
        return None
    return _STATES.get(connection)


def _state(connection: SSL.Connection) -> ConnectionState:
    state = _STATES.get(connection)
    if state is None:
        raise TypeError("connection has no securenet ConnectionState")
    return state


def _internal_error(connection: SSL.Connection, where: str) -> bool:
    """Log the exception being handled and refuse the connection."""
    log.failure("internal error in the TLS {where} callback; refusing the connection", where=where)
    try:
        _state(connection).refuse(CertificateRejected(f"internal error while verifying ({where})"))
    except Exception:  # nothing more to record; the refusal below stands
        pass
    return False


def _certificates(certs: Iterable[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    return tuple(certs)


def _protocols(names: Iterable[bytes]) -> tuple[bytes, ...]:
    return tuple(names)


def _load_chain(path: str | os.PathLike[str] | None) -> tuple[x509.Certificate, ...]:
    return tuple(load_certificates(path)) if path is not None else ()


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

    certificate_chain: tuple[x509.Certificate, ...] = attrs.field(converter=_certificates)
    private_key: PrivateKey
    profile: TLSProfile = INTERMEDIATE
    client_auth: ClientAuth = "none"
    trust_roots: tuple[x509.Certificate, ...] = attrs.field(default=(), converter=_certificates)
    crl: x509.CertificateRevocationList | None = None
    crl_source: str | None = None
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    session_tickets: bool = True
    session_lifetime: int = DEFAULT_SESSION_LIFETIME
    ticket_rotation: float = DEFAULT_TICKET_ROTATION
    alpn: tuple[bytes, ...] = attrs.field(default=(), converter=_protocols)

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
            trust_roots=_load_chain(trust_roots),
            crl=load_crl(crl) if crl is not None else None,
            crl_source=str(crl) if crl is not None else None,
            **kwargs,
        )

    def make_context(self) -> SSL.Context:
        """A new OpenSSL context for this policy (with a fresh ticket key)."""
        ctx = SSL.Context(SSL.TLS_METHOD)
        _apply_profile(ctx, self.profile)
        if not self.session_tickets:
            # No resumption at all: no tickets, and no server-side cache
            # (which OpenSSL would otherwise still use for TLS 1.3 and 1.2).
            ctx.set_options(SSL.OP_NO_TICKET)
            ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
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
            state = _state(conn)
            # Recorded even when refused: the failed tls.handshake event names it.
            state.chain[depth] = cert
            if ok:
                return True
            return state.refuse(verification_error(errno, as_cryptography(cert), depth, self.crl_source))
        except Exception:
            return _internal_error(conn, "client certificate verification")


def _apply_profile(ctx: SSL.Context, profile: TLSProfile) -> None:
    ctx.set_min_proto_version(profile.min_version)
    ctx.set_max_proto_version(profile.max_version)
    ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION | SSL.OP_SINGLE_ECDH_USE)
    # Free a connection's 16 KiB+ read and write buffers while it is idle
    # (Twisted's CertificateOptions does the same): without it every idle
    # connection held about 35 KiB more than a bare Twisted one.
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    ctx.set_cipher_list(profile.tls12_ciphers.encode("ascii"))
    set_groups(ctx, profile.groups)


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


# -- client --------------------------------------------------------------------


def _parse_pins(pins: Iterable[str | bytes]) -> frozenset[bytes]:
    out = set()
    for pin in pins:
        if isinstance(pin, bytes):
            if len(pin) != 32:
                raise TLSConfigurationError("a binary pin must be a 32-byte SHA-256 digest")
            out.add(pin)
            continue
        try:
            out.add(parse_pin(pin))
        except InvalidPin as e:
            raise TLSConfigurationError(str(e)) from None
    return frozenset(out)


@attrs.frozen(slots=False)
class ClientTLSPolicy:
    """
    How a client checks the server, and what it presents.

    Server identity is established by at least one of:

      - C{trust_roots}: the chain must validate to one of these CAs and the
        certificate must be valid for the host name or IP we connect to
        (service_identity);
      - C{pins}: some certificate of the validated chain (with
        C{trust_roots}), or the server's own certificate (without: pin-only
        mode, for self-signed servers), has one of these SPKI pins;
      - C{tofu}: the server's key must be the one recorded on first use.

    In pin-only and TOFU-only modes chain-building errors are ignored (the
    pin is the trust) but expired and not-yet-valid certificates are still
    refused.
    """

    trust_roots: tuple[x509.Certificate, ...] = attrs.field(default=(), converter=_certificates)
    pins: frozenset[bytes] = attrs.field(default=frozenset(), converter=_parse_pins)
    tofu: TofuStore | None = None
    certificate_chain: tuple[x509.Certificate, ...] = attrs.field(default=(), converter=_certificates)
    private_key: PrivateKey | None = None
    profile: TLSProfile = INTERMEDIATE
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    alpn: tuple[bytes, ...] = attrs.field(default=(), converter=_protocols)

    def __attrs_post_init__(self) -> None:
        if not self.trust_roots and not self.pins and self.tofu is None:
            raise TLSConfigurationError("the client has no way to check the server: give trustRoots, pin, or tofu")
        if bool(self.certificate_chain) != (self.private_key is not None):
            raise TLSConfigurationError("a client certificate needs its private key, and a key its certificate")
        if not math.isfinite(self.handshake_timeout) or self.handshake_timeout <= 0:
            raise TLSConfigurationError(f"handshakeTimeout must be positive and finite, not {self.handshake_timeout}")

    @classmethod
    def from_files(
        cls,
        *,
        trust_roots: str | os.PathLike[str] | None = None,
        pins: Sequence[str] = (),
        tofu: str | os.PathLike[str] | None = None,
        certificate: str | os.PathLike[str] | None = None,
        private_key: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> ClientTLSPolicy:
        if (certificate is None) != (private_key is None):
            raise TLSConfigurationError("certificate and privateKey must be given together")
        chain: Sequence[x509.Certificate] = ()
        key = None
        if certificate is not None and private_key is not None:
            chain, key = load_key_pair(certificate, private_key)
        return cls(
            trust_roots=_load_chain(trust_roots),
            pins=pins,
            tofu=TofuStore.load(tofu) if tofu is not None else None,
            certificate_chain=chain,
            private_key=key,
            **kwargs,
        )

    @property
    def pin_only(self) -> bool:
        """True when no CA validates the chain (pins and/or TOFU are the trust)."""
        return not self.trust_roots

    @cached_property
    def context(self) -> SSL.Context:
        ctx = SSL.Context(SSL.TLS_METHOD)
        _apply_profile(ctx, self.profile)
        if self.certificate_chain and self.private_key is not None:
            ctx.use_certificate(self.certificate_chain[0])
            for extra in self.certificate_chain[1:]:
                ctx.add_extra_chain_cert(extra)
            ctx.use_privatekey(self.private_key)
            ctx.check_privatekey()
        store = ctx.get_cert_store()
        assert store is not None
        for root in self.trust_roots:
            store.add_cert(X509.from_cryptography(root))
        ctx.set_verify(SSL.VERIFY_PEER, self._verify_server)
        if self.alpn:
            ctx.set_alpn_protos(list(self.alpn))
        return ctx

    def creator(self, hostname: str, port: int) -> ClientTLSCreator:
        return ClientTLSCreator(self, hostname, port)

    @cached_property
    def sessions(self) -> SessionCache:
        """
        TLS sessions to resume, per C{host:port}: a session is kept only
        after a connection that passed this policy's checks closed cleanly,
        so resuming it (which skips certificate verification) stays within
        what this policy already verified for that server.
        """
        return SessionCache()

    def _verify_server(self, conn: SSL.Connection, cert: Any, errno: int, depth: int, ok: int) -> bool:
        try:
            state = _state(conn)
            # Recorded even when refused: the failed tls.handshake event names it.
            state.chain[depth] = cert
            if not ok and not (self.pin_only and errno in _CHAIN_ERRORS):
                return state.refuse(verification_error(errno, as_cryptography(cert), depth))
            if depth != 0 or state.leaf_checked:
                return True
            error = self._check_leaf(state, as_cryptography(cert))
            if error is not None:
                return state.refuse(error)
            state.leaf_checked = True
            return True
        except Exception:
            return _internal_error(conn, "server certificate verification")

    def _check_leaf(self, state: ConnectionState, leaf: x509.Certificate) -> CertificateError | None:
        """Host name, pins and TOFU, once the chain (or the leaf) is acceptable."""
        subject = leaf.subject.rfc4514_string()
        if not self.pin_only and state.hostname is not None:
            error = _check_hostname(leaf, state.hostname)
            if error is not None:
                return error
        if self.pins:
            candidates = [leaf] if self.pin_only else state.seen_chain()
            if not any(pin_matches(spki_digest(c), self.pins) for c in candidates):
                return PinMismatch(
                    "pin mismatch",
                    subject=subject,
                    depth=0,
                    expected=tuple(sorted(format_pin(p) for p in self.pins)),
                    presented=tuple(spki_pin(c) for c in candidates),
                )
        if self.tofu is not None and state.hostname is not None and state.port is not None:
            presented = spki_pin(leaf)
            recorded = self.tofu.lookup(state.hostname, state.port)
            if recorded is None:
                # Recorded only once the handshake proves the server holds the
                # key: a peer replaying someone's certificate must not poison
                # the store.
                state.on_handshake.append(partial(self._record_tofu, self.tofu, state.hostname, state.port, presented))
            elif not pin_matches(parse_pin(presented), [parse_pin(recorded)]):
                return TofuMismatch(
                    "server key changed since first use",
                    subject=subject,
                    depth=0,
                    host=state.hostname,
                    port=state.port,
                    recorded=recorded,
                    presented=presented,
                    store=str(self.tofu.path),
                )
        return None

    @staticmethod
    def _record_tofu(store: TofuStore, host: str, port: int, pin: str) -> None:
        if store.lookup(host, port) is not None:
            return
        store.record(host, port, pin)
        log.info(
            "trust on first use: recorded {pin} for {host}:{port} in {store}",
            pin=pin,
            host=host,
            port=port,
            store=str(store.path),
            securenet_event="tls.tofu_recorded",
        )


def _is_ip(hostname: str) -> bool:
    try:
        ipaddress.ip_address(hostname.strip("[]"))
    except ValueError:
        return False
    return True


def _check_hostname(leaf: x509.Certificate, hostname: str) -> HostnameMismatch | None:
    try:
        if _is_ip(hostname):
            verify_certificate_ip_address(leaf, hostname.strip("[]"))
        else:
            verify_certificate_hostname(leaf, hostname)
    except (service_identity.VerificationError, service_identity.CertificateError):
        return HostnameMismatch(
            "hostname mismatch",
            subject=leaf.subject.rfc4514_string(),
            depth=0,
            expected=hostname,
            presented=CertificateFacts.of(leaf).sans,
        )
    return None


@implementer(IOpenSSLClientConnectionCreator)
class ClientTLSCreator:
    """Makes client connections to one C{host:port} under a L{ClientTLSPolicy}."""

    def __init__(self, policy: ClientTLSPolicy, hostname: str, port: int) -> None:
        self.policy = policy
        self.hostname = hostname
        self.port = port

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        conn = SSL.Connection(self.policy.context, None)
        _STATES[conn] = ConnectionState(
            "client",
            tlsProtocol,
            self.policy.handshake_timeout,
            hostname=self.hostname,
            port=self.port,
        )
        if not _is_ip(self.hostname):
            conn.set_tlsext_host_name(self.hostname.encode("idna"))
        session = self.policy.sessions.get(self.hostname, self.port)
        if session is not None:
            conn.set_session(session)
        _STATES[conn].session_cache = self.policy.sessions
        conn.set_connect_state()
        return conn


class SessionCache:
    """A bounded map of C{host:port} to the last resumable TLS session."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._sessions: dict[tuple[str, int], SSL.Session] = {}

    def get(self, host: str, port: int) -> SSL.Session | None:
        return self._sessions.get((host, port))

    def put(self, host: str, port: int, session: SSL.Session) -> None:
        self._sessions.pop((host, port), None)
        self._sessions[(host, port)] = session
        while len(self._sessions) > self.size:
            del self._sessions[next(iter(self._sessions))]

    def forget(self, host: str, port: int) -> None:
        self._sessions.pop((host, port), None)


__all__ = [
    "CLIENT_AUTH_MODES",
    "ClientTLSCreator",
    "ClientTLSPolicy",
    "ConnectionState",
    "state_of",
    "ServerTLSCreator",
    "ServerTLSPolicy",
    "verification_error",
]
