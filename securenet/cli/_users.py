"""
C{securenet users ...}: the users of a credential database
(L{securenet.store.SQLiteStore}, default C{var/securenet.db})::

    securenet users add NAME [--role ROLE ...] [--password-file FILE]
    securenet users passwd NAME [--password-file FILE]
    securenet users del NAME
    securenet users list
    securenet users roles NAME [ROLE ...]
    securenet users disable NAME  /  securenet users enable NAME
    securenet users totp-enroll NAME [--force]

each with C{--db PATH}.

A password is never a command-line argument (it would show in C{ps} and
the shell history).  It comes from C{--password-file FILE} (one trailing
newline is stripped), else is asked for twice at the terminal when standard
input is one, else is the first line of standard input (for scripts:
C{printf '%s\\n' "$pw" | securenet users add alice}).

Every refusal is an exception of securenet's hierarchy, printed by
C{securenet.cli.main} as one line with exit code 1; nothing is written to the
database when a command is refused.

Test-only: with the environment variable C{SECURENET_TEST_FAST_HASH=1},
passwords are hashed with tiny argon2id parameters (t=1, m=8 KiB, p=1) and
4096 SCRAM iterations, so test suites stay fast.  Never set it for real
users: such hashes are cheap to brute-force (the argon2 hash is upgraded at
the user's next password login to a server; the SCRAM keys are not).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from getpass import getpass
from pathlib import Path

import attrs
import pyotp
import qrcode

from securenet.cli._db import result as _result
from securenet.cli._pki import UsageError
from securenet.cred._names import canonical_user_name, validate_roles, validate_user_name
from securenet.cred._passwords import PasswordHasher
from securenet.cred._saslprep import normalize_password
from securenet.cred._scram import derive_scram_keys
from securenet.cred._users import new_user
from securenet.store._errors import DatabaseFileError, NoSuchUser, UserExists
from securenet.store._records import User
from securenet.store._sqlite import SQLiteStore

#: Where the credential database is unless C{--db} says otherwise.
DEFAULT_DB = Path("var/securenet.db")

#: The environment variable that selects the test-only cheap hashing.
FAST_HASH_VARIABLE = "SECURENET_TEST_FAST_HASH"

#: The issuer shown by authenticator apps.
TOTP_ISSUER = "securenet"


def _fast() -> bool:
    return os.environ.get(FAST_HASH_VARIABLE) == "1"


def _hasher() -> PasswordHasher:
    if _fast():
        return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, insecurely_weak=True)
    return PasswordHasher()


def _scram_iterations() -> int:
    return 4096 if _fast() else 600_000


def _open(args: argparse.Namespace, *, create: bool = False) -> SQLiteStore:
    """The database at C{--db}; only C{add} may create it."""
    path: Path = args.db
    if not create and not path.exists():
        raise DatabaseFileError(path, f"no credential database here (create it with 'securenet users add NAME --db {path}')")
    return SQLiteStore.open(path)


def _existing(store: SQLiteStore, name: str) -> User:
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
    password = read_password(args, name) if args.password_file is not None or not args.db.exists() else None
    with _open(args, create=True) as store:
        if _result(store.get_user(name)) is not None:
            raise UserExists(f"user {name!r} already exists in {store.path}")
        if password is None:
            password = read_password(args, name)
        user = new_user(name, password, roles=roles, hasher=_hasher(), scram_iterations=_scram_iterations())
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
            password_hash=_hasher().hash(password),
            scram=derive_scram_keys(password, iterations=_scram_iterations()),
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


# -- argument parsing --------------------------------------------------------


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", type=Path, default=DEFAULT_DB, metavar="PATH", help=f"the credential database (default {DEFAULT_DB})"
    )


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
    p.add_argument("name", metavar="NAME")
    p.add_argument("--role", action="append", default=[], metavar="ROLE", help="a role (repeatable)")
    _add_password_file(p)
    _add_db(p)
    p.set_defaults(func=add)

    p = command("passwd", help="set a user's password")
    p.add_argument("name", metavar="NAME")
    _add_password_file(p)
    _add_db(p)
    p.set_defaults(func=passwd)

    p = command("del", help="delete a user and their API keys")
    p.add_argument("name", metavar="NAME")
    _add_db(p)
    p.set_defaults(func=delete)

    p = command("list", help="list users: name, roles, disabled, TOTP enrolled")
    _add_db(p)
    p.set_defaults(func=list_users)

    p = command("roles", help="set a user's roles (none given: remove them all)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("roles", nargs="*", metavar="ROLE")
    _add_db(p)
    p.set_defaults(func=roles)

    p = command("disable", help="refuse every login of a user")
    p.add_argument("name", metavar="NAME")
    _add_db(p)
    p.set_defaults(func=disable)

    p = command("enable", help="allow a disabled user to log in again")
    p.add_argument("name", metavar="NAME")
    _add_db(p)
    p.set_defaults(func=enable)

    p = command("totp-enroll", help="give a user a TOTP secret; prints its otpauth:// URI and a QR code")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--force", action="store_true", help="replace an existing TOTP secret")
    _add_db(p)
    p.set_defaults(func=totp_enroll)


__all__ = ["DEFAULT_DB", "FAST_HASH_VARIABLE", "read_password", "register"]
