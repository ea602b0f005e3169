"""
Credential options for the examples' command-line clients, as
C{securenet connect} has them: a client certificate in the endpoint string
(EXTERNAL, the default), or C{--user} with a password (SCRAM-SHA-256-PLUS,
bound to the TLS channel) and a TOTP code if the server asks for one.
"""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Callable, Sequence

from securenet.interfaces import IClientMechanism
from securenet.sasl import ChannelBindings, ScramClientMechanism

MechanismChooser = Callable[[Sequence[str], ChannelBindings, bool], IClientMechanism]


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint",
        required=True,
        metavar="ENDPOINT",
        help="securenet:host=H:port=P:trustRoots=CA[:certificate=CERT:privateKey=KEY] (a client "
        "certificate authenticates you unless --user is given)",
    )
    parser.add_argument("--user", metavar="NAME", help="log in as NAME with a password (SCRAM-SHA-256)")
    parser.add_argument("--password-file", metavar="FILE", help="the password's file (first line); default: prompt")
    parser.add_argument("--totp", metavar="CODE", help="the current TOTP code, if the server asks for one; default: prompt")


def read_password(args: argparse.Namespace) -> str:
    if args.password_file:
        with open(args.password_file, encoding="utf-8") as f:
            return f.readline().rstrip("\r\n")
    return getpass.getpass(f"password for {args.user}: ")


def mechanism(args: argparse.Namespace) -> MechanismChooser | None:
    """None (EXTERNAL with the endpoint's certificate), or SCRAM for C{--user}."""
    if not args.user:
        return None
    user, password = args.user, read_password(args)

    def choose(offered: Sequence[str], bindings: ChannelBindings, has_certificate: bool) -> IClientMechanism:
        plus = "SCRAM-SHA-256-PLUS" in offered
        return ScramClientMechanism(
            user,
            password,
            plus=plus,
            bindings=bindings,
            cb_name="tls-exporter" if bindings.tls_exporter is not None else "tls-server-end-point",
            server_offers_plus=plus,
        )

    return choose


def totp(args: argparse.Namespace) -> Callable[[], str]:
    return lambda: args.totp or getpass.getpass("TOTP code: ")
