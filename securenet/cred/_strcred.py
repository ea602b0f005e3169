"""
C{twisted.cred.strcred} factories, so operators pick checkers with C{--auth}.
The plugin objects in C{twisted/plugins/securenet_cred.py} point here.

C{--auth db:PATH_OR_URL} is the one most services want: every mechanism the
credential database supports (SCRAM-SHA-256-PLUS, SCRAM-SHA-256, APIKEY,
PLAIN) and the TOTP second factor, over one store -- an SQLite file or a
PostgreSQL database (C{postgresql://USER@HOST:PORT/DBNAME}, its password in
C{PGPASSFILE} or C{~/.pgpass}).  C{--auth sqlite:PATH} is the same for a file.  C{apikey} and C{totp}
pick single mechanisms from the same database; C{jwt} adds bearer tokens.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from twisted.cred.credentials import IUsernamePassword
from twisted.cred.strcred import ICheckerFactory, StrcredException
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from securenet._errors import SecurenetError
from securenet._threads import hashing_runner
from securenet.cred._apikeys import APIKeyChecker
from securenet.cred._checkers import MAPPINGS, CertificateChecker
from securenet.cred._jwt import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    DEFAULT_LEEWAY,
    DEFAULT_MAX_LIFETIME,
    MAX_LEEWAY,
    TokenSettings,
    check_scopes,
)
from securenet.cred._scram import DEFAULT_ITERATIONS, MIN_ITERATIONS
from securenet.cred._storechecker import StoreChecker
from securenet.cred._tokenkeyfile import ReloadableTokenChecker, TokenKeyFile
from securenet.cred._totp import TOTPChecker
from securenet.interfaces import (
    IAPIKeyCredentials,
    ICertificateCredentials,
    ICredentialStore,
    IScramCredentials,
    ITokenCredentials,
    ITOTPCredentials,
)
from securenet.store._open import open_database
from securenet.store._postgres import is_postgres_url


class CheckerArgumentError(StrcredException):
    """An C{--auth} argument string is malformed."""


def parse_options(argstring: str, allowed: set[str], auth_type: str) -> dict[str, str]:
    """
    Parse C{key=value,key=value} (also C{:}-separated, unless a value is a
    URL: C{db=postgresql://...}) into a dict, refusing unknown keys.
    """
    options: dict[str, str] = {}
    for part in (argstring if "://" in argstring else argstring.replace(":", ",")).split(","):
        if not part.strip():
            continue
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq:
            raise CheckerArgumentError(f"--auth {auth_type}: expected key=value, got {part!r}")
        if key not in allowed:
            raise CheckerArgumentError(f"--auth {auth_type}: unknown option {key!r}; known: {', '.join(sorted(allowed))}")
        options[key] = value.strip()
    return options


@implementer(ICheckerFactory, IPlugin)
class CertificateCheckerFactory:
    authType = "certificate"
    authHelp = (
        "Accept clients by their verified TLS client certificate (SASL EXTERNAL). "
        "map= chooses the identity: "
        + "; ".join(f"{name}: {doc}" for name, (_, doc) in MAPPINGS.items())
        + ". The TLS endpoint must verify client certificates (clientAuth=optional or required)."
    )
    argStringFormat = "map=" + "|".join(MAPPINGS) + " (default cn)"
    credentialInterfaces = (ICertificateCredentials,)

    def generateChecker(self, argstring: str = "") -> CertificateChecker:
        options = parse_options(argstring, {"map"}, self.authType)
        mapping = options.get("map", "cn")
        if mapping not in MAPPINGS:
            raise CheckerArgumentError(f"--auth certificate: unknown map={mapping!r}; choose one of: {', '.join(MAPPINGS)}")
        return CertificateChecker(mapping)


certificateCheckerFactory = CertificateCheckerFactory()


# -- credential-database, token, API key and TOTP checkers --------------------


def require_database(path: str, auth_type: str) -> None:
    """
    Refuse a credential database file that does not exist: a server never
    creates one (a typo would start a server where every login fails); the
    CLI does, with C{securenet users add}.  (A PostgreSQL database must exist
    on its server: connecting names it if not.)
    """
    if is_postgres_url(path):
        return
    try:
        os.lstat(path)
    except FileNotFoundError:
        raise CheckerArgumentError(
            f"--auth {auth_type}: {path}: no such credential database (create it with: securenet users add NAME --db {path})"
        ) from None
    except OSError:
        pass  # the store names the problem


def open_store(path: str, auth_type: str) -> ICredentialStore:
    """
    The credential database named by C{db=PATH} (or C{db=postgresql://...}),
    its SQL on dedicated threads of the running reactor (imported here, when
    a checker is made, never at module import): one for SQLite, one per
    pooled connection for PostgreSQL.  A missing file is refused
    (L{require_database}).  Tests replace this function.
    """
    from twisted.internet import reactor

    from securenet._threads import ThreadRunner, thread_runner
    from securenet.store._postgres import DEFAULT_POOL_SIZE

    if not path:
        raise CheckerArgumentError(f"--auth {auth_type}: db= needs a path")
    require_database(path, auth_type)
    postgres = is_postgres_url(path)
    runner = ThreadRunner(reactor, threads=DEFAULT_POOL_SIZE, name="securenet-postgres") if postgres else thread_runner(reactor)
    try:
        return open_database(path, runner=runner)
    except SecurenetError as e:
        runner.stop()
        raise CheckerArgumentError(f"--auth {auth_type}: {e}") from None


@implementer(ICheckerFactory, IPlugin)
class JWTCheckerFactory:
    authType = "jwt"
    authHelp = (
        "Accept bearer tokens (JWT, SASL OAUTHBEARER) signed with the key in key=PATH: a PEM public key "
        "(EdDSA/Ed25519 or ES256/P-256; alg= may confirm it) or, with alg=HS256, a file of mode 0600 holding "
        "a secret of at least 32 bytes. Tokens must carry sub, jti, iat, exp and aud (audience=, default "
        f"{DEFAULT_AUDIENCE}) and iss (issuer=, default {DEFAULT_ISSUER}); leeway= is the clock skew allowed "
        f"in seconds (default {DEFAULT_LEEWAY:g}, at most {MAX_LEEWAY:g}); max_lifetime= the longest exp - iat accepted "
        f"(default {DEFAULT_MAX_LIFETIME:g} s). On a reload (SIGHUP) the key file is read again (same algorithm): tokens "
        "whose kid names the replaced key keep verifying for overlap= seconds (default max_lifetime; 0 drops it at once). "
        "With db=PATH (the credential database), revoked token ids, disabled "
        "users and subjects that are no user of the database are refused; without it (tokens of an external issuer) "
        "neither is checked. Make keys and tokens with 'securenet tokens'."
    )
    argStringFormat = (
        "key=PATH[,alg=EdDSA|ES256|HS256][,audience=AUD][,issuer=ISS][,leeway=SECONDS][,max_lifetime=SECONDS]"
        "[,overlap=SECONDS][,db=PATH]"
    )
    credentialInterfaces = (ITokenCredentials,)

    def generateChecker(self, argstring: str = "") -> ReloadableTokenChecker:
        options = parse_options(
            argstring, {"key", "alg", "audience", "issuer", "leeway", "max_lifetime", "overlap", "db"}, self.authType
        )
        if not options.get("key"):
            raise CheckerArgumentError("--auth jwt: key=PATH is required (a PEM public key or, with alg=HS256, a secret file)")
        alg = options.get("alg") or None
        numbers: dict[str, float] = {}
        for name, default in (("leeway", DEFAULT_LEEWAY), ("max_lifetime", DEFAULT_MAX_LIFETIME), ("overlap", None)):
            try:
                numbers[name] = float(options.get(name, default if default is not None else numbers["max_lifetime"]))
            except ValueError:
                raise CheckerArgumentError(f"--auth jwt: {name}={options[name]!r} is not a number of seconds") from None
        try:
            key_file, key = TokenKeyFile.open(options["key"], signing=False, algorithm=alg, overlap=numbers["overlap"])
            settings = TokenSettings(
                [key],
                audience=options.get("audience", DEFAULT_AUDIENCE),
                issuer=options.get("issuer", DEFAULT_ISSUER),
                leeway=numbers["leeway"],
                max_lifetime=numbers["max_lifetime"],
                default_kid=key.kid,
            )
        except SecurenetError as e:
            raise CheckerArgumentError(f"--auth jwt: {e}") from None
        store = open_store(options["db"], self.authType) if "db" in options else None
        return ReloadableTokenChecker(settings, store, time.time, key_file=key_file)


@implementer(ICheckerFactory, IPlugin)
class APIKeyCheckerFactory:
    authType = "apikey"
    authHelp = (
        "Accept API keys (sn_<id>.<secret>, SASL APIKEY) from the credential database db=PATH; "
        "with scope=S only keys that have scope S. Make keys with 'securenet apikeys create'."
    )
    argStringFormat = "db=PATH[,scope=SCOPE]"
    credentialInterfaces = (IAPIKeyCredentials,)

    def generateChecker(self, argstring: str = "") -> APIKeyChecker:
        options = parse_options(argstring, {"db", "scope"}, self.authType)
        if "db" not in options:
            raise CheckerArgumentError("--auth apikey: db=PATH (the credential database) is required")
        scope = options.get("scope") or None
        if scope is not None:
            try:
                check_scopes([scope])
            except ValueError as e:
                raise CheckerArgumentError(f"--auth apikey: {e}") from None
        return APIKeyChecker(open_store(options["db"], self.authType), time.time, required_scope=scope)


@implementer(ICheckerFactory, IPlugin)
class TOTPCheckerFactory:
    authType = "totp"
    authHelp = (
        "Demand a TOTP code (RFC 6238: 6 digits, 30 s) after a password login from users enrolled in the "
        "credential database db=PATH; each code is accepted once."
    )
    argStringFormat = "db=PATH"
    credentialInterfaces = (ITOTPCredentials,)

    def generateChecker(self, argstring: str = "") -> TOTPChecker:
        options = parse_options(argstring, {"db"}, self.authType)
        if "db" not in options:
            raise CheckerArgumentError("--auth totp: db=PATH (the credential database) is required")
        return TOTPChecker(open_store(options["db"], self.authType), time.time)


_DATABASE_HELP = (
    "(made with 'securenet users' and 'securenet apikeys'): SASL SCRAM-SHA-256-PLUS, SCRAM-SHA-256, APIKEY and "
    "PLAIN, then a TOTP code from users who enrolled. scramIterations= must equal the PBKDF2 count users were "
    f"enrolled with (default {DEFAULT_ITERATIONS}), so that unknown users get the same challenge as known ones."
)


@implementer(ICheckerFactory, IPlugin)
class DatabaseCheckerFactory:
    authType = "db"
    authHelp = (
        "Accept the users and API keys of the credential database: an SQLite file PATH (sqlite:PATH), or a "
        "PostgreSQL database postgresql://USER@HOST:PORT/DBNAME shared by several servers (no password in the "
        "URL: libpq reads it from PGPASSFILE or ~/.pgpass) " + _DATABASE_HELP
    )
    argStringFormat = "PATH or postgresql://USER@HOST:PORT/DBNAME, or db=...[,scramIterations=N]"
    credentialInterfaces = (IUsernamePassword, IScramCredentials, IAPIKeyCredentials, ITOTPCredentials)
    _form = "database (db:PATH or db:postgresql://USER@HOST:PORT/DBNAME)"

    def _check_kind(self, database: str) -> None:
        """Any kind of credential database will do (L{SQLiteCheckerFactory} takes files only)."""

    def generateChecker(self, argstring: str = "") -> StoreChecker:
        if argstring and not argstring.startswith(("db=", "scramIterations=")):
            argstring = f"db={argstring}"
        options = parse_options(argstring, {"db", "scramIterations"}, self.authType)
        if not options.get("db"):
            raise CheckerArgumentError(f"--auth {self.authType}: the credential {self._form} is required")
        self._check_kind(options["db"])
        try:
            iterations = int(options.get("scramIterations", DEFAULT_ITERATIONS))
        except ValueError:
            raise CheckerArgumentError(
                f"--auth {self.authType}: scramIterations={options['scramIterations']!r} is not a number"
            ) from None
        if iterations < MIN_ITERATIONS:
            raise CheckerArgumentError(f"--auth {self.authType}: scramIterations must be at least {MIN_ITERATIONS}")
        from twisted.internet import reactor

        require_database(options["db"], self.authType)
        # The fake-salt secret is read once, at start-up, before the reactor
        # runs (synchronously: the Deferred has fired when secret() returns).
        # It is made on first use, in a write transaction: so a database the
        # server cannot write -- which it must, for throttling counters and
        # used TOTP codes -- is refused here, by name.
        secret: list[bytes] = []
        failed: list[Failure] = []
        try:
            with open_database(options["db"]) as startup:
                startup.secret("scram-fake-salt").addCallbacks(secret.append, failed.append)
                where = str(startup.path) if is_postgres_url(options["db"]) else options["db"]
        except SecurenetError as e:
            raise CheckerArgumentError(f"--auth {self.authType}: {e}") from None
        if failed:
            raise CheckerArgumentError(
                f"--auth {self.authType}: {where}: the credential database cannot be written "
                f"({_reason(failed[0], where)}); the server records failed logins and used TOTP codes in it"
            )
        store = open_store(options["db"], self.authType)
        return StoreChecker(
            store,
            reactor,
            runner=hashing_runner(reactor),
            scram_iterations=iterations,
            scram_secret=secret[0],
        )


@implementer(ICheckerFactory, IPlugin)
class SQLiteCheckerFactory(DatabaseCheckerFactory):
    authType = "sqlite"
    authHelp = "Accept the users and API keys of the SQLite credential database at PATH " + _DATABASE_HELP
    argStringFormat = "PATH or db=PATH[,scramIterations=N]"
    _form = "database path (sqlite:PATH)"

    def _check_kind(self, database: str) -> None:
        if is_postgres_url(database):
            raise CheckerArgumentError("--auth sqlite: a PostgreSQL URL is no SQLite file; use --auth db:postgresql://...")


def _reason(failure: Failure, path: str) -> str:
    """A store error's message without the path it starts with (the caller names the file)."""
    message = failure.getErrorMessage()
    for prefix in (f"{path}: ", f"{Path(path)}: "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


databaseCheckerFactory = DatabaseCheckerFactory()
sqliteCheckerFactory = SQLiteCheckerFactory()
jwtCheckerFactory = JWTCheckerFactory()
apiKeyCheckerFactory = APIKeyCheckerFactory()
totpCheckerFactory = TOTPCheckerFactory()
