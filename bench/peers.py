"""
The peers of the benchmark: how to start each one (all on 127.0.0.1, same
certificates), and what each can be measured on.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

from bench.procs import PYTHON, ServerProcess, spawn, stop, which

#: name -> (label, kind of server, what it speaks)
PEERS: dict[str, tuple[str, str, str]] = {
    "securenet": ("securenet", "securenet", "http"),
    # The same kind of server (its own process); its client sends the first
    # request with the pipelined AUTH EXTERNAL (early application data, as
    # securenet.connect(early_data=True) does).
    "securenet-early": ("securenet, early data", "securenet", "http"),
    # One more securenet server whose metrics recording (twistd securenet
    # --metrics) the runner switches on and off (SIGUSR2): the same process
    # measured both ways, side by side.
    "securenet-metrics": ("securenet, metrics on", "securenet", "http"),
    "securenet-metrics-off": ("securenet, metrics off", "securenet", "http"),
    "twisted-tls": ("bare Twisted TLS", "twisted-tls", "http"),
    "asyncio": ("asyncio + ssl", "asyncio", "http"),
    "uvloop": ("uvloop + ssl", "uvloop", "http"),
    "nginx": ("nginx", "nginx", "http"),
    # The same server reloading its certificate, key and trust roots every
    # second (as SIGHUP does: files read and checked, a test handshake, the
    # context swapped).
    "securenet-reloading": ("securenet, reloading every second", "securenet", "http"),
    "securenet-reloading-off": ("securenet, not reloading", "securenet", "http"),
    # twistd securenet itself, one process serving, and a supervisor with two
    # workers on the same listening socket.
    "twistd-1": ("twistd securenet", "twistd-workers", "http"),
    "twistd-2": ("twistd securenet --workers 2", "twistd-workers", "http"),
    "securenet-amp": ("securenet + AMP", "securenet-amp", "amp"),
    "amp-tls": ("AMP over Twisted TLS", "amp-tls", "amp"),
    "foolscap": ("Foolscap", "foolscap", "foolscap"),
}

#: Server arguments a peer always runs with (beyond its kind's).
PEER_ARGS: dict[str, list[str]] = {
    "securenet-reloading": ["--reload-every", "1", "--reload-switch"],
    "securenet-metrics": ["--metrics-switch"],
    "twistd-1": ["--workers", "1"],
    "twistd-2": ["--workers", "2"],
}

#: Every Python server stops by itself after this long, whatever happens: the
#: peers live for a whole run (a full run with profiles takes ~25 minutes).
SERVER_MAX_SECONDS = 3600

HTTP_PEERS = ["securenet", "twisted-tls", "asyncio", "uvloop", "nginx"]
#: New connections: also securenet with early application data.
CONN_PEERS = ["securenet", "securenet-early", "twisted-tls", "asyncio", "uvloop", "nginx"]


def label(name: str) -> str:
    return PEERS.get(name, (name,))[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pdeathsig() -> None:
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)
    except OSError:
        pass


NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
user root;
worker_rlimit_nofile 65536;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 30000; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    fastcgi_temp_path {work}/nginx-fastcgi;
    uwsgi_temp_path {work}/nginx-uwsgi;
    scgi_temp_path {work}/nginx-scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    default_type application/octet-stream;
    sendfile off;
    open_file_cache max=64;
    server {{
        listen 127.0.0.1:{port} ssl backlog=1024;
        ssl_certificate {certs}/server.pem;
        ssl_certificate_key {certs}/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets on;
        {client_auth}
        root {www};
        location / {{ }}
    }}
}}
"""

#: The bodies nginx serves: the sizes the suite asks for.
SIZES = (64, 1024, 16384, 65536, 262144, 1048576)


class NginxProcess:
    """nginx as a TLS terminator serving GET /<n> as static files (one worker: one core, like the others)."""

    def __init__(self, name: str, certs: Path, work: Path, client_auth: bool = True) -> None:
        self.name = name
        self.error: str | None = None
        self.proc: subprocess.Popen[Any] | None = None
        self.info: dict[str, Any] = {}
        binary = which("nginx")
        if binary is None:
            self.error = "nginx is not installed (make bench installs it: apt-get install nginx)"
            self.port = 0
            return
        www = work / "www"
        www.mkdir(exist_ok=True)
        for size in SIZES:
            (www / str(size)).write_bytes(b"x" * size)
        self.port = free_port()
        conf = work / f"{name}.conf"
        verify = f"ssl_client_certificate {certs}/ca.pem;\n        ssl_verify_client on;" if client_auth else ""
        conf.write_text(NGINX_CONF.format(work=work, port=self.port, certs=certs, www=www, client_auth=verify))
        self.stderr_path = work / f"{name}.stderr"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = spawn(
            [binary, "-c", str(conf), "-p", str(work)],
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            preexec_fn=_pdeathsig,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                self.info = {"pid": self.proc.pid, "port": self.port}
                return
            except OSError:
                time.sleep(0.1)
        self.error = "did not start: " + (self.stderr_path.read_text(errors="replace").strip()[-300:] or "no output")
        self.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.error is None and self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        stop(self.proc)
        if hasattr(self, "_stderr"):
            self._stderr.close()


def start_peer(name: str, certs: Path, work: Path, *, extra: list[str] | None = None, instance: str | None = None) -> Any:
    """Start peer C{name}; the result has .port, .pid, .error (None when it runs) and .close()."""
    kind = PEERS[name][1] if name in PEERS else name
    tag = instance or name
    if kind == "nginx":
        return NginxProcess(tag, certs, work, client_auth="--client-auth=none" not in (extra or []))
    argv = [
        PYTHON,
        "-m",
        "bench.servers",
        kind,
        "--certs",
        str(certs),
        "--log",
        str(work / f"{tag}.log"),
        "--max-seconds",
        str(SERVER_MAX_SECONDS),
        *PEER_ARGS.get(name, []),
        *(extra or []),
    ]
    return ServerProcess(tag, argv, work)


def process_tree(pid: int) -> list[psutil.Process]:
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.Error:
        return []


def cpu_seconds(pid: int) -> float:
    """User + system CPU of C{pid} and its children (nginx's worker), all threads."""
    total = 0.0
    for p in process_tree(pid):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def rss_bytes(pid: int) -> int:
    total = 0
    for p in process_tree(pid):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total
