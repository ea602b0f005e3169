"""
End to end, the HTTP API: a real C{twistd securenet --http ... --token-key
... --auth sqlite:...}, users, API keys and the token key made with the
real CLI (users in-process, with cheap hashing injected), and every
scenario run twice -- with treq (its TLS checked by
securenet's client policy, L{securenet.web.client.HTTPSPolicy}) and with
curl (C{--cacert}, C{--cert}/C{--key}).  A token the HTTP API issued then
opens a stream session with C{securenet connect}.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pyotp
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

from securenet.cred._jwt import TokenIssuer, TokenSettings
from securenet.pki._tokenkeys import load_signing_key
from tests.e2e.test_auth import add_user
from tests.support import Twistd, child_env, run, run_twistd_expecting_failure, script
from tests.support.e2e import dev_pki

_SETUP: dict[str, Any] = {}

# Users are added in-process with cheap hashing (add_user; the server upgrades
# the argon2 hash at the first login); the server is told their SCRAM count.

POLICY = """
[roles.reader]
permissions = ["kv.read"]

[roles.admin]
permissions = ["admin.*"]
"""

PASSWORDS = {"alice": "alice secret 1", "root": "root secret 1", "bob": "bob secret 1"}


def securenet(*args: str) -> str:
    result = run([script("securenet"), *args])
    assert result.returncode == 0, (args, result.stderr.decode())
    return result.stdout.decode()


def credentials(base: Path) -> dict[str, Any]:
    """Users, an API key, a token key and a policy, made once per run with the CLI."""
    if _SETUP:
        return _SETUP
    base.mkdir(parents=True, exist_ok=True)
    db = base / "securenet.db"
    roles = {"alice": ["reader"], "root": ["admin"], "bob": []}
    for name, password in PASSWORDS.items():
        (base / f"{name}.pw").write_text(password + "\n")
        role_args = [a for r in roles[name] for a in ("--role", r)]
        add_user(name, "--db", str(db), *role_args, "--password-file", str(base / f"{name}.pw"))
    enrolled = securenet("users", "totp-enroll", "bob", "--db", str(db))
    match = re.search(r"secret=([A-Z2-7]+)", enrolled)
    assert match, enrolled
    api_key = securenet("apikeys", "create", "--user", "alice", "--db", str(db), "--scope", "kv:read").strip()
    securenet("tokens", "keygen", "--alg", "EdDSA", "--out", str(base / "tokens.key"))
    (base / "policy.toml").write_text(POLICY)
    _SETUP.update(db=db, base=base, totp=match.group(1), api_key=api_key)
    return _SETUP


class WebTwistd(Twistd):
    """twistd with --http: also waits for the HTTP API's own line, which names its real port."""

    http_ports: list[int]

    def _waitForPorts(self, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        want_http = self.args.count("--http")
        want_stream = self.args.count("--listen")
        while time.monotonic() < deadline:
            log = self.logText()
            http = [int(p) for p in re.findall(r"securenet HTTP API listening on https://\S+:(\d+)/ ", log)]
            stream = [int(p) for p in re.findall(r"\(TLS\) starting on (\d+)", log) if int(p) not in http]
            if len(http) >= want_http and len(stream) >= want_stream:
                self.http_ports = http
                return stream
            if self.process.poll() is not None:
                out = self.process.stdout.read().decode("utf-8", "replace") if self.process.stdout else ""
                raise RuntimeError(f"twistd exited with {self.process.returncode}:\n{out}\n{log}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"twistd did not start listening within {timeout} s:\n{self.logText()}")


@attrs.frozen
class Result:
    code: int
    headers: Mapping[str, tuple[str, ...]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[-1] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Server:
    """Start the service for one test, in a directory of its own."""

    def __init__(self, case: SynchronousTestCase) -> None:
        self.certs = dev_pki(Path(case.mktemp()).resolve())
        self.creds = credentials(Path(case.mktemp()).resolve())
        self.base: Path = self.creds["base"]
        work = Path(case.mktemp()).resolve()
        work.mkdir(parents=True)
        # Each test its own copy of the database: throttle counters, used TOTP
        # steps and refresh families must not leak between tests.
        db = work / "securenet.db"
        shutil.copyfile(self.creds["db"], db)
        db.chmod(0o600)
        certs = self.certs
        http = (
            f"securenet:0:interface=127.0.0.1:certKey={certs / 'server.pem'}:privateKey={certs / 'server.key'}"
            f":trustRoots={certs / 'ca.pem'}:clientAuth=optional"
        )
        listen = f"securenet:0:interface=127.0.0.1:certKey={certs / 'server.pem'}:privateKey={certs / 'server.key'}"
        self.twistd = WebTwistd(
            work,
            [
                "--http",
                http,
                "--listen",
                listen,
                "--auth",
                f"sqlite:db={db},scramIterations=4096",
                "--auth",
                "certificate",
                "--token-key",
                str(self.base / "tokens.key"),
                "--policy",
                str(self.base / "policy.toml"),
            ],
        )
        case.addCleanup(self.twistd.stop)

    @property
    def url(self) -> str:
        return f"https://localhost:{self.twistd.http_ports[0]}"


if TYPE_CHECKING:
    _Base = TestCase
else:
    _Base = object


class Scenarios(_Base):
    """
    The scenarios; a subclass says how a request is made (L{request}).
    Mixed into trial's TestCase: each test returns a Deferred (an async def).
    """

    server: Server

    def setUp(self) -> None:
        self.server = Server(self)

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | None = None,
        cert: bool = False,
    ) -> Result:
        raise NotImplementedError

    async def post_json(self, path: str, value: Any, *headers: tuple[str, str]) -> Result:
        return await self.request(
            "POST", path, headers=[("Content-Type", "application/json"), *headers], body=json.dumps(value).encode()
        )

    async def login(self, user: str, password: str | None = None, totp: str | None = None) -> Result:
        body = {"username": user, "password": password if password is not None else PASSWORDS[user]}
        if totp is not None:
            body["totp"] = totp
        return await self.post_json("/auth/login", body)

    async def tokens(self, user: str = "alice") -> dict[str, Any]:
        response = await self.login(user)
        assert response.code == 200, response
        tokens: dict[str, Any] = response.json()
        return tokens

    async def me(self, token: str | None = None, **kwargs: Any) -> Result:
        headers = [("Authorization", f"Bearer {token}")] if token is not None else []
        return await self.request("GET", "/me", headers=headers, **kwargs)

    # -- the scenarios ---------------------------------------------------------------

    async def test_healthzAndSecurityHeaders(self) -> None:
        response = await self.request("GET", "/healthz")
        self.assertEqual((response.code, response.json()), (200, {"status": "ok"}))
        self.assertEqual(response.header("Content-Type"), "application/json")
        self.assertEqual(response.header("X-Content-Type-Options"), "nosniff")
        self.assertEqual(response.header("Strict-Transport-Security"), "max-age=63072000")
        login = await self.login("alice")
        self.assertEqual((login.header("Cache-Control"), login.header("X-Content-Type-Options")), ("no-store", "nosniff"))
        self.assertEqual(login.header("Content-Type"), "application/json")

    async def test_loginAndMe(self) -> None:
        tokens = await self.tokens()
        self.assertEqual((tokens["token_type"], tokens["expires_in"]), ("Bearer", 900))
        self.assertTrue(tokens["refresh_token"].startswith("snrt_"))
        me = await self.me(tokens["access_token"])
        self.assertEqual(me.code, 200)
        self.assertEqual(
            {k: me.json()[k] for k in ("name", "roles", "mechanism", "scheme", "scopes")},
            {"name": "alice", "roles": ["reader"], "mechanism": "OAUTHBEARER", "scheme": "Bearer", "scopes": []},
        )

    async def test_wrongPasswordSameAsUnknownUser(self) -> None:
        wrong = await self.login("alice", "not it")
        unknown = await self.login("mallory", "not it")
        self.assertEqual(wrong.code, 401)
        self.assertEqual(wrong.json(), {"error": "invalid_credentials", "message": "authentication failed"})
        self.assertEqual((unknown.code, unknown.body), (wrong.code, wrong.body))
        self.assertEqual(unknown.headers.get("www-authenticate"), wrong.headers.get("www-authenticate"))

    async def test_totpRequired(self) -> None:
        missing = await self.login("bob")
        self.assertEqual((missing.code, missing.json()["error"]), (401, "totp_required"))
        self.assertIn("TOTP code is required", missing.json()["message"])
        ok = await self.login("bob", totp=pyotp.TOTP(self.server.creds["totp"]).now())
        self.assertEqual(ok.code, 200)
        me = await self.me(ok.json()["access_token"])
        self.assertEqual(me.json()["token"]["amr"], ["pwd", "otp"])

    async def test_apiKey(self) -> None:
        me = await self.request("GET", "/me", headers=[("X-API-Key", self.server.creds["api_key"])])
        self.assertEqual(me.code, 200)
        self.assertEqual((me.json()["name"], me.json()["mechanism"], me.json()["scopes"]), ("alice", "APIKEY", ["kv:read"]))

    async def test_clientCertificate(self) -> None:
        me = await self.request("GET", "/me", cert=True)
        self.assertEqual(me.code, 200)
        self.assertEqual(
            (me.json()["name"], me.json()["mechanism"], me.json()["scheme"]), ("dev-client", "EXTERNAL", "certificate")
        )
        self.assertEqual(me.json()["certificate"]["subject"], "CN=dev-client")
        self.assertEqual((await self.request("GET", "/me")).code, 401)

    async def assertInvalidToken(self, token: str) -> None:
        response = await self.me(token)
        self.assertEqual(response.code, 401)
        self.assertEqual(response.json()["error"], "invalid_token")
        self.assertIn('error="invalid_token"', " ".join(response.headers.get("www-authenticate", ())))

    async def test_expiredToken(self) -> None:
        clock = Clock()
        clock.advance(time.time() - 3600)
        key = load_signing_key(self.server.base / "tokens.key")
        expired = TokenIssuer(TokenSettings([key]), clock).issue("root", ttl=60)
        await self.assertInvalidToken(expired)

    async def test_algNoneToken(self) -> None:
        now = int(time.time())
        claims = {"sub": "root", "jti": "0" * 32, "iat": now, "exp": now + 600, "aud": "securenet", "iss": "securenet"}
        header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        await self.assertInvalidToken(f"{header}.{b64url(json.dumps(claims).encode())}.")

    async def test_tamperedToken(self) -> None:
        token = (await self.tokens())["access_token"]
        header, payload, signature = token.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims["sub"] = "root"
        await self.assertInvalidToken(f"{header}.{b64url(json.dumps(claims).encode())}.{signature}")
        self.assertEqual((await self.me(token)).code, 200)

    async def test_refreshRotationAndReuse(self) -> None:
        first = await self.tokens()
        second = await self.post_json("/auth/refresh", {"refresh_token": first["refresh_token"]})
        self.assertEqual(second.code, 200)
        third = await self.post_json("/auth/refresh", {"refresh_token": second.json()["refresh_token"]})
        self.assertEqual(third.code, 200)
        newest = third.json()
        self.assertEqual((await self.me(newest["access_token"])).code, 200)
        reused = await self.post_json("/auth/refresh", {"refresh_token": first["refresh_token"]})
        self.assertEqual((reused.code, reused.json()["error"]), (401, "invalid_grant"))
        # The reuse revoked the family: the newest refresh and access tokens stop working too.
        after = await self.post_json("/auth/refresh", {"refresh_token": newest["refresh_token"]})
        self.assertEqual(after.code, 401)
        self.assertEqual((await self.me(newest["access_token"])).code, 401)

    async def test_logout(self) -> None:
        tokens = await self.tokens()
        out = await self.post_json(
            "/auth/logout", {"refresh_token": tokens["refresh_token"]}, ("Authorization", f"Bearer {tokens['access_token']}")
        )
        self.assertEqual((out.code, out.json()), (200, {"status": "logged out"}))
        self.assertEqual((await self.me(tokens["access_token"])).code, 401)
        self.assertEqual((await self.post_json("/auth/refresh", {"refresh_token": tokens["refresh_token"]})).code, 401)

    async def test_401vs403(self) -> None:
        anonymous = await self.request("GET", "/admin/users")
        self.assertEqual((anonymous.code, anonymous.json()["error"]), (401, "authentication_required"))
        self.assertIn('Bearer realm="securenet"', anonymous.headers["www-authenticate"])
        alice = (await self.tokens())["access_token"]
        denied = await self.request("GET", "/admin/users", headers=[("Authorization", f"Bearer {alice}")])
        self.assertEqual(denied.code, 403)
        self.assertEqual(denied.json()["permission"], "admin.users.list")
        self.assertIn("missing permission admin.users.list", denied.json()["message"])
        self.assertNotIn(b"policy.toml", denied.body)
        root = (await self.tokens("root"))["access_token"]
        auth = ("Authorization", f"Bearer {root}")
        listed = await self.request("GET", "/admin/users", headers=[auth])
        self.assertEqual([u["name"] for u in listed.json()["users"]], ["alice", "bob", "root"])
        created = await self.post_json("/admin/users", {"name": "carol", "password": "carol secret 1", "roles": ["reader"]}, auth)
        self.assertEqual(created.code, 201)
        self.assertEqual((await self.login("carol", "carol secret 1")).code, 200)
        disabled = await self.request("POST", "/admin/users/carol/disable", headers=[auth])
        self.assertEqual((disabled.code, disabled.json()), (200, {"name": "carol", "disabled": True}))
        self.assertEqual((await self.login("carol", "carol secret 1")).code, 401)

    async def test_oversizedBody(self) -> None:
        response = await self.request(
            "POST", "/auth/login", headers=[("Content-Type", "application/json")], body=b"[" + b" " * 100_000 + b"]"
        )
        self.assertEqual((response.code, response.json()["error"]), (413, "body_too_large"))
        self.assertEqual((await self.request("GET", "/healthz")).code, 200)

    async def test_hugeHeaderAnswered431(self) -> None:
        """
        A 20 KB Authorization header is answered 431 at once, and the
        connection closed (it got nothing for 60 s, then a close: curl exit 52).
        """
        start = time.monotonic()
        response = await self.request("GET", "/me", headers=[("Authorization", "Bearer " + "x" * 20_000)])
        self.assertLess(time.monotonic() - start, 5)
        self.assertEqual((response.code, response.json()["error"]), (431, "headers_too_large"))
        self.assertEqual(response.header("Strict-Transport-Security"), "max-age=63072000")
        line = "refused a header line of"
        self.assertIn(line, self.server.twistd.waitForLog(line))
        self.assertEqual((await self.request("GET", "/healthz")).code, 200)

    async def test_badBodies(self) -> None:
        cases = [
            (b'{"username": "alice", "password"', "invalid_json", "not valid JSON"),
            (b"[" * 50 + b"]" * 50, "invalid_json", "deeper than"),
            (b'{"username": "\xc3\x28", "password": "x"}', "invalid_utf8", "not valid UTF-8"),
            (b'{"username": "a", "username": "b", "password": "x"}', "invalid_json", "duplicate key"),
            (b'{"username": "a", "password": 1e400}', "invalid_json", "out of range"),
        ]
        for body, error, message in cases:
            response = await self.request("POST", "/auth/login", headers=[("Content-Type", "application/json")], body=body)
            self.assertEqual(response.code, 400, body)
            self.assertEqual(response.json()["error"], error, body)
            self.assertIn(message, response.json()["message"], body)


class TreqTests(Scenarios, TestCase):
    """The scenarios with treq, TLS checked by securenet's own client policy."""

    timeout = 20

    def client(self, cert: bool) -> Any:
        import treq.client
        from twisted.web.client import Agent, HTTPConnectionPool

        from securenet.tls._client import ClientTLSPolicy
        from securenet.web._client import HTTPSPolicy

        certs = self.server.certs
        policy = ClientTLSPolicy.from_files(
            trust_roots=certs / "ca.pem",
            certificate=certs / "dev-client.pem" if cert else None,
            private_key=certs / "dev-client.key" if cert else None,
        )
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        return treq.client.HTTPClient(Agent(reactor, contextFactory=HTTPSPolicy(policy), pool=pool))

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | None = None,
        cert: bool = False,
    ) -> Result:
        import treq
        from twisted.web.http_headers import Headers

        sent = Headers()
        for name, value in headers:
            sent.addRawHeader(name, value)
        response = await self.client(cert).request(method, self.server.url + path, headers=sent, data=body)
        content = await treq.content(response)
        received: dict[str, tuple[str, ...]] = {}
        for name, values in response.headers.getAllRawHeaders():
            received[name.decode().lower()] = tuple(v.decode() for v in values)
        return Result(response.code, received, content)


class CurlTests(Scenarios, TestCase):
    """The scenarios with curl: --cacert, and --cert/--key for the client certificate."""

    timeout = 20

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | None = None,
        cert: bool = False,
    ) -> Result:
        certs = self.server.certs
        args = ["-sS", "-i", "--noproxy", "*", "--max-time", "10", "--cacert", str(certs / "ca.pem"), "-X", method]
        if cert:
            args += ["--cert", str(certs / "dev-client.pem"), "--key", str(certs / "dev-client.key")]
        for name, value in headers:
            args += ["-H", f"{name}: {value}"]
        if body is not None:
            path_ = Path(self.mktemp())
            path_.write_bytes(body)
            args += ["--data-binary", f"@{path_}"]
        args.append(self.server.url + path)
        out, err, code = await getProcessOutputAndValue("curl", args, env=child_env())
        self.assertEqual(code, 0, err)
        return parse_curl(out)


def parse_curl(output: bytes) -> Result:
    """C{curl -i}'s output: the last response head (after any 100 Continue), then the body."""
    rest = output
    while True:
        head, _, rest = rest.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        code = int(lines[0].split(b" ")[1])
        if code != 100:
            break
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.setdefault(name.decode().strip().lower(), []).append(value.decode().strip())
    return Result(code, {k: tuple(v) for k, v in headers.items()}, rest)


class CurlPinTests(SynchronousTestCase):
    """curl pins the service's key with the pin C{securenet pki pin --curl} prints."""

    def curl(self, server: Server, pin: str) -> subprocess.CompletedProcess[bytes]:
        """C{curl --pinnedpubkey PIN} for the HTTP API's /healthz, run by the shell in the PKI directory."""
        command = (
            f'curl -sS --noproxy "*" --max-time 10 --cacert ca.pem --pinnedpubkey {pin} -o /dev/null -w "%{{http_code}}" "$0"'
        )
        return run(["sh", "-c", command, server.url + "/healthz"], cwd=server.certs, env=child_env(), timeout=20)

    def test_pinnedPublicKey(self) -> None:
        """As the README has it: C{curl --pinnedpubkey "$(securenet pki pin --curl server.pem)"}."""
        server = Server(self)
        result = self.curl(server, f'"$({shlex.quote(script("securenet"))} pki pin --curl server.pem)"')
        self.assertEqual((result.returncode, result.stdout), (0, b"200"), result.stderr)

    def test_wrongPin(self) -> None:
        """Another key's pin: curl refuses the server with its exit code 90 (CURLE_SSL_PINNEDPUBKEYNOTMATCH)."""
        server = Server(self)
        other = securenet("pki", "pin", "--curl", str(server.certs / "dev-client.pem")).strip()
        result = self.curl(server, shlex.quote(other))
        self.assertEqual((result.returncode, result.stdout), (90, b"000"), result.stderr)


class StreamSessionTests(SynchronousTestCase):
    """A token from the HTTP API opens a stream session (OAUTHBEARER) of the same service."""

    def test_httpTokenOpensAStreamSession(self) -> None:
        server = Server(self)
        certs = server.certs
        login = run(
            [
                "curl",
                "-sS",
                "--noproxy",
                "*",
                "--cacert",
                str(certs / "ca.pem"),
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                json.dumps({"username": "alice", "password": PASSWORDS["alice"]}),
                server.url + "/auth/login",
            ],
            timeout=10,
        )
        token = json.loads(login.stdout)["access_token"]
        token_file = Path(self.mktemp())
        token_file.write_text(token + "\n")
        endpoint = f"securenet:host=localhost:port={server.twistd.ports[0]}:trustRoots={certs / 'ca.pem'}"
        result = run(
            [script("securenet"), "connect", "--linger", "0.5", "--token-file", str(token_file), endpoint],
            input=b"hello over a stream\n",
            timeout=10,
        )
        self.assertEqual((result.returncode, result.stdout), (0, b"hello over a stream\n"), result.stderr)
        self.assertIn("authenticated as alice", result.stderr.decode())
        self.assertIn("by OAUTHBEARER: alice", server.twistd.waitForLog("by OAUTHBEARER: alice"))


class StartupRefusalTests(SynchronousTestCase):
    def test_tokenKeyWithoutDatabase(self) -> None:
        """--token-key needs the credential database: twistd refuses to start, with one line."""
        certs = dev_pki(Path(self.mktemp()).resolve())
        creds = credentials(Path(self.mktemp()).resolve())
        work = Path(self.mktemp()).resolve()
        work.mkdir(parents=True)
        http = f"securenet:0:interface=127.0.0.1:certKey={certs / 'server.pem'}:privateKey={certs / 'server.key'}"
        result = run_twistd_expecting_failure(work, ["--http", http, "--token-key", str(creds["base"] / "tokens.key")])
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            result.stderr.decode().strip(),
            f"twistd securenet: error: --token-key {creds['base'] / 'tokens.key'}: issuing tokens needs a credential database "
            "(--auth sqlite:PATH)",
        )


class ExampleTests(SynchronousTestCase):
    """examples/api as its README runs it: python -m examples.api, then curl."""

    def test_tutorial(self) -> None:
        import subprocess
        import sys

        certs = dev_pki(Path(self.mktemp()).resolve())
        creds = credentials(Path(self.mktemp()).resolve())
        work = Path(self.mktemp()).resolve()
        work.mkdir(parents=True)
        db = work / "api.db"
        base: Path = creds["base"]
        add_user("alice", "--db", str(db), "--role", "user", "--password-file", str(base / "alice.pw"))
        add_user("root", "--db", str(db), "--role", "admin", "--password-file", str(base / "root.pw"))
        listen = f"securenet:0:interface=127.0.0.1:certKey={certs / 'server.pem'}:privateKey={certs / 'server.key'}"
        process = subprocess.Popen(
            [sys.executable, "-m", "examples.api", "--db", str(db), "--token-key", str(base / "tokens.key"), "--listen", listen],
            cwd=work,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

        def stop() -> None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
            assert process.stdout is not None
            process.stdout.close()

        self.addCleanup(stop)
        assert process.stdout is not None
        import select

        ready, _, _ = select.select([process.stdout], [], [], 15)
        line = process.stdout.readline().decode() if ready else "(nothing within 15 s)"
        match = re.search(r"listening on https://127\.0\.0\.1:(\d+)/", line)
        self.assertIsNotNone(match, line)
        url = f"https://localhost:{match.group(1)}"  # type: ignore[union-attr]

        def curl(path: str, *extra: str) -> tuple[int, Any]:
            result = run(
                ["curl", "-sS", "--noproxy", "*", "--cacert", str(certs / "ca.pem"), "-w", "\n%{http_code}", *extra, url + path],
                timeout=10,
            )
            body, _, code = result.stdout.decode().rpartition("\n")
            return int(code), json.loads(body)

        code, tokens = curl(
            "/login",
            "-H",
            "Content-Type: application/json",
            "-d",
            json.dumps({"username": "alice", "password": PASSWORDS["alice"]}),
        )
        self.assertEqual(code, 200, tokens)
        alice = ("-H", f"Authorization: Bearer {tokens['access_token']}")
        self.assertEqual(curl("/protected", *alice), (200, {"logged_in_as": "alice"}))
        self.assertEqual(curl("/user", *alice), (200, {"message": "hello alice, you are a user"}))
        self.assertEqual(curl("/admin", *alice)[0], 403)
        self.assertEqual(curl("/protected")[0], 401)
        _, root_tokens = curl(
            "/login",
            "-H",
            "Content-Type: application/json",
            "-d",
            json.dumps({"username": "root", "password": PASSWORDS["root"]}),
        )
        self.assertEqual(
            curl("/admin", "-H", f"Authorization: Bearer {root_tokens['access_token']}"),
            (200, {"message": "hello root, you are an admin"}),
        )
