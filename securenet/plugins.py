"""
Endpoint-string parsers for C{serverFromString} / C{clientFromString}
(C{securenet:...}); C{twisted/plugins/securenet_endpoints.py} points here.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IStreamClientEndpointStringParserWithReactor, IStreamServerEndpointStringParser
from twisted.plugin import IPlugin
from zope.interface import implementer

from securenet.tls.endpoints import (
    SecureClientEndpoint,
    SecureServerEndpoint,
    client_endpoint_from_args,
    server_endpoint_from_args,
)


@implementer(IPlugin, IStreamServerEndpointStringParser)
class SecurenetServerParser:
    prefix = "securenet"

    def parseStreamServer(self, reactor: Any, *args: str, **kwargs: str) -> SecureServerEndpoint:
        return server_endpoint_from_args(reactor, *args, **kwargs)


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class SecurenetClientParser:
    prefix = "securenet"

    def parseStreamClient(self, reactor: Any, *args: str, **kwargs: str) -> SecureClientEndpoint:
        return client_endpoint_from_args(reactor, *args, **kwargs)


securenetServerParser = SecurenetServerParser()
securenetClientParser = SecurenetClientParser()
