"""
C{securenet users ...}: the users of a credential database
(L{securenet.store.SQLiteStore}, default C{var/securenet.db}, or
L{securenet.store.PostgresStore} with C{--db postgresql://USER@HOST:PORT/DBNAME})::

    securenet users add NAME [--role ROLE ...] [--password-file FILE]
    securenet users passwd NAME [--password-file FILE]
    securenet users del NAME
    securenet users list
    securenet users roles NAME [ROLE ...]
    securenet users disable NAME  /  securenet users enable NAME
    securenet users totp-enroll NAME [--force]
    securenet users unlock NAME  /  securenet users unlock --address IP

each with C{--db PATH} or C{--db URL}.

A password is never a command-line argument (it would show in C{ps} and
the shell history).  It comes from C{--password-file FILE} (one trailing
newline is stripped), else is asked for twice at the terminal when standard
input is one, else is the first line of standard input (for scripts:
C{printf '%s\\n' "$pw" | securenet users add alice}).

Every refusal is an exception of securenet's hierarchy, printed by
C{securenet.cli.main} as one line with exit code 1; nothing is written to the
database when a command is refused.

Passwords are always hashed with the production parameters (argon2id's
C{DEFAULT_ARGON2}, L{DEFAULT_ITERATIONS} SCRAM iterations): no environment
variable or option of the installed command weakens what it writes.  Test
suites that run the commands in-process replace C{password_hasher} and
L{scram_iterations} (e.g. with L{securenet.testing.weak_hasher}).
"""

from __future__ import annotations

import argparse
import datetime
import getpass as _getpass
import io
import ipaddress
import os
import sys
from collections.abc import Callable
from getpass import getpass
from pathlib import Path

import attrs
import pyotp
import qrcode

from securenet.cli._db import DEFAULT_DB, add_db
from securenet.cli._db import result as _result
from securenet.cli._pki import UsageError
from securenet.cred._names import canonical_user_name, validate_roles, validate_user_name
from securenet.cred._passwords import PasswordHasher
from securenet.cred._saslprep import normalize_password
from securenet.cred._scram import DEFAULT_ITERATIONS, derive_scram_keys
from securenet.cred._throttle import clear_failures
from securenet.cred._users import new_user
from securenet.store._errors import DatabaseFileError, NoSuchUser, UserExists
from securenet.store._open import database_exists, open_database
from securenet.store._postgres import PostgresStore
from securenet.store._records import User
from securenet.store._sqlite import SQLiteStore

#: The issuer shown by authenticator apps.
TOTP_ISSUER = "securenet"


#: Makes the hasher of new passwords: argon2id with the production
#: parameters (L{DEFAULT_ARGON2}).  A seam for in-process tests only.
password_hasher: Callable[[], PasswordHasher] = PasswordHasher

#: The PBKDF2 count of new SCRAM keys (what C{--auth sqlite:...,scramIterations=N}
#: defaults to).  A seam for in-process tests only.
scram_iterations: int = DEFAULT_ITERATIONS


class NoSuchFailures(UsageError):
    """C{users unlock --address}: nothing is recorded for that address."""


def _open(args: argparse.Namespace, *, create: bool = False) -> SQLiteStore | PostgresStore:
    """The database at C{--db}; only C{add} may create an SQLite file (a PostgreSQL database is made on its server)."""
    path = args.db
    if not create and not database_exists(path):
        raise DatabaseFileError(path, f"no credential database here (create it with 'securenet users add NAME --db {path}')")
    return open_database(path)


def _existing(store: SQLiteStore | PostgresStore, name: str) -> User:
    user = _result(store.get_user(name))
    if user is None:
        raise NoSuchUser(f"no user {name!r} in {store.path}")
    return user


# -- passwords -----------------------------------------------------------------


def _strip_newline(text: str) -> str:
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith("\n"):
        return text[:-1]
    return text


def _password_from_file(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: password file does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: password file is a directory") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read the password file ({e.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: password file is not UTF-8 text") from None
    password = _strip_newline(text)
    if not password:
        raise UsageError(f"{path}: password file is empty")
    return password


def read_password(args: argparse.Namespace, name: str) -> str:
    """
    The new password: from C{--password-file}, the terminal (asked twice),
    or the first line of standard input.  Checked with
    L{normalize_password}, so a refusal names the problem, never the
    password.
    """
    if args.password_file is not None:
        password = _password_from_file(args.password_file)
    elif sys.stdin is not None and sys.stdin.isatty():
        password = getpass(f"new password for {name}: ")
        if password and getpass("repeat it: ") != password:
            raise UsageError("the two passwords differ; nothing changed")
    else:
        line = sys.stdin.readline() if sys.stdin is not None else ""
        if not line:
            raise UsageError("no password: give --password-file FILE, type it at a terminal, or send it on standard input")
        password = _strip_newline(line)
    normalize_password(password)
    return password


# -- subcommands -------------------------------------------------------------


def _roles_text(roles: tuple[str, ...]) -> str:
    return ", ".join(roles) if roles else "(none)"


def add(args: argparse.Namespace) -> int:
    name = validate_user_name(args.name)
    roles = validate_roles(args.role)
    # A password file is read first; a prompt comes only once the database
    # is known to be usable and the name free -- unless that would create
    # the database before the password is known to be acceptable.
    password = read_password(args, name) if args.password_file is not None or not database_exists(args.db) else None
    with _open(args, create=True) as store:
        if _result(store.get_user(name)) is not None:
            raise UserExists(f"user {name!r} already exists in {store.path}")
        if password is None:
            password = read_password(args, name)
        user = new_user(name, password, roles=roles, hasher=password_hasher(), scram_iterations=scram_iterations)
        _result(store.add_user(user))
    print(f"added user {name} (roles: {_roles_text(roles)})")
    return 0


def passwd(args: argparse.Namespace) -> int:
    name = canonical_user_name(args.name)
    with _open(args) as store:
        user = _existing(store, name)
        password = read_password(args, name)
        updated = attrs.evolve(
            user,
            password_hash=password_hasher().hash(password),
            scram=derive_scram_keys(password, iterations=scram_iterations),
        )
        _result(store.update_user(updated))
    print(f"changed the password of {name}")
    return 0


def delete(args: argparse.Namespace) -> int:
    name = canonical_user_name(args.name)
    with _open(args) as store:
        _existing(store, name)
        keys = len(_result(store.list_api_keys(name)))
        _result(store.delete_user(name))
    print(f"deleted user {name}" + (f" and {keys} API key{'s' if keys != 1 else ''}" if keys else ""))
    return 0


def list_users(args: argparse.Namespace) -> int:
    with _open(args) as store:
        users = _result(store.list_users())
    if not users:
        print(f"no users in {args.db}")
        return 0
    rows = [("NAME", "ROLES", "DISABLED", "TOTP")] + [
        (
            u.name,
            ",".join(u.roles) or "-",
            "yes" if u.disabled else "no",
            "yes" if u.totp_secret else "no",
        )
        for u in users
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[3]]))
    return 0


def roles(args: argparse.Namespace) -> int:
    name = canonical_user_name(args.name)
    new_roles = validate_roles(args.roles)
    with _open(args) as store:
        user = _existing(store, name)
        _result(store.update_user(attrs.evolve(user, roles=new_roles)))
    print(f"roles of {name}: {_roles_text(new_roles)}")
    return 0


def _set_disabled(args: argparse.Namespace, disabled: bool) -> int:
    name = canonical_user_name(args.name)
    word = "disabled" if disabled else "enabled"
    with _open(args) as store:
        user = _existing(store, name)
        if user.disabled == disabled:
            print(f"user {name} was already {word}")
            return 0
        _result(store.update_user(attrs.evolve(user, disabled=disabled)))
    print(f"{word} user {name}")
    return 0


def disable(args: argparse.Namespace) -> int:
    return _set_disabled(args, True)


def enable(args: argparse.Namespace) -> int:
    return _set_disabled(args, False)


def qr_text(uri: str) -> str:
    """C{uri} as a QR code drawn with block characters, light on a dark terminal."""
    qr = qrcode.QRCode(border=2)
    qr.add_data(uri)
    out = io.StringIO()
    qr.print_ascii(out=out, invert=True)
    return out.getvalue()


def totp_enroll(args: argparse.Namespace) -> int:
    name = canonical_user_name(args.name)
    with _open(args) as store:
        user = _existing(store, name)
        if user.totp_secret is not None and not args.force:
            raise UsageError(
                f"user {name!r} is already enrolled for TOTP; use --force to replace the secret "
                "(their current authenticator stops working)"
            )
        secret = pyotp.random_base32()
        _result(store.update_user(attrs.evolve(user, totp_secret=secret, totp_last_step=None)))
    uri = pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=TOTP_ISSUER)
    print(f"enrolled {name} for TOTP; scan the QR code with an authenticator app, or give it this URI:")
    print(uri)
    qr = qr_text(uri)
    try:
        qr.encode(getattr(sys.stdout, "encoding", None) or "utf-8")
    except UnicodeEncodeError:
        print("(no QR code: the terminal's encoding cannot draw it)")
    else:
        sys.stdout.write(qr)
    return 0


def _operator() -> str:
    """Who runs the command, for the audit event: the login name, else the uid."""
    try:
        who = _getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (e.g. in a container)
        who = f"uid {os.getuid()}"
    return f"{who} (securenet users unlock)"


def _address_keys(text: str) -> tuple[str, list[str]]:
    """
    An IP address as the throttle's C{addr:} keys write it, and those keys:
    an IPv4 address also as a dual-stack listener sees it (C{::ffff:a.b.c.d}).
    """
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        raise UsageError(f"--address {text!r} is not an IP address (e.g. 127.0.0.1 or ::1)") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    forms = [str(ip)] + ([f"::ffff:{ip}"] if isinstance(ip, ipaddress.IPv4Address) else [])
    return str(ip), [f"addr:{form}" for form in forms]


def unlock(args: argparse.Namespace) -> int:
    """
    Clear the failure counter of a user (C{user:NAME}) or a client address
    (C{addr:IP}): its lockout and throttling delay end at once.
    """
    if (args.name is None) == (args.address is None):
        raise UsageError("give a user NAME or --address IP (one of them)")
    if args.address is not None:
        address, keys = _address_keys(args.address)
        what = f"address {address}"
    with _open(args) as store:
        if args.name is not None:
            name = canonical_user_name(args.name)
            _existing(store, name)
            keys, what = [f"user:{name}"], f"user {name}"
        cleared = [_result(clear_failures(store, key, by=_operator())) for key in keys]
    count = sum(c for c, _ in cleared)
    if not count:
        if args.name is None:
            raise NoSuchFailures(f"no failures recorded for {what} in {args.db}; nothing to clear")
        print(f"{what} has no failures recorded; nothing to clear")
        return 0
    last = max(t for c, t in cleared if c)
    when = datetime.datetime.fromtimestamp(last, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"unlocked {what}: cleared {count} recorded failure{'s' if count != 1 else ''} (the last at {when})")
    return 0


# -- argument parsing --------------------------------------------------------


def _add_password_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-file",
        type=Path,
        metavar="FILE",
        help="read the password from FILE (one trailing newline stripped); without it, "
        "it is asked for at the terminal, or read as one line from standard input",
    )


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add C{securenet users} and its subcommands."""
    users = sub.add_parser("users", help="users of a credential database: add, passwd, del, list, roles, ...")
    commands = users.add_subparsers(dest="users_command", metavar="USERS_COMMAND", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        # No abbreviated options: "--password SECRET" must not pass for
        # "--password-file SECRET" (and name the secret in an error).
        parser: argparse.ArgumentParser = commands.add_parser(name, help=help, allow_abbrev=False)
        return parser

    p = command("add", help="add a user with a password")
    p.add_argument("name", metavar="NAME", help="the new user's name (no spaces; what they log in as)")
    p.add_argument("--role", action="append", default=[], metavar="ROLE", help="a role (repeatable)")
    _add_password_file(p)
    add_db(p)
    p.set_defaults(func=add)

    p = command("passwd", help="set a user's password")
    p.add_argument("name", metavar="NAME", help="the user")
    _add_password_file(p)
    add_db(p)
    p.set_defaults(func=passwd)

    p = command("del", help="delete a user and their API keys")
    p.add_argument("name", metavar="NAME", help="the user to delete")
    add_db(p)
    p.set_defaults(func=delete)

    p = command("list", help="list users: name, roles, disabled, TOTP enrolled")
    add_db(p)
    p.set_defaults(func=list_users)

    p = command("roles", help="set a user's roles (none given: remove them all)")
    p.add_argument("name", metavar="NAME", help="the user")
    p.add_argument("roles", nargs="*", metavar="ROLE", help="the user's roles from now on (they replace the old ones)")
    add_db(p)
    p.set_defaults(func=roles)

    p = command("disable", help="refuse every login of a user")
    p.add_argument("name", metavar="NAME", help="the user")
    add_db(p)
    p.set_defaults(func=disable)

    p = command("enable", help="allow a disabled user to log in again")
    p.add_argument("name", metavar="NAME", help="the user")
    add_db(p)
    p.set_defaults(func=enable)

    p = command("unlock", help="end a lockout: clear the failures of a user or of a client address")
    p.add_argument("name", nargs="?", default=None, metavar="NAME", help="the user whose failures to clear")
    p.add_argument("--address", metavar="IP", help="clear the failures of this client address instead")
    add_db(p)
    p.set_defaults(func=unlock)

    p = command("totp-enroll", help="give a user a TOTP secret; prints its otpauth:// URI and a QR code")
    p.add_argument("name", metavar="NAME", help="the user")
    p.add_argument("--force", action="store_true", help="replace an existing TOTP secret")
    add_db(p)
    p.set_defaults(func=totp_enroll)


__all__ = ["DEFAULT_DB", "password_hasher", "read_password", "register", "scram_iterations"]
