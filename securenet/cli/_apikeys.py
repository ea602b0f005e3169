"""
C{securenet apikeys ...}: API keys in the credential database.

C{create} prints the full key once -- alone on stdout, so a script can
capture it -- and on stderr which key it is and a warning that it will not
be shown again: the database keeps only a hash of the secret.  C{list}
never shows hashes.  C{revoke} takes effect at the key's next use; it
takes the key id, C{sn_<id>} or the whole key, and never echoes a secret.

Every refusal is an exception of securenet's hierarchy, which
C{securenet.cli.main} prints as one line with exit code 1, and nothing is
changed when a command is refused.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from securenet.cli._db import DEFAULT_DB, add_db
from securenet.cli._db import result as wait
from securenet.cli._pki import UsageError
from securenet.cred._apikeys import KEY_ID_ALPHABET, KEY_ID_LENGTH, KEY_PREFIX, create_api_key, utc
from securenet.cred._jwt import check_scopes
from securenet.interfaces import ICredentialStore
from securenet.store._errors import NoSuchUser
from securenet.store._open import Database, database_exists, open_database
from securenet.store._records import APIKey, User

#: Longest --expires accepted, in days (ten years).
MAX_EXPIRES_DAYS = 3650

#: POSIX time for the commands; tests replace it.
clock: Callable[[], float] = time.time


class NoDatabase(UsageError):
    """--db names no existing credential database."""


def open_store(path: Database) -> ICredentialStore:
    """
    The credential database at C{path} (a file, or a PostgreSQL URL), which
    must exist (the CLI never creates one at a mistyped path).  Its calls
    answer synchronously.
    """
    if not database_exists(path):
        raise NoDatabase(f"{path}: no credential database here (give --db PATH, or create one with 'securenet users add NAME')")
    return open_database(path)


def close_store(store: ICredentialStore) -> None:
    close = getattr(store, "close", None)
    if close is not None:
        close()


def _aware(when: datetime.datetime) -> datetime.datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=datetime.UTC)


def _existing_user(store: ICredentialStore, name: str, db: Path) -> User:
    user: User | None = wait(store.get_user(name))
    if user is None:
        raise NoSuchUser(f"no user {name!r} in {db}")
    return user


def format_time(when: datetime.datetime | None, *, never: str = "never") -> str:
    if when is None:
        return never
    return _aware(when).astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_scopes(values: Sequence[str]) -> tuple[str, ...]:
    try:
        return check_scopes(values)
    except ValueError as e:
        raise UsageError(f"--scope: {e}") from None


def _describe_scopes(scopes: Sequence[str]) -> str:
    return ",".join(scopes) if scopes else "-"


# -- subcommands -------------------------------------------------------------


def create(args: argparse.Namespace) -> int:
    scopes = parse_scopes(args.scope)
    expires: datetime.timedelta | None = None
    if args.expires is not None:
        if not 1 <= args.expires <= MAX_EXPIRES_DAYS:
            raise UsageError(f"--expires must be between 1 and {MAX_EXPIRES_DAYS} days, not {args.expires}")
        expires = datetime.timedelta(days=args.expires)
    if not args.user:
        raise UsageError("--user must not be empty")
    store = open_store(args.db)
    try:
        _existing_user(store, args.user, args.db)
        key, record = wait(create_api_key(store, args.user, scopes=scopes, expires=expires, clock=clock))
    finally:
        close_store(store)
    print(key)
    print(
        f"created API key {record.key_id} for user {record.user} "
        f"(scopes: {_describe_scopes(record.scopes)}; expires: {format_time(record.expires)})",
        file=sys.stderr,
    )
    print(
        "warning: this is the only time the key is shown; store it now (the database keeps only its hash)",
        file=sys.stderr,
    )
    return 0


def list_keys(args: argparse.Namespace) -> int:
    store = open_store(args.db)
    try:
        if args.user is not None:
            _existing_user(store, args.user, args.db)
        keys: list[APIKey] = wait(store.list_api_keys(args.user))
    finally:
        close_store(store)
    if not keys:
        print("no API keys" + (f" for user {args.user}" if args.user is not None else ""))
        return 0
    current = utc(clock())
    rows = [("ID", "USER", "SCOPES", "CREATED", "EXPIRES", "REVOKED")]
    for k in keys:
        expires = format_time(k.expires)
        if k.expires is not None and _aware(k.expires) <= current:
            expires += " (expired)"
        rows.append(
            (
                k.key_id,
                k.user,
                _describe_scopes(k.scopes),
                format_time(k.created, never="-"),
                expires,
                "yes" if k.revoked else "no",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def key_id(text: str) -> str:
    """
    The key id in what the user gave C{apikeys revoke}: the id itself (as
    C{apikeys list} shows it), C{sn_<id>}, or the whole key
    C{sn_<id>.<secret>} as C{apikeys create} printed it.  A refusal never
    repeats the text, which may hold a secret.
    """
    text = text.strip()
    candidate = text[len(KEY_PREFIX) :].partition(".")[0] if text.startswith(KEY_PREFIX) else text
    if len(candidate) != KEY_ID_LENGTH or not all(c in KEY_ID_ALPHABET for c in candidate):
        raise UsageError(
            f"ID is not an API key id: give the {KEY_ID_LENGTH} letters and digits 'securenet apikeys list' shows, "
            "sn_ID, or the whole key sn_ID.SECRET"
        )
    return candidate


def revoke(args: argparse.Namespace) -> int:
    wanted = key_id(args.id)
    store = open_store(args.db)
    try:
        record: APIKey | None = wait(store.get_api_key(wanted))
        if record is not None and record.revoked:
            print(f"API key {record.key_id} (user {record.user}) was already revoked")
            return 0
        wait(store.revoke_api_key(wanted))
    finally:
        close_store(store)
    assert record is not None
    print(f"revoked API key {record.key_id} (user {record.user}); it is refused from its next use")
    return 0


# -- argument parsing --------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add C{securenet apikeys} and its subcommands."""
    apikeys = sub.add_parser("apikeys", help="API keys: create, list, revoke")
    commands = apikeys.add_subparsers(dest="apikeys_command", metavar="APIKEYS_COMMAND", required=True)

    p = commands.add_parser("create", help="create a key for a user and print it (once)")
    p.add_argument("--user", required=True, metavar="NAME", help="the user the key authenticates as")
    p.add_argument("--scope", action="append", default=[], metavar="SCOPE", help="a scope the key carries (repeatable)")
    p.add_argument("--expires", type=int, default=None, metavar="DAYS", help="expire after DAYS days (default: never)")
    add_db(p)
    p.set_defaults(func=create)

    p = commands.add_parser("list", help="list keys (never their secrets or hashes)")
    p.add_argument("--user", default=None, metavar="NAME", help="only this user's keys")
    add_db(p)
    p.set_defaults(func=list_keys)

    p = commands.add_parser("revoke", help="revoke a key by its id (the part after sn_ and before the dot)")
    p.add_argument(
        "id", metavar="ID", help="the key's id as 'apikeys list' shows it, sn_ID, or the whole key sn_ID.SECRET (never echoed)"
    )
    add_db(p)
    p.set_defaults(func=revoke)


__all__ = ["DEFAULT_DB", "NoDatabase", "open_store", "register", "wait"]
