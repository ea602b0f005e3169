"""
C{securenet tokens ...}: bearer-token keys and tokens, so an operator can
set token authentication up end to end::

    securenet tokens keygen --alg EdDSA --out keys/tokens.key
    twistd -n securenet --auth jwt:key=keys/tokens.key.pub ...
    securenet tokens issue alice --key keys/tokens.key --scope read

C{keygen} writes the private key (mode 0600) and, for EdDSA and ES256,
C{PATH.pub}, the public key a verifier needs; for HS256 the one secret
file (mode 0600) serves both.  C{issue} prints one token, alone on stdout.
C{revoke} records a token id in the credential database as revoked until
the token expires.

Every refusal is an exception of securenet's hierarchy, printed as one line
with exit code 1; nothing is written when a command is refused.
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
from collections.abc import Callable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization

from securenet.cli._apikeys import close_store, format_time, open_store, parse_scopes, wait
from securenet.cli._db import add_db
from securenet.cli._pki import UsageError
from securenet.cred._jwt import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    DEFAULT_MAX_LIFETIME,
    TokenIssuer,
    TokenSettings,
)
from securenet.pki._errors import AlreadyExists, FileMissing
from securenet.pki._files import write_private_key
from securenet.pki._tokenkeys import (
    ALGORITHMS,
    MAX_NAME_LENGTH,
    InvalidTokenSettings,
    SigningKey,
    generate_signing_key,
    load_signing_key,
)

DEFAULT_TTL = 3600

#: Longest --ttl accepted: what a verifier accepts by default (a day).
#: Bearer tokens should be short-lived; long-lived credentials are API keys.
MAX_TTL = int(DEFAULT_MAX_LIFETIME)

#: POSIX time for the commands; tests replace it.
clock: Callable[[], float] = time.time


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create C{path} with C{mode} from the start (never a moment world-readable), refusing to replace a file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise AlreadyExists(path, "already exists; refusing to overwrite it") from None
    except FileNotFoundError:
        raise FileMissing(path.parent, "directory does not exist") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


# -- subcommands -------------------------------------------------------------


def keygen(args: argparse.Namespace) -> int:
    out: Path = args.out
    public = out.with_name(out.name + ".pub")
    targets = [out] if args.alg == "HS256" else [out, public]
    for path in targets:
        if path.exists():
            raise AlreadyExists(path, "already exists; refusing to overwrite it")
    if not out.parent.is_dir():
        raise FileMissing(out.parent, "directory does not exist")
    key = generate_signing_key(args.alg)
    if isinstance(key, bytes):
        _write_new(out, key + b"\n", 0o600)
        print(f"wrote {out} (the HS256 secret: keep it secret; issuer and verifier both need it)")
        print(f"verify tokens with: --auth jwt:key={out},alg=HS256")
        return 0
    signing: SigningKey = key
    write_private_key(out, signing)
    try:
        pem = signing.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        _write_new(public, pem, 0o644)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    print(f"wrote {out} (the {args.alg} private key: keep it secret; only the issuer needs it)")
    print(f"wrote {public}")
    print(f"verify tokens with: --auth jwt:key={public}")
    return 0


def issue(args: argparse.Namespace) -> int:
    if not args.name or len(args.name) > MAX_NAME_LENGTH:
        raise UsageError(f"the token subject must be 1-{MAX_NAME_LENGTH} characters")
    if not 1 <= args.ttl <= MAX_TTL:
        raise UsageError(f"--ttl must be between 1 and {MAX_TTL} seconds, not {args.ttl}")
    scopes = parse_scopes(args.scope)
    key = load_signing_key(args.key, args.alg)
    try:
        settings = TokenSettings([key], audience=args.audience, issuer=args.issuer)
    except InvalidTokenSettings as e:
        raise UsageError(str(e)) from None
    token = TokenIssuer(settings, clock).issue(args.name, ttl=args.ttl, scopes=scopes)
    print(token)
    return 0


def _parse_expires(text: str) -> datetime.datetime:
    """POSIX seconds (a token's C{exp}) or an ISO 8601 date/time (UTC if no zone given)."""
    try:
        if text.isdigit():
            return datetime.datetime.fromtimestamp(int(text), datetime.UTC)
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise UsageError(
            f"--expires {text!r} is not a time: give the token's exp (POSIX seconds) or an ISO 8601 date/time"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=datetime.UTC)


def _from_token(token: str) -> tuple[str, datetime.datetime]:
    """
    The jti and exp of a token, unverified: revoking needs no trust in the
    token (the worst a forged one can do is revoke an id).
    """
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise UsageError("--token is not a JWT") from None
    jti, exp = claims.get("jti"), claims.get("exp")
    if not isinstance(jti, str) or not jti:
        raise UsageError("--token has no jti claim, so it cannot be revoked (securenet refuses such tokens anyway)")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        raise UsageError("--token has no exp claim (securenet refuses such tokens anyway)")
    return jti, datetime.datetime.fromtimestamp(exp, datetime.UTC)


def revoke(args: argparse.Namespace) -> int:
    if (args.jti is None) == (args.token is None):
        raise UsageError("give either a token id (JTI, with --expires) or --token TOKEN")
    if args.token is not None:
        if args.expires is not None:
            raise UsageError("--expires comes from the token's exp claim; do not give it with --token")
        jti, expires = _from_token(args.token)
    else:
        if not args.jti or len(args.jti) > MAX_NAME_LENGTH:
            raise UsageError(f"the token id must be 1-{MAX_NAME_LENGTH} characters")
        if args.expires is None:
            raise UsageError(
                "--expires is required with a token id: the token's exp (POSIX seconds) or an ISO 8601 time; "
                "the revocation is kept until then"
            )
        jti, expires = args.jti, _parse_expires(args.expires)
    if expires.timestamp() <= clock():
        print(f"token {jti} expired at {format_time(expires)}; it is refused anyway, nothing to revoke")
        return 0
    store = open_store(args.db)
    try:
        wait(store.revoke_token(jti, expires))
    finally:
        close_store(store)
    print(f"revoked token {jti} (kept until it expires at {format_time(expires)})")
    return 0


# -- argument parsing --------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add C{securenet tokens} and its subcommands."""
    tokens = sub.add_parser("tokens", help="bearer tokens (JWT): keygen, issue, revoke")
    commands = tokens.add_subparsers(dest="tokens_command", metavar="TOKENS_COMMAND", required=True)

    p = commands.add_parser("keygen", help="write a token signing key (and PATH.pub for verifiers)")
    p.add_argument("--alg", choices=ALGORITHMS, default="EdDSA", help="EdDSA (Ed25519, default), ES256 (P-256) or HS256")
    p.add_argument("--out", type=Path, required=True, metavar="PATH", help="the private key file to write (mode 0600)")
    p.set_defaults(func=keygen)

    p = commands.add_parser("issue", help="print a signed token for NAME")
    p.add_argument("name", metavar="NAME", help="the token's subject (the identity it authenticates)")
    p.add_argument("--key", type=Path, required=True, metavar="PATH", help="the signing key (from 'tokens keygen')")
    p.add_argument("--alg", choices=ALGORITHMS, default=None, help="check the key is for this algorithm")
    p.add_argument("--ttl", type=int, default=DEFAULT_TTL, metavar="SECONDS", help=f"lifetime (default {DEFAULT_TTL})")
    p.add_argument("--scope", action="append", default=[], metavar="SCOPE", help="a scope (repeatable)")
    p.add_argument("--audience", default=DEFAULT_AUDIENCE, metavar="AUD", help=f"aud claim (default {DEFAULT_AUDIENCE})")
    p.add_argument("--issuer", default=DEFAULT_ISSUER, metavar="ISS", help=f"iss claim (default {DEFAULT_ISSUER})")
    p.set_defaults(func=issue)

    p = commands.add_parser("revoke", help="revoke a token by its id (jti) until it expires")
    p.add_argument("jti", nargs="?", default=None, metavar="JTI", help="the token's id (its jti claim); or give --token")
    p.add_argument("--expires", default=None, metavar="WHEN", help="the token's exp: POSIX seconds or ISO 8601")
    p.add_argument("--token", default=None, metavar="TOKEN", help="revoke this token (its jti and exp are read from it)")
    add_db(p)
    p.set_defaults(func=revoke)


__all__ = ["register"]
