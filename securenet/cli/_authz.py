"""
C{securenet authz ...}: check and validate authorization policies
(L{securenet.authz}, docs/authz.md)::

    securenet authz check --policy FILE --user NAME --action ACTION [--resource R]
        [--role ROLE ...] [--attr KEY=VALUE ...] [--scope SCOPE ...]
        [--mechanism M] [--mfa] [--peer ADDR] [--at TIME]
        [--cert FILE | --subject DN --san KIND:VALUE ...] [--db PATH]
    securenet authz lint --policy FILE

C{check} decides one request as the server would, and prints the answer,
the rule that decided it (with its file and line) and the reason.  Exit
codes: 0 allowed, 3 denied, 1 an error (a bad policy, a missing user, a bad
option: one line on stderr), 2 a usage error from argparse.

With C{--db PATH}, the user's roles and attributes are read from the
credential database (as the server's realm would); C{--role} and C{--attr}
add to them, an C{--attr} replacing a stored attribute of the same key.
The what-if is not an audit event: nothing is logged.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from typing import Any

from cryptography import x509
from twisted.python.failure import Failure

from securenet.authz import Context, Policy
from securenet.cli._db import add_db
from securenet.cli._pki import UsageError
from securenet.cred._identity import Identity
from securenet.pki import CertificateFacts, load_certificates, parse_san
from securenet.store._errors import DatabaseFileError, NoSuchUser
from securenet.store._open import Database, database_exists, open_database
from securenet.store._records import User

#: The exit code of C{securenet authz check} when the request is denied.
EXIT_DENIED = 3

_SAN_PREFIX = {"DNS": "DNS", "IP": "IP", "URI": "URI", "EMAIL": "email"}


def _attribute(text: str) -> tuple[str, Any]:
    key, equals, raw = text.partition("=")
    if not equals or not key:
        raise UsageError(f"--attr {text!r} is not KEY=VALUE")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def _read_user(path: Database, name: str) -> User:
    """The user's record, read synchronously (the CLI's store runs on the calling thread)."""
    if not database_exists(path):
        raise DatabaseFileError(path, "no credential database here")
    users: list[User | None] = []
    failures: list[Failure] = []
    with open_database(path) as store:
        store.get_user(name).addCallbacks(users.append, failures.append)
    if failures:
        failures[0].raiseException()
    if not users:
        raise RuntimeError("the credential store answered asynchronously")
    user = users[0]
    if user is None:
        raise NoSuchUser(f"no user {name!r} in {path}")
    return user


def _san_text(text: str) -> str:
    """A C{--san} as L{CertificateFacts} writes SANs (C{URI:spiffe://...}), checked by L{parse_san}."""
    value = parse_san(text).value
    return f"{_SAN_PREFIX[text.partition(':')[0].strip().upper()]}:{value}"


def _certificate(args: argparse.Namespace) -> CertificateFacts | None:
    if args.cert is not None:
        if args.subject is not None or args.san:
            raise UsageError("give either --cert or --subject/--san, not both")
        return CertificateFacts.of(load_certificates(args.cert)[0])
    if args.subject is None and not args.san:
        return None
    subject = args.subject if args.subject is not None else f"CN={args.user}"
    try:
        name = x509.Name.from_rfc4514_string(subject)
    except ValueError:
        raise UsageError(f"--subject {subject!r} is not an RFC 4514 distinguished name (e.g. CN=dev1,OU=devices)") from None
    common_names = [a.value for a in name if a.rfc4514_attribute_name == "CN"]
    epoch = datetime.datetime.fromtimestamp(0, datetime.UTC)
    return CertificateFacts(
        subject=name.rfc4514_string(),
        common_name=str(common_names[0]) if common_names else None,
        issuer="",
        serial=0,
        not_before=epoch,
        not_after=epoch,
        sans=tuple(_san_text(s) for s in args.san),
        pin="",
    )


def _moment(text: str | None) -> datetime.datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--at {text!r} is not an ISO 8601 date and time (e.g. 2025-01-06T09:30:00Z)") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=datetime.UTC)


def check(args: argparse.Namespace) -> int:
    policy = Policy.load(args.policy)
    roles: list[str] = []
    attributes: dict[str, Any] = {}
    notes: list[str] = []
    if args.db is not None:
        user = _read_user(args.db, args.user)
        roles.extend(user.roles)
        attributes.update(user.attributes)
        if user.disabled:
            notes.append(f"note: user {args.user} is disabled in {args.db} and cannot log in")
    for role in args.role:
        if role not in roles:
            roles.append(role)
    attributes.update(_attribute(a) for a in args.attr)
    certificate = _certificate(args)
    mechanism = args.mechanism or ("EXTERNAL" if certificate is not None else "PLAIN")
    identity = Identity(
        avatar_id=args.user,
        mechanism=mechanism,
        peer=args.peer or "",
        certificate=certificate,
        attributes=attributes,
        roles=tuple(roles),
        second_factor="TOTP" if args.mfa else None,
        scopes=tuple(args.scope),
    )
    decision = policy.decide(identity, args.action, args.resource, Context(now=_moment(args.at)), audit=False)
    print(decision.explain())
    for note in notes:
        print(note)
    return 0 if decision.allowed else EXIT_DENIED


def lint(args: argparse.Namespace) -> int:
    print(Policy.load(args.policy).summary())
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add C{securenet authz} and its subcommands."""
    authz = sub.add_parser("authz", help="authorization policies: check a request, lint a policy")
    commands = authz.add_subparsers(dest="authz_command", metavar="AUTHZ_COMMAND", required=True)

    p = commands.add_parser(
        "check",
        help="decide one request against a policy (exit 0 allowed, 3 denied, 1 error)",
        allow_abbrev=False,
    )
    p.add_argument("--policy", type=Path, required=True, metavar="FILE", help="the policy (TOML)")
    p.add_argument("--user", required=True, metavar="NAME", help="the identity's name (avatar id)")
    p.add_argument("--action", required=True, metavar="ACTION", help="the action, e.g. kv.write")
    p.add_argument("--resource", metavar="RESOURCE", help="the resource, e.g. data/x (default: none)")
    p.add_argument("--role", action="append", default=[], metavar="ROLE", help="a role of the identity (repeatable)")
    p.add_argument(
        "--attr",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an attribute of the identity (repeatable); VALUE is read as JSON if it parses, else as a string",
    )
    p.add_argument("--scope", action="append", default=[], metavar="SCOPE", help="a token/API key scope (repeatable)")
    p.add_argument(
        "--mechanism", metavar="M", help="how the identity authenticated (default EXTERNAL with a certificate, else PLAIN)"
    )
    p.add_argument("--mfa", action="store_true", help="the identity passed a second factor (TOTP)")
    p.add_argument("--peer", metavar="ADDR", help="the peer's address (host, host:port or [v6]:port)")
    p.add_argument("--at", metavar="TIME", help="decide at this ISO 8601 time (UTC unless it has an offset; default now)")
    p.add_argument("--cert", type=Path, metavar="FILE", help="the identity's certificate (PEM)")
    p.add_argument("--subject", metavar="DN", help="the certificate subject, without --cert (e.g. CN=dev1,OU=devices)")
    p.add_argument(
        "--san", action="append", default=[], metavar="KIND:VALUE", help="a certificate SAN, without --cert (repeatable)"
    )
    add_db(p, default=None, help="read the user's roles and attributes from this credential database (a file or a URL)")
    p.set_defaults(func=check)

    p = commands.add_parser("lint", help="validate a policy and summarize its roles and rules", allow_abbrev=False)
    p.add_argument("--policy", type=Path, required=True, metavar="FILE", help="the policy (TOML)")
    p.set_defaults(func=lint)


__all__ = ["EXIT_DENIED", "register"]
