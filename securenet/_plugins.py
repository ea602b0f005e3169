"""
Endpoint-string parsers for C{serverFromString} / C{clientFromString}
(C{securenet:...}); C{twisted/plugins/securenet_endpoints.py} points here.

A client endpoint is TLS (the keys of L{CLIENT_KEYS}) and then the
authentication exchange, with the credentials of L{CREDENTIAL_KEYS}: what
C{securenet connect} takes as options.  Secrets are read from files, never
written in the endpoint string.
"""

from __future__ import annotations

import argparse
from typing import Any

from twisted.internet.interfaces import (
    IReactorCore,
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin
from zope.interface import implementer

from securenet.cli._connect import MECHANISMS, mechanism_chooser
from securenet.session._client import MechanismChooser
from securenet.session._endpoint import SessionClientEndpoint
from securenet.tls._endpoints import (
    CLIENT_KEYS,
    EndpointConfigurationError,
    _check_keys,
    client_endpoint_from_args,
    server_endpoint_from_args,
)

CREDENTIAL_KEYS: dict[str, str] = {
    "mechanism": f"{' | '.join(MECHANISMS)} (default: from the keys below; without them EXTERNAL when certificate is given, "
    "else ANONYMOUS)",
    "user": "user name for PLAIN and SCRAM (SCRAM-SHA-256-PLUS when the server offers it, else SCRAM-SHA-256), "
    "with passwordFile; for OAUTHBEARER, the authorization identity",
    "passwordFile": "file whose first line is the password of user",
    "tokenFile": "file whose first line is a bearer token (OAUTHBEARER)",
    "apiKeyFile": "file whose first line is an API key (APIKEY)",
}

_PASSWORD: tuple[frozenset[str], frozenset[str]] = (frozenset({"user", "passwordFile"}), frozenset())
#: Mechanism (None: implied by the keys given) -> (keys it needs, keys it may take).
_KEYS_OF_MECHANISM: dict[str | None, tuple[frozenset[str], frozenset[str]]] = {
    None: (frozenset(), frozenset()),
    "EXTERNAL": (frozenset(), frozenset()),
    "ANONYMOUS": (frozenset(), frozenset()),
    "PLAIN": _PASSWORD,
    "SCRAM": _PASSWORD,
    "SCRAM-SHA-256": _PASSWORD,
    "SCRAM-SHA-256-PLUS": _PASSWORD,
    "OAUTHBEARER": (frozenset({"tokenFile"}), frozenset({"user"})),
    "APIKEY": (frozenset({"apiKeyFile"}), frozenset()),
}


def credentials_from_keys(keys: dict[str, str]) -> MechanismChooser | None:
    """
    The mechanism chooser for the credential keys of a client endpoint
    (None: EXTERNAL with a client certificate, else ANONYMOUS), reading the
    secret files now.  The same choice as C{securenet connect}'s options:
    C{tokenFile} implies OAUTHBEARER, C{apiKeyFile} APIKEY, C{user} (and
    C{passwordFile}) SCRAM.  A key the mechanism would not use is refused.
    """
    name = keys.get("mechanism")
    if name is not None and name not in MECHANISMS:
        raise EndpointConfigurationError(f"mechanism={name!r}: use one of {', '.join(MECHANISMS)}")
    implied = name
    if implied is None:
        if "tokenFile" in keys:
            implied = "OAUTHBEARER"
        elif "apiKeyFile" in keys:
            implied = "APIKEY"
        elif "user" in keys or "passwordFile" in keys:
            implied = "SCRAM"
    needed, optional = _KEYS_OF_MECHANISM[implied]
    given = set(keys) - {"mechanism"}
    described = implied or "EXTERNAL or ANONYMOUS"
    missing, unused = sorted(needed - given), sorted(given - needed - optional)
    if "user" in missing:
        raise EndpointConfigurationError(f"{described} needs user=NAME")
    if missing:
        raise EndpointConfigurationError(
            f"{described} needs {missing[0]}=FILE (secrets are read from files, never written in the endpoint)"
        )
    if unused:
        raise EndpointConfigurationError(f"{', '.join(unused)}: not used by {described}")
    # Every secret has its file here, so nothing is ever prompted for.
    return mechanism_chooser(
        argparse.Namespace(
            mechanism=name,
            user=keys.get("user"),
            password_file=keys.get("passwordFile"),
            token_file=keys.get("tokenFile"),
            api_key_file=keys.get("apiKeyFile"),
        )
    )


def session_client_endpoint_from_args(reactor: Any, *args: str, **kwargs: str) -> SessionClientEndpoint:
    """Build a client endpoint (TLS, then authentication) from the parts of a C{securenet:} string."""
    _check_keys("client", kwargs, {**CLIENT_KEYS, **CREDENTIAL_KEYS})
    credentials = {key: kwargs.pop(key) for key in list(kwargs) if key in CREDENTIAL_KEYS}
    tls = client_endpoint_from_args(reactor, *args, **kwargs)
    return SessionClientEndpoint(reactor, tls, mechanism=credentials_from_keys(credentials))


@implementer(IPlugin, IStreamServerEndpointStringParser)
class SecurenetServerParser:
    prefix = "securenet"

    def parseStreamServer(self, reactor: IReactorCore, *args: object, **kwargs: object) -> IStreamServerEndpoint:
        return server_endpoint_from_args(reactor, *map(str, args), **{k: str(v) for k, v in kwargs.items()})


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class SecurenetClientParser:
    prefix = "securenet"

    def parseStreamClient(self, reactor: IReactorCore, *args: object, **kwargs: object) -> IStreamClientEndpoint:
        return session_client_endpoint_from_args(reactor, *map(str, args), **{k: str(v) for k, v in kwargs.items()})


securenetServerParser = SecurenetServerParser()
securenetClientParser = SecurenetClientParser()
