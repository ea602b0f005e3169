"""
The benchmark runner: ``python -m bench [--quick | --full] [--profile]``.

It writes the PKI, builds the load generator, starts every peer, runs each
measure against securenet and every peer that can do it (interleaved, so
each ratio is taken from runs made side by side), then prints a Markdown
table of medians and ratios and writes bench/results/*.json and one PNG per
measure.  Every child process is stopped on exit, including on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import peers as P
from bench.pki import CLIENT, write_pki
from bench.procs import PYTHON, ROOT, install_signal_handlers, read_line, spawn, stop, stop_all, which

RESULTS = ROOT / "bench" / "results"

CONFIGS: dict[str, dict[str, Any]] = {
    "quick": {
        "warmup": 0.3,
        "duration": 0.8,
        "repeats": 1,
        "close_repeats": 1,
        "conn_concurrency": 16,
        "growth_repeats": 1,
        "sizes": [64, 1048576],
        "conn_counts": [1, 100],
        "growth_peers": ["securenet", "twisted-tls"],
        "mem_counts": [1000],
        "mem_peers": ["securenet", "twisted-tls"],
        "ext_logins": 40,
        "scram_logins": 40,
        "plain_logins": 6,
        "storm_seconds": 2.0,
        "storm_concurrency": 8,
        "fail_tries": 5,
        "wrk_seconds": 1,
    },
    "full": {
        "warmup": 1.0,
        "duration": 4.0,
        "repeats": 3,
        # Rows whose ratio sits near its target on this noisy machine: more
        # interleaved repeats, so the median of per-repeat ratios settles.
        "close_repeats": 5,
        "conn_concurrency": 16,
        "growth_repeats": 1,
        "sizes": [64, 1024, 16384, 65536, 262144, 1048576],
        "conn_counts": [1, 10, 100, 1000],
        "growth_peers": P.HTTP_PEERS,
        "mem_counts": [100, 1000, 10000],
        "mem_peers": ["securenet", "twisted-tls", "asyncio", "nginx"],
        "ext_logins": 300,
        "scram_logins": 300,
        "plain_logins": 30,
        "storm_seconds": 10.0,
        "storm_concurrency": 16,
        "fail_tries": 21,
        "wrk_seconds": 4,
    },
}

# -- targets (securenet ÷ peer, same run) -------------------------------------------------------

#: (id, what, measure key, securenet series, peer series, comparison, bound)
TARGETS = [
    ("conn-full", "new connections/s, full handshakes, vs bare Twisted", "conn_full", "securenet", "twisted-tls", ">=", 0.9),
    (
        "conn-full-early",
        "new connections/s, full handshakes, early data, vs bare Twisted",
        "conn_full",
        "securenet-early",
        "twisted-tls",
        ">=",
        0.9,
    ),
    (
        "conn-resumed",
        "new connections/s, resumed ÷ securenet's own full",
        "conn_resumed",
        "securenet",
        "securenet:conn_full",
        ">=",
        2.5,
    ),
    (
        "conn-resumed-early",
        "new connections/s, resumed ÷ own full, early data",
        "conn_resumed",
        "securenet-early",
        "securenet-early:conn_full",
        ">=",
        2.5,
    ),
    (
        "reload",
        "new connections/s while reloading every second ÷ not reloading",
        "conn_reload",
        "securenet-reloading",
        "securenet-reloading-off",
        ">=",
        0.95,
    ),
    (
        "workers-cpu",
        "server CPU per full handshake, 2 workers ÷ 1 process",
        "conn_workers",
        "twistd-2",
        "twistd-1",
        "cpu<=",
        1.05,
    ),
    ("rr-1", "request/response, 1 in flight, vs bare Twisted TLS", "rr_1", "securenet", "twisted-tls", ">=", 0.95),
    ("rr-32", "request/response, 32 in flight, vs bare Twisted TLS", "rr_32", "securenet", "twisted-tls", ">=", 0.95),
    ("amp-1", "AMP calls/s, 1 outstanding, vs plain AMP over TLS (C client)", "rpc_c_1", "securenet-amp", "amp-tls", ">=", 0.9),
    (
        "amp-32",
        "AMP calls/s, 32 outstanding, vs plain AMP over TLS (C client)",
        "rpc_c_32",
        "securenet-amp",
        "amp-tls",
        ">=",
        0.9,
    ),
    ("fool-1", "AMP calls/s, 1 outstanding, vs Foolscap (Python clients)", "rpc_py_1", "securenet-amp", "foolscap", ">=", 2.5),
    ("fool-32", "AMP calls/s, 32 outstanding, vs Foolscap (Python clients)", "rpc_py_32", "securenet-amp", "foolscap", ">=", 2.5),
    ("bulk", "bulk MB/s over one connection, vs bare Twisted", "bulk", "securenet", "twisted-tls", ">=", 1.0),
    (
        "metrics",
        "new connections/s (resumed, one request each), metrics on ÷ off",
        "metrics_cost",
        "securenet-metrics",
        "securenet-metrics-off",
        ">=",
        0.97,
    ),
    ("scram-cpu", "server CPU per login, SCRAM-SHA-256 ÷ PLAIN/argon2id", "login_cpu", "SCRAM-SHA-256", "PLAIN", "<=", 1 / 20),
    ("storm-p99", "p99 echo latency during a PLAIN login storm (ms)", "storm", "probe_p99_ms", None, "<=", 50.0),
    ("memory", "memory per idle authenticated connection, vs bare Twisted", "memory", "securenet", "twisted-tls", "<=", 1.2),
    (
        "timing",
        "PLAIN failure time, unknown user ÷ known user + wrong password",
        "failtime",
        "unknown",
        "wrong",
        "within",
        (0.9, 1.1),
    ),
]


class Bench:
    def __init__(self, mode: str, profile: bool, only: set[str] | None) -> None:
        self.mode = mode
        self.cfg = CONFIGS[mode]
        self.profile = profile
        self.only = only
        self.work = Path(tempfile.mkdtemp(prefix="securenet-bench-"))
        self.certs = self.work / "certs"
        self.results: dict[str, Any] = {}
        self.unavailable: dict[str, str] = {}
        self.servers: dict[str, Any] = {}
        self.loader = ""
        self.started = time.monotonic()

    # -- set-up -------------------------------------------------------------------------------

    def log(self, message: str) -> None:
        print(f"[bench {time.monotonic() - self.started:6.1f}s] {message}", file=sys.stderr, flush=True)

    def setup(self) -> None:
        try:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            want = 65536
            resource.setrlimit(
                resource.RLIMIT_NOFILE,
                (max(soft, min(want, hard)) if hard < want else want, max(hard, want) if os.geteuid() == 0 else hard),
            )
        except (ValueError, OSError):
            pass
        write_pki(self.certs)
        self.loader = str(self.work / "tlsload")
        cc = which("cc") or which("gcc")
        if cc is None:
            raise SystemExit("bench: no C compiler (cc) to build bench/tlsload.c")
        subprocess.run(
            [cc, "-O2", "-o", self.loader, str(ROOT / "bench" / "tlsload.c"), "-lssl", "-lcrypto", "-lpthread"],
            check=True,
            timeout=120,
        )
        RESULTS.mkdir(parents=True, exist_ok=True)

    def machine(self) -> dict[str, Any]:
        import ssl

        import OpenSSL

        import twisted

        cpu = "unknown"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        info: dict[str, Any] = {
            "nproc": os.cpu_count(),
            "cpu": cpu,
            "python": platform.python_version(),
            "twisted": twisted.__version__,
            "pyopenssl": OpenSSL.__version__,
            "openssl_pyopenssl": OpenSSL.SSL.OpenSSL_version(OpenSSL.SSL.OPENSSL_VERSION).decode(),
            "openssl_stdlib": ssl.OPENSSL_VERSION,
            "kernel": platform.release(),
            "mode": self.mode,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        for mod in ("uvloop", "foolscap"):
            try:
                info[mod] = __import__(mod).__version__
            except Exception:  # reported as absent
                info[mod] = None
        nginx = which("nginx")
        if nginx:
            out = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10)
            info["nginx"] = (out.stderr or out.stdout).strip().split("/")[-1]
        return info

    def start(self, name: str, **kwargs: Any) -> Any:
        server = P.start_peer(name, self.certs, self.work, **kwargs)
        if server.error:
            self.log(f"peer {name} unavailable: {server.error}")
        return server

    def start_peers(self, names: list[str]) -> None:
        for name in names:
            if name in self.servers:
                continue
            server = self.start(name)
            self.servers[name] = server
            if server.error:
                self.unavailable[name] = server.error

    def available(self, names: list[str]) -> list[str]:
        out = []
        for name in names:
            server = self.servers.get(name)
            if server is None:
                continue
            if server.error is None and not server.alive:
                server.error = f"exited during the run: {server.tail() if hasattr(server, 'tail') else ''}"
                self.unavailable[name] = server.error
            if server.error is None:
                out.append(name)
        return out

    # -- running the load generator -----------------------------------------------------------

    def tlsload(
        self, name: str, port: int, *args: str, duration: float | None = None, warmup: float | None = None, pid: int | None = None
    ) -> dict[str, Any]:
        duration = self.cfg["duration"] if duration is None else duration
        warmup = self.cfg["warmup"] if warmup is None else warmup
        argv = [
            self.loader,
            "--port",
            str(port),
            "--ca",
            str(self.certs / "ca.pem"),
            "--cert",
            str(self.certs / f"{CLIENT}.pem"),
            "--key",
            str(self.certs / f"{CLIENT}.key"),
            "--duration",
            str(duration),
            "--warmup",
            str(warmup),
            *args,
        ]
        if name.startswith("securenet"):
            argv.append("--auth-external")
        if name == "securenet-early":
            argv.append("--early-data")
        proc = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        cpu = self._cpu_window(pid, warmup, duration, proc)
        try:
            out, err = proc.communicate(timeout=duration + warmup + 60)
        except subprocess.TimeoutExpired:
            stop(proc)
            return {"error": "tlsload timed out", "rate": 0.0}
        stop(proc)
        try:
            result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"error": f"tlsload failed: {err.decode(errors='replace')[-300:]}", "rate": 0.0}
        result.update(cpu)
        if result.get("ops"):
            result["server_cpu_us_per_op"] = 1e6 * result.get("server_cpu_s", 0.0) / result["ops"]
        return result

    def _cpu_window(self, pid: int | None, warmup: float, duration: float, proc: subprocess.Popen[Any]) -> dict[str, float]:
        """The server's CPU seconds during the measured window (sampled around it)."""
        if pid is None:
            return {}
        time.sleep(warmup)
        c0 = P.cpu_seconds(pid)
        t0 = time.monotonic()
        try:
            proc.wait(timeout=duration)
        except subprocess.TimeoutExpired:
            pass
        c1 = P.cpu_seconds(pid)
        wall = time.monotonic() - t0
        return {"server_cpu_s": c1 - c0, "server_util": (c1 - c0) / wall if wall > 0 else 0.0}

    def series(
        self,
        key: str,
        title: str,
        unit: str,
        names: list[str],
        run: Callable[[str, Any], dict[str, Any]],
        value: str = "rate",
        repeats: int | None = None,
    ) -> None:
        """Run C{run(name, server)} for each peer, C{repeats} times interleaved; keep every sample."""
        if self.only and key not in self.only and key.rsplit("_", 1)[0] not in self.only:
            return
        names = self.available(names)
        samples: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        for rep in range(repeats or self.cfg["repeats"]):
            for name in names:
                r = run(name, self.servers[name])
                samples[name].append(r)
                if r.get("error") or r.get("errors"):
                    self.log(f"{key} {name}: {r.get('error') or r.get('first_error')} ({r.get('errors', 0)} errors)")
            self.log(f"{key} rep {rep + 1}: " + ", ".join(f"{n}={samples[n][-1].get(value, 0):.1f}" for n in names))
        self.results[key] = {"title": title, "unit": unit, "value": value, "samples": samples}

    # -- the measures ----------------------------------------------------------------------------

    def measure_connections(self) -> None:
        c = str(self.cfg["conn_concurrency"])
        for key, extra, title in (
            ("conn_full", [], "new connections/s (full handshakes)"),
            ("conn_resumed", ["--resume"], "new connections/s (resumed handshakes)"),
        ):
            self.series(
                key,
                title,
                "conn/s",
                P.CONN_PEERS,
                lambda n, s, extra=extra: self.tlsload(
                    n, s.port, "--mode", "conn", "--conns", c, "--path", "/64", *extra, pid=s.pid
                ),
                repeats=self.cfg["close_repeats"],
            )

    def measure_reload(self) -> None:
        """
        Full handshakes/s while the server reloads its certificate files
        every second (what SIGHUP does: files read and checked, a test
        handshake, the context swapped) vs the same server not reloading.
        """
        self.switched(
            "conn_reload",
            "new connections/s (full handshakes), reloading every second vs not",
            "securenet-reloading",
            "securenet-reloading-off",
            "securenet-reloading",
        )

    def measure_workers(self) -> None:
        """Full handshakes/s and server CPU per handshake of twistd securenet with 2 workers vs 1 process."""
        c = str(self.cfg["conn_concurrency"])
        self.series(
            "conn_workers",
            "new connections/s (full handshakes), twistd securenet, 1 process vs --workers 2",
            "conn/s",
            ["twistd-1", "twistd-2"],
            lambda n, s: self.tlsload("securenet-" + n, s.port, "--mode", "conn", "--conns", c, "--path", "/64", pid=s.pid),
            repeats=self.cfg["close_repeats"],
        )

    def measure_request_response(self) -> None:
        for depth in (1, 32):
            self.series(
                f"rr_{depth}",
                f"requests/s on one authenticated connection, {depth} in flight (64 B)",
                "req/s",
                P.HTTP_PEERS,
                lambda n, s, depth=depth: self.tlsload(
                    n, s.port, "--mode", "keep", "--conns", "1", "--depth", str(depth), "--path", "/64", pid=s.pid
                ),
                repeats=self.cfg["close_repeats"],
            )

    def switched(self, key: str, title: str, server_name: str, off: str, on: str, *extra: str) -> None:
        """
        A cost measured in one server, switched off and on (SIGUSR2) between
        interleaved runs, so both series come from the same process; the
        order alternates from repeat to repeat (the second run of a pair
        pays for the first one's closed connections).  Two processes, or a
        fixed order, were biased by more than the effects measured here.
        """
        if self.only and key not in self.only:
            return
        server = self.servers.get(server_name)
        if server is None or not self.available([server_name]):
            return
        c = str(self.cfg["conn_concurrency"])
        state = {"on": False}
        samples: dict[str, list[dict[str, Any]]] = {off: [], on: []}
        for rep in range(2 * self.cfg["close_repeats"]):
            order = [off, on]
            for name in order if rep % 2 == 0 else order[::-1]:
                if state["on"] != (name == on):
                    os.kill(server.pid, signal.SIGUSR2)
                    state["on"] = name == on
                    time.sleep(0.1)
                samples[name].append(
                    self.tlsload(
                        server_name, server.port, "--mode", "conn", "--conns", c, "--path", "/64", *extra, pid=server.pid
                    )
                )
            self.log(f"{key} rep {rep + 1}: " + ", ".join(f"{n}={samples[n][-1].get('rate', 0):.1f}" for n in order))
        self.results[key] = {"title": title, "unit": "conn/s", "value": "rate", "samples": samples}

    def measure_metrics(self) -> None:
        """
        What recording metrics costs (C{twistd securenet --metrics}). Per
        connection it records the handshake, the authentication and the
        open-connection gauge; resumed handshakes make that the largest
        share of the work.
        """
        self.switched(
            "metrics_cost",
            "new connections/s (resumed, one request each), metrics on vs off",
            "securenet-metrics",
            "securenet-metrics-off",
            "securenet-metrics",
            "--resume",
        )

    def measure_rpc(self) -> None:
        for depth in (1, 32):
            self.series(
                f"rpc_c_{depth}",
                f"AMP calls/s, {depth} outstanding (C client)",
                "calls/s",
                ["securenet-amp", "amp-tls"],
                lambda n, s, depth=depth: self.tlsload(
                    n,
                    s.port,
                    "--mode",
                    "keep",
                    "--proto",
                    "amp",
                    "--amp-size",
                    "64",
                    "--conns",
                    "1",
                    "--depth",
                    str(depth),
                    pid=s.pid,
                ),
                repeats=self.cfg["close_repeats"],
            )
        for depth in (1, 32):
            self.series(
                f"rpc_py_{depth}",
                f"RPC calls/s, {depth} outstanding (each framework's Python client)",
                "calls/s",
                ["securenet-amp", "amp-tls", "foolscap"],
                lambda n, s, depth=depth: self.rpc_client(n, s, depth),
            )

    def rpc_client(self, name: str, server: Any, depth: int) -> dict[str, Any]:
        duration, warmup = self.cfg["duration"], self.cfg["warmup"] + 0.5
        argv = [
            PYTHON,
            "-m",
            "bench.clients",
            "rpc",
            name,
            "--port",
            str(server.port),
            "--certs",
            str(self.certs),
            "--depth",
            str(depth),
            "--duration",
            str(duration),
            "--warmup",
            str(warmup),
        ]
        if name == "foolscap":
            argv += ["--furl", server.info["furl"]]
        proc = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        # the client's start-up (imports, connect) comes before its own warm-up
        start = read_line(proc, 30 + warmup)
        c0, t0 = P.cpu_seconds(server.pid), time.monotonic()
        line = read_line(proc, 30 + duration)
        c1, t1 = P.cpu_seconds(server.pid), time.monotonic()
        stop(proc)
        try:
            result = dict(json.loads(line or ""))
        except ValueError:
            return {"error": f"client failed: {start} {line}", "rate": 0.0}
        if start == "START" and result.get("ops"):
            result["server_cpu_s"] = c1 - c0
            result["server_util"] = (c1 - c0) / (t1 - t0)
            result["server_cpu_us_per_op"] = 1e6 * (c1 - c0) / result["ops"]
        return result

    def measure_bulk(self) -> None:
        self.series(
            "bulk",
            "bulk transfer over one connection (1 MiB responses, 4 in flight)",
            "MB/s",
            P.HTTP_PEERS,
            lambda n, s: self.tlsload(
                n, s.port, "--mode", "keep", "--conns", "1", "--depth", "4", "--path", "/1048576", pid=s.pid
            ),
            value="mbps",
        )

    def measure_growth(self) -> None:
        names = self.cfg["growth_peers"]
        for count in self.cfg["conn_counts"]:
            threads = "1"  # the other core is the server's
            self.series(
                f"growth_conns_{count}",
                f"requests/s with {count} connections (1 in flight each)",
                "req/s",
                names,
                lambda n, s, count=count, threads=threads: self.tlsload(
                    n,
                    s.port,
                    "--mode",
                    "keep",
                    "--conns",
                    str(count),
                    "--threads",
                    threads,
                    "--depth",
                    "1",
                    "--path",
                    "/64",
                    pid=s.pid,
                    warmup=max(self.cfg["warmup"], count / 500),
                ),
                repeats=self.cfg["growth_repeats"],
            )
        for size in self.cfg["sizes"]:
            self.series(
                f"growth_size_{size}",
                f"MB/s with {size} B responses (1 connection, 1 in flight)",
                "MB/s",
                names,
                lambda n, s, size=size: self.tlsload(
                    n, s.port, "--mode", "keep", "--conns", "1", "--depth", "1", "--path", f"/{size}", pid=s.pid
                ),
                value="mbps",
                repeats=self.cfg["growth_repeats"],
            )

    def measure_memory(self) -> None:
        if self.only and "memory" not in self.only:
            return
        samples: dict[str, list[dict[str, Any]]] = {}
        for name in self.cfg["mem_peers"]:
            for count in self.cfg["mem_counts"]:
                r = self.memory_once(name, count)
                samples.setdefault(name, []).append(r)
                self.log(f"memory {name} n={count}: {r.get('kib_per_conn', 0):.1f} KiB/conn {r.get('error') or ''}")
        self.results["memory"] = {
            "title": "server memory per idle authenticated connection",
            "unit": "KiB/conn",
            "value": "kib_per_conn",
            "samples": samples,
        }

    def memory_once(self, name: str, count: int, tracemalloc: Path | None = None) -> dict[str, Any]:
        extra = ["--tracemalloc", str(tracemalloc)] if tracemalloc else None
        server = self.start(name, instance=f"{name}-mem-{count}", extra=extra)
        if server.error:
            self.unavailable.setdefault(name, server.error)
            return {"count": count, "error": server.error}
        try:
            # warm up the server (imports, first contexts), then the baseline
            self.tlsload(name, server.port, "--mode", "conn", "--conns", "4", duration=0.5, warmup=0.0)
            time.sleep(0.5)
            if tracemalloc:
                os.kill(server.pid, signal.SIGUSR1)
                time.sleep(1.0)
            base = P.rss_bytes(server.pid)
            argv = [
                self.loader,
                "--port",
                str(server.port),
                "--ca",
                str(self.certs / "ca.pem"),
                "--cert",
                str(self.certs / f"{CLIENT}.pem"),
                "--key",
                str(self.certs / f"{CLIENT}.key"),
                "--mode",
                "hold",
                "--conns",
                str(count),
                "--path",
                "/64",
                "--hold-seconds",
                str(60 + count / 100),
            ]
            if name.startswith("securenet"):
                argv.append("--auth-external")
            hold = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.PIPE)
            ready = read_line(hold, 30 + count / 100)
            time.sleep(1.0)
            held = P.rss_bytes(server.pid)
            if tracemalloc:
                os.kill(server.pid, signal.SIGUSR1)
                # wait for the report to be written (the snapshot takes a while)
                deadline, last = time.monotonic() + 120, -1
                while time.monotonic() < deadline:
                    time.sleep(1.0)
                    size = tracemalloc.stat().st_size if tracemalloc.exists() else 0
                    if size and size == last:
                        break
                    last = size
            assert hold.stdin is not None
            hold.stdin.close()
            hold.stdin = None
            try:
                out, _ = hold.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                out = b""
            stop(hold)
            parts = (ready or "").split()
            idle = int(parts[1]) if len(parts) > 1 and parts[0] == "READY" else 0
            result: dict[str, Any] = {"count": count, "idle": idle, "rss_base": base, "rss_held": held}
            if idle:
                result["kib_per_conn"] = (held - base) / idle / 1024
            if idle < count:
                result["error"] = f"only {idle} of {count} connections established: {out.decode(errors='replace')[-200:]}"
            return result
        finally:
            server.close()

    def measure_logins(self) -> None:
        if self.only and not self.only & {"login_cpu", "storm", "failtime"}:
            return
        lag_file = self.work / "lag.json"
        server = self.start("securenet-login", extra=["--lag-file", str(lag_file)])
        if server.error:
            self.unavailable["securenet-login"] = server.error
            return
        try:
            # server CPU per successful login (the connection's handshake included)
            cpu: dict[str, list[dict[str, Any]]] = {}
            for _rep in range(self.cfg["repeats"]):
                for mech, count in (
                    ("EXTERNAL", self.cfg["ext_logins"]),
                    ("SCRAM-SHA-256", self.cfg["scram_logins"]),
                    ("PLAIN", self.cfg["plain_logins"]),
                ):
                    r = self.login_client(server, mech, count, 2)
                    cpu.setdefault(mech, []).append(r)
                self.log(
                    "login cpu ms: " + ", ".join(f"{m}={v[-1].get('server_cpu_ms_per_login', 0):.2f}" for m, v in cpu.items())
                )
            self.results["login_cpu"] = {
                "title": "server CPU per successful login (TLS handshake included)",
                "unit": "ms CPU",
                "value": "server_cpu_ms_per_login",
                "samples": cpu,
            }

            # timing of failures: unknown user vs known user with a wrong password
            argv = [
                PYTHON,
                "-m",
                "bench.clients",
                "failtime",
                "--port",
                str(server.port),
                "--certs",
                str(self.certs),
                "--tries",
                str(self.cfg["fail_tries"]),
            ]
            proc = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
            line = read_line(proc, 300)
            stop(proc)
            try:
                fail = json.loads(line or "")
            except ValueError:
                fail = {"error": f"failtime client failed: {line}"}
            self.results["failtime"] = {"title": "PLAIN failure time", "unit": "ms", "samples": {"securenet": [fail]}}
            self.log(
                f"failtime: unknown {fail.get('median_unknown_ms', 0):.1f} ms, wrong {fail.get('median_wrong_ms', 0):.1f} ms"
            )

            storm_result = self.storm_once(server, lag_file)
        finally:
            server.close()
        self.results["storm"] = {
            "title": "reactor responsiveness during a PLAIN login storm",
            "unit": "ms",
            "samples": {"securenet": [storm_result]},
        }

    def storm_once(self, server: Any, lag_file: Path) -> dict[str, Any]:
        """PLAIN logins by many clients while a probe sends one request every 10 ms on an authenticated connection."""
        seconds = self.cfg["storm_seconds"]
        idle_probe = self.tlsload(
            "securenet",
            server.port,
            "--mode",
            "keep",
            "--interval-ms",
            "10",
            "--path",
            "/64",
            duration=min(seconds, 3.0),
            warmup=0.2,
        )
        storm_start = time.monotonic()
        probe_holder: dict[str, Any] = {}
        probe = threading.Thread(
            target=lambda: probe_holder.update(
                self.tlsload(
                    "securenet",
                    server.port,
                    "--mode",
                    "keep",
                    "--interval-ms",
                    "10",
                    "--path",
                    "/64",
                    duration=seconds,
                    warmup=0.5,
                )
            )
        )
        probe.start()
        storm = self.login_client(server, "PLAIN", 1_000_000, self.cfg["storm_concurrency"], duration=seconds + 0.5)
        probe.join(seconds + 60)
        storm_end = time.monotonic()
        server.close()  # writes the lag file
        lags: list[float] = []
        try:
            raw = json.loads(lag_file.read_text())
            # the lag file's clock is the server's time.monotonic(): the same clock as ours
            lags = sorted(lag for t, lag in raw if storm_start + 0.5 <= t <= storm_end)
        except (OSError, ValueError):
            pass
        result = {
            "probe_idle": idle_probe,
            "probe": probe_holder,
            "storm": storm,
            "probe_p50_ms": probe_holder.get("lat_us", {}).get("p50", 0) / 1000,
            "probe_p99_ms": probe_holder.get("lat_us", {}).get("p99", 0) / 1000,
            "probe_max_ms": probe_holder.get("lat_us", {}).get("max", 0) / 1000,
            "idle_p99_ms": idle_probe.get("lat_us", {}).get("p99", 0) / 1000,
            "timer_lag_p99_ms": 1000 * lags[int(0.99 * (len(lags) - 1))] if lags else None,
            "timer_lag_max_ms": 1000 * lags[-1] if lags else None,
            "timer_samples": len(lags),
        }
        self.log(
            f"storm: {storm.get('ok')} logins in {storm.get('seconds', 0):.1f}s; probe p99 {result['probe_p99_ms']:.1f} ms, "
            f"timer lag p99 {result['timer_lag_p99_ms']}"
        )
        return result

    def storm_experiments(self) -> None:
        """The storm again with smaller reactor thread pools: evidence for the cause of a missed p99."""
        out = {}
        for threads in (1, 2, 4):
            lag_file = self.work / f"lag-{threads}.json"
            server = self.start(
                "securenet-login", extra=["--lag-file", str(lag_file), "--threads", str(threads)], instance=f"login-pool{threads}"
            )
            if server.error:
                continue
            try:
                out[threads] = self.storm_once(server, lag_file)
            finally:
                server.close()
            self.log(
                f"storm with a thread pool of {threads}: probe p99 {out[threads]['probe_p99_ms']:.1f} ms, logins "
                f"{out[threads]['storm'].get('ok')}"
            )
        (RESULTS / "storm_experiments.json").write_text(json.dumps(out, indent=1, default=str))

    def login_client(self, server: Any, mech: str, count: int, concurrency: int, duration: float = 120.0) -> dict[str, Any]:
        argv = [
            PYTHON,
            "-m",
            "bench.clients",
            "login",
            mech,
            "--port",
            str(server.port),
            "--certs",
            str(self.certs),
            "--count",
            str(count),
            "--concurrency",
            str(concurrency),
            "--duration",
            str(duration),
        ]
        proc = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        go = read_line(proc, 60)
        c0 = P.cpu_seconds(server.pid)
        line = read_line(proc, duration + 60)
        c1 = P.cpu_seconds(server.pid)
        stop(proc)
        try:
            r: dict[str, Any] = json.loads(line or "")
        except ValueError:
            return {"error": f"login client failed: {go} {line}"}
        if r.get("ok"):
            r["server_cpu_ms_per_login"] = 1000 * (c1 - c0) / (r["ok"] + r.get("failed", 0))
        r["server_cpu_s"] = c1 - c0
        return r

    def measure_wrk(self) -> None:
        """
        Calibration: wrk and tlsload against the same nginx (server-authenticated
        TLS only, as wrk sends no client certificate).
        """
        if self.only and "calibration" not in self.only:
            return
        wrk = which("wrk")
        if wrk is None:
            self.unavailable["wrk"] = "wrk is not installed"
            return
        server = self.start("nginx", extra=["--client-auth=none"], instance="nginx-noauth")
        if server.error:
            self.unavailable["nginx-noauth"] = server.error
            return
        out: dict[str, Any] = {}
        try:
            secs = self.cfg["wrk_seconds"]
            # wrk resumes TLS sessions on its new connections: compare it with tlsload both ways
            for key, headers, conns, extra in (
                (
                    "new connections/s (Connection: close)",
                    ["-H", "Connection: close"],
                    16,
                    [["--mode", "conn"], ["--mode", "conn", "--resume"]],
                ),
                ("requests/s, 1 connection", [], 1, [["--mode", "keep"]]),
            ):
                r = subprocess.run(
                    [wrk, "-t1", f"-c{conns}", f"-d{secs}s", *headers, f"https://127.0.0.1:{server.port}/64"],
                    capture_output=True,
                    text=True,
                    timeout=secs + 30,
                )
                rate = next((float(line.split()[1]) for line in r.stdout.splitlines() if line.startswith("Requests/sec")), 0.0)
                own = []
                for args in extra:
                    argv = [
                        self.loader,
                        "--port",
                        str(server.port),
                        "--ca",
                        str(self.certs / "ca.pem"),
                        "--duration",
                        str(secs),
                        "--warmup",
                        "0",
                        "--path",
                        "/64",
                        "--conns",
                        str(conns),
                        *args,
                    ]
                    mine = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 30)
                    try:
                        own.append(json.loads(mine.stdout.strip().splitlines()[-1])["rate"])
                    except (ValueError, IndexError, KeyError):
                        own.append(0.0)
                out[key] = {
                    "wrk": rate,
                    "tlsload": own[0],
                    "tlsload_resumed": own[1] if len(own) > 1 else None,
                    "wrk_output": r.stdout[-600:],
                }
                self.log(f"calibration {key}: wrk {rate:.0f}/s, tlsload {own}")
        finally:
            server.close()
        self.results["calibration"] = {
            "title": "load generator calibration against nginx (no client certificates)",
            "unit": "req/s",
            "samples": out,
        }

    def profile_missed(self, verdicts: list[dict[str, Any]]) -> None:
        """Re-run the scenario of each missed target with securenet (and bare Twisted) under pyinstrument."""
        scenarios: dict[str, tuple[str, list[str]]] = {
            "conn-full": ("securenet", ["--mode", "conn", "--conns", "16", "--path", "/64"]),
            "conn-resumed": ("securenet", ["--mode", "conn", "--conns", "16", "--path", "/64", "--resume"]),
            "rr-1": ("securenet", ["--mode", "keep", "--conns", "1", "--depth", "1", "--path", "/64"]),
            "rr-32": ("securenet", ["--mode", "keep", "--conns", "1", "--depth", "32", "--path", "/64"]),
            "amp-1": ("securenet-amp", ["--mode", "keep", "--proto", "amp", "--conns", "1", "--depth", "1"]),
            "amp-32": ("securenet-amp", ["--mode", "keep", "--proto", "amp", "--conns", "1", "--depth", "32"]),
            "bulk": ("securenet", ["--mode", "keep", "--conns", "1", "--depth", "4", "--path", "/1048576"]),
        }
        peer_of = {"securenet": "twisted-tls", "securenet-amp": "amp-tls"}
        missed = {v["id"] for v in verdicts if v["met"] is False}
        if "memory" in missed:
            for who in ("securenet", "twisted-tls"):
                path = RESULTS / f"profile-memory-{who}.txt"
                path.unlink(missing_ok=True)
                self.memory_once(who, 1000, tracemalloc=path)
                self.log(f"heap growth of {who} over 1000 idle connections written to {path.relative_to(ROOT)}")
        if "storm-p99" in missed:
            self.storm_experiments()
        for verdict in verdicts:
            if verdict["met"] is not False or verdict["id"] not in scenarios:
                continue
            name, args = scenarios[verdict["id"]]
            for who in (name, peer_of[name]):
                path = RESULTS / f"profile-{verdict['id']}-{who}.txt"
                server = self.start(who, extra=["--profile", str(path)], instance=f"{who}-profile")
                if server.error:
                    continue
                try:
                    self.tlsload(who, server.port, *args, duration=4.0, warmup=0.5)
                finally:
                    server.close()
                self.log(f"profile of {verdict['id']} ({who}) written to {path.relative_to(ROOT)}")

    # -- the whole run --------------------------------------------------------------------------

    def run(self) -> int:
        install_signal_handlers()
        self.setup()
        machine = self.machine()
        self.log(f"{self.mode} run; work directory {self.work}")
        steps: list[tuple[list[str], Callable[[], None]]] = [
            (P.CONN_PEERS, self.measure_connections),
            (["securenet-reloading"], self.measure_reload),
            (["twistd-1", "twistd-2"], self.measure_workers),
            (P.HTTP_PEERS, self.measure_request_response),
            (["securenet-metrics"], self.measure_metrics),
            (["securenet-amp", "amp-tls", "foolscap"], self.measure_rpc),
            (P.HTTP_PEERS, self.measure_bulk),
            (P.HTTP_PEERS, self.measure_growth),
            ([], self.measure_logins),
            ([], self.measure_memory),
            ([], self.measure_wrk),
        ]
        failures = []
        for needed, step in steps:
            try:
                self.start_peers(needed)
                step()
            except Exception as e:  # one measure failing must not lose the others
                failures.append(f"{step.__name__}: {type(e).__name__}: {e}")
                self.log(f"{step.__name__} failed:\n{traceback.format_exc()}")
        for server in self.servers.values():
            server.close()
        from bench.report import report

        verdicts = report(self.results, self.unavailable, machine, failures, RESULTS, self.mode)
        if self.profile:
            try:
                self.profile_missed(verdicts)
            except Exception:
                self.log(f"profiling failed:\n{traceback.format_exc()}")
        self.log(f"done in {time.monotonic() - self.started:.0f} s")
        return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_const", dest="mode", const="quick", help="small counts, under 2 minutes (CI)")
    group.add_argument("--full", action="store_const", dest="mode", const="full", help="the full run (default)")
    parser.add_argument("--profile", action="store_true", help="profile securenet where a target is missed (pyinstrument)")
    parser.add_argument("--only", help="comma-separated measure keys (e.g. conn_full,rr_1,memory)")
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    bench = Bench(args.mode or "full", args.profile, only)
    try:
        return bench.run()
    finally:
        stop_all()
