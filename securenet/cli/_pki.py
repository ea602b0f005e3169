"""
C{securenet pki ...}: the development PKI on disk.

A CA directory holds C{ca.pem}, C{ca.key}, one C{NAME.pem}/C{NAME.key} pair
per issued certificate, C{revoked.txt} and C{crl.pem} (see
L{securenet.pki.CertificateAuthority}).  Every refusal is an exception of securenet's
hierarchy, which C{securenet.cli.main} prints as one line with exit code 1;
nothing is written when a command is refused.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from cryptography import x509

from securenet._errors import SecurenetError
from securenet.pki import (
    AlreadyExists,
    CertificateAuthority,
    CertificateFacts,
    FileMissing,
    load_ca,
    load_certificates,
    load_crl,
    parse_san,
    revoke,
    save_ca,
    spki_pin,
    write_crl,
)
from securenet.pki._ca import (
    CRL_FILE,
    DEFAULT_CA_DAYS,
    DEFAULT_CLIENT_DAYS,
    DEFAULT_CRL_DAYS,
    DEFAULT_SERVER_DAYS,
    REVOKED_FILE,
    KeyType,
    Kind,
    read_revoked,
)
from securenet.pki._pins import curl_pin

T = TypeVar("T")

#: Names whose files would clobber the CA's own files (C{ca.pem}, C{crl.pem}).
RESERVED_NAMES = frozenset({"ca", "crl"})

#: The longest common name X.509 (RFC 5280's ub-common-name) allows.
MAX_COMMON_NAME = 64


class UsageError(SecurenetError):
    """
    A command-line value was refused; C{str()} is the line the user sees.

    For input problems that are not about a PKI file (a bad C{--days}, a
    certificate name that is not a safe file name).
    """


def _user_input(action: Callable[[], T]) -> T:
    """
    Run a library call whose C{ValueError} can only come from the user's
    values (days, names), turning it into a L{UsageError}.
    """
    try:
        return action()
    except ValueError as e:
        raise UsageError(str(e)) from None


def _check_days(days: int) -> int:
    if days < 1:
        raise UsageError(f"--days must be at least 1, not {days}")
    return days


def _check_common_name(name: str, option: str) -> str:
    if not name.strip():
        raise UsageError(f"{option} must not be empty")
    if len(name) > MAX_COMMON_NAME:
        raise UsageError(
            f"{option} {name!r} is {len(name)} characters; a certificate's common name holds at most {MAX_COMMON_NAME}"
        )
    return name


def _check_file_name(name: str) -> str:
    """
    NAME becomes C{DIR/NAME.pem} and C{DIR/NAME.key}: refuse anything that
    would land outside DIR, be hidden, or replace the CA's own files.
    """
    _check_common_name(name, "certificate name")
    if any(c in name for c in "/\\\0") or name.startswith("."):
        raise UsageError(f"certificate name {name!r} must be a plain file name (no '/', '\\', or leading '.')")
    if name.lower() in RESERVED_NAMES:
        raise UsageError(f"certificate name {name!r} is reserved for the CA's own files")
    return name


def _check_ca_dir(directory: Path) -> None:
    """Fail early, with the next step, when DIR holds no CA."""
    if not (directory / "ca.pem").exists():
        raise FileMissing(
            directory / "ca.pem",
            f"no CA here; create one with 'securenet pki init --dir {directory}'",
        )


def parse_sans(values: Iterable[str]) -> list[x509.GeneralName]:
    """Each C{--san} value is a comma-separated list of C{KIND:VALUE}."""
    return [parse_san(item) for value in values for item in value.split(",")]


# -- subcommands -------------------------------------------------------------


def init(args: argparse.Namespace) -> int:
    """Create a CA in DIR; an existing CA is never replaced."""
    directory: Path = args.dir
    _check_days(args.days)
    _check_common_name(args.name, "--name")
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory}: exists and is not a directory")
    existing = [p for p in (directory / "ca.pem", directory / "ca.key") if p.exists()]
    if existing:
        raise AlreadyExists(
            directory,
            f"already holds a CA ({existing[0].name}); refusing to overwrite it "
            "(use another --dir, or remove the old CA yourself)",
        )
    key_type: KeyType = args.key_type
    ca = _user_input(lambda: CertificateAuthority.create(args.name, key_type=key_type, days=args.days))
    cert_path, key_path = save_ca(ca, directory)
    print(f"wrote {cert_path}")
    print(f"wrote {key_path}")
    return 0


def issue(args: argparse.Namespace) -> int:
    """Issue a server or client certificate and key from the CA in DIR."""
    directory: Path = args.dir
    kind: Kind = args.kind
    name = _check_file_name(args.name)
    if args.days is not None:
        _check_days(args.days)
    sans = parse_sans(args.san)
    _check_ca_dir(directory)
    if not args.force:
        for path in (directory / f"{name}.pem", directory / f"{name}.key"):
            if path.exists():
                raise AlreadyExists(path, "already exists; refusing to overwrite it (use --force to replace it)")
    ca = load_ca(directory)
    key_type: KeyType = args.key_type
    leaf = _user_input(lambda: ca.issue(kind, name, sans=sans, days=args.days, key_type=key_type))
    cert_path, key_path = leaf.save(directory, name, overwrite=args.force)
    print(f"wrote {cert_path}")
    print(f"wrote {key_path}")
    print(f"pin: {spki_pin(leaf.certificate)}")
    return 0


def pin(args: argparse.Namespace) -> int:
    """Exactly one line, the pin, so scripts can capture it."""
    certificate = load_certificates(args.file)[0]
    print(curl_pin(certificate) if args.curl else spki_pin(certificate))
    return 0


def show(args: argparse.Namespace) -> int:
    """Describe every certificate in FILE, leaf first, blank line between."""
    certs = load_certificates(args.file)
    print("\n\n".join(CertificateFacts.of(c).describe() for c in certs))
    return 0


def revoke_command(args: argparse.Namespace) -> int:
    """Record a revocation; it takes effect at the next C{securenet pki crl}."""
    directory: Path = args.dir
    _check_ca_dir(directory)
    already = {serial for serial, _ in read_revoked(directory)}
    serial = revoke(directory, args.file)
    if serial in already:
        print(f"serial {serial:x} was already revoked")
    else:
        print(f"revoked serial {serial:x} (recorded in {directory / REVOKED_FILE})")
    print(f"publish it with: securenet pki crl --dir {directory}")
    return 0


def crl(args: argparse.Namespace) -> int:
    """Write C{DIR/crl.pem} listing every recorded revocation."""
    directory: Path = args.dir
    _check_days(args.days)
    _check_ca_dir(directory)
    path = _user_input(lambda: write_crl(directory, days=args.days))
    next_update = load_crl(path).next_update_utc
    print(f"wrote {path}")
    print(f"next update: {next_update.isoformat() if next_update else '(none)'}")
    return 0


# -- argument parsing --------------------------------------------------------


def _add_dir(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--dir", required=True, type=Path, metavar="DIR", help=help)


def _add_key_type(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key-type",
        choices=("ec", "rsa"),
        default="ec",
        help="ec: ECDSA P-256 (default); rsa: RSA 3072",
    )


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add C{securenet pki} and its subcommands."""
    pki = sub.add_parser("pki", help="a development CA: init, issue, pin, show, revoke, crl")
    commands = pki.add_subparsers(dest="pki_command", metavar="PKI_COMMAND", required=True)

    p = commands.add_parser("init", help="create a CA (DIR/ca.pem, DIR/ca.key)")
    _add_dir(p, "directory for the CA (created if missing)")
    _add_key_type(p)
    p.add_argument("--name", default="securenet development CA", metavar="CN", help="the CA's common name")
    p.add_argument("--days", type=int, default=DEFAULT_CA_DAYS, metavar="N", help=f"validity (default {DEFAULT_CA_DAYS})")
    p.set_defaults(func=init)

    p = commands.add_parser("issue", help="issue a server or client certificate (DIR/NAME.pem, DIR/NAME.key)")
    p.add_argument("kind", choices=("server", "client"), help="serverAuth or clientAuth certificate")
    p.add_argument("name", metavar="NAME", help="subject common name and file name")
    _add_dir(p, "the CA directory")
    p.add_argument(
        "--san",
        action="append",
        default=[],
        metavar="KIND:VALUE,...",
        help="subject alternative names, DNS:, IP:, URI: or email:, comma-separated; "
        "repeatable (a server without one gets DNS:NAME or IP:NAME)",
    )
    p.add_argument(
        "--days",
        type=int,
        default=None,
        metavar="N",
        help=f"validity (default {DEFAULT_SERVER_DAYS} for server, {DEFAULT_CLIENT_DAYS} for client)",
    )
    _add_key_type(p)
    p.add_argument("--force", action="store_true", help="replace an existing NAME.pem/NAME.key")
    p.set_defaults(func=issue)

    p = commands.add_parser("pin", help="print the SPKI pin (sha256/...) of the first certificate in FILE")
    p.add_argument("file", type=Path, metavar="FILE", help="a PEM certificate (or chain: its first certificate)")
    p.add_argument(
        "--curl",
        action="store_true",
        help='print curl\'s spelling, sha256//... (curl --pinnedpubkey "$(securenet pki pin --curl FILE)")',
    )
    p.set_defaults(func=pin)

    p = commands.add_parser("show", help="describe each certificate in FILE")
    p.add_argument("file", type=Path, metavar="FILE", help="a PEM file of one or more certificates")
    p.set_defaults(func=show)

    p = commands.add_parser("revoke", help="record the revocation of the certificate in FILE")
    p.add_argument("file", type=Path, metavar="FILE", help="the PEM certificate to revoke (issued by the CA in DIR)")
    _add_dir(p, "the CA directory that issued FILE")
    p.set_defaults(func=revoke_command)

    p = commands.add_parser("crl", help=f"write DIR/{CRL_FILE}")
    _add_dir(p, "the CA directory")
    p.add_argument(
        "--days", type=int, default=DEFAULT_CRL_DAYS, metavar="N", help=f"next update in N days (default {DEFAULT_CRL_DAYS})"
    )
    p.set_defaults(func=crl)


__all__ = ["UsageError", "parse_sans", "register"]
