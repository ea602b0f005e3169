"""
Python clients, run as their own processes by the runner, for what the C
load generator cannot speak: RPC through each framework's own client (AMP,
securenet + AMP, Foolscap) and password logins (PLAIN, SCRAM-SHA-256).

    python -m bench.clients rpc KIND --port P --certs DIR [--furl F] --depth N --duration S --warmup S
    python -m bench.clients login MECH --port P --certs DIR --count N --concurrency C [--duration S]
    python -m bench.clients failtime --port P --certs DIR --tries N

Each prints one JSON object.  Every loop is bounded by a count and a deadline.
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import ssl
import statistics
import sys
import threading
import time
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

from bench.servers import LOGIN_PASSWORD, LOGIN_USER, die_with_parent

# -- RPC ---------------------------------------------------------------------------


def rpc(args: argparse.Namespace) -> dict[str, Any]:
    from twisted.internet import defer, reactor

    certs = Path(args.certs)
    payload = b"x" * args.size
    result: dict[str, Any] = {}

    async def connect() -> Any:
        if args.kind == "foolscap":
            from foolscap.api import Tub

            tub = Tub(certData=(certs / "foolscap-client.pem").read_text())
            tub.startService()
            ref = await tub.getReference(args.furl)
            return lambda: ref.callRemote("echo", payload)
        from twisted.internet.protocol import Factory
        from twisted.protocols import amp

        from bench.apps import Echo

        if args.kind == "securenet-amp":
            import securenet
            from securenet.tls import ClientTLSPolicy, SecureClientEndpoint

            policy = ClientTLSPolicy.from_files(
                trust_roots=certs / "ca.pem", certificate=certs / "bench.pem", private_key=certs / "bench.key"
            )
            endpoint = SecureClientEndpoint(reactor, policy, "127.0.0.1", args.port, server_name="localhost")
            proto = await securenet.connect(reactor, endpoint, Factory.forProtocol(amp.AMP))
        else:
            from twisted.internet import ssl as tssl
            from twisted.internet.endpoints import SSL4ClientEndpoint

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                client = tssl.PrivateCertificate.loadPEM((certs / "bench.pem").read_text() + (certs / "bench.key").read_text())
                ca = tssl.Certificate.loadPEM((certs / "ca.pem").read_text())
                options = tssl.optionsForClientTLS("localhost", trustRoot=ca, clientCertificate=client)
            proto = await SSL4ClientEndpoint(reactor, "127.0.0.1", args.port, options).connect(Factory.forProtocol(amp.AMP))
        return lambda: proto.callRemote(Echo, value=payload)

    async def main() -> None:
        call = await connect()
        start = time.monotonic()
        measure_from = start + args.warmup
        end = measure_from + args.duration
        done = {"n": 0, "all": 0}
        finished: defer.Deferred[None] = defer.Deferred()
        outstanding = {"n": 0}

        def one(_: object = None) -> None:
            t = time.monotonic()
            if measure_from <= t <= end:
                done["n"] += 1
            done["all"] += 1
            outstanding["n"] -= 1
            if t < end:
                fire()
            elif outstanding["n"] == 0 and not finished.called:
                finished.callback(None)

        def failed(f: Any) -> None:
            result.setdefault("error", str(f.value))
            outstanding["n"] -= 1
            if not finished.called:
                finished.callback(None)

        def fire() -> None:
            outstanding["n"] += 1
            call().addCallbacks(one, failed)

        reactor.callLater(args.warmup, lambda: print("START", flush=True))
        for _ in range(args.depth):
            fire()
        timeout = reactor.callLater(args.warmup + args.duration + 30, lambda: finished.called or finished.callback(None))
        await finished
        if timeout.active():
            timeout.cancel()
        result.update(ops=done["n"], seconds=args.duration, rate=done["n"] / args.duration)

    def run() -> None:
        d = defer.ensureDeferred(main())
        d.addErrback(lambda f: result.setdefault("error", f"{f.type.__name__}: {f.value}"))
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(run)
    reactor.callLater(args.warmup + args.duration + 60, reactor.stop)
    reactor.run()
    return result


# -- logins with the stdlib ssl module (blocking; the server's cost is measured) ----------------


def _context(certs: Path, with_certificate: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(certs / "ca.pem")
    if with_certificate:
        ctx.load_cert_chain(certs / "bench.pem", certs / "bench.key")
    return ctx


class LineSocket:
    def __init__(self, ctx: ssl.SSLContext, port: int, timeout: float) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        self.buf = b""

    def line(self) -> str:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(8192)
            if not chunk:
                raise ConnectionError(f"closed by the server (buffer {self.buf[:80]!r})")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r").decode("ascii")

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode("ascii") + b"\r\n")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii") if data else "="


def _cached_pbkdf2() -> None:
    """
    The client's PBKDF2 (600,000 iterations) is the client's cost, not the
    server's: compute it once per (password, salt) in this client process.
    """
    from securenet.sasl import _scram as scram  # where the client mechanism looks salted_password up

    if not hasattr(scram.salted_password, "cache_info"):
        scram.salted_password = lru_cache(maxsize=16)(scram.salted_password)


def login_once(
    mech: str, certs: Path, port: int, ctx: ssl.SSLContext, password: str = LOGIN_PASSWORD, user: str = LOGIN_USER
) -> str:
    """One connection, one login; returns the server's final line."""
    conn = LineSocket(ctx, port, timeout=30)
    try:
        greeting = conn.line()
        if not greeting.startswith("SECURENET "):
            raise ConnectionError(f"bad greeting {greeting!r}")
        if mech == "EXTERNAL":
            conn.send("AUTH EXTERNAL =")
            return conn.line()
        if mech == "PLAIN":
            conn.send("AUTH PLAIN " + _b64(b"\0" + user.encode() + b"\0" + password.encode()))
            return conn.line()
        from securenet.sasl import ChannelBindings, ScramClientMechanism

        client = ScramClientMechanism(user, password, plus=False, bindings=ChannelBindings())
        conn.send("AUTH SCRAM-SHA-256 " + _b64(client.initial()))
        challenge = conn.line()
        if not challenge.startswith("+ "):
            return challenge
        conn.send(_b64(client.respond(base64.b64decode(challenge[2:]))))
        final = conn.line()
        if final.startswith("OK "):
            parts = final.split(" ")
            client.verify_success(base64.b64decode(parts[2]) if len(parts) > 2 else None)
        return final
    finally:
        conn.close()


def login(args: argparse.Namespace) -> dict[str, Any]:
    """C{count} logins (or until C{duration}) by C{concurrency} threads."""
    certs = Path(args.certs)
    _cached_pbkdf2()
    ctx = _context(certs, with_certificate=args.mech == "EXTERNAL")
    lock = threading.Lock()
    state = {"started": 0, "ok": 0, "failed": 0, "error": None}
    deadline = time.monotonic() + args.duration
    latencies: list[float] = []

    def worker() -> None:
        while time.monotonic() < deadline:
            with lock:
                if state["started"] >= args.count:
                    return
                state["started"] += 1
            t0 = time.monotonic()
            try:
                answer = login_once(args.mech, certs, args.port, ctx)
            except Exception as e:  # counted and reported
                answer = f"error {type(e).__name__}: {e}"
            with lock:
                if answer.startswith("OK "):
                    state["ok"] += 1
                    latencies.append(time.monotonic() - t0)
                else:
                    state["failed"] += 1
                    state["error"] = state["error"] or answer[:200]

    if args.mech == "SCRAM-SHA-256":
        login_once(args.mech, certs, args.port, ctx)  # fill the client's PBKDF2 cache: not measured
    print("GO", flush=True)
    start = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic() + 30))
    elapsed = time.monotonic() - start
    latencies.sort()
    return {
        "ok": state["ok"],
        "failed": state["failed"],
        "seconds": elapsed,
        "rate": state["ok"] / elapsed if elapsed else 0.0,
        "error": state["error"],
        "lat_ms_p50": 1000 * latencies[len(latencies) // 2] if latencies else None,
    }


def failtime(args: argparse.Namespace) -> dict[str, Any]:
    """
    Time from sending AUTH PLAIN to the server's NO, for an unknown user and
    for a known user with a wrong password, interleaved.
    """
    certs = Path(args.certs)
    ctx = _context(certs, with_certificate=False)
    times: dict[str, list[float]] = {"unknown": [], "wrong": []}
    deadline = time.monotonic() + args.duration
    answers: set[str] = set()
    for i in range(args.tries):
        if time.monotonic() > deadline:
            break
        conn = LineSocket(ctx, args.port, timeout=30)
        try:
            conn.line()
            # two attempts per connection (the third would close it); alternate which goes first
            order = ("unknown", "wrong") if i % 2 == 0 else ("wrong", "unknown")
            for which in order:
                user = "nosuchuser" if which == "unknown" else LOGIN_USER
                message = "AUTH PLAIN " + _b64(b"\0" + user.encode() + b"\0" + b"wrong password")
                t0 = time.perf_counter()
                conn.send(message)
                answer = conn.line()
                times[which].append(time.perf_counter() - t0)
                answers.add(answer)
        finally:
            conn.close()
    med = {k: statistics.median(v) for k, v in times.items() if v}
    return {
        "unknown_ms": [1000 * t for t in times["unknown"]],
        "wrong_ms": [1000 * t for t in times["wrong"]],
        "median_unknown_ms": 1000 * med.get("unknown", 0.0),
        "median_wrong_ms": 1000 * med.get("wrong", 0.0),
        "ratio": med["unknown"] / med["wrong"] if med.get("wrong") else None,
        "answers": sorted(answers),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.clients")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("rpc")
    p.add_argument("kind", choices=("securenet-amp", "amp-tls", "foolscap"))
    p.add_argument("--furl")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--depth", type=int, default=1)
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--warmup", type=float, default=0.5)
    p = sub.add_parser("login")
    p.add_argument("mech", choices=("PLAIN", "SCRAM-SHA-256", "EXTERNAL"))
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--duration", type=float, default=60.0)
    p = sub.add_parser("failtime")
    p.add_argument("--tries", type=int, default=9)
    p.add_argument("--duration", type=float, default=60.0)
    for p in sub.choices.values():
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--certs", required=True)
    args = parser.parse_args(argv)
    die_with_parent()
    handler = {"rpc": rpc, "login": login, "failtime": failtime}[args.command]
    print(json.dumps(handler(args)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
