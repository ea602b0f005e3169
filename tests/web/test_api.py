"""
securenet.web in memory: the strict JSON parser, the request authenticator
(bearer, Basic, API keys, client certificates), the resource wrapper and
the handler decorator, the token endpoints (login with TOTP, refresh
rotation and reuse detection, logout), the built-in API, and the
SecureSite's body limit and headers.

Requests go through a real C{HTTPChannel}: over a C{StringTransport} for
plain HTTP, over TLS joined in memory (C{securenet.testing}) for HTTPS and
client certificates, and through C{treq.testing.StubTreq} for a plain
C{Site}.  Stores are in memory and answer at once, so every answer is
there when the request has been fed in.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from typing import Any, cast

import attrs
import jwt
import pyotp
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyRequest

from securenet import audit
from securenet._threads import synchronous_runner
from securenet.authz import Policy
from securenet.cred._apikeys import create_api_key
from securenet.cred._identity import Identity
from securenet.cred._jwt import TokenChecker, TokenIssuer, TokenSettings
from securenet.cred._throttle import Throttle
from securenet.pki._tokenkeys import TokenKey
from securenet.sasl._oauthbearer import OAuthBearerClientMechanism
from securenet.session._server import identity_of
from securenet.store._errors import StoreUnavailable
from securenet.store._memory import MemoryRefreshStore
from securenet.testing import EphemeralPKI, connect_app_in_memory, connect_in_memory, memory_portal, totp_code, weak_hasher
from securenet.web import (
    BuiltinAPI,
    JSONBodyError,
    JSONEndpoint,
    JSONLimits,
    PayloadTooLarge,
    RefreshRefused,
    SecureSite,
    TokenService,
    Unauthorized,
    UnsupportedMediaType,
    WebAuthenticator,
    WebGuard,
    parse_json,
    read_json,
    read_json_object,
    request_identity,
)
from securenet.web._api import user_resource
from securenet.web._tokens import parse_refresh_token
from tests.support.audit import failing_sink

PKI = EphemeralPKI.create()
NOW = 1_800_000_000.0
BOB_TOTP = pyotp.random_base32()
CLIENT = IPv4Address("TCP", "127.0.0.1", 54321)
SERVER = IPv4Address("TCP", "127.0.0.1", 8443)

POLICY_TEXT = """
[roles.reader]
permissions = ["kv.read"]

[roles.admin]
permissions = ["admin.*", "kv.read"]
"""


# -- a tiny HTTP client ------------------------------------------------------------


@attrs.frozen
class Response:
    code: int
    reason: bytes
    headers: Mapping[str, tuple[str, ...]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[-1] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


def parse_response(data: bytes) -> Response:
    """One HTTP/1.1 response (Content-Length or chunked); a 100 Continue before it is an error."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        raise AssertionError(f"no complete response in {data[:200]!r}")
    lines = head.split(b"\r\n")
    _, code, reason = (lines[0].split(b" ", 2) + [b""])[:3]
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.setdefault(name.decode().strip().lower(), []).append(value.decode().strip())
    if "content-length" in headers:
        body = rest[: int(headers["content-length"][-1])]
    elif headers.get("transfer-encoding") == ["chunked"]:
        body = b""
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            body, rest = body + rest[:size], rest[size + 2 :]
    else:
        body = rest
    return Response(int(code), reason, {k: tuple(v) for k, v in headers.items()}, body)


def raw_request(
    method: str,
    path: str,
    *,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    length: int | None = None,
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body or method in ("POST", "PUT") or length is not None:
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Collector(Protocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)


def exchange_plain(site: Site, data: bytes) -> tuple[bytes, StringTransport]:
    """Feed one request to the site over a plain-HTTP StringTransport; the bytes answered."""
    protocol = site.buildProtocol(CLIENT)
    assert protocol is not None
    transport = StringTransport(hostAddress=SERVER, peerAddress=CLIENT)
    protocol.makeConnection(transport)
    protocol.dataReceived(data)
    return transport.value(), transport


def exchange_tls(site: Site, data: bytes, clock: Clock, client: str | None = None) -> bytes:
    """One request over TLS joined in memory (client certificates optional, verified by the PKI's CA)."""
    conn = connect_in_memory(
        server_policy=PKI.server_policy(client_auth="optional"),
        client_policy=PKI.client_policy(client),
        server_factory=site,
        client_factory=Factory.forProtocol(Collector),
        clock=clock,
    )
    ready: list[Any] = []
    conn.client_ready.addBoth(ready.append)
    conn.pump.flush()
    collector = ready[0]
    assert isinstance(collector, Collector), ready
    collector.transport.write(data)  # type: ignore[union-attr]
    conn.pump.flush()
    return b"".join(collector.received)


def bearer(token: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {token}")


def basic(user: str, password: str) -> tuple[str, str]:
    return ("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())


JSON = ("Content-Type", "application/json")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- the service under test ----------------------------------------------------------


class Service:
    """The built-in API over an in-memory store, as twistd builds it, on a fake clock."""

    def __init__(
        self, *, certificate: bool = True, policy: Policy | None = None, max_body: int = 64 * 1024, throttle: bool = True
    ) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.portal = memory_portal(
            {"alice": ["reader"], "root": ["admin"]},
            passwords={"alice": "alice-pw", "root": "root-pw", "bob": "bob-pw"},
            totp={"bob": BOB_TOTP},
            clock=self.clock,
            certificate=certificate,
        )
        self.store = self.portal.realm.store  # type: ignore[attr-defined]
        self.key = TokenKey.private(ed25519.Ed25519PrivateKey.generate())
        self.settings = TokenSettings([self.key])
        self.portal.registerChecker(TokenChecker(self.settings, self.store, self.clock))
        self.throttle = Throttle(self.store, self.clock) if throttle else None
        self.authenticator = WebAuthenticator(self.portal, self.clock, throttle=self.throttle)
        self.guard = WebGuard(
            self.authenticator, policy if policy is not None else Policy.parse(POLICY_TEXT, source="policy.toml")
        )
        self.refreshes = MemoryRefreshStore()
        self.tokens = TokenService(TokenIssuer(self.settings, self.clock), self.store, self.refreshes, self.clock)
        self.api = BuiltinAPI(
            guard=self.guard,
            store=self.store,
            tokens=self.tokens,
            hasher=weak_hasher(),
            runner=synchronous_runner,
            scram_iterations=4096,
        )
        self.site = SecureSite(self.api.resource(), reactor=self.clock, max_body=max_body)

    def request(
        self,
        method: str,
        path: str,
        *headers: tuple[str, str],
        body: bytes = b"",
        json_body: Any = None,
        tls: bool = True,
        client: str | None = None,
    ) -> Response:
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers = (*headers, JSON)
        data = raw_request(method, path, headers=headers, body=body)
        if tls:
            return parse_response(exchange_tls(self.site, data, self.clock, client))
        return parse_response(exchange_plain(self.site, data)[0])

    def login(self, user: str, password: str, totp: str | None = None) -> Response:
        body: dict[str, str] = {"username": user, "password": password}
        if totp is not None:
            body["totp"] = totp
        return self.request("POST", "/auth/login", json_body=body)

    def tokens_of(self, user: str = "alice", password: str = "alice-pw") -> dict[str, Any]:
        response = self.login(user, password)
        assert response.code == 200, response
        result: dict[str, Any] = response.json()
        return result

    def me(self, *headers: tuple[str, str], **kwargs: Any) -> Response:
        return self.request("GET", "/me", *headers, **kwargs)


class Events:
    """Log events of one test."""

    def __init__(self, case: SynchronousTestCase) -> None:
        self.events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        case.addCleanup(globalLogPublisher.removeObserver, observer)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("securenet_event") == kind]


# -- strict JSON ----------------------------------------------------------------------


class ParseJSONTests(SynchronousTestCase):
    def assertRefused(self, data: bytes, fragment: str, limits: JSONLimits = JSONLimits()) -> JSONBodyError:
        error: JSONBodyError = self.assertRaises(JSONBodyError, parse_json, data, limits)
        self.assertIn(fragment, error.message)
        self.assertEqual(error.code, 400)
        return error

    def test_accepts(self) -> None:
        self.assertEqual(
            parse_json('{"a": [1, 2.5, "é", true, null], "b": {"c": -9007199254740991}}'.encode()),
            {"a": [1, 2.5, "é", True, None], "b": {"c": -9007199254740991}},
        )

    def test_badUTF8(self) -> None:
        error = self.assertRefused(b'{"a": "\xff"}', "not valid UTF-8")
        self.assertEqual(error.error, "invalid_utf8")
        self.assertRefused('{"a": "x"}'.encode("utf-16"), "not valid UTF-8")

    def test_byteOrderMark(self) -> None:
        self.assertRefused(b'\xef\xbb\xbf{"a": 1}', "byte order mark")

    def test_loneSurrogate(self) -> None:
        self.assertRefused(b'{"a": "\\ud800"}', "lone surrogate")
        self.assertRefused(b'{"\\udfff": 1}', "lone surrogate")
        self.assertEqual(parse_json(b'{"a": "\\ud83d\\ude00"}'), {"a": "\U0001f600"})

    def test_nonFiniteNumbers(self) -> None:
        for text in (b"[NaN]", b"[Infinity]", b"[-Infinity]"):
            self.assertRefused(text, "is not JSON")
        self.assertRefused(b"[1e999]", "number out of range")
        self.assertRefused(b"[-1.5e400]", "number out of range")

    def test_hugeIntegers(self) -> None:
        self.assertEqual(parse_json(b"[9007199254740991]"), [2**53 - 1])
        self.assertRefused(b"[9007199254740992]", "integer out of range")
        self.assertRefused(b"[-9007199254740992]", "integer out of range")
        self.assertRefused(b"[" + b"9" * 5000 + b"]", "integer out of range")
        self.assertRefused(b"[12]", "integer out of range", JSONLimits(max_integer=10))

    def test_duplicateKeys(self) -> None:
        self.assertRefused(b'{"a": 1, "a": 2}', "duplicate key 'a'")
        self.assertRefused(b'{"x": [{"b": 1, "b": 1}]}', "duplicate key 'b'")

    def test_depth(self) -> None:
        limits = JSONLimits(max_depth=3)
        self.assertEqual(parse_json(b'{"a": [{"b": 1}]}', limits), {"a": [{"b": 1}]})
        self.assertRefused(b'{"a": [{"b": []}]}', "deeper than 3", limits)
        self.assertRefused(b"[" * 33 + b"]" * 33, "deeper than 32")
        # Deep enough to exhaust the C parser's recursion: still a clean 400.
        self.assertRefused(b"[" * 100_000 + b"]" * 100_000, "deeper than", JSONLimits(max_bytes=300_000))

    def test_malformed(self) -> None:
        self.assertRefused(b'{"a": }', "not valid JSON")
        self.assertRefused(b"{'a': 1}", "not valid JSON")
        self.assertRefused(b'{"a": 1} x', "not valid JSON")
        self.assertRefused(b'{"a": "\x01"}', "not valid JSON")

    def test_tooLong(self) -> None:
        error = self.assertRaises(PayloadTooLarge, parse_json, b"[" + b" " * 100 + b"]", JSONLimits(max_bytes=50))
        self.assertEqual(error.code, 413)

    def test_limitsValidated(self) -> None:
        self.assertRaises(ValueError, JSONLimits, max_depth=0)
        self.assertRaises(ValueError, JSONLimits, max_bytes=1)


class ReadJSONTests(SynchronousTestCase):
    def request(self, body: bytes, content_type: str | None = "application/json") -> DummyRequest:
        import io

        request = DummyRequest([])
        request.method = b"POST"
        request.content = io.BytesIO(body)  # type: ignore[attr-defined]
        if content_type is not None:
            request.requestHeaders.addRawHeader(b"content-type", content_type.encode())
        return request

    def test_contentType(self) -> None:
        self.assertEqual(read_json(self.request(b'{"a": 1}')), {"a": 1})  # type: ignore[arg-type]
        self.assertEqual(read_json(self.request(b"[1]", "Application/JSON; charset=UTF-8")), [1])  # type: ignore[arg-type]
        for kind in (None, "text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"):
            self.assertRaises(UnsupportedMediaType, read_json, self.request(b"{}", kind))

    def test_emptyAndNotAnObject(self) -> None:
        self.assertIn("empty", self.assertRaises(JSONBodyError, read_json, self.request(b"  ")).message)
        error = self.assertRaises(JSONBodyError, read_json_object, self.request(b"[1]"))
        self.assertEqual(error.message, "the request body must be a JSON object")

    def test_bodyLimitUnderAPlainSite(self) -> None:
        """Without SecureSite, Twisted has read the whole body: the reader still refuses it."""
        self.assertRaises(PayloadTooLarge, read_json, self.request(b"[" + b" " * 70_000 + b"]"))


# -- authentication ------------------------------------------------------------------


class BearerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.service = Service()

    def test_tokenFromLogin(self) -> None:
        tokens = self.service.tokens_of()
        self.assertEqual(tokens["token_type"], "Bearer")
        self.assertEqual(tokens["expires_in"], 900)
        me = self.service.me(bearer(tokens["access_token"]))
        self.assertEqual(me.code, 200)
        self.assertEqual(
            me.json(),
            {
                "name": "alice",
                "roles": ["reader"],
                "mechanism": "OAUTHBEARER",
                "scheme": "Bearer",
                "scopes": [],
                "mfa": False,
                "anonymous": False,
                "token": {"expires": int(NOW) + 900, "amr": ["pwd"]},
            },
        )

    def test_theSameTokenOpensAStreamSession(self) -> None:
        """A token from /auth/login is an OAUTHBEARER credential of the stream protocol too."""
        token = self.service.tokens_of()["access_token"]
        conn = connect_app_in_memory(
            Factory.forProtocol(Protocol),
            Factory.forProtocol(Protocol),
            pki=PKI,
            portal=self.service.portal,
            client=None,
            mechanism=OAuthBearerClientMechanism(token),
            clock=self.service.clock,
        )
        self.assertIsNone(conn.failure)
        identity = identity_of(conn.server)
        self.assertEqual((identity.avatar_id, identity.mechanism, identity.roles), ("alice", "OAUTHBEARER", ("reader",)))

    def assertInvalidToken(self, token: str) -> None:
        response = self.service.me(bearer(token))
        self.assertEqual(response.code, 401)
        self.assertEqual(response.json(), {"error": "invalid_token", "message": "the access token is invalid or expired"})
        self.assertIn('Bearer realm="securenet", error="invalid_token"', response.headers["www-authenticate"])

    def test_expired(self) -> None:
        token = self.service.tokens_of()["access_token"]
        self.service.clock.advance(900 + 30)  # expiry plus the leeway
        self.assertInvalidToken(token)

    def test_algNone(self) -> None:
        header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        claims = b64url(
            json.dumps(
                {"sub": "root", "jti": "x" * 32, "iat": int(NOW), "exp": int(NOW) + 600, "aud": "securenet", "iss": "securenet"}
            ).encode()
        )
        self.assertInvalidToken(f"{header}.{claims}.")
        self.assertInvalidToken(f"{header}.{claims}")

    def test_tampered(self) -> None:
        token = self.service.tokens_of()["access_token"]
        header, payload, signature = token.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims["sub"] = "root"
        forged = f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"
        self.assertInvalidToken(forged)
        self.assertEqual(self.service.me(bearer(token)).code, 200)

    def test_otherKey(self) -> None:
        other = ed25519.Ed25519PrivateKey.generate()
        token = TokenIssuer(TokenSettings([TokenKey.private(other)]), self.service.clock).issue("root", ttl=600)
        self.assertInvalidToken(token)

    def test_malformed(self) -> None:
        for token in ("", "not a token", "a.b.c", "x" * 9000, "é"):
            self.assertInvalidToken(token)

    def test_revokedAndDisabled(self) -> None:
        token = self.service.tokens_of()["access_token"]
        claims = jwt.decode(token, options={"verify_signature": False})
        import datetime

        self.service.store.revoke_token(claims["jti"], datetime.datetime.now(datetime.UTC))
        self.assertInvalidToken(token)
        token = self.service.tokens_of("root", "root-pw")["access_token"]
        user = self.service.store.users["root"]
        self.service.store.users["root"] = attrs.evolve(user, disabled=True)
        self.assertInvalidToken(token)

    def test_deletedUsersTokensAreRefused(self) -> None:
        """Deleting a user revokes their tokens: /me answers 401, not 200 with no roles."""
        token = self.service.tokens_of()["access_token"]
        self.assertEqual(self.service.me(bearer(token)).code, 200)
        self.successResultOf(self.service.store.delete_user("alice"))
        self.assertInvalidToken(token)


class PasswordTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.service = Service()
        self.events = Events(self)

    def test_wrongPasswordAndUnknownUserLookTheSame(self) -> None:
        wrong = self.service.login("alice", "nope")
        unknown = self.service.login("mallory", "nope")
        self.assertEqual(wrong.code, 401)
        self.assertEqual(wrong.json(), {"error": "invalid_credentials", "message": "authentication failed"})
        self.assertEqual(
            (unknown.code, unknown.body, unknown.headers.get("www-authenticate")),
            (wrong.code, wrong.body, wrong.headers.get("www-authenticate")),
        )
        reasons = [e["reason"] for e in self.events.of("auth.decision") if e["result"] == "denied"]
        self.assertEqual(reasons, ["wrong password for 'alice'", "no user 'mallory'"])
        self.assertNotIn(b"mallory", unknown.body)

    def test_auditEvent(self) -> None:
        self.service.login("alice", "alice-pw")
        [event] = [e for e in self.events.of("auth.decision") if e["result"] == "ok"]
        self.assertEqual(
            (event["transport"], event["mechanism"], event["identity"], event["method"], event["path"], event["peer"]),
            ("http", "PLAIN", "alice", "POST", "/auth/login", "127.0.0.1:54321"),
        )
        self.assertEqual(event["tls_version"], "TLSv1.3")
        [issued] = self.events.of("auth.token")
        self.assertEqual((issued["action"], issued["identity"]), ("issued", "alice"))

    def test_totpRequired(self) -> None:
        missing = self.service.login("bob", "bob-pw")
        self.assertEqual(missing.code, 401)
        self.assertEqual(missing.json(), {"error": "totp_required", "message": "a TOTP code is required"})
        wrong = self.service.login("bob", "bob-pw", "000000" if totp_code(BOB_TOTP, self.service.clock) != "000000" else "111111")
        self.assertEqual(wrong.json(), {"error": "totp_required", "message": "a valid TOTP code is required"})
        code = totp_code(BOB_TOTP, self.service.clock)
        ok = self.service.login("bob", "bob-pw", code)
        self.assertEqual(ok.code, 200)
        me = self.service.me(bearer(ok.json()["access_token"])).json()
        self.assertEqual(me["token"]["amr"], ["pwd", "otp"])
        # Each code once.
        self.assertEqual(self.service.login("bob", "bob-pw", code).json()["error"], "totp_required")

    def test_totpGuessesAreThrottled(self) -> None:
        """A caller who knows bob's password gets no more code guesses than password guesses."""
        wrong = "000000" if totp_code(BOB_TOTP, self.service.clock) != "000000" else "111111"
        codes = [self.service.login("bob", "bob-pw", wrong).code for _ in range(3)]
        codes.append(self.service.login("bob", "bob-pw").code)  # no code: counted too
        self.assertEqual(codes, [401, 401, 401, 401])
        self.assertEqual(self.service.login("bob", "bob-pw", totp_code(BOB_TOTP, self.service.clock)).code, 429)

    def test_totpUserRecoversAfterTheWait(self) -> None:
        """
        After wrong passwords, a TOTP user who waits Retry-After gets in with
        the right password and code in one request (the stream exchange
        behaves the same: tests/session/test_exchange.py).
        """
        for _ in range(4):
            self.assertEqual(self.service.login("bob", "wrong").code, 401)
        throttled = self.service.login("bob", "bob-pw", totp_code(BOB_TOTP, self.service.clock))
        self.assertEqual(throttled.code, 429)
        self.service.clock.advance(int(throttled.header("Retry-After") or "0"))
        self.assertEqual(self.service.login("bob", "bob-pw", totp_code(BOB_TOTP, self.service.clock)).code, 200)

    def test_auditUnavailableIs503(self) -> None:
        """While the audit log cannot be written: 503 for logins and bearer requests, nothing checked or issued."""
        token = self.service.tokens_of()["access_token"]
        disk, _ = failing_sink(self)
        audit.auth_decision("denied", None, None, fields={"peer": "p"}, reason="probe")
        for response in (self.service.login("alice", "alice-pw"), self.service.me(bearer(token))):
            self.assertEqual(response.code, 503)
            self.assertEqual(response.json()["error"], "audit_unavailable")
            self.assertEqual(response.header("Retry-After"), "30")
        self.assertEqual(self.service.store.failures, {})  # not even counted as an attempt
        disk.fixed = True
        audit.auth_decision("denied", None, None, fields={"peer": "p"}, reason="probe")
        self.assertEqual(self.service.me(bearer(token)).code, 200)
        self.flushLoggedErrors(OSError)

    def test_databaseUnavailableIs503(self) -> None:
        """
        While the credential database cannot be reached: 503 db_unavailable
        for a login, nothing counted or issued; once it is back, the same
        login succeeds.
        """
        store = self.service.store
        unreachable = StoreUnavailable("postgresql://db: the credential database cannot be reached")
        self.patch(store, "get_failures", lambda key: defer.fail(unreachable))
        response = self.service.login("alice", "alice-pw")
        self.assertEqual(response.code, 503)
        self.assertEqual(response.json()["error"], "db_unavailable")
        self.assertEqual(response.json()["message"], "the credential database cannot be reached now; try again later")
        self.assertEqual(response.header("Retry-After"), "30")
        self.assertNotIn("access_token", response.json())
        self.assertEqual(store.failures, {})
        del store.get_failures  # the instance attribute patched in: the database is back
        self.assertEqual(self.service.login("alice", "alice-pw").code, 200)

    def test_totpNotSaidForAWrongPassword(self) -> None:
        response = self.service.login("bob", "wrong", totp_code(BOB_TOTP, self.service.clock))
        self.assertEqual(response.json(), {"error": "invalid_credentials", "message": "authentication failed"})

    def test_loginBodyChecked(self) -> None:
        cases: list[tuple[Any, str]] = [
            ({"username": "alice"}, "'password' must be a non-empty string"),
            ({"username": "alice", "password": 5}, "'password' must be a non-empty string"),
            ({"username": "alice", "password": "x", "totp": "12ab56"}, "'totp' must be the 6 to 8 digits"),
            ({"username": "alice", "password": "x", "admin": True}, "unknown member 'admin'"),
            (["alice"], "must be a JSON object"),
        ]
        for body, message in cases:
            response = self.service.request("POST", "/auth/login", json_body=body)
            self.assertEqual(response.code, 400, body)
            self.assertIn(message, response.json()["message"])
        plain = self.service.request(
            "POST", "/auth/login", ("Content-Type", "text/plain"), body=b'{"username": "a", "password": "b"}'
        )
        self.assertEqual((plain.code, plain.json()["error"]), (415, "unsupported_media_type"))

    def test_throttled(self) -> None:
        """After the free failures, each attempt waits: 429 with Retry-After, even with the right password."""
        for _ in range(4):
            self.assertEqual(self.service.login("alice", "wrong").code, 401)
        throttled = self.service.login("alice", "alice-pw")
        self.assertEqual(throttled.code, 429)
        self.assertEqual(throttled.header("Retry-After"), "2")
        self.assertEqual(throttled.json()["error"], "throttled")
        self.service.clock.advance(1.5)
        self.assertEqual(self.service.login("alice", "alice-pw").code, 200)

    def test_basicOverTLS(self) -> None:
        me = self.service.me(basic("alice", "alice-pw"))
        self.assertEqual((me.code, me.json()["mechanism"], me.json()["scheme"]), (200, "PLAIN", "Basic"))
        wrong = self.service.me(basic("alice", "wrong"))
        self.assertEqual((wrong.code, wrong.json()["error"]), (401, "invalid_credentials"))
        self.assertIn('Basic realm="securenet", charset="UTF-8"', wrong.headers["www-authenticate"])

    def test_basicRefusedWithoutTLS(self) -> None:
        """Over plain HTTP the password is not even checked (nor counted)."""
        response = self.service.me(basic("alice", "alice-pw"), tls=False)
        self.assertEqual(response.code, 401)
        self.assertEqual(
            response.json(), {"error": "insecure_transport", "message": "Basic authentication is only accepted over TLS"}
        )
        self.assertNotIn('Basic realm="securenet", charset="UTF-8"', response.headers["www-authenticate"])
        self.assertEqual(self.service.store.failures, {})
        self.assertIsNone(response.header("Strict-Transport-Security"))

    def test_basicRefusedForASecondFactor(self) -> None:
        """Basic cannot carry a TOTP code: bob's password alone does not get him in."""
        response = self.service.me(basic("bob", "bob-pw"))
        self.assertEqual(response.code, 401)
        self.assertEqual(response.json()["error"], "totp_required")

    def test_basicMalformed(self) -> None:
        for value in (
            "Basic !!!",
            "Basic " + base64.b64encode(b"no-colon").decode(),
            "Basic " + base64.b64encode(b"\xff:x").decode(),
        ):
            response = self.service.me(("Authorization", value))
            self.assertEqual((response.code, response.json()["error"]), (401, "invalid_request"), value)


class APIKeyAndCertificateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.service = Service()
        d = create_api_key(self.service.store, "alice", scopes=["kv:read"], clock=self.service.clock)
        self.key, _ = self.successResultOf(d)

    def test_apiKeyHeaders(self) -> None:
        for header in (("X-API-Key", self.key), ("Authorization", f"ApiKey {self.key}")):
            me = self.service.me(header)
            self.assertEqual(me.code, 200, header)
            self.assertEqual(
                (me.json()["mechanism"], me.json()["scheme"], me.json()["scopes"]), ("APIKEY", "ApiKey", ["kv:read"])
            )

    def test_wrongApiKey(self) -> None:
        forged = self.key[:-4] + ("AAAA" if not self.key.endswith("AAAA") else "BBBB")
        for value in (forged, "sn_nothing", "é"):
            response = self.service.me(("X-API-Key", value))
            self.assertEqual((response.code, response.json()["error"]), (401, "invalid_credentials"), value)

    def test_clientCertificate(self) -> None:
        me = self.service.me(client="alice")
        self.assertEqual(me.code, 200)
        body = me.json()
        self.assertEqual(
            (body["name"], body["mechanism"], body["scheme"], body["roles"]), ("alice", "EXTERNAL", "certificate", ["reader"])
        )
        self.assertEqual(body["certificate"]["subject"], "CN=alice")

    def test_certificateNeedsACertificateChecker(self) -> None:
        service = Service(certificate=False)
        response = service.me(client="alice")
        self.assertEqual((response.code, response.json()["error"]), (401, "authentication_required"))

    def test_firstCredentialWins(self) -> None:
        """An Authorization header beats the certificate, and a bad one is refused, never passed over."""
        token = self.service.tokens_of("root", "root-pw")["access_token"]
        self.assertEqual(self.service.me(bearer(token), client="alice").json()["name"], "root")
        self.assertEqual(self.service.me(bearer("garbage"), client="alice").code, 401)
        self.assertEqual(self.service.me(("X-API-Key", "sn_bad"), client="alice").code, 401)
        both = self.service.me(bearer(token), ("X-API-Key", self.key))
        self.assertEqual(both.json()["scheme"], "Bearer")

    def test_noCredentials(self) -> None:
        response = self.service.me()
        self.assertEqual(response.code, 401)
        self.assertEqual(response.json(), {"error": "authentication_required", "message": "authentication required"})
        self.assertEqual(
            response.headers["www-authenticate"],
            ('Bearer realm="securenet"', 'Basic realm="securenet", charset="UTF-8"', 'ApiKey realm="securenet"'),
        )

    def test_anonymous(self) -> None:
        """With an anonymous checker (--auth anonymous), no credentials is the anonymous identity; the policy decides."""
        from twisted.cred.checkers import AllowAnonymousAccess

        self.service.portal.registerChecker(AllowAnonymousAccess())
        me = self.service.me()
        self.assertEqual(
            (me.code, me.json()["name"], me.json()["mechanism"], me.json()["anonymous"]), (200, "anonymous", "ANONYMOUS", True)
        )
        self.assertEqual(self.service.request("GET", "/admin/users").code, 403)
        self.assertEqual(self.service.me(bearer("garbage")).code, 401)

    def test_unsupportedAndRepeatedHeaders(self) -> None:
        self.assertEqual(self.service.me(("Authorization", "Digest x")).json()["error"], "unsupported_scheme")
        twice = self.service.me(("Authorization", f"ApiKey {self.key}"), ("Authorization", f"ApiKey {self.key}"))
        self.assertEqual((twice.code, twice.json()["error"]), (401, "invalid_request"))


# -- tokens: refresh and logout ---------------------------------------------------------


class RefreshTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.service = Service()
        self.events = Events(self)

    def refresh(self, token: str) -> Response:
        return self.service.request("POST", "/auth/refresh", json_body={"refresh_token": token})

    def test_rotation(self) -> None:
        first = self.service.tokens_of()
        second = self.refresh(first["refresh_token"])
        self.assertEqual(second.code, 200)
        pair = second.json()
        self.assertNotEqual(pair["refresh_token"], first["refresh_token"])
        self.assertEqual(self.service.me(bearer(pair["access_token"])).json()["name"], "alice")
        third = self.refresh(pair["refresh_token"])
        self.assertEqual(third.code, 200)

    def test_databaseUnavailableIs503(self) -> None:
        """A refresh while the credential database cannot be reached: 503 db_unavailable, no token issued, no 500."""
        first = self.service.tokens_of()
        unreachable = StoreUnavailable("postgresql://db: the credential database cannot be reached")
        self.patch(self.service.refreshes, "get", lambda token_id: defer.fail(unreachable))
        response = self.refresh(first["refresh_token"])
        self.assertEqual((response.code, response.json()["error"]), (503, "db_unavailable"))
        self.assertEqual(response.header("Retry-After"), "30")
        self.assertNotIn("access_token", response.json())
        del self.service.refreshes.get  # back: the same token refreshes (it was never consumed)
        self.assertEqual(self.refresh(first["refresh_token"]).code, 200)

    def test_reuseRevokesTheFamily(self) -> None:
        first = self.service.tokens_of()
        second = self.refresh(first["refresh_token"]).json()
        third = self.refresh(second["refresh_token"]).json()
        reused = self.refresh(first["refresh_token"])
        self.assertEqual(reused.code, 401)
        self.assertEqual(reused.json(), {"error": "invalid_grant", "message": "the refresh token is invalid, expired or revoked"})
        # The newest refresh token and every access token of the family stop working.
        self.assertEqual(self.refresh(third["refresh_token"]).code, 401)
        for access in (first["access_token"], second["access_token"], third["access_token"]):
            self.assertEqual(self.service.me(bearer(access)).code, 401)
        [reuse] = [e for e in self.events.of("auth.token") if e["action"] == "reuse"]
        self.assertEqual(reuse["identity"], "alice")
        # Another login is a new family, unaffected.
        self.assertEqual(self.refresh(self.service.tokens_of()["refresh_token"]).code, 200)

    def test_refusals(self) -> None:
        good = self.service.tokens_of()["refresh_token"]
        token_id, secret = parse_refresh_token(good)  # type: ignore[misc]
        wrong_secret = f"snrt_{token_id}.{'A' * 43 if not secret.startswith('A') else 'B' * 43}"
        for token in ("", "snrt_x.y", wrong_secret, f"snrt_{'A' * 22}.{secret}"):
            response = (
                self.refresh(token)
                if token
                else self.service.request("POST", "/auth/refresh", json_body={"refresh_token": token})
            )
            self.assertIn(response.code, (400, 401), token)
        # A wrong secret does not burn the real token.
        self.assertEqual(self.refresh(good).code, 200)

    def test_expiry(self) -> None:
        token = self.service.tokens_of()["refresh_token"]
        self.service.clock.advance(14 * 24 * 3600)
        self.assertEqual(self.refresh(token).code, 401)

    def test_disabledUser(self) -> None:
        token = self.service.tokens_of()["refresh_token"]
        self.service.store.users["alice"] = attrs.evolve(self.service.store.users["alice"], disabled=True)
        self.assertEqual(self.refresh(token).code, 401)

    def test_logout(self) -> None:
        tokens = self.service.tokens_of()
        out = self.service.request(
            "POST", "/auth/logout", bearer(tokens["access_token"]), json_body={"refresh_token": tokens["refresh_token"]}
        )
        self.assertEqual((out.code, out.json()), (200, {"status": "logged out"}))
        self.assertEqual(self.service.me(bearer(tokens["access_token"])).code, 401)
        self.assertEqual(self.refresh(tokens["refresh_token"]).code, 401)

    def test_logoutWithTheAccessTokenAloneEndsTheFamily(self) -> None:
        tokens = self.service.tokens_of()
        out = self.service.request("POST", "/auth/logout", bearer(tokens["access_token"]))
        self.assertEqual(out.code, 200)
        self.assertEqual(self.refresh(tokens["refresh_token"]).code, 401)

    def test_logoutWithTheRefreshTokenAlone(self) -> None:
        tokens = self.service.tokens_of()
        out = self.service.request("POST", "/auth/logout", json_body={"refresh_token": tokens["refresh_token"]})
        self.assertEqual(out.code, 200)
        self.assertEqual(self.service.me(bearer(tokens["access_token"])).code, 401)

    def test_logoutNeedsSomething(self) -> None:
        self.assertEqual(self.service.request("POST", "/auth/logout").code, 400)
        self.assertEqual(self.service.request("POST", "/auth/logout", bearer("junk")).code, 401)


class TokenServiceTests(SynchronousTestCase):
    def test_raceOnOneRefreshToken(self) -> None:
        """Two refreshes with one token: the store's atomic consume lets one win; the other revokes the family."""
        service = Service()
        tokens = service.tokens
        pair = self.successResultOf(Deferred.fromCoroutine(tokens.issue("alice")))
        token_id, _ = parse_refresh_token(pair.refresh_token)  # type: ignore[misc]
        # The first refresh's consume happens "meanwhile": the record read still says unused.
        record = self.successResultOf(service.refreshes.get(token_id))
        assert record is not None
        original = service.refreshes.get
        service.refreshes.get = lambda token_id: Deferred.fromCoroutine(_value(record))  # type: ignore[method-assign]
        self.successResultOf(service.refreshes.consume(token_id, NOW))
        failure = self.failureResultOf(Deferred.fromCoroutine(tokens.refresh(pair.refresh_token)), RefreshRefused)
        self.assertIn("reused", failure.value.reason or "")
        service.refreshes.get = original  # type: ignore[method-assign]
        self.assertTrue(self.successResultOf(service.refreshes.is_family_revoked(pair.family_id)))


async def _value(value: Any) -> Any:
    return value


# -- authorization and the admin routes -------------------------------------------------


class AdminTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.service = Service()
        self.root = bearer(self.service.tokens_of("root", "root-pw")["access_token"])
        self.alice = bearer(self.service.tokens_of()["access_token"])

    def test_401Then403Then200(self) -> None:
        anonymous = self.service.request("GET", "/admin/users")
        self.assertEqual(anonymous.code, 401)
        self.assertIsNotNone(anonymous.header("WWW-Authenticate"))
        denied = self.service.request("GET", "/admin/users", self.alice)
        self.assertEqual(denied.code, 403)
        self.assertEqual(
            denied.json(),
            {
                "error": "forbidden",
                "message": "alice may not admin.users.list: missing permission admin.users.list",
                "permission": "admin.users.list",
            },
        )
        self.assertNotIn(b"policy.toml", denied.body)
        self.assertIsNone(denied.header("WWW-Authenticate"))
        listed = self.service.request("GET", "/admin/users", self.root)
        self.assertEqual(listed.code, 200)
        self.assertEqual([u["name"] for u in listed.json()["users"]], ["alice", "bob", "root"])
        self.assertNotIn(b"argon2", listed.body)

    def test_noPolicyDeniesEverything(self) -> None:
        service = Service(policy=Policy.parse(""))
        token = service.tokens_of("root", "root-pw")["access_token"]
        self.assertEqual(service.request("GET", "/admin/users", bearer(token)).code, 403)

    def test_createUser(self) -> None:
        created = self.service.request(
            "POST", "/admin/users", self.root, json_body={"name": "carol", "password": "carol-pw", "roles": ["reader"]}
        )
        self.assertEqual(created.code, 201)
        self.assertEqual(created.json()["name"], "carol")
        self.assertEqual(self.service.login("carol", "carol-pw").code, 200)
        again = self.service.request("POST", "/admin/users", self.root, json_body={"name": "carol", "password": "x-pw"})
        self.assertEqual((again.code, again.json()["error"]), (409, "user_exists"))
        bad = self.service.request("POST", "/admin/users", self.root, json_body={"name": "a b", "password": "pw"})
        self.assertEqual((bad.code, bad.json()["error"]), (400, "invalid_user"))

    def test_createUserDenied(self) -> None:
        denied = self.service.request("POST", "/admin/users", self.alice, json_body={"name": "eve", "password": "pw"})
        self.assertEqual((denied.code, denied.json()["permission"]), (403, "admin.users.create:users/eve"))
        self.assertNotIn("eve", self.service.store.users)

    def test_disableUser(self) -> None:
        done = self.service.request("POST", "/admin/users/alice/disable", self.root)
        self.assertEqual((done.code, done.json()), (200, {"name": "alice", "disabled": True}))
        self.assertEqual(self.service.me(self.alice).code, 401)
        self.assertEqual(self.service.login("alice", "alice-pw").code, 401)
        missing = self.service.request("POST", "/admin/users/nobody/disable", self.root)
        self.assertEqual(missing.code, 404)
        # alice is disabled now: her token no longer authenticates anything.
        self.assertEqual(self.service.request("POST", "/admin/users/root/disable", self.alice).code, 401)

    def test_disableDeniedNamesTheUser(self) -> None:
        denied = self.service.request("POST", "/admin/users/root/disable", self.alice)
        self.assertEqual((denied.code, denied.json()["permission"]), (403, "admin.users.disable:users/root"))
        self.assertFalse(self.service.store.users["root"].disabled)

    def test_userResource(self) -> None:
        self.assertEqual(user_resource("alice"), "users/alice")
        self.assertEqual(user_resource("a/b"), "users/a%2Fb")
        self.assertEqual(user_resource(".."), "users/%2E%2E")

    def test_notFoundAndMethods(self) -> None:
        missing = self.service.request("GET", "/nothing/here")
        self.assertEqual((missing.code, missing.json()["error"]), (404, "not_found"))
        self.assertEqual(self.service.request("GET", "/auth").code, 404)
        wrong = self.service.request("DELETE", "/me")
        self.assertEqual((wrong.code, wrong.header("Allow")), (405, "GET, HEAD"))
        self.assertEqual(self.service.request("GET", "/auth/login").code, 405)


# -- the site: limits and headers -----------------------------------------------------------


class SiteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.service = Service(max_body=1024)

    def test_securityHeaders(self) -> None:
        for tls in (True, False):
            response = self.service.request("GET", "/healthz", tls=tls)
            self.assertEqual((response.code, response.json()), (200, {"status": "ok"}))
            self.assertEqual(response.header("X-Content-Type-Options"), "nosniff")
            self.assertEqual(response.header("Content-Type"), "application/json")
            self.assertEqual(response.header("Cache-Control"), "no-store")
            self.assertEqual(response.header("Server"), "securenet")
            self.assertEqual(response.header("X-Frame-Options"), "DENY")
            self.assertEqual(response.header("Strict-Transport-Security"), "max-age=63072000" if tls else None)
        login = self.service.login("alice", "wrong")
        self.assertEqual((login.header("Cache-Control"), login.header("X-Content-Type-Options")), ("no-store", "nosniff"))

    def test_bodyAtTheLimit(self) -> None:
        body = json.dumps({"username": "alice", "password": "alice-pw"}).encode()
        body += b" " * (1024 - len(body))
        response = parse_response(
            exchange_plain(self.service.site, raw_request("POST", "/auth/login", headers=[JSON], body=body))[0]
        )
        self.assertEqual(response.code, 200)

    def test_bodyOverTheLimit(self) -> None:
        """The excess is read and dropped; the 413 comes once the body ended."""
        data = raw_request("POST", "/auth/login", headers=[JSON], body=b"[" + b" " * 2000 + b"]")
        answer, transport = exchange_plain(self.service.site, data)
        response = parse_response(answer)
        self.assertEqual(response.code, 413)
        self.assertEqual(response.json(), {"error": "body_too_large", "message": "the request body is larger than 1024 bytes"})
        self.assertEqual(response.header("X-Content-Type-Options"), "nosniff")

    def test_expectContinueAnsweredAtOnce(self) -> None:
        """A client waiting for 100 Continue gets the 413 instead, and the connection closes."""
        data = raw_request("POST", "/auth/login", headers=[JSON, ("Expect", "100-continue")], length=5000)
        answer, transport = exchange_plain(self.service.site, data)
        self.assertNotIn(b"100 Continue", answer)
        response = parse_response(answer)
        self.assertEqual((response.code, response.header("Connection")), (413, "close"))
        self.assertEqual(response.json()["error"], "body_too_large")
        self.assertTrue(transport.disconnecting)

    def test_farTooMuchClosesTheConnection(self) -> None:
        data = raw_request("POST", "/auth/login", headers=[JSON], length=50 * 1024 * 1024)
        answer, transport = exchange_plain(self.service.site, data + b"x" * 4096)
        self.assertEqual(parse_response(answer).code, 413)
        self.assertTrue(transport.disconnecting)

    def test_chunkedOverTheLimit(self) -> None:
        head = b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunks = b"".join(b"%x\r\n%s\r\n" % (500, b" " * 500) for _ in range(5)) + b"0\r\n\r\n"
        response = parse_response(exchange_plain(self.service.site, head + chunks)[0])
        self.assertEqual(response.code, 413)

    def test_badBodies(self) -> None:
        cases = [
            (b'{"username": "alice", "password": ', "not valid JSON", "invalid_json"),
            (b'{"username": "\xff\xfe", "password": "x"}', "not valid UTF-8", "invalid_utf8"),
            (b'{"username": "a", "username": "b", "password": "x"}', "duplicate key", "invalid_json"),
            (b'{"username": {"a": {"b": {"c": {}}}}, "password": "x"}', "deeper than 4", "invalid_json"),
            (b'{"username": "a", "password": 1e999}', "number out of range", "invalid_json"),
            (b'{"username": "a", "password": 123456789012345678901234567890}', "integer out of range", "invalid_json"),
            (b'{"username": "a", "password": NaN}', "is not JSON", "invalid_json"),
        ]
        for body, message, error in cases:
            response = self.service.request("POST", "/auth/login", JSON, body=body)
            self.assertEqual(response.code, 400, body)
            self.assertEqual(response.json()["error"], error, body)
            self.assertIn(message, response.json()["message"], body)
            self.assertEqual(response.header("Content-Type"), "application/json")

    def test_internalErrorsAreJSON(self) -> None:
        class Boom(Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> bytes:
                raise RuntimeError("boom")

        site = SecureSite(Boom(), reactor=Clock())
        response = parse_response(exchange_plain(site, raw_request("GET", "/"))[0])
        self.assertEqual((response.code, response.json()), (500, {"error": "internal_error", "message": "internal error"}))
        self.assertNotIn(b"boom", response.body)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_handlerErrorsAreJSON(self) -> None:
        def explode(request: Any) -> Any:
            raise KeyError("secret detail")

        site = SecureSite(JSONEndpoint({"GET": explode}), reactor=Clock())
        response = parse_response(exchange_plain(site, raw_request("GET", "/"))[0])
        self.assertEqual(response.code, 500)
        self.assertNotIn(b"secret", response.body)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_siteSettingsChecked(self) -> None:
        self.assertRaises(ValueError, SecureSite, Resource(), reactor=Clock(), max_body=0)


# -- the wrapper and the decorator on your own resources -------------------------------------


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        identity = request_identity(request)
        return f"hello {identity.avatar_id} ({identity.mechanism})".encode()


class Report(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"the report"


class WrapperTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.service = Service()
        guard = self.service.guard
        app = Resource()
        app.putChild(b"hello", Hello())
        root = Resource()
        root.putChild(b"app", guard.protect(app))
        root.putChild(b"reports", guard.protect(Report(), action="kv.read"))
        root.putChild(b"hello", guard.protect(Hello()))
        self.root = root
        self.site = SecureSite(root, reactor=self.service.clock)
        self.alice = bearer(self.service.tokens_of()["access_token"])
        self.bob = bearer(self._bob_token())

    def _bob_token(self) -> str:
        response = self.service.login("bob", "bob-pw", totp_code(BOB_TOTP, self.service.clock))
        token: str = response.json()["access_token"]
        return token

    def get(self, path: str, *headers: tuple[str, str]) -> Response:
        return parse_response(exchange_tls(self.site, raw_request("GET", path, headers=headers), self.service.clock))

    def test_childOfAProtectedResource(self) -> None:
        response = self.get("/app/hello", self.alice)
        self.assertEqual((response.code, response.body), (200, b"hello alice (OAUTHBEARER)"))
        self.assertEqual(response.header("X-Content-Type-Options"), "nosniff")
        refused = self.get("/app/hello")
        self.assertEqual((refused.code, refused.json()["error"]), (401, "authentication_required"))

    def test_protectedLeaf(self) -> None:
        self.assertEqual(self.get("/hello", self.alice).body, b"hello alice (OAUTHBEARER)")

    def test_authorization(self) -> None:
        self.assertEqual(self.get("/reports", self.alice).body, b"the report")
        denied = self.get("/reports", self.bob)
        self.assertEqual((denied.code, denied.json()["permission"]), (403, "kv.read"))

    def test_underAPlainSiteWithStubTreq(self) -> None:
        """The wrapper works under any Site (here treq's in-memory one), HTTPS or not."""
        from treq.testing import StubTreq

        stub: Any = StubTreq(self.root)  # its request methods are made at run time
        token = self.alice[1]
        d = stub.get("https://example.com/app/hello", headers={"Authorization": token})
        stub.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        self.assertEqual(self.successResultOf(stub.content(response)), b"hello alice (OAUTHBEARER)")
        d = stub.get("http://example.com/app/hello", headers={"Authorization": basic("alice", "alice-pw")[1]})
        stub.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 401)
        self.assertEqual(self.successResultOf(stub.json_content(response))["error"], "insecure_transport")
        d = stub.get("https://example.com/app/hello", headers={"Authorization": basic("alice", "alice-pw")[1]})
        stub.flush()
        self.assertEqual(self.successResultOf(d).code, 200)

    def test_requestIdentityWithoutAGuard(self) -> None:
        self.assertRaises(Unauthorized, request_identity, DummyRequest([]))


class DecoratorTests(SynchronousTestCase):
    """C{guard.requires} as Klein would use it: call the handler with the request, get a Deferred of bytes."""

    def setUp(self) -> None:
        self.service = Service()
        self.token = self.service.tokens_of()["access_token"]

    def request(self, token: str | None) -> DummyRequest:
        request = DummyRequest([b"thing"])
        request.client = CLIENT
        if token is not None:
            request.requestHeaders.addRawHeader(b"authorization", f"Bearer {token}".encode())
        return request

    def test_function(self) -> None:
        @self.service.guard.requires("kv.read", resource=lambda request, name: f"data/{name}")
        def get(request: Any, name: str) -> dict[str, str]:
            return {"who": request_identity(request).avatar_id, "name": name}

        request = self.request(self.token)
        # The guard's decorator keeps the function's type; what it returns is a Deferred of the rendered body.
        body = self.successResultOf(cast("Deferred[bytes]", get(request, "x")))
        self.assertEqual(json.loads(body), {"who": "alice", "name": "x"})
        self.assertEqual(
            (request.responseCode, request.responseHeaders.getRawHeaders(b"content-type")), (200, [b"application/json"])
        )

    def test_refusals(self) -> None:
        @self.service.guard.requires("admin.stop")
        async def stop(request: Any) -> bytes:
            raise AssertionError("must not run")

        anonymous = self.request(None)
        self.assertEqual(json.loads(self.successResultOf(stop(anonymous)))["error"], "authentication_required")
        self.assertEqual(anonymous.responseCode, 401)
        self.assertIsNotNone(anonymous.responseHeaders.getRawHeaders(b"www-authenticate"))
        alice = self.request(self.token)
        self.assertEqual(json.loads(self.successResultOf(stop(alice)))["permission"], "admin.stop")
        self.assertEqual(alice.responseCode, 403)

    def test_handlerErrorsRendered(self) -> None:
        """A WebError the handler raises (a bad body) is its JSON answer too, as Klein needs."""

        @self.service.guard.requires()
        def post(request: Any) -> Any:
            return read_json_object(request)

        request = self.request(self.token)
        import io

        request.content = io.BytesIO(b"{")  # type: ignore[attr-defined]
        request.requestHeaders.addRawHeader(b"content-type", b"application/json")
        body = json.loads(self.successResultOf(post(request)))
        self.assertEqual((request.responseCode, body["error"]), (400, "invalid_json"))

    def test_method(self) -> None:
        guard = self.service.guard

        class App:
            @guard.requires()
            async def whoami(self, request: Any) -> bytes:
                return request_identity(request).avatar_id.encode()

        self.assertEqual(self.successResultOf(App().whoami(self.request(self.token))), b"alice")

    def test_inAJSONEndpoint(self) -> None:
        @self.service.guard.requires("kv.read")
        def value(request: Any) -> dict[str, int]:
            return {"value": 42}

        site = SecureSite(JSONEndpoint({"GET": value}), reactor=self.service.clock)
        ok = parse_response(exchange_plain(site, raw_request("GET", "/", headers=[bearer(self.token)]))[0])
        self.assertEqual((ok.code, ok.json()), (200, {"value": 42}))
        refused = parse_response(exchange_plain(site, raw_request("GET", "/"))[0])
        self.assertEqual((refused.code, refused.header("Content-Type")), (401, "application/json"))

    def test_needsTheRequest(self) -> None:
        @self.service.guard.requires()
        def handler(value: int) -> None: ...

        self.assertRaises(TypeError, handler, 3)


class AuthenticatorTests(SynchronousTestCase):
    def test_realmChecked(self) -> None:
        service = Service()
        self.assertRaises(ValueError, WebAuthenticator, service.portal, service.clock, realm='a"b')

    def test_identityIsTheRealms(self) -> None:
        """The identity is the realm's: roles and attributes from the store, like a stream session's."""
        service = Service()
        token = service.tokens_of("root", "root-pw")["access_token"]
        request = DummyRequest([])
        request.client = CLIENT
        request.requestHeaders.addRawHeader(b"authorization", f"Bearer {token}".encode())
        authentication = self.successResultOf(service.authenticator.authenticate(request))  # type: ignore[arg-type]
        self.assertIsInstance(authentication.identity, Identity)
        self.assertEqual((authentication.identity.roles, authentication.identity.peer), (("admin",), "127.0.0.1:54321"))
        # Kept on the request: a second call does not log in again.
        self.assertIs(self.successResultOf(service.authenticator.authenticate(request)), authentication)  # type: ignore[arg-type]


# -- examples/api: the Flask JWT tutorial --------------------------------------------------


class ExampleAPITests(SynchronousTestCase):
    def setUp(self) -> None:
        from examples.api.app import POLICY, make_site

        self.clock = Clock()
        self.clock.advance(NOW)
        portal = memory_portal(
            {"alice": ["user"], "root": ["admin"]}, passwords={"alice": "alice-pw", "root": "root-pw"}, clock=self.clock
        )
        store = portal.realm.store  # type: ignore[attr-defined]
        self.site = make_site(
            reactor=self.clock,
            portal=portal,
            store=store,
            key=TokenKey.private(ed25519.Ed25519PrivateKey.generate()),
            refreshes=MemoryRefreshStore(),
            policy=Policy.load(POLICY, clock=self.clock),
        )

    def request(self, method: str, path: str, *headers: tuple[str, str], body: bytes = b"") -> Response:
        return parse_response(exchange_tls(self.site, raw_request(method, path, headers=headers, body=body), self.clock))

    def login(self, user: str, password: str) -> Response:
        return self.request("POST", "/login", JSON, body=json.dumps({"username": user, "password": password}).encode())

    def token(self, user: str, password: str) -> tuple[str, str]:
        response = self.login(user, password)
        self.assertEqual(response.code, 200)
        return bearer(response.json()["access_token"])

    def test_login(self) -> None:
        response = self.login("alice", "alice-pw")
        self.assertEqual(sorted(response.json()), ["access_token", "refresh_token"])
        self.assertEqual(response.header("Cache-Control"), "no-store")
        self.assertEqual(
            self.login("alice", "wrong").json(), {"error": "invalid_credentials", "message": "authentication failed"}
        )
        self.assertEqual(self.request("POST", "/login", JSON, body=b'{"username": 1}').code, 400)

    def test_protected(self) -> None:
        alice = self.token("alice", "alice-pw")
        self.assertEqual(self.request("GET", "/protected", alice).json(), {"logged_in_as": "alice"})
        refused = self.request("GET", "/protected")
        self.assertEqual((refused.code, refused.json()["error"]), (401, "authentication_required"))

    def test_roles(self) -> None:
        alice, root = self.token("alice", "alice-pw"), self.token("root", "root-pw")
        self.assertEqual(self.request("GET", "/user", alice).json(), {"message": "hello alice, you are a user"})
        self.assertEqual(self.request("GET", "/admin", root).json(), {"message": "hello root, you are an admin"})
        denied = self.request("GET", "/admin", alice)
        self.assertEqual((denied.code, denied.json()["permission"]), (403, "example.admin"))
        self.assertEqual(self.request("GET", "/user", root).code, 403)
