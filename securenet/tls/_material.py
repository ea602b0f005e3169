"""
What new server material must pass before it serves a connection.

A server that reloads its certificate, key, trust roots or CRL (on SIGHUP,
or when the CRL file changes) builds a new L{ServerTLSPolicy} from the files
and swaps it in only if every check here passes; otherwise the old material
keeps serving and the refusal (L{MaterialRefused}) names the file and the
reason.  nginx and Envoy refuse material that does not parse or whose key
does not match (L{load_key_pair} does that while loading); these checks go
further, so that a rotation can never strand the clients:

  - every certificate of the served chain is valid now (and one that
    expires within the warning margin is reported);
  - with C{expectRoots}, the chain verifies to them (what clients that trust
    those roots will check);
  - with C{expectPins}, the new key or one of its CAs is among the pins the
    clients hold;
  - a CRL is signed by one of the trust roots and is not older than the one
    in use (a replayed old CRL would un-revoke certificates);
  - finally a TLS handshake between the new server context and a client
    built from the same roots and pins succeeds, in memory.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from OpenSSL import SSL
from OpenSSL.crypto import X509, X509Store, X509StoreContext, X509StoreContextError

from securenet.pki._pins import InvalidPin, format_pin, parse_pin, pin_matches, spki_digest
from securenet.tls._context import apply_profile
from securenet.tls._errors import MaterialRefused, classify
from securenet.tls._profiles import TLSProfile

if TYPE_CHECKING:
    from securenet.tls._server import ServerTLSPolicy

#: Warn when a loaded certificate expires sooner than this (seconds): 14 days,
#: the margin of the example alert rule in docs/operations.md.
DEFAULT_EXPIRY_MARGIN = 14 * 86400.0

# Enough round trips for any TLS 1.2 or 1.3 handshake, with room to spare.
_MAX_FLIGHTS = 16


def check_expect_pins(pins: Sequence[str]) -> tuple[bytes, ...]:
    """Parse C{expectPins}; an unparseable pin is refused naming it."""
    try:
        return tuple(parse_pin(p) for p in pins)
    except InvalidPin as e:
        raise MaterialRefused(f"expectPins: {e}") from None


def check_policy(
    policy: ServerTLSPolicy,
    *,
    now: datetime.datetime,
    current: ServerTLSPolicy | None = None,
    expiry_margin: float = DEFAULT_EXPIRY_MARGIN,
) -> list[str]:
    """
    Every check of the module docstring, for C{policy} as the successor of
    C{current}.

    @return: warnings (a certificate that expires within C{expiry_margin}).
    @raise MaterialRefused: the first check that fails.
    """
    warnings = check_validity(policy, now=now, expiry_margin=expiry_margin)
    check_expectations(policy, now=now)
    if policy.crl is not None:
        check_crl(policy, now=now, current=current)
    rehearse_handshake(policy)
    return warnings


def _certificate_path(policy: ServerTLSPolicy) -> str:
    return policy.files.certificate if policy.files is not None else ""


def check_validity(policy: ServerTLSPolicy, *, now: datetime.datetime, expiry_margin: float = DEFAULT_EXPIRY_MARGIN) -> list[str]:
    """
    Refuse a served certificate that is not valid at C{now}.

    @return: a warning for each one that expires within C{expiry_margin} seconds.
    """
    cert_path = _certificate_path(policy)
    warnings: list[str] = []
    for depth, certificate in enumerate(policy.certificate_chain):
        what = "the certificate" if depth == 0 else f"the chain certificate at depth {depth}"
        subject = certificate.subject.rfc4514_string()
        if now < certificate.not_valid_before_utc:
            raise MaterialRefused(
                f"{what} ({subject}) is not valid before {certificate.not_valid_before_utc.isoformat()}", path=cert_path
            )
        if now > certificate.not_valid_after_utc:
            raise MaterialRefused(f"{what} ({subject}) expired at {certificate.not_valid_after_utc.isoformat()}", path=cert_path)
        left = (certificate.not_valid_after_utc - now).total_seconds()
        if left < expiry_margin:
            warnings.append(
                f"{cert_path or 'the server certificate'}: {what} ({subject}) expires at"
                f" {certificate.not_valid_after_utc.isoformat()}, in {left / 86400:.1f} days"
            )
    return warnings


def check_expectations(policy: ServerTLSPolicy, *, now: datetime.datetime) -> None:
    """Refuse a chain that does not verify to C{expectRoots}, or none of whose keys is in C{expectPins}."""
    cert_path = _certificate_path(policy)
    verified = _check_expect_roots(policy, now, cert_path)
    _check_expect_pins(policy, verified, cert_path)


def _check_expect_roots(policy: ServerTLSPolicy, now: datetime.datetime, cert_path: str) -> list[x509.Certificate]:
    """The chain as verified to C{expectRoots} (leaf first, root last), or the served chain without them."""
    if not policy.expect_roots:
        return list(policy.certificate_chain)
    store = X509Store()
    for root in policy.expect_roots:
        store.add_cert(X509.from_cryptography(root))
    store.set_time(now.replace(tzinfo=None))
    leaf, *rest = policy.certificate_chain
    context = X509StoreContext(store, X509.from_cryptography(leaf), [X509.from_cryptography(c) for c in rest])
    try:
        chain = context.get_verified_chain()
    except X509StoreContextError as e:
        raise MaterialRefused(
            f"the certificate does not verify to expectRoots ({e}): clients that trust only those roots would refuse it",
            path=cert_path,
        ) from None
    return [c.to_cryptography() for c in chain]


def _check_expect_pins(policy: ServerTLSPolicy, chain: Sequence[x509.Certificate], cert_path: str) -> None:
    if not policy.expect_pins:
        return
    expected = check_expect_pins(policy.expect_pins)
    # "Its CA": the chain's certificates, and the one that issued the top
    # of the chain where securenet holds it (expectRoots or trustRoots).
    candidates = list(chain)
    for ca in (*policy.expect_roots, *policy.trust_roots):
        if ca not in candidates and _issued(ca, candidates[-1]):
            candidates.append(ca)
    digests = [spki_digest(c) for c in candidates]
    if not any(pin_matches(d, expected) for d in digests):
        shown = ", ".join(format_pin(d) for d in digests)
        raise MaterialRefused(
            f"neither the new key nor its CAs ({shown}) are among expectPins: pinned clients would refuse it",
            path=cert_path,
        )


def check_crl(policy: ServerTLSPolicy, *, now: datetime.datetime, current: ServerTLSPolicy | None = None) -> None:
    """Refuse a CRL not signed by a trust root, issued in the future, or older than C{current}'s."""
    crl = policy.crl
    assert crl is not None
    path = policy.files.crl if policy.files is not None and policy.files.crl else "the CRL"
    issuers = [root for root in policy.trust_roots if root.subject == crl.issuer]
    if not issuers:
        raise MaterialRefused(f"the CRL is issued by {crl.issuer.rfc4514_string()!r}, which is not among trustRoots", path=path)
    if not any(_signed_by(crl, issuer) for issuer in issuers):
        raise MaterialRefused("the CRL's signature does not verify with its issuer's key (corrupt or forged)", path=path)
    if crl.last_update_utc > now + datetime.timedelta(minutes=5):
        raise MaterialRefused(f"the CRL is issued in the future ({crl.last_update_utc.isoformat()})", path=path)
    old = current.crl if current is not None else None
    if old is not None and old.issuer == crl.issuer and crl.last_update_utc < old.last_update_utc:
        raise MaterialRefused(
            f"the CRL was issued at {crl.last_update_utc.isoformat()}, before the one in use"
            f" ({old.last_update_utc.isoformat()}): an older CRL could un-revoke certificates",
            path=path,
        )


def _issued(ca: x509.Certificate, certificate: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return False
    return crl.is_signature_valid(key)


def rehearse_handshake(policy: ServerTLSPolicy) -> None:
    """
    Run a TLS handshake, in memory, between a server context of C{policy}
    and a client of the same profile that trusts C{expectRoots} (when
    given), and check that the server presented the new certificate.

    A client certificate is not sent (the rehearsal has none): when the
    policy requires one, the rehearsal asks for it as C{optional}, which
    exercises the same trust roots and CRL loading.

    @raise MaterialRefused: the handshake failed, or served another certificate.
    """
    cert_path = _certificate_path(policy)
    rehearsal = policy if policy.client_auth != "required" else attrs.evolve(policy, client_auth="optional")
    try:
        server = SSL.Connection(rehearsal.make_context(), None)
        server.set_accept_state()
        client = SSL.Connection(_client_context(policy.profile, policy.alpn, policy.expect_roots), None)
        client.set_connect_state()
        done = {id(server): False, id(client): False}
        for _ in range(_MAX_FLIGHTS):
            for side, peer in ((client, server), (server, client)):
                if not done[id(side)]:
                    try:
                        side.do_handshake()
                        done[id(side)] = True
                    except SSL.WantReadError:
                        pass
                try:
                    data = side.bio_read(65536)
                except SSL.WantReadError:
                    data = b""
                if data:
                    peer.bio_write(data)
            if all(done.values()):
                break
    except SSL.Error as e:
        raise MaterialRefused(f"a test handshake with the new material failed: {classify(e)}", path=cert_path) from None
    if not all(done.values()):
        raise MaterialRefused("a test handshake with the new material did not finish", path=cert_path)
    presented = client.get_peer_certificate(as_cryptography=True)
    if presented != policy.certificate_chain[0]:
        raise MaterialRefused("a test handshake with the new material presented another certificate", path=cert_path)


def _client_context(profile: TLSProfile, alpn: Sequence[bytes], roots: Sequence[x509.Certificate]) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_METHOD)
    apply_profile(ctx, profile)
    if roots:
        store = ctx.get_cert_store()
        assert store is not None
        for root in roots:
            store.add_cert(X509.from_cryptography(root))
        ctx.set_verify(SSL.VERIFY_PEER, lambda conn, cert, errno, depth, ok: bool(ok))
    else:
        ctx.set_verify(SSL.VERIFY_NONE)
    if alpn:
        ctx.set_alpn_protos(list(alpn))
    return ctx
