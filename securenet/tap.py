"""
C{twistd securenet}: options and service::

    twistd -n securenet [--listen ENDPOINT ...] [--app NAME_OR_DOTTED_PATH]
                        [--auth CHECKER[:ARGS] ...] [--policy FILE] [--config FILE]
                        [--http ENDPOINT ...] [--token-key PATH] [--token-ttl SECONDS]
                        [--refresh-ttl SECONDS] [--log-level LEVEL] [--drain SECONDS] [--metrics ENDPOINT]

With no C{--listen} (on the command line or in the config file) the
development defaults apply: 127.0.0.1:8443 with the PKI that C{make run}
creates under C{certs/}, client certificates required.  With no C{--auth},
clients are named by their verified certificate (C{certificate:map=cn}).

C{--http ENDPOINT} (repeatable) also serves the built-in HTTP API
(L{securenet.web.BuiltinAPI}) on a C{securenet:} endpoint, with the same portal,
throttle and policy; with C{--http} and no C{--listen}, only the HTTP API is
served.  C{--token-key PATH} lets it issue tokens (L{securenet.web.TokenService}).

C{--metrics ENDPOINT} serves C{/metrics} (Prometheus), C{/healthz} and
C{/readyz} (docs/metrics.md); a bare port is C{tcp:PORT:interface=127.0.0.1}.

A listener logs that it listens once its port is bound; one that cannot
bind stops twistd with one line (L{ListenError}).  SIGHUP reloads every
listener's certificate, key, trust roots and CRL, checked before they
serve (L{securenet._reload}), the policy, the token keys and key-file
checkers; a CRL file is also watched (C{crlPoll}).  SIGTERM stops
gracefully: no new connections, the open ones have C{--drain SECONDS}
(default 30) to finish, then one summary line and exit 0
(docs/operations.md).
"""

from __future__ import annotations

import math
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

from twisted.application.service import IService, MultiService
from twisted.cred import strcred
from twisted.cred.checkers import FilePasswordDB, InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.python import reflect, usage

from securenet import _metrics
from securenet._errors import SecurenetError
from securenet._logs import SecurenetLogger, literal
from securenet._reload import ListenerMaterial, Reloader, startup_warnings, watch_crls
from securenet._service import DEFAULT_DRAIN, Listener, ListenError, SecurenetService, _announcer
from securenet.apps import BUILTIN_APPS
from securenet.audit import DEFAULT_LEVEL as DEFAULT_LOG_LEVEL
from securenet.audit import LEVELS as LOG_LEVELS
from securenet.audit import set_level as set_log_level
from securenet.authz import ReloadablePolicy
from securenet.cred._checkers import CertificateChecker
from securenet.cred._identity import IdentityRealm
from securenet.cred._throttle import Throttle
from securenet.interfaces import ICredentialStore, IReloadable
from securenet.session._server import SessionFactory
from securenet.tls._endpoints import server_endpoint
from securenet.tls._material import DEFAULT_EXPIRY_MARGIN
from securenet.web._tokens import DEFAULT_ACCESS_TTL, DEFAULT_REFRESH_TTL

if TYPE_CHECKING:
    from securenet.web._tokens import TokenService

log = SecurenetLogger(namespace="securenet.tap")

#: Days before expiry from which a certificate is warned about.
DEFAULT_EXPIRY_MARGIN_DAYS = DEFAULT_EXPIRY_MARGIN / 86400

DEV_CERTS = Path("certs")
DEV_PORT = 8443


def dev_listen(certs: Path = DEV_CERTS, port: int = DEV_PORT) -> str:
    """The endpoint C{make run} serves: mutual TLS on 127.0.0.1 with the dev PKI."""
    return (
        f"securenet:{port}:interface=127.0.0.1"
        f":certKey={certs / 'server.pem'}:privateKey={certs / 'server.key'}"
        f":trustRoots={certs / 'ca.pem'}:clientAuth=required"
    )


CONFIG_KEYS = {
    "listen": "list of securenet: server endpoint strings",
    "app": "built-in app name or dotted path of a factory/protocol",
    "auth": 'list of --auth values, e.g. ["certificate:map=spiffe"]',
    "policy": "path of the authorization policy (TOML)",
    "http": "list of securenet: server endpoint strings for the HTTP API",
    "token_key": "path of the token signing key (securenet tokens keygen) for the HTTP API",
    "token_ttl": "seconds an access token issued by the HTTP API is valid",
    "token_key_overlap": "seconds a replaced token key keeps verifying after a reload (default token_ttl)",
    "refresh_ttl": "seconds a refresh token issued by the HTTP API is valid",
    "log_level": "debug, info or warn: the least severe securenet events logged",
    "audit_failure": "refuse or continue: what authentications do while the audit log cannot be written",
    "expiry_margin": "days before a certificate expires from which start-up and reloads warn",
    "workers": "worker processes serving the same listeners (default 1)",
    "drain": "seconds a graceful stop (SIGTERM) lets open connections finish; 0 closes them at once",
    "metrics": "endpoint (or bare port, on 127.0.0.1) serving /metrics, /healthz and /readyz",
}

#: The most worker processes --workers starts.
MAX_WORKERS = 64

#: What authentications do while the audit log cannot be written.
AUDIT_FAILURE_MODES = ("refuse", "continue")


class StartupError(SystemExit):
    """
    Refuse to start, with one line on stderr naming what is wrong (twistd
    would otherwise print a traceback for an exception from makeService).
    """

    def __init__(self, message: str) -> None:
        print(f"twistd securenet: error: {message}", file=sys.stderr)
        super().__init__(1)


class Options(usage.Options, strcred.AuthOptionMixin):
    synopsis = (
        "[--listen ENDPOINT ...] [--app NAME] [--auth CHECKER ...] [--policy FILE] [--config FILE]"
        " [--http ENDPOINT ...] [--token-key PATH] [--token-ttl SECONDS] [--token-key-overlap SECONDS]"
        " [--refresh-ttl SECONDS] [--log-level LEVEL]"
        " [--audit-failure refuse|continue] [--expiry-margin DAYS] [--drain SECONDS] [--workers N]"
        " [--metrics ENDPOINT]"
    )
    longdesc = (
        "Serve an application over mutually-authenticated, pinned TLS. "
        "ENDPOINT is a securenet: server endpoint string (see the README). "
        "Without --listen, serves the development PKI in ./certs on 127.0.0.1:8443 "
        "(unless --http is given: then only the HTTP API is served). "
        "--http ENDPOINT serves the built-in HTTP API (JSON: /healthz, /me, /auth/login, /auth/refresh, "
        "/auth/logout, /admin/users) on a securenet: endpoint, with the same --auth checkers and --policy."
    )
    optParameters = [
        [
            "app",
            "a",
            None,
            f"Application: one of {', '.join(BUILTIN_APPS)} or a dotted path to a factory or protocol class (default echo).",
        ],
        [
            "config",
            "c",
            None,
            "TOML file with the same settings (listen, app, auth, policy, http, token_key, token_ttl, token_key_overlap, "
            "refresh_ttl); "
            "command-line values win.",
        ],
        ["policy", "p", None, "TOML authorization policy (docs/authz.md); applications find it as their session's policy."],
        [
            "token-key",
            None,
            None,
            "Private key from 'securenet tokens keygen' (or an HS256 secret file): the HTTP API issues access tokens "
            "signed with it, and bearer tokens are verified with its key pair, in HTTP requests and stream sessions "
            "(revocation in the credential database). Needs --auth sqlite:PATH; not combined with --auth jwt.",
        ],
        ["token-ttl", None, None, f"Seconds an access token from the HTTP API is valid (default {DEFAULT_ACCESS_TTL})."],
        [
            "token-key-overlap",
            None,
            None,
            "Seconds a token key that a reload replaced keeps verifying the tokens it signed (default --token-ttl, so "
            "every token issued before the reload stays valid until it expires; 0 drops it at once).",
        ],
        ["refresh-ttl", None, None, f"Seconds a refresh token from the HTTP API is valid (default {DEFAULT_REFRESH_TTL})."],
        [
            "log-level",
            None,
            None,
            f"The least severe securenet events logged: {', '.join(LOG_LEVELS)} (default {DEFAULT_LOG_LEVEL}; debug adds "
            "every allowed authorization and every successful HTTP authentication).",
        ],
        [
            "workers",
            None,
            None,
            "Worker processes that serve the same listeners (default 1: this process serves). With more, this process "
            "binds the listeners, hands the sockets to the workers, restarts a worker that dies, and passes SIGHUP and "
            "SIGTERM on to every worker.",
        ],
        [
            "expiry-margin",
            None,
            None,
            f"Days before a certificate's notAfter from which start-up and every reload warn that it expires"
            f" (default {DEFAULT_EXPIRY_MARGIN_DAYS:g}).",
        ],
        [
            "audit-failure",
            None,
            None,
            "While the audit log cannot be written (a full disk): refuse (the default) answers new authentications "
            "NO AUDIT-UNAVAILABLE on a stream and 503 over HTTP until a write succeeds again; continue lets them go "
            "on unrecorded. Either way one line on stderr says so.",
        ],
        [
            "drain",
            None,
            None,
            f"Seconds a graceful stop (SIGTERM, SIGINT) lets open connections finish after the listeners stopped accepting "
            f"(default {DEFAULT_DRAIN}); then the rest are closed and twistd exits 0. 0 closes them at once.",
        ],
        [
            "metrics",
            None,
            None,
            "Serve /metrics (Prometheus), /healthz and /readyz on ENDPOINT (docs/metrics.md): a port number "
            "(plain HTTP on 127.0.0.1), a securenet: endpoint with clientAuth=required (TLS with client certificates), "
            "or another Twisted server endpoint string. Without it nothing is recorded.",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["http"] = []

    def opt_auth(self, description: str) -> None:
        """A checker: --auth TYPE[:ARGS] (see --help-auth); may be repeated. A checker that cannot be made (a missing, corrupt or read-only credential database, a bad key file) stops twistd with one line."""  # noqa: E501 - twistd prints it as the option's help: one line
        try:
            checker = strcred.makeChecker(description)
        except strcred.InvalidAuthType as e:
            raise usage.UsageError(f"--auth {description}: no such checker type {e.args[0]!r} (see --help-auth)") from None
        except (strcred.StrcredException, SecurenetError) as e:
            raise StartupError(str(e)) from None
        if isinstance(checker, InMemoryUsernamePasswordDatabaseDontUse):
            # Twisted's `memory` factory stores str names and passwords; credentials carry bytes.
            checker.users = {_utf8(name): _utf8(password) for name, password in checker.users.items()}
        self.setdefault("plaintextCheckers", []).extend(_plaintext_warning(checker, description))
        self.addChecker(checker)

    def parseOptions(self, options: list[str] | None = None) -> None:
        # What a worker process is started with (--workers): the arguments as given.
        self.arguments = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)

    def opt_listen(self, endpoint: str) -> None:
        """A securenet: server endpoint to listen on (may be repeated)."""
        self["listen"].append(endpoint)

    def opt_http(self, endpoint: str) -> None:
        # twistd --help shows this docstring as the option's help: one line, or the wrapping keeps the indentation.
        """A securenet: server endpoint for the built-in HTTP API (may be repeated); clientAuth=optional accepts client certificates."""  # noqa: E501
        self["http"].append(endpoint)

    def postOptions(self) -> None:
        if self["config"]:
            self._applyConfig(Path(self["config"]))
        if self["log-level"] is None:
            self["log-level"] = DEFAULT_LOG_LEVEL
        if self["log-level"] not in LOG_LEVELS:
            raise usage.UsageError(f"--log-level {self['log-level']}: must be one of {', '.join(LOG_LEVELS)}")
        if self["audit-failure"] is None:
            self["audit-failure"] = "refuse"
        if self["audit-failure"] not in AUDIT_FAILURE_MODES:
            raise usage.UsageError(f"--audit-failure {self['audit-failure']}: must be one of {', '.join(AUDIT_FAILURE_MODES)}")
        self["expiry-margin"] = _days(
            "expiry-margin", self["expiry-margin"] if self["expiry-margin"] is not None else DEFAULT_EXPIRY_MARGIN_DAYS
        )
        for key, default in (("token-ttl", DEFAULT_ACCESS_TTL), ("refresh-ttl", DEFAULT_REFRESH_TTL)):
            self[key] = _seconds(key, self[key] if self[key] is not None else default)
        if self["token-key-overlap"] is not None:
            self["token-key-overlap"] = _seconds("token-key-overlap", self["token-key-overlap"], minimum=0)
        self["drain"] = _seconds("drain", self["drain"] if self["drain"] is not None else DEFAULT_DRAIN, minimum=0)
        self["workers"] = _count("workers", self["workers"] if self["workers"] is not None else 1, MAX_WORKERS)
        if not self["listen"] and not self["http"]:
            self["listen"] = [dev_listen()]
            self["dev"] = True
        else:
            self["dev"] = False
        if not self["app"]:
            self["app"] = "echo"
        if not self.get("credCheckers"):
            self.addChecker(CertificateChecker("cn"))

    def _applyConfig(self, path: Path) -> None:
        try:
            data = tomllib.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            raise usage.UsageError(f"--config {path}: file does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise usage.UsageError(f"--config {path}: not valid TOML: {e}") from None
        for key in data:
            if key not in CONFIG_KEYS:
                raise usage.UsageError(f"--config {path}: unknown key {key!r}; known keys: {', '.join(CONFIG_KEYS)}")
        listen = data.get("listen", [])
        auth = data.get("auth", [])
        http = data.get("http", [])
        for key, value in (("listen", listen), ("auth", auth), ("http", http)):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise usage.UsageError(f"--config {path}: {key} must be a list of strings")
        for key in ("app", "policy", "token_key", "log_level", "audit_failure", "metrics"):
            if key in data and not isinstance(data[key], str):
                raise usage.UsageError(f"--config {path}: {key} must be a string")
        if "expiry_margin" in data and (
            isinstance(data["expiry_margin"], bool) or not isinstance(data["expiry_margin"], (int, float))
        ):
            raise usage.UsageError(f"--config {path}: expiry_margin must be a number of days")
        for key in ("token_ttl", "refresh_ttl", "token_key_overlap", "drain", "workers"):
            if key in data and (isinstance(data[key], bool) or not isinstance(data[key], int)):
                raise usage.UsageError(f"--config {path}: {key} must be a whole number of seconds")
        if not self["http"]:
            self["http"] = list(http)
        for key in (
            "token_key",
            "token_ttl",
            "refresh_ttl",
            "token_key_overlap",
            "log_level",
            "audit_failure",
            "expiry_margin",
            "drain",
            "workers",
            "metrics",
        ):
            option = key.replace("_", "-")
            if self[option] is None and key in data:
                self[option] = data[key]
        if not self["listen"]:
            self["listen"] = list(listen)
        if not self["app"]:
            self["app"] = data.get("app")
        if not self["policy"]:
            self["policy"] = data.get("policy")
        if not self.get("credCheckers"):
            for value in auth:
                self.opt_auth(value)


def _utf8(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def _plaintext_warning(checker: object, description: str) -> list[str]:
    """The start-up warning for a checker that keeps passwords in plaintext (Twisted's C{memory} and C{file})."""
    auth_type = description.partition(":")[0]
    if isinstance(checker, InMemoryUsernamePasswordDatabaseDontUse):
        where = "from the command line, in memory"
    elif isinstance(checker, FilePasswordDB) and checker.hash is None:
        where = f"in {checker.filename!r}"
    else:
        return []
    return [
        f"--auth {auth_type}: passwords are kept in plaintext ({where}); "
        "use --auth sqlite:PATH (hashed passwords, SCRAM) outside tests"
    ]


def load_app(spec: str) -> IProtocolFactory:
    """
    Resolve C{--app}: a built-in name, or a dotted path to a factory
    instance, a factory class, a protocol class, or a callable returning a
    factory.
    """
    path = BUILTIN_APPS.get(spec, spec)
    try:
        obj = reflect.namedAny(path)
    except (reflect.ModuleNotFound, reflect.ObjectNotFound, reflect.InvalidName, AttributeError, ValueError) as e:
        raise usage.UsageError(
            f"--app {spec}: cannot import it ({e}); use one of {', '.join(BUILTIN_APPS)} or a dotted path"
        ) from None
    if isinstance(obj, type) and issubclass(obj, Protocol):
        return Factory.forProtocol(obj)
    if isinstance(obj, type) and issubclass(obj, Factory):
        return obj()
    if IProtocolFactory.providedBy(obj):
        return obj
    if callable(obj):
        made = obj()
        if IProtocolFactory.providedBy(made):
            return made
    raise usage.UsageError(f"--app {spec}: {path} is not a protocol factory, factory class, or protocol class")


def makeService(options: Options) -> IService:
    try:
        service = _makeService(options)
    except (usage.UsageError, SecurenetError) as e:
        raise StartupError(str(e)) from None
    if options["workers"] == 1:
        return service
    # The configuration was checked by building the service once, here; the
    # workers build their own.
    from twisted.internet import reactor

    from securenet._workers import Supervisor

    listeners = [("--listen", d) for d in options["listen"]] + [("--http", d) for d in options["http"]]
    metrics = options["metrics"]
    if metrics is not None and not (metrics.isdigit() and int(metrics) + options["workers"] - 1 <= 65535):
        raise StartupError(
            f"--metrics {metrics} with --workers: give a port number; worker N serves /metrics on that port plus N - 1"
        )
    return Supervisor(
        reactor,
        workers=options["workers"],
        args=options.arguments,
        listeners=listeners,
        drain=options["drain"],
        metrics=int(metrics) if metrics is not None else None,
    )


def _makeService(options: Options) -> IService:
    from twisted.internet import reactor

    set_log_level(options["log-level"])
    factory = load_app(options["app"])
    checkers = options["credCheckers"]
    store = credential_store(checkers)
    portal = Portal(IdentityRealm(store), checkers)
    throttle = Throttle(store, reactor) if store is not None else None
    policy = ReloadablePolicy.load(options["policy"], clock=reactor) if options["policy"] else None
    for warning in options.get("plaintextCheckers", []):
        log.warn(literal(warning))
    reloader = Reloader(reactor, count=_metrics.record_reload)
    service = SecurenetService(
        reactor, fail_closed=options["audit-failure"] == "refuse", reloader=reloader, drain=options["drain"]
    )
    for description in options["listen"]:
        try:
            endpoint = server_endpoint(reactor, description)
        except SecurenetError as e:
            hint = ""
            if options.get("dev") and not DEV_CERTS.joinpath("server.pem").exists():
                hint = (
                    " (no --listen given and the development PKI in ./certs is missing: run `make run`, or `securenet pki init "
                    "--dir certs` and issue the certificates)"
                )
            raise usage.UsageError(f"--listen {description}: {e}{hint}") from None
        session = SessionFactory(factory, portal, reactor, throttle=throttle, policy=policy)
        Listener(
            endpoint,
            session,
            option="--listen",
            description=description,
            reactor=reactor,
            announce=_announcer(endpoint, description, options["app"]),
        ).setServiceParent(service)
    tokens = _addWebService(service, options, reactor, portal, store, throttle, policy)
    _addReloads(service, reloader, reactor, options["expiry-margin"])
    # The rest SIGHUP reloads: the policy every holder shares, the token keys
    # of --token-key, and checkers that read key files (--auth jwt).
    if policy is not None:
        reloader.add(policy)
    if tokens is not None and tokens.key_reload is not None:
        reloader.add(tokens.key_reload)
    for checker in checkers:
        if IReloadable.providedBy(checker):
            reloader.add(checker)
    if options["metrics"] is not None:
        from securenet._monitor import metrics_service

        metrics_service(reactor, options["metrics"], service, store)
    return service


def _addReloads(service: SecurenetService, reloader: Reloader, reactor: object, expiry_margin: float) -> None:
    """What SIGHUP reloads (every listener's files), the CRL watches, and the start-up expiry warnings."""
    endpoints = [e for e in (listener.tls_endpoint for listener in service.listeners()) if e is not None]
    for endpoint in endpoints:
        reloader.add(ListenerMaterial(endpoint, reactor, expiry_margin=expiry_margin))
    for watch in watch_crls(reloader, endpoints):
        watch.setServiceParent(service)
    for warning in startup_warnings(endpoints, reactor, expiry_margin):
        log.warn(literal(warning))


def _days(option: str, value: object) -> float:
    """A number of days, as seconds."""
    try:
        days = float(str(value))
    except ValueError:
        raise usage.UsageError(f"--{option} {value}: not a number of days") from None
    if not math.isfinite(days) or days < 0:
        raise usage.UsageError(f"--{option} {value}: must be a finite number of days, 0 or more")
    return days * 86400.0


def _count(option: str, value: object, most: int) -> int:
    try:
        count = int(str(value))
    except ValueError:
        raise usage.UsageError(f"--{option} {value}: not a whole number") from None
    if not 1 <= count <= most:
        raise usage.UsageError(f"--{option} {value}: must be from 1 to {most}")
    return count


def _seconds(option: str, value: object, *, minimum: int = 1) -> int:
    try:
        seconds = int(str(value))
    except ValueError:
        raise usage.UsageError(f"--{option} {value}: not a whole number of seconds") from None
    if seconds < minimum:
        raise usage.UsageError(f"--{option} {value}: must be at least {minimum} second{'' if minimum == 1 else 's'}")
    return seconds


def _addWebService(
    service: MultiService,
    options: Options,
    reactor: object,
    portal: Portal,
    store: ICredentialStore | None,
    throttle: Throttle | None,
    policy: ReloadablePolicy | None,
) -> TokenService | None:
    """C{--token-key} (bearer tokens for every listener) and C{--http} (the built-in API); the token service, if any."""
    if not options["http"] and not options["token-key"]:
        return None
    from securenet.web._service import WebSettings, token_service, web_service
    from securenet.web._tokens import DEFAULT_SESSION_TTL, TokenLifetimes

    refresh_ttl = options["refresh-ttl"]
    lifetimes = TokenLifetimes(
        access_ttl=options["token-ttl"], refresh_ttl=refresh_ttl, session_ttl=max(refresh_ttl, DEFAULT_SESSION_TTL)
    )
    tokens = None
    if options["token-key"]:
        tokens = token_service(
            reactor, options["token-key"], portal=portal, store=store, lifetimes=lifetimes, overlap=options["token-key-overlap"]
        )
    if options["http"]:
        settings = WebSettings(endpoints=tuple(options["http"]))
        web = web_service(
            reactor,
            settings,
            portal=portal,
            store=store,
            throttle=throttle,
            policy=policy,
            checkers=options["credCheckers"],
            tokens=tokens,
            listener=lambda endpoint, site, description: Listener(
                endpoint, site, option="--http", description=description, reactor=reactor
            ),
        )
        web.setServiceParent(service)
    return tokens


def credential_store(checkers: list[object]) -> ICredentialStore | None:
    """
    The credential store behind the configured checkers, if any: the realm
    reads roles and attributes from it, and the throttle keeps its counters
    there.  (The first one found; checkers over several stores share the
    first's throttle.)
    """
    for checker in checkers:
        store = getattr(checker, "store", None)
        if store is not None and ICredentialStore.providedBy(store):
            return store
    return None


__all__ = [
    "AUDIT_FAILURE_MODES",
    "CONFIG_KEYS",
    "ListenError",
    "Listener",
    "Options",
    "SecurenetService",
    "StartupError",
    "dev_listen",
    "load_app",
    "makeService",
]
