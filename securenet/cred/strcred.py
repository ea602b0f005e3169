"""
C{twisted.cred.strcred} factories, so operators pick checkers with C{--auth}.
The plugin objects in C{twisted/plugins/securenet_cred.py} point here.
"""

from __future__ import annotations

from twisted.cred.strcred import ICheckerFactory, StrcredException
from twisted.plugin import IPlugin
from zope.interface import implementer

from securenet.cred.checkers import MAPPINGS, CertificateChecker
from securenet.cred.credentials import ICertificateCredentials


class CheckerArgumentError(StrcredException):
    """An C{--auth} argument string is malformed."""


def parse_options(argstring: str, allowed: set[str], auth_type: str) -> dict[str, str]:
    """Parse C{key=value,key=value} (also C{:}-separated) into a dict, refusing unknown keys."""
    options: dict[str, str] = {}
    for part in argstring.replace(":", ",").split(","):
        if not part.strip():
            continue
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq:
            raise CheckerArgumentError(f"--auth {auth_type}: expected key=value, got {part!r}")
        if key not in allowed:
            raise CheckerArgumentError(
                f"--auth {auth_type}: unknown option {key!r}; known: {', '.join(sorted(allowed))}"
            )
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
            raise CheckerArgumentError(
                f"--auth certificate: unknown map={mapping!r}; choose one of: {', '.join(MAPPINGS)}"
            )
        return CertificateChecker(mapping)


certificateCheckerFactory = CertificateCheckerFactory()
