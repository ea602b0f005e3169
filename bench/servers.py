"""
The benchmark's servers, one per peer, each run as its own process by the
runner (``python -m bench.servers KIND --certs DIR``).  Each listens on
127.0.0.1 only, on a free port, prints one JSON line (``{"port": ...}``)
once it listens, and stops on SIGTERM, when its parent dies
(PR_SET_PDEATHSIG), or after ``--max-seconds`` whatever happens.

Every TLS peer uses the same certificates (ECDSA P-256 from
L{securenet.testing.EphemeralPKI}) and requires a client certificate
(mutual TLS), as a securenet server with EXTERNAL authentication does.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import signal
import sys
import time
import warnings
from pathlib import Path

KINDS = (
    "securenet",
    "securenet-amp",
    "securenet-login",
    "twisted-tls",
    "twistd-workers",
    "amp-tls",
    "asyncio",
    "uvloop",
    "foolscap",
)


def die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() == 1:
        sys.exit("bench server: parent already gone")


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def announce(**fields: object) -> None:
    print(json.dumps({"pid": os.getpid(), **fields}), flush=True)


# -- Twisted-based peers ---------------------------------------------------------


def twisted_server(args: argparse.Namespace) -> None:
    from twisted.internet import reactor, task
    from twisted.logger import globalLogBeginner, textFileLogObserver

    certs = Path(args.certs)
    if args.log:
        # Like twistd: every event is formatted and written to a log file.
        globalLogBeginner.beginLoggingTo([textFileLogObserver(open(args.log, "a"))], redirectStandardIO=False)
    reactor.suggestThreadPoolSize(args.threads)

    lags: list[tuple[float, float]] = []
    if args.lag_file:
        interval = 0.01
        state = {"expected": time.monotonic() + interval}

        def tick() -> None:
            t = time.monotonic()
            lags.append((t, max(0.0, t - state["expected"])))
            state["expected"] = t + interval

        task.LoopingCall(tick).start(interval, now=False)

    extra: dict[str, object] = {}
    if args.kind.startswith("securenet"):
        port = securenet_listen(reactor, args, certs)
    elif args.kind in ("twisted-tls", "amp-tls"):
        port = twisted_tls_listen(reactor, args, certs)
    elif args.kind == "foolscap":
        port, furl = foolscap_listen(reactor, args, certs)
        extra["furl"] = furl
    else:
        raise SystemExit(f"unknown kind {args.kind}")

    if args.tracemalloc:
        trace_memory(args.tracemalloc)
    reactor.callLater(args.max_seconds, reactor.stop)
    reactor.callWhenRunning(lambda: announce(port=port, **extra))
    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
    reactor.run()
    if profiler is not None:
        profiler.stop()
        write_profile(profiler, args.profile)
    if args.lag_file:
        Path(args.lag_file).write_text(json.dumps(lags))


def trace_memory(path: str) -> None:
    """
    tracemalloc from now on; each SIGUSR1 takes a snapshot and appends to
    C{path} what grew since the previous one (Python allocations only).
    """
    import tracemalloc

    tracemalloc.start(12)
    state: dict[str, object] = {"previous": None}

    def snapshot(signum: int, frame: object) -> None:
        import gc

        gc.collect()
        current = tracemalloc.take_snapshot().filter_traces(
            (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>"))
        )
        previous = state["previous"]
        state["previous"] = current
        if previous is None:
            return
        with open(path, "a") as out:
            by_line = current.compare_to(previous, "lineno")  # type: ignore[arg-type]
            total = sum(d.size_diff for d in by_line)
            out.write(f"== Python heap growth: {total / 1024:.0f} KiB ==\n\n-- by line --\n")
            for d in by_line[:30]:
                out.write(f"{d.size_diff / 1024:10.1f} KiB {d.count_diff:+8d} blocks  {d.traceback[0]}\n")
            out.write("\n-- by allocation site (traceback) --\n")
            for d in current.compare_to(previous, "traceback")[:12]:  # type: ignore[arg-type]
                out.write(f"{d.size_diff / 1024:10.1f} KiB {d.count_diff:+8d} blocks\n")
                for line in d.traceback.format(limit=6, most_recent_first=True):
                    out.write(f"      {line}\n")
            out.write("\n")

    signal.signal(signal.SIGUSR1, snapshot)


def write_profile(profiler, path: str) -> None:  # type: ignore[no-untyped-def]
    from pyinstrument.renderers import ConsoleRenderer

    tree = profiler.output(ConsoleRenderer(unicode=False, color=False, time="percent_of_total", show_all=False))
    flat = profiler.output(ConsoleRenderer(unicode=False, color=False, flat=True, time="percent_of_total"))
    Path(path).write_text("== flat (self time) ==\n" + flat + "\n== call tree ==\n" + tree)


def securenet_listen(reactor, args: argparse.Namespace, certs: Path) -> int:  # type: ignore[no-untyped-def]
    from twisted.cred.portal import Portal

    from bench.apps import HTTPFactory
    from securenet.cred import CertificateChecker, IdentityRealm
    from securenet.session import SessionFactory
    from securenet.tls import SecureServerEndpoint, ServerTLSPolicy

    if args.metrics_switch:
        from securenet import _metrics

        def switch(signum: int, frame: object) -> None:
            _metrics.disable() if _metrics.enabled() else _metrics.enable()

        signal.signal(signal.SIGUSR2, switch)
    checkers: list[object] = [CertificateChecker("cn")]
    client_auth = args.client_auth
    if args.kind == "securenet-login":
        checkers.append(login_checker(reactor))
        client_auth = "optional"  # password clients come without a certificate
    policy = ServerTLSPolicy.from_files(
        certs / "server.pem",
        certs / "server.key",
        trust_roots=certs / "ca.pem" if client_auth != "none" else None,
        client_auth=client_auth,
        session_tickets=not args.no_tickets,
    )
    authz_policy = None
    if args.kind == "securenet-amp":
        # SecureAMP checks the command's permission against the policy on every call.
        from bench.apps import BENCH_POLICY, secure_amp_factory
        from securenet.authz import Policy

        app = secure_amp_factory()
        authz_policy = Policy.parse(BENCH_POLICY, source="bench policy", clock=reactor)
    else:
        app = HTTPFactory()
    factory = SessionFactory(app, Portal(IdentityRealm(), checkers), reactor, policy=authz_policy)
    factory.noisy = False
    endpoint = SecureServerEndpoint(reactor, policy, 0, interface="127.0.0.1", backlog=args.backlog)
    result: list[int] = []
    endpoint.listen(factory).addCallback(lambda p: result.append(p.getHost().port))
    if args.reload_every:
        # What SIGHUP does in twistd securenet: re-read the files, check them
        # (a test handshake included) off the reactor thread, swap the context.
        from twisted.internet.task import LoopingCall

        from securenet._reload import ListenerMaterial, Reloader

        reloader = Reloader(reactor, [ListenerMaterial(endpoint, reactor)])
        reloading = {"on": not args.reload_switch}

        def reload() -> None:
            if reloading["on"]:
                reloader.reload("bench")

        LoopingCall(reload).start(args.reload_every, now=False)
        if args.reload_switch:
            # SIGUSR2 switches reloading on and off (it starts off): both series from one process.
            signal.signal(signal.SIGUSR2, lambda signum, frame: reloading.update(on=not reloading["on"]))
    return result[0]


#: The bench user of the login server and its password.
LOGIN_USER = "alice"
LOGIN_PASSWORD = "correct horse battery staple"


def login_checker(reactor):  # type: ignore[no-untyped-def]
    """securenet's credential-database checker (PLAIN, SCRAM) over a MemoryStore, production parameters."""
    from securenet import hashing_runner
    from securenet.cred import PasswordHasher, StoreChecker, new_user
    from securenet.store import MemoryStore

    hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile: t=3, m=64 MiB, p=4
    store = MemoryStore()
    store.add_user(new_user(LOGIN_USER, LOGIN_PASSWORD, hasher=hasher))  # SCRAM: 600,000 iterations
    # The same hashing pool as `--auth sqlite` (nproc - 1 threads, not the reactor's ten).
    return StoreChecker(store, reactor, runner=hashing_runner(reactor), hasher=hasher)


def twisted_tls_listen(reactor, args: argparse.Namespace, certs: Path) -> int:  # type: ignore[no-untyped-def]
    """Bare Twisted TLS: CertificateOptions and a plain protocol (what securenet adds to)."""
    from OpenSSL import crypto
    from twisted.internet import ssl

    from bench.apps import AMPFactory, HTTPFactory

    with warnings.catch_warnings():
        # Twisted 26 deprecates pyOpenSSL objects here, but they are still its API.
        warnings.simplefilter("ignore", DeprecationWarning)
        key = crypto.load_privatekey(crypto.FILETYPE_PEM, (certs / "server.key").read_bytes())
        cert = crypto.load_certificate(crypto.FILETYPE_PEM, (certs / "server.pem").read_bytes())
        ca = crypto.load_certificate(crypto.FILETYPE_PEM, (certs / "ca.pem").read_bytes())
        mutual = args.client_auth != "none"
        options = ssl.CertificateOptions(
            privateKey=key,
            certificate=cert,
            verify=mutual,
            caCerts=[ca] if mutual else None,
            requireCertificate=mutual,
            enableSessions=True,
            enableSessionTickets=not args.no_tickets,
        )
        options.getContext()
    factory = AMPFactory() if args.kind == "amp-tls" else HTTPFactory()
    port = reactor.listenSSL(0, factory, options, backlog=args.backlog, interface="127.0.0.1")
    return int(port.getHost().port)


def foolscap_listen(reactor, args: argparse.Namespace, certs: Path) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    import socket

    from foolscap.api import Tub

    from bench.apps import foolscap_echo

    # Foolscap pins the server by its certificate: the same ECDSA P-256 server key.
    cert_data = (certs / "foolscap-server.pem").read_text()
    tub = Tub(certData=cert_data)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tub.listenOn(f"tcp:{port}:interface=127.0.0.1")
    tub.setLocation(f"127.0.0.1:{port}")
    furl = tub.registerReference(foolscap_echo(), "echo")
    tub.startService()
    reactor.addSystemEventTrigger("before", "shutdown", tub.stopService)
    return port, furl


# -- asyncio / uvloop -------------------------------------------------------------


def asyncio_server(args: argparse.Namespace) -> None:
    import asyncio
    import ssl

    from bench.apps import AsyncHTTPResponder

    certs = Path(args.certs)
    if args.kind == "uvloop":
        import uvloop

        uvloop.install()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certs / "server.pem", certs / "server.key")
    if args.client_auth != "none":
        ctx.load_verify_locations(certs / "ca.pem")
        ctx.verify_mode = ssl.CERT_REQUIRED
    if args.no_tickets:
        ctx.options |= ssl.OP_NO_TICKET

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        loop.call_later(args.max_seconds, lambda: stop.done() or stop.set_result(None))
        server = await loop.create_server(AsyncHTTPResponder, "127.0.0.1", 0, ssl=ctx, backlog=args.backlog)
        announce(port=server.sockets[0].getsockname()[1])
        await stop
        server.close()

    asyncio.run(main())


def twistd_workers_server(args: argparse.Namespace) -> None:
    """
    A real C{twistd securenet --workers N} (the supervisor and its workers
    are this process's children, so the runner's CPU sample covers them),
    serving the bench HTTP responder over mutual TLS with EXTERNAL.
    """
    import socket
    import subprocess

    certs = Path(args.certs)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listen = (
        f"securenet:{port}:interface=127.0.0.1:backlog={args.backlog}:certKey={certs / 'server.pem'}"
        f":privateKey={certs / 'server.key'}:trustRoots={certs / 'ca.pem'}:clientAuth=required"
    )
    run = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
    log = open(args.log or os.devnull, "ab")
    child = subprocess.Popen(
        [sys.executable, "-c", run, "-n", "--pidfile=", "--logfile=-", "securenet", "--workers", str(args.workers)]
        + ["--app", "bench.apps.HTTPFactory", "--listen", listen],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert child.stdout is not None
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    deadline = time.monotonic() + 60
    listening = 0
    while listening < max(1, args.workers) and time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            raise SystemExit(f"twistd exited with {child.wait()}")
        log.write(line)
        listening += b"securenet listening on" in line
    announce(port=port)
    end = time.monotonic() + args.max_seconds
    for line in child.stdout:
        log.write(line)
        if time.monotonic() > end:
            break
    child.terminate()
    child.wait(30)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.servers")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--certs", required=True)
    parser.add_argument("--client-auth", default="required", choices=("required", "none"))
    parser.add_argument("--no-tickets", action="store_true")
    parser.add_argument("--reload-every", type=float, default=0.0, help="securenet: reload the certificate files every N seconds")
    parser.add_argument("--reload-switch", action="store_true", help="securenet: SIGUSR2 switches --reload-every on and off")
    parser.add_argument(
        "--metrics-switch",
        action="store_true",
        help="securenet: SIGUSR2 switches metrics recording (twistd securenet --metrics) on and off; it starts off",
    )
    parser.add_argument("--backlog", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=10, help="reactor thread pool size (Twisted's default is 10)")
    parser.add_argument("--log", help="Twisted servers: log to this file, as twistd would")
    parser.add_argument("--lag-file", help="record reactor timer lateness (10 ms LoopingCall) here as JSON")
    parser.add_argument("--profile", help="run under pyinstrument and write the profile here")
    parser.add_argument("--tracemalloc", help="Twisted servers: on each SIGUSR1 append the Python heap growth here")
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument("--workers", type=int, default=1, help="twistd-workers: twistd securenet --workers N")
    args = parser.parse_args(argv)
    die_with_parent()
    raise_nofile()
    if args.kind in ("asyncio", "uvloop"):
        asyncio_server(args)
    elif args.kind == "twistd-workers":
        twistd_workers_server(args)
    else:
        twisted_server(args)


if __name__ == "__main__":
    main()
