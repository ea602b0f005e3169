"""
Endpoint-string parsers for C{serverFromString} / C{clientFromString}
(C{securenet:...}); C{twisted/plugins/securenet_endpoints.py} points here.
"""

from __future__ import annotations

from twisted.internet.interfaces import (
    IReactorCore,
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin
from zope.interface import implementer

from securenet.tls._endpoints import client_endpoint_from_args, server_endpoint_from_args


@implementer(IPlugin, IStreamServerEndpointStringParser)
class SecurenetServerParser:
    prefix = "securenet"

    def parseStreamServer(self, reactor: IReactorCore, *args: object, **kwargs: object) -> IStreamServerEndpoint:
        return server_endpoint_from_args(reactor, *map(str, args), **{k: str(v) for k, v in kwargs.items()})


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class SecurenetClientParser:
    prefix = "securenet"

    def parseStreamClient(self, reactor: IReactorCore, *args: object, **kwargs: object) -> IStreamClientEndpoint:
        return client_endpoint_from_args(reactor, *map(str, args), **{k: str(v) for k, v in kwargs.items()})


securenetServerParser = SecurenetServerParser()
securenetClientParser = SecurenetClientParser()
