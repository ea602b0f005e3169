"""
Tests for L{securenet.cred.tokens}: key and settings validation, issuing,
every way a token is refused (with the reason the audit log gets), the
OAUTHBEARER mechanism, key files, and the C{--auth jwt} factory.

Keys are generated per test; time is a L{Clock}, never the wall clock.
Tokens that PyJWT would refuse to produce (alg=none, HS256 keyed with a
public key, NaN times) are built by hand.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any, cast

import attrs
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import securenet.cred._strcred
from securenet.cred._credentials import TokenCredentials
from securenet.cred._identity import AuthenticationContext, IdentityRealm
from securenet.cred._jwt import PresentedToken, TokenChecker, TokenIssuer, TokenRefused, TokenSettings, VerifiedToken
from securenet.cred._strcred import CheckerArgumentError, jwtCheckerFactory
from securenet.interfaces import IClientMechanism, ICredentialStore, IIdentity, IMechanismFactory, IServerMechanism
from securenet.pki._errors import FileCorrupt, FileMissing, InsecurePermissions
from securenet.pki._files import write_private_key
from securenet.pki._tokenkeys import InvalidTokenKey, InvalidTokenSettings, TokenKey, load_signing_key, load_verification_key
from securenet.sasl._mechanism import Challenge, ChannelBindings, Complete, MechanismError
from securenet.sasl._oauthbearer import OAuthBearerClientMechanism, OAuthBearerMechanismFactory, parse_oauthbearer
from securenet.sasl._offer import offered_mechanisms
from securenet.session._errors import AuthenticationFailed
from securenet.session._server import SessionFactory, identity_of
from securenet.store._memory import MemoryStore
from securenet.store._records import User
from securenet.testing import EphemeralPKI, connect_in_memory

NOW = 1_800_000_000
DROP = object()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def segment(obj: Any) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def hs256_by_hand(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """An HS256 JWT computed with hmac, for secrets PyJWT refuses to use (public keys)."""
    signing_input = f"{segment(header)}.{segment(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def public_pem(key: TokenKey) -> bytes:
    assert not isinstance(key.verification_key, bytes)
    return key.verification_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_raw(key: TokenKey) -> bytes:
    assert isinstance(key.verification_key, ed25519.Ed25519PublicKey)
    return key.verification_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class TokenTestCase(SynchronousTestCase):
    """A clock at L{NOW}, a store with alice, an EdDSA key, its checker and issuer."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = MemoryStore()
        self.store.users["alice"] = User("alice")
        self.key = TokenKey.private(ed25519.Ed25519PrivateKey.generate())
        self.settings = TokenSettings([self.key])
        self.checker = TokenChecker(self.settings, self.store, self.clock)
        self.issuer = TokenIssuer(self.settings, self.clock)

    def claims(self, **changes: Any) -> dict[str, Any]:
        """Valid claims for alice; a change to L{DROP} removes the claim."""
        claims: dict[str, Any] = {
            "sub": "alice",
            "jti": "jti-1",
            "iat": NOW,
            "exp": NOW + 600,
            "aud": "securenet",
            "iss": "securenet",
        }
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not DROP}

    def sign(self, claims: dict[str, Any], key: TokenKey | None = None, **headers: Any) -> str:
        """Sign C{claims} exactly as given (PyJWS, so PyJWT adds or checks nothing)."""
        key = key or self.key
        payload = json.dumps(claims).encode()
        signing_key: Any = key.signing_key
        return jwt.PyJWS().encode(payload, signing_key, algorithm=key.algorithm, headers=headers or None)

    def accepted(self, token: str, checker: TokenChecker | None = None) -> VerifiedToken:
        result: VerifiedToken = self.successResultOf((checker or self.checker).verify(token))
        return result

    def assertRefused(self, token: str, reason: str, checker: TokenChecker | None = None, **kw: Any) -> None:
        """Refused with C{reason}, both by verify() and through requestAvatarId."""
        checker = checker or self.checker
        for d in (checker.verify(token, **kw), checker.requestAvatarId(PresentedToken(token, **kw))):
            failure = self.failureResultOf(d, TokenRefused)
            self.assertEqual(failure.value.reason, reason)
            self.assertIsInstance(failure.value, UnauthorizedLogin)
            self.assertEqual(str(failure.value), "authentication failed")


class SettingsTests(TokenTestCase):
    """Keys and settings are validated at construction."""

    def test_hmac_key_too_short(self) -> None:
        """An HS256 secret under 32 bytes (256 bits) is refused; 32 bytes is enough."""
        with self.assertRaises(InvalidTokenSettings) as e:
            TokenKey.hmac(b"k" * 31)
        self.assertEqual(str(e.exception), "HS256 secret is 31 bytes; it must be at least 32 (256 bits)")
        self.assertEqual(TokenKey.hmac(b"k" * 32).algorithm, "HS256")

    def test_hmac_secret_is_not_a_pem_key(self) -> None:
        """A public key can never be configured as an HMAC secret."""
        with self.assertRaises(InvalidTokenSettings) as e:
            TokenKey.hmac(public_pem(self.key))
        self.assertEqual(str(e.exception), "HS256 secret is a PEM key; an HS256 secret must not be a public or private key")

    def test_none_and_unknown_algorithms(self) -> None:
        for alg in ("none", "RS256", "HS512", "ES384"):
            with self.assertRaises(InvalidTokenSettings) as e:
                TokenKey(alg, b"k" * 32, None)  # type: ignore[arg-type]
            self.assertEqual(str(e.exception), f"token algorithm {alg!r} is not allowed; choose one of EdDSA, ES256, HS256")

    def test_key_type_must_match_algorithm(self) -> None:
        public = ed25519.Ed25519PrivateKey.generate().public_key()
        with self.assertRaises(InvalidTokenSettings) as e:
            TokenKey("ES256", public)
        self.assertEqual(str(e.exception), "the verification key is not an ES256 public key")
        with self.assertRaises(InvalidTokenSettings) as e:
            TokenKey("HS256", public)
        self.assertEqual(str(e.exception), "an HS256 key is a secret (bytes), not a public key")

    def test_signing_key_must_match(self) -> None:
        one, two = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
        with self.assertRaises(InvalidTokenSettings) as e:
            TokenKey("EdDSA", one.public_key(), two)
        self.assertEqual(str(e.exception), "the signing key does not match the verification key")

    def test_es256_needs_p256(self) -> None:
        with self.assertRaises(InvalidTokenSettings) as e:
            TokenKey.private(ec.generate_private_key(ec.SECP384R1()))
        self.assertEqual(str(e.exception), "ES256 needs a P-256 key, not secp384r1")

    def test_leeway_bounds(self) -> None:
        self.assertEqual(TokenSettings([self.key]).leeway, 30)
        self.assertEqual(TokenSettings([self.key], leeway=300).leeway, 300)
        for bad in (-1, 301, float("nan"), float("inf")):
            with self.assertRaises(InvalidTokenSettings) as e:
                TokenSettings([self.key], leeway=bad)
            self.assertEqual(str(e.exception), f"leeway must be between 0 and 300 seconds, not {bad!r}")

    def test_key_set_rules(self) -> None:
        other = TokenKey.private(ed25519.Ed25519PrivateKey.generate())
        cases = [
            ([], "token settings need at least one key"),
            ([self.key, other], "at most one token key may have no kid"),
            ([attrs.evolve(self.key, kid="a"), attrs.evolve(other, kid="a")], "token key ids (kid) must be unique"),
        ]
        for keys, message in cases:
            with self.assertRaises(InvalidTokenSettings) as e:
                TokenSettings(keys)
            self.assertEqual(str(e.exception), message)

    def test_audience_and_issuer(self) -> None:
        """The audience is checked by default (securenet), and so is the issuer."""
        self.assertEqual((self.settings.audience, self.settings.issuer), ("securenet", "securenet"))
        with self.assertRaises(InvalidTokenSettings):
            TokenSettings([self.key], audience="")
        with self.assertRaises(InvalidTokenSettings):
            TokenSettings([self.key], issuer="")

    def test_algorithms_are_the_keys(self) -> None:
        hs = TokenKey.hmac(b"s" * 32, kid="h")
        self.assertEqual(TokenSettings([self.key, hs]).algorithms, ("EdDSA", "HS256"))


class IssueAndVerifyTests(TokenTestCase):
    """Tokens from L{TokenIssuer} are accepted, with their claims available."""

    def test_valid(self) -> None:
        token = self.issuer.issue("alice", ttl=600, scopes=["read", "write"])
        verified = self.accepted(token)
        self.assertEqual((verified.subject, verified.scopes), ("alice", ("read", "write")))
        self.assertEqual((verified.issued_at, verified.expires), (NOW, NOW + 600))
        self.assertEqual(verified.claims["aud"], "securenet")
        self.assertEqual(verified.claims["iss"], "securenet")

    def test_request_avatar_id_sets_verified(self) -> None:
        """The avatar id is the subject; the claims land on PresentedToken.verified."""
        token = self.issuer.issue("alice", ttl=600, scopes=["read"])
        credentials = PresentedToken(token)
        self.assertIsNone(credentials.verified)
        self.assertEqual(self.successResultOf(self.checker.requestAvatarId(credentials)), "alice")
        assert credentials.verified is not None
        self.assertEqual(credentials.verified.scopes, ("read",))

    def test_plain_token_credentials(self) -> None:
        """The contract's frozen TokenCredentials work too (no claims attached)."""
        token = self.issuer.issue("alice", ttl=600)
        self.assertEqual(self.successResultOf(self.checker.requestAvatarId(TokenCredentials(token))), "alice")

    def test_through_portal(self) -> None:
        portal = Portal(IdentityRealm(), [self.checker])
        token = self.issuer.issue("alice", ttl=600)
        _, identity, _ = self.successResultOf(
            defer.maybeDeferred(portal.login, PresentedToken(token), AuthenticationContext("OAUTHBEARER", "peer"), IIdentity)
        )
        self.assertEqual(cast(IIdentity, identity).avatar_id, "alice")

    def test_jti_is_random(self) -> None:
        a, b = (self.accepted(self.issuer.issue("alice", ttl=60)).jti for _ in range(2))
        self.assertNotEqual(a, b)
        self.assertRegex(a, r"\A[0-9a-f]{32}\Z")

    def test_eddsa_es256_hs256(self) -> None:
        """Each supported algorithm issues and verifies; a key's kid goes in the header."""
        keys = [
            TokenKey.private(ed25519.Ed25519PrivateKey.generate(), kid="ed"),
            TokenKey.private(ec.generate_private_key(ec.SECP256R1()), kid="ec"),
            TokenKey.hmac(os.urandom(32), kid="hs"),
        ]
        for key in keys:
            token = TokenIssuer(TokenSettings([key]), self.clock).issue("alice", ttl=60)
            self.assertEqual(jwt.get_unverified_header(token), {"alg": key.algorithm, "typ": "JWT", "kid": key.kid})
            public = key.verification_key
            # the verifier holds only the public key
            verify_key = key if isinstance(public, bytes) else TokenKey.public(public, kid=key.kid)
            checker = TokenChecker(TokenSettings([verify_key]), self.store, self.clock)
            self.assertEqual(self.accepted(token, checker).subject, "alice")

    def test_issue_refuses_bad_arguments(self) -> None:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"ttl": 0}, "token ttl must be a whole number of seconds, at least 1, not 0"),
            ({"ttl": 1.5}, "token ttl must be a whole number of seconds, at least 1, not 1.5"),
            (
                {"ttl": 60, "scopes": ["a b"]},
                "invalid scope 'a b': a scope is printable ASCII without spaces, quotes or backslashes",
            ),
            ({"ttl": 60, "extra_claims": {"exp": 1, "name": "x"}}, "extra_claims may not set exp"),
        ]
        for kwargs, message in cases:
            with self.assertRaises(ValueError) as e:
                self.issuer.issue("alice", **kwargs)
            self.assertEqual(str(e.exception), message)
        with self.assertRaises(ValueError):
            self.issuer.issue("", ttl=60)

    def test_extra_claims(self) -> None:
        token = self.issuer.issue("alice", ttl=60, extra_claims={"name": "Alice"})
        self.assertEqual(self.accepted(token).claims["name"], "Alice")

    def test_issuer_needs_a_signing_key(self) -> None:
        verify_only = TokenSettings([TokenKey.public(ed25519.Ed25519PrivateKey.generate().public_key())])
        with self.assertRaises(InvalidTokenSettings) as e:
            TokenIssuer(verify_only, self.clock)
        self.assertEqual(str(e.exception), "token settings have no signing key")
        with self.assertRaises(InvalidTokenSettings) as e:
            TokenIssuer(self.settings, self.clock, kid="nope")
        self.assertEqual(str(e.exception), "no signing key with kid 'nope'")

    def test_interfaces(self) -> None:
        self.assertTrue(verifyObject(ICredentialsChecker, self.checker))
        offered = offered_mechanisms(Portal(IdentityRealm(self.store), [self.checker]), False, ChannelBindings())
        self.assertEqual(list(offered), ["OAUTHBEARER"])
        factory = offered["OAUTHBEARER"]
        self.assertTrue(verifyObject(IMechanismFactory, factory))
        self.assertEqual((factory.name, factory.second_factor_allowed), ("OAUTHBEARER", False))


class TimeTests(TokenTestCase):
    """exp, iat and nbf are judged against the injected clock with the leeway."""

    def test_expired(self) -> None:
        """Valid until exp + leeway (30 s), refused from then on."""
        token = self.issuer.issue("alice", ttl=600)
        self.clock.advance(629)
        self.accepted(token)
        self.clock.advance(1)
        self.assertRefused(token, "token expired")

    def test_zero_leeway(self) -> None:
        checker = TokenChecker(TokenSettings([self.key], leeway=0), self.store, self.clock)
        token = self.issuer.issue("alice", ttl=600)
        self.clock.advance(599)
        self.accepted(token, checker)
        self.clock.advance(1)
        self.assertRefused(token, "token expired", checker)

    def test_iat_in_the_future(self) -> None:
        """A token issued by a clock up to the leeway ahead is accepted; further ahead, refused."""
        self.accepted(self.sign(self.claims(iat=NOW + 30)))
        self.assertRefused(self.sign(self.claims(iat=NOW + 31)), "token issued in the future")

    def test_lifetime_is_bounded(self) -> None:
        """A validly signed token meant to live longer than max_lifetime (default a day) is refused."""
        self.accepted(self.sign(self.claims(exp=NOW + 24 * 3600)))
        self.assertRefused(
            self.sign(self.claims(exp=NOW + 100 * 366 * 24 * 3600)),
            f"token lifetime {100 * 366 * 24 * 3600} s is longer than the maximum 86400 s",
        )
        self.assertRefused(
            self.sign(self.claims(exp=NOW + 24 * 3600 + 1)), "token lifetime 86401 s is longer than the maximum 86400 s"
        )
        longer = TokenChecker(TokenSettings([self.key], max_lifetime=7 * 24 * 3600), self.store, self.clock)
        self.accepted(self.sign(self.claims(exp=NOW + 7 * 24 * 3600)), longer)

    def test_issuer_never_issues_what_is_refused(self) -> None:
        with self.assertRaises(ValueError) as e:
            self.issuer.issue("alice", ttl=24 * 3600 + 1)
        self.assertEqual(str(e.exception), "token ttl 86401 s is longer than the maximum lifetime 86400 s")

    def test_max_lifetime_is_validated(self) -> None:
        for bad in (0, -1, True, "3600", 367 * 24 * 3600):
            with self.assertRaises(InvalidTokenSettings):
                TokenSettings([self.key], max_lifetime=bad)  # type: ignore[arg-type]

    def test_nbf(self) -> None:
        self.accepted(self.sign(self.claims(nbf=NOW + 30)))
        self.assertRefused(self.sign(self.claims(nbf=NOW + 31)), "token not yet valid")

    def test_the_wall_clock_is_not_used(self) -> None:
        """A token valid only at the fake clock's time (2027) is accepted, one expired then is not."""
        self.accepted(self.sign(self.claims()))
        self.assertRefused(self.sign(self.claims(exp=NOW - 31)), "token expired")

    def test_callable_clock(self) -> None:
        checker = TokenChecker(self.settings, self.store, lambda: NOW + 1000.0)
        self.assertRefused(self.sign(self.claims()), "token expired", checker)


class ClaimTests(TokenTestCase):
    """Each required claim, and aud/iss checks."""

    def test_missing_claims(self) -> None:
        """No exp (PyJWT would accept that), no jti, no sub, no iat, no aud, no iss: refused."""
        for name in ("exp", "jti", "sub", "iat", "aud", "iss"):
            self.assertRefused(self.sign(self.claims(**{name: DROP})), f"missing {name} claim")

    def test_malformed_times(self) -> None:
        """Non-numbers, booleans, NaN and infinity (which would never compare as expired) are refused."""
        for bad in ("1900000000", True, None, float("nan"), float("inf"), [NOW], 10**400):
            self.assertRefused(self.sign(self.claims(exp=bad)), "malformed exp claim")
            self.assertRefused(self.sign(self.claims(iat=bad)), "malformed iat claim")

    def test_malformed_names(self) -> None:
        for bad in ("", 7, None, "x" * 257):
            self.assertRefused(self.sign(self.claims(sub=bad)), "malformed sub claim")
            self.assertRefused(self.sign(self.claims(jti=bad)), "malformed jti claim")

    def test_wrong_audience(self) -> None:
        self.assertRefused(self.sign(self.claims(aud="other")), "wrong audience")
        self.assertRefused(self.sign(self.claims(aud=["other", "another"])), "wrong audience")
        self.assertRefused(self.sign(self.claims(aud=7)), "malformed aud claim")
        self.accepted(self.sign(self.claims(aud=["other", "securenet"])))

    def test_configured_audience(self) -> None:
        checker = TokenChecker(TokenSettings([self.key], audience="billing"), self.store, self.clock)
        self.assertRefused(self.sign(self.claims()), "wrong audience", checker)
        self.accepted(self.sign(self.claims(aud="billing")), checker)

    def test_wrong_issuer(self) -> None:
        self.assertRefused(self.sign(self.claims(iss="https://evil.example")), "wrong issuer")
        checker = TokenChecker(TokenSettings([self.key], issuer="https://idp.example"), self.store, self.clock)
        self.assertRefused(self.sign(self.claims()), "wrong issuer", checker)
        self.accepted(self.sign(self.claims(iss="https://idp.example")), checker)

    def test_issuer_not_checked_when_none(self) -> None:
        checker = TokenChecker(TokenSettings([self.key], issuer=None), self.store, self.clock)
        self.accepted(self.sign(self.claims(iss=DROP)), checker)

    def test_scope_claim(self) -> None:
        self.assertEqual(self.accepted(self.sign(self.claims(scope="a  b a"))).scopes, ("a", "b"))
        self.assertEqual(self.accepted(self.sign(self.claims())).scopes, ())
        for bad in (["a"], 'a"b', "a\\b"):
            self.assertRefused(self.sign(self.claims(scope=bad)), "malformed scope claim")

    def test_payload_not_an_object(self) -> None:
        payload = b"[1, 2]"
        signing_key: Any = self.key.signing_key
        token = jwt.PyJWS().encode(payload, signing_key, algorithm="EdDSA")
        self.assertRefused(token, "malformed token")


class SignatureTests(TokenTestCase):
    """alg=none, algorithm confusion, tampering, malformed tokens."""

    def test_alg_none(self) -> None:
        """An unsigned token (alg none, empty signature) is refused, whatever its case."""
        for alg in ("none", "None", "NONE"):
            token = f"{segment({'alg': alg, 'typ': 'JWT'})}.{segment(self.claims())}."
            self.assertRefused(token, f"algorithm {alg!r} not allowed")

    def test_missing_alg(self) -> None:
        token = f"{segment({'typ': 'JWT'})}.{segment(self.claims())}.{b64(b'x' * 64)}"
        self.assertRefused(token, "algorithm None not allowed")

    def test_hs256_with_the_public_key_as_secret(self) -> None:
        """
        The classic confusion attack: a verifier configured for EdDSA or ES256
        receives an HS256 token keyed with its own public key (PEM, DER or raw
        bytes).  Refused before any MAC is computed.
        """
        ec_key = TokenKey.private(ec.generate_private_key(ec.SECP256R1()))
        for key in (self.key, ec_key):
            checker = TokenChecker(TokenSettings([key]), self.store, self.clock)
            assert not isinstance(key.verification_key, bytes)
            der = key.verification_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            secrets = [public_pem(key), der] + ([public_raw(key)] if key is self.key else [])
            for secret in secrets:
                token = hs256_by_hand({"alg": "HS256", "typ": "JWT"}, self.claims(), secret)
                self.assertRefused(token, "algorithm 'HS256' not allowed", checker)

    def test_confusion_in_a_mixed_key_set(self) -> None:
        """Even with HS256 allowed for one kid, a token must use the algorithm of the key its kid names."""
        ed = attrs.evolve(self.key, kid="ed")
        hs = TokenKey.hmac(os.urandom(32), kid="hs")
        checker = TokenChecker(TokenSettings([ed, hs]), self.store, self.clock)
        forged = hs256_by_hand({"alg": "HS256", "kid": "ed"}, self.claims(), public_pem(ed))
        self.assertRefused(forged, "algorithm HS256 does not match the EdDSA key", checker)
        swapped = self.sign(self.claims(), ed, kid="hs")
        self.assertRefused(swapped, "algorithm EdDSA does not match the HS256 key", checker)
        self.accepted(self.sign(self.claims(), ed, kid="ed"), checker)
        self.accepted(self.sign(self.claims(), hs, kid="hs"), checker)

    def test_tampered_signature(self) -> None:
        token = self.issuer.issue("alice", ttl=600)
        head, body, signature = token.split(".")
        raw = bytearray(unb64(signature))
        raw[10] ^= 0x01
        self.assertRefused(f"{head}.{body}.{b64(bytes(raw))}", "bad signature")

    def test_tampered_payload(self) -> None:
        token = self.issuer.issue("alice", ttl=600)
        head, body, signature = token.split(".")
        claims = json.loads(unb64(body))
        claims["sub"] = "mallory"
        self.assertRefused(f"{head}.{segment(claims)}.{signature}", "bad signature")

    def test_signed_by_another_key(self) -> None:
        other = TokenKey.private(ed25519.Ed25519PrivateKey.generate())
        self.assertRefused(self.sign(self.claims(), other), "bad signature")

    def test_wrong_hmac_secret(self) -> None:
        hs = TokenKey.hmac(b"a" * 32)
        checker = TokenChecker(TokenSettings([hs]), self.store, self.clock)
        self.accepted(self.sign(self.claims(), hs), checker)
        self.assertRefused(self.sign(self.claims(), TokenKey.hmac(b"b" * 32)), "bad signature", checker)

    def test_malformed(self) -> None:
        valid = self.issuer.issue("alice", ttl=600)
        for token in ("", "abc", "a.b", "a.b.c", valid + ".x", "x" * 9000, valid.replace("e", "é", 1), "..."):
            self.assertRefused(token, "malformed token")

    def eddsa_by_hand(self, header: dict[str, Any], payload: str) -> str:
        """Sign C{header} and C{payload} (already encoded) with the Ed25519 key, bypassing PyJWT's checks."""
        signing_key = self.key.signing_key
        assert isinstance(signing_key, ed25519.Ed25519PrivateKey)
        signing_input = f"{segment(header)}.{payload}"
        return f"{signing_input}.{b64(signing_key.sign(signing_input.encode()))}"

    def test_by_hand_baseline(self) -> None:
        """The hand-signing below produces accepted tokens when nothing is wrong."""
        self.accepted(self.eddsa_by_hand({"alg": "EdDSA"}, segment(self.claims())))

    def test_critical_headers_refused(self) -> None:
        """We implement no JWS extension: crit (and the unencoded-payload b64 option) are refused."""
        self.assertRefused(self.sign(self.claims(), crit=["exp"], exp=1), "malformed token")
        detached = self.eddsa_by_hand({"alg": "EdDSA", "b64": False, "crit": ["b64"]}, json.dumps(self.claims()))
        head, _, signature = detached.split(".")
        self.assertRefused(f"{head}..{signature}", "unsupported critical header")

    def test_unknown_kid(self) -> None:
        """A kid is only looked up in the key set: unknown names, paths and URLs are refused."""
        for kid in ("nope", "../../../../etc/passwd", "https://evil.example/jwks.json"):
            self.assertRefused(self.sign(self.claims(), kid=kid), f"unknown kid {kid!r}")

    def test_kid_required_when_every_key_has_one(self) -> None:
        named = attrs.evolve(self.key, kid="k1")
        checker = TokenChecker(TokenSettings([named]), self.store, self.clock)
        self.assertRefused(self.sign(self.claims()), "token has no kid", checker)
        self.accepted(self.sign(self.claims(), kid="k1"), checker)

    def test_kid_must_be_a_string(self) -> None:
        self.assertRefused(self.eddsa_by_hand({"alg": "EdDSA", "kid": 7}, segment(self.claims())), "malformed token")
        self.assertRefused(self.eddsa_by_hand({"alg": "EdDSA", "kid": None}, segment(self.claims())), "malformed token")

    def test_jwk_and_jku_headers_ignored(self) -> None:
        """A token carrying its own key (jwk/jku) is still checked against the configured key only."""
        attacker = TokenKey.private(ed25519.Ed25519PrivateKey.generate())
        token = self.sign(
            self.claims(),
            attacker,
            jku="https://evil.example/jwks",
            jwk={"kty": "OKP", "crv": "Ed25519", "x": b64(public_raw(attacker))},
        )
        self.assertRefused(token, "bad signature")


class StoreTests(TokenTestCase):
    """Revocation by jti and disabled users."""

    def test_revoked(self) -> None:
        token = self.issuer.issue("alice", ttl=600)
        jti = self.accepted(token).jti
        expires = datetime.datetime.fromtimestamp(NOW + 600, datetime.UTC)
        self.successResultOf(self.store.revoke_token(jti, expires))
        self.assertRefused(token, "token revoked")
        self.accepted(self.issuer.issue("alice", ttl=600))

    def test_disabled_user(self) -> None:
        token = self.issuer.issue("alice", ttl=600)
        self.store.users["alice"] = User("alice", disabled=True)
        self.assertRefused(token, "user disabled")

    def test_subject_without_user_record(self) -> None:
        """With a store, a subject the store does not know is refused: deleting a user revokes their tokens."""
        self.assertRefused(self.issuer.issue("svc-backup", ttl=60), "no user 'svc-backup' in the credential database")
        token = self.issuer.issue("alice", ttl=60)
        self.accepted(token)
        del self.store.users["alice"]
        self.assertRefused(token, "no user 'alice' in the credential database")

    def test_no_store(self) -> None:
        """Without a store (an external issuer's tokens) any subject is accepted."""
        checker = TokenChecker(self.settings, None, self.clock)
        self.accepted(self.issuer.issue("alice", ttl=60), checker)
        self.assertEqual(self.accepted(self.issuer.issue("svc-backup", ttl=60), checker).subject, "svc-backup")

    def test_no_store_lookup_for_forged_tokens(self) -> None:
        """Revocation is looked up only for tokens whose signature and claims passed."""
        calls: list[str] = []

        class Spy(MemoryStore):
            def is_token_revoked(self, jti: str) -> defer.Deferred[bool]:
                calls.append(jti)
                return super().is_token_revoked(jti)

        checker = TokenChecker(self.settings, Spy(), self.clock)
        self.assertRefused(
            self.sign(self.claims(), TokenKey.private(ed25519.Ed25519PrivateKey.generate())), "bad signature", checker
        )
        self.assertRefused(self.sign(self.claims(exp=NOW - 100)), "token expired", checker)
        self.assertEqual(calls, [])


class OAuthBearerTests(TokenTestCase):
    """RFC 7628 message parsing, the server mechanism, the client mechanism."""

    def message(self, token: str, user: str | None = "alice") -> bytes:
        gs2 = f"n,a={user}," if user is not None else "n,,"
        return f"{gs2}\x01host=server.example\x01port=143\x01auth=Bearer {token}\x01\x01".encode()

    def test_parse_valid(self) -> None:
        token = self.issuer.issue("alice", ttl=60)
        self.assertEqual(parse_oauthbearer(self.message(token)), PresentedToken(token, authzid="alice"))
        self.assertEqual(parse_oauthbearer(self.message(token, None)), PresentedToken(token))
        self.assertEqual(parse_oauthbearer(f"y,,\x01auth=bearer {token}\x01\x01".encode()).token, token)
        self.assertEqual(parse_oauthbearer(b"n,a=a=2Cb=3Dc,\x01auth=Bearer t0k\x01\x01").authzid, "a,b=c")

    def test_parse_malformed(self) -> None:
        t = "abc.def.ghi"
        cases = {
            b"": "OAUTHBEARER: missing GS2 header",
            f"\x01auth=Bearer {t}\x01\x01".encode(): "OAUTHBEARER: missing GS2 header",
            f"p=tls-exporter,,\x01auth=Bearer {t}\x01\x01".encode(): "OAUTHBEARER: channel binding is not supported",
            f"x,,\x01auth=Bearer {t}\x01\x01".encode(): "OAUTHBEARER: bad GS2 channel-binding flag",
            f"n,u=alice,\x01auth=Bearer {t}\x01\x01".encode(): "OAUTHBEARER: bad GS2 authorization id field",
            f"n,a=,\x01auth=Bearer {t}\x01\x01".encode(): "OAUTHBEARER: empty authorization id",
            f"n,a=al=ice,\x01auth=Bearer {t}\x01\x01".encode(): "OAUTHBEARER: bad escape in the authorization id",
            f"n,,auth=Bearer {t}\x01\x01".encode(): "OAUTHBEARER: key/value pairs are not framed by ^A",
            f"n,,\x01auth=Bearer {t}\x01".encode(): "OAUTHBEARER: key/value pairs are not framed by ^A",
            f"n,,\x01auth=Bearer {t}".encode(): "OAUTHBEARER: key/value pairs are not framed by ^A",
            b"n,,\x01\x01": "OAUTHBEARER: no auth=Bearer <token>",
            b"n,,\x01host=x\x01\x01": "OAUTHBEARER: no auth=Bearer <token>",
            f"n,,\x01auth=Basic {t}\x01\x01".encode(): "OAUTHBEARER: auth is not 'Bearer <token>'",
            f"n,,\x01auth=Bearer {t} x\x01\x01".encode(): "OAUTHBEARER: auth is not 'Bearer <token>'",
            b"n,,\x01auth=Bearer \x01\x01": "OAUTHBEARER: auth is not 'Bearer <token>'",
            f"n,,\x01auth=Bearer {t}\x01auth=Bearer {t}\x01\x01".encode(): "OAUTHBEARER: 'auth' given twice",
            f"n,,\x01noequals\x01auth=Bearer {t}\x01\x01".encode(): "OAUTHBEARER: malformed key/value pair",
            f"n,,\x01ho-st=x\x01auth=Bearer {t}\x01\x01".encode(): "OAUTHBEARER: malformed key/value pair",
            f"n,,\x01host=\x00\x01auth=Bearer {t}\x01\x01".encode(): "OAUTHBEARER: malformed key/value pair",
            b"n,a=\xff,\x01auth=Bearer t\x01\x01": "OAUTHBEARER: message is not UTF-8",
            b"n,,\x01auth=Bearer " + b"a" * 10000 + b"\x01\x01": "OAUTHBEARER: message too long",
        }
        for message, error in cases.items():
            with self.assertRaises(MechanismError, msg=repr(message)) as e:
                parse_oauthbearer(message)
            self.assertEqual(str(e.exception), error, repr(message))

    def test_authzid_must_be_the_subject(self) -> None:
        token = self.issuer.issue("alice", ttl=60)
        self.assertEqual(self.successResultOf(self.checker.requestAvatarId(parse_oauthbearer(self.message(token)))), "alice")
        mallory = parse_oauthbearer(self.message(token, "mallory"))
        failure = self.failureResultOf(self.checker.requestAvatarId(mallory), TokenRefused)
        self.assertEqual(failure.value.reason, "authorization id does not match the token subject")
        self.assertIsNone(mallory.verified)

    def test_server_mechanism(self) -> None:
        token = self.issuer.issue("alice", ttl=60)
        factory = OAuthBearerMechanismFactory()
        mechanism = factory(ChannelBindings(), "peer")
        self.assertTrue(verifyObject(IServerMechanism, mechanism))
        step = self.successResultOf(mechanism.step(self.message(token)))
        self.assertEqual(step, Complete(PresentedToken(token, authzid="alice")))
        self.failureResultOf(mechanism.step(b"more"), MechanismError)

    def test_server_mechanism_without_initial_response(self) -> None:
        token = self.issuer.issue("alice", ttl=60)
        mechanism = OAuthBearerMechanismFactory()(ChannelBindings(), "peer")
        self.assertEqual(self.successResultOf(mechanism.step(None)), Challenge(b""))
        self.failureResultOf(OAuthBearerMechanismFactory()(ChannelBindings(), "peer").step(b"junk"), MechanismError)
        step = self.successResultOf(mechanism.step(self.message(token, None)))
        assert isinstance(step, Complete)
        self.assertEqual(step.credentials.token, token)

    def test_server_mechanism_none_twice(self) -> None:
        mechanism = OAuthBearerMechanismFactory()(ChannelBindings(), "peer")
        mechanism.step(None)
        self.failureResultOf(mechanism.step(None), MechanismError)

    def test_client_mechanism_round_trip(self) -> None:
        token = self.issuer.issue("alice", ttl=60)
        for user in (None, "alice", "a,b=c"):
            client = OAuthBearerClientMechanism(token, user=user)
            self.assertTrue(verifyObject(IClientMechanism, client))
            initial = client.initial()
            assert initial is not None
            self.assertEqual(parse_oauthbearer(initial), PresentedToken(token, authzid=user))
        client = OAuthBearerClientMechanism(token, user="alice")
        credentials = parse_oauthbearer(client.respond(b""))
        self.assertEqual(self.successResultOf(self.checker.requestAvatarId(credentials)), "alice")

    def test_client_mechanism_errors(self) -> None:
        client = OAuthBearerClientMechanism("abc")
        self.assertEqual(client.respond(b'{"status":"invalid_token"}'), b"\x01")
        with self.assertRaises(MechanismError):
            client.respond(b"hello")
        with self.assertRaises(MechanismError):
            OAuthBearerClientMechanism("has space").initial()
        with self.assertRaises(MechanismError):
            OAuthBearerClientMechanism("abc", user="").initial()
        client.verify_success(None)
        with self.assertRaises(MechanismError):
            client.verify_success(b"x")
        self.assertNotIn("abc", repr(client))


class KeyFileTests(TokenTestCase):
    """Loading token keys from files (what --auth jwt and the CLI read)."""

    def path(self, data: bytes, mode: int = 0o600) -> Path:
        path = Path(self.mktemp())
        path.write_bytes(data)
        os.chmod(path, mode)
        return path

    def test_public_keys(self) -> None:
        ed = self.key
        es = TokenKey.private(ec.generate_private_key(ec.SECP256R1()))
        for key in (ed, es):
            loaded = load_verification_key(self.path(public_pem(key), 0o644))
            self.assertEqual((loaded.algorithm, loaded.signing_key), (key.algorithm, None))
            self.assertEqual(load_verification_key(self.path(public_pem(key), 0o644), key.algorithm).algorithm, key.algorithm)

    def test_public_key_algorithm_mismatch(self) -> None:
        path = self.path(public_pem(self.key), 0o644)
        with self.assertRaises(InvalidTokenKey) as e:
            load_verification_key(path, "ES256")
        self.assertEqual(str(e.exception), f"{path}: holds an Ed25519 (EdDSA) key, not a P-256 (ES256) key")

    def test_hs256_secret_file(self) -> None:
        path = self.path(b"s" * 40 + b"\n")
        key = load_verification_key(path, "HS256")
        self.assertEqual(key.verification_key, b"s" * 40)
        self.assertEqual(load_signing_key(path).algorithm, "HS256")

    def test_hs256_secret_file_permissions(self) -> None:
        path = self.path(b"s" * 40, 0o644)
        with self.assertRaises(InsecurePermissions):
            load_verification_key(path, "HS256")
        with self.assertRaises(InsecurePermissions):
            load_signing_key(path)

    def test_hs256_secret_file_too_short(self) -> None:
        path = self.path(b"s" * 31 + b"\n")
        with self.assertRaises(InvalidTokenKey) as e:
            load_verification_key(path, "HS256")
        self.assertEqual(str(e.exception), f"{path}: HS256 secret is 31 bytes; it must be at least 32 (256 bits)")

    def test_hs256_never_guessed(self) -> None:
        """A non-PEM file is not taken as an HMAC secret unless HS256 was asked for."""
        path = self.path(b"s" * 40)
        with self.assertRaises(FileCorrupt) as e:
            load_verification_key(path)
        self.assertEqual(str(e.exception), f"{path}: not a PEM public key (for an HMAC secret file, say alg=HS256)")

    def test_public_key_as_hs256_secret(self) -> None:
        with self.assertRaises(InvalidTokenKey):
            load_verification_key(self.path(public_pem(self.key)), "HS256")

    def test_private_key_given_to_verifier(self) -> None:
        path = Path(self.mktemp())
        assert not isinstance(self.key.signing_key, bytes) and self.key.signing_key is not None
        write_private_key(path, self.key.signing_key)
        with self.assertRaises(InvalidTokenKey) as e:
            load_verification_key(path)
        self.assertEqual(
            str(e.exception),
            f"{path}: is a private key; a verifier needs only the public key (the .pub file of 'securenet tokens keygen')",
        )
        self.assertEqual(load_signing_key(path).algorithm, "EdDSA")

    def test_public_key_given_to_issuer(self) -> None:
        path = self.path(public_pem(self.key), 0o644)
        with self.assertRaises(InvalidTokenKey) as e:
            load_signing_key(path)
        self.assertEqual(str(e.exception), f"{path}: is a public key; issuing tokens needs the private key")

    def test_missing_file(self) -> None:
        with self.assertRaises(FileMissing):
            load_verification_key(Path(self.mktemp()))


class StrcredTests(TokenTestCase):
    """C{--auth jwt:...}."""

    def pub(self) -> Path:
        path = Path(self.mktemp())
        path.write_bytes(public_pem(self.key))
        return path

    def test_generate(self) -> None:
        checker = jwtCheckerFactory.generateChecker(f"key={self.pub()},audience=billing,issuer=idp,leeway=10")
        self.assertIsInstance(checker, TokenChecker)
        self.assertEqual(
            (checker.settings.audience, checker.settings.issuer, checker.settings.leeway, checker.settings.algorithms),
            ("billing", "idp", 10, ("EdDSA",)),
        )
        self.assertIsNone(checker.store)

    def test_defaults(self) -> None:
        checker = jwtCheckerFactory.generateChecker(f"key={self.pub()},alg=EdDSA")
        self.assertEqual(
            (checker.settings.audience, checker.settings.issuer, checker.settings.leeway), ("securenet", "securenet", 30)
        )

    def test_db(self) -> None:
        opened: list[tuple[str, str]] = []
        store = MemoryStore()

        def open_store(path: str, auth_type: str) -> ICredentialStore:
            opened.append((path, auth_type))
            return store

        self.patch(securenet.cred._strcred, "open_store", open_store)
        checker = jwtCheckerFactory.generateChecker(f"key={self.pub()},db=creds.db")
        self.assertIs(checker.store, store)
        self.assertEqual(opened, [("creds.db", "jwt")])

    def test_errors(self) -> None:
        pub = self.pub()
        cases = {
            "": "--auth jwt: key=PATH is required (a PEM public key or, with alg=HS256, a secret file)",
            f"key={pub},leeway=soon": "--auth jwt: leeway='soon' is not a number of seconds",
            f"key={pub},leeway=301": "--auth jwt: leeway must be between 0 and 300 seconds, not 301.0",
            f"key={pub},alg=none": "--auth jwt: token algorithm 'none' is not allowed; choose one of EdDSA, ES256, HS256",
            f"key={pub},alg=ES256": f"--auth jwt: {pub}: holds an Ed25519 (EdDSA) key, not a P-256 (ES256) key",
            f"key={pub},audience=": "--auth jwt: the token audience must be a non-empty string",
            f"key={pub},kid=x": (
                "--auth jwt: unknown option 'kid'; known: alg, audience, db, issuer, key, leeway, max_lifetime, overlap"
            ),
            "key=/nonexistent/k.pub": "--auth jwt: /nonexistent/k.pub: token key file does not exist",
        }
        for argstring, message in cases.items():
            with self.assertRaises(CheckerArgumentError, msg=argstring) as e:
                jwtCheckerFactory.generateChecker(argstring)
            self.assertEqual(str(e.exception), message)

    def test_factory_attributes(self) -> None:
        self.assertEqual(jwtCheckerFactory.authType, "jwt")
        from securenet.interfaces import ITokenCredentials

        self.assertEqual(jwtCheckerFactory.credentialInterfaces, (ITokenCredentials,))


class WireTests(TokenTestCase):
    """OAUTHBEARER through the real exchange, TLS in memory (securenet.testing)."""

    def login(self, mechanism: OAuthBearerClientMechanism) -> tuple[list[object], list[Any]]:
        identities: list[Any] = []

        class App(Protocol):
            def connectionMade(self) -> None:
                identities.append(identity_of(self))

        pki = EphemeralPKI.create()
        portal = Portal(IdentityRealm(self.store), [self.checker])
        conn = connect_in_memory(
            server_policy=pki.server_policy(),
            client_policy=pki.client_policy(),
            server_factory=SessionFactory(Factory.forProtocol(App), portal, self.clock),
            client_factory=Factory.forProtocol(Protocol),
            clock=self.clock,
            mechanism=mechanism,
        )
        conn.pump.flush()
        ready: list[object] = []
        conn.client_ready.addBoth(ready.append)
        return ready, identities

    def test_accepted(self) -> None:
        token = self.issuer.issue("alice", ttl=600)
        ready, identities = self.login(OAuthBearerClientMechanism(token, user="alice"))
        self.assertEqual([(i.avatar_id, i.mechanism) for i in identities], [("alice", "OAUTHBEARER")])
        self.assertNotIsInstance(ready[0], Failure)

    def test_refused(self) -> None:
        token = self.issuer.issue("alice", ttl=600)
        self.clock.advance(700)
        ready, identities = self.login(OAuthBearerClientMechanism(token))
        self.assertEqual(identities, [])
        [failure] = ready
        assert isinstance(failure, Failure)
        failure.trap(AuthenticationFailed)
        self.assertEqual(cast(AuthenticationFailed, failure.value).code, "AUTH-FAILED")


class RotationTests(TokenTestCase):
    """L{TokenSettings.rotated}, C{default_kid} and C{retiring}: a key set that rotates, judged by the clock."""

    def named(self) -> TokenKey:
        return TokenKey.private(ed25519.Ed25519PrivateKey.generate(), kid=os.urandom(8).hex())

    def test_default_kid(self) -> None:
        """A token without a kid is verified by the default key; one naming it by kid too."""
        key = attrs.evolve(self.key, kid="k1")
        checker = TokenChecker(TokenSettings([key], default_kid="k1"), self.store, self.clock)
        self.accepted(self.sign(self.claims()), checker)
        self.accepted(self.sign(self.claims(), kid="k1"), checker)
        self.assertRefused(self.sign(self.claims(), kid="k2"), "unknown kid 'k2'", checker)

    def test_settings_rules(self) -> None:
        one, two = attrs.evolve(self.key, kid="k1"), self.named()
        verify_only = attrs.evolve(two, signing_key=None)
        cases = [
            (dict(keys=[one], default_kid="k9"), "the default kid 'k9' names no key"),
            (
                dict(keys=[one, TokenKey.public(cast(Any, self.key.verification_key))], default_kid="k1"),
                "with a default kid every token key needs a kid",
            ),
            (dict(keys=[one, verify_only], default_kid="k1", retiring={"k1": NOW}), "the default key cannot be retiring"),
            (dict(keys=[one, verify_only], default_kid="k1", retiring={"k9": NOW}), "retiring kid 'k9' names no key"),
            (dict(keys=[one, two], default_kid="k1", retiring={two.kid: NOW}), f"retiring key {two.kid!r} must be verify-only"),
            (
                dict(keys=[one, verify_only], default_kid="k1", retiring={two.kid: float("nan")}),
                f"retiring key {two.kid!r}: not a time: nan",
            ),
        ]
        for kwargs, message in cases:
            arguments = dict(cast(dict[str, Any], kwargs))
            keys = arguments.pop("keys")
            with self.assertRaises(InvalidTokenSettings) as e:
                TokenSettings(keys, **arguments)
            self.assertEqual(str(e.exception), message)

    def test_rotated(self) -> None:
        """The new key is the default and the only signing key; the old one verifies its tokens until the overlap ends."""
        old, new = self.named(), self.named()
        settings = TokenSettings([old], default_kid=old.kid)
        rotated = settings.rotated(new, at=NOW, overlap=600)
        self.assertEqual(rotated.default_kid, new.kid)
        self.assertEqual([k.kid for k in rotated.keys], [new.kid, old.kid])
        self.assertEqual([k.kid for k in rotated.keys if k.signing_key is not None], [new.kid])
        self.assertEqual(dict(rotated.retiring), {old.kid: NOW + 600})
        self.assertEqual(TokenIssuer(rotated, self.clock).key.kid, new.kid)
        # The old key is still found until its time plus the leeway, then not.
        self.assertIsNotNone(rotated.key_for(old.kid, at=NOW + 600 + 29))
        self.assertIsNone(rotated.key_for(old.kid, at=NOW + 600 + 30))
        self.assertIsNotNone(rotated.key_for(old.kid))  # without a time, the set as configured
        self.assertEqual(settings.keys, (old,))  # the settings themselves are unchanged

    def test_rotation_in_a_checker(self) -> None:
        """Tokens naming the old key verify until the overlap ends, then are refused (unknown kid); tokens without a kid use the new key."""  # noqa: E501
        old, new = self.named(), self.named()
        checker = TokenChecker(TokenSettings([old], default_kid=old.kid), self.store, self.clock)
        by_old = self.sign(self.claims(exp=NOW + 3600), old, kid=old.kid)
        no_kid_old = self.sign(self.claims(exp=NOW + 3600), old)
        checker.settings = checker.settings.rotated(new, at=NOW, overlap=600)
        self.accepted(by_old, checker)
        self.accepted(self.sign(self.claims(), new, kid=new.kid), checker)
        self.accepted(self.sign(self.claims(), new), checker)
        self.assertRefused(no_kid_old, "bad signature", checker)
        self.clock.advance(600 + 29)
        self.accepted(by_old, checker)
        self.clock.advance(1)
        self.assertRefused(by_old, f"unknown kid {old.kid!r}", checker)

    def test_several_rotations(self) -> None:
        """Each replaced key keeps its own time; one whose time has passed is dropped at the next rotation."""
        one, two, three, four = (self.named() for _ in range(4))
        settings = TokenSettings([one], default_kid=one.kid).rotated(two, at=NOW, overlap=600)
        settings = settings.rotated(three, at=NOW + 100, overlap=600)
        self.assertEqual(dict(settings.retiring), {one.kid: NOW + 600, two.kid: NOW + 700})
        self.assertIsNotNone(settings.key_for(one.kid, at=NOW + 200))
        self.assertIsNone(settings.key_for(one.kid, at=NOW + 630))
        self.assertIsNotNone(settings.key_for(two.kid, at=NOW + 630))
        settings = settings.rotated(four, at=NOW + 640, overlap=600)
        self.assertEqual(dict(settings.retiring), {two.kid: NOW + 700, three.kid: NOW + 1240})
        self.assertEqual([k.kid for k in settings.keys], [four.kid, three.kid, two.kid])

    def test_same_key_and_rollback(self) -> None:
        """The same key again changes nothing; going back to a retiring key makes it current again."""
        one, two = self.named(), self.named()
        settings = TokenSettings([one], default_kid=one.kid)
        self.assertEqual(settings.rotated(one, at=NOW, overlap=600), settings)
        rotated = settings.rotated(two, at=NOW, overlap=600)
        back = rotated.rotated(one, at=NOW + 10, overlap=600)
        self.assertEqual((back.default_kid, dict(back.retiring)), (one.kid, {two.kid: NOW + 610}))
        self.assertIsNotNone(back.key_for(one.kid, at=NOW + 10_000))

    def test_zero_overlap(self) -> None:
        """overlap=0 drops the replaced key at once (a key that leaked)."""
        one, two = self.named(), self.named()
        rotated = TokenSettings([one], default_kid=one.kid).rotated(two, at=NOW, overlap=0)
        self.assertEqual(([k.kid for k in rotated.keys], dict(rotated.retiring)), ([two.kid], {}))

    def test_rotated_refusals(self) -> None:
        one = self.named()
        settings = TokenSettings([one], default_kid=one.kid)
        cases = [
            (settings, self.key, 600, "a key that replaces another needs a kid"),
            (TokenSettings([one]), self.named(), 600, "only settings with a default kid rotate their keys"),
            (settings, self.named(), -1, "the key overlap must be between 0 and 3.16224e+07 seconds, not -1"),
            (settings, self.named(), float("nan"), "the key overlap must be between 0 and 3.16224e+07 seconds, not nan"),
        ]
        for base, key, overlap, message in cases:
            with self.assertRaises(InvalidTokenSettings) as e:
                base.rotated(key, at=NOW, overlap=overlap)
            self.assertEqual(str(e.exception), message)
