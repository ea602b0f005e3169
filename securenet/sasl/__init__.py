"""
The wire mechanisms of the authentication exchange (SASL, RFC 4422).

Each server mechanism turns what the client sends into C{twisted.cred}
credentials for the portal; which mechanisms a connection is offered
follows from the credential interfaces the portal's checkers accept
(L{offered_mechanisms}).  Client mechanisms produce what the server expects::

    PLAIN (RFC 4616)                    IUsernamePassword
    SCRAM-SHA-256(-PLUS) (RFC 7677)     IScramCredentials (a checker with scram_parameters)
    OAUTHBEARER (RFC 7628)              ITokenCredentials
    APIKEY                              IAPIKeyCredentials
    EXTERNAL                            ICertificateCredentials (the TLS client certificate)
    ANONYMOUS                           IAnonymous
"""

from securenet.sasl._apikey import APIKeyClientMechanism, APIKeyMechanismFactory
from securenet.sasl._builtin import AnonymousClientMechanism, ExternalClientMechanism
from securenet.sasl._channel import channel_bindings, tls_server_end_point
from securenet.sasl._mechanism import Challenge, ChannelBindings, Complete, MechanismError, SingleMessageMechanism, Step
from securenet.sasl._oauthbearer import OAuthBearerClientMechanism, OAuthBearerMechanismFactory, parse_oauthbearer
from securenet.sasl._plain import PLAIN, PlainClientMechanism, PlainMechanism, PlainMechanismFactory, parse_plain
from securenet.sasl._scram import (
    SCRAM_SHA_256,
    SCRAM_SHA_256_PLUS,
    ChannelBindingError,
    ScramClientMechanism,
    ScramMechanismFactory,
    ScramServerMechanism,
)

__all__ = [
    "PLAIN",
    "SCRAM_SHA_256",
    "SCRAM_SHA_256_PLUS",
    "APIKeyClientMechanism",
    "APIKeyMechanismFactory",
    "AnonymousClientMechanism",
    "ChannelBindingError",
    "ChannelBindings",
    "Challenge",
    "Complete",
    "ExternalClientMechanism",
    "MechanismError",
    "OAuthBearerClientMechanism",
    "OAuthBearerMechanismFactory",
    "PlainClientMechanism",
    "PlainMechanism",
    "PlainMechanismFactory",
    "ScramClientMechanism",
    "ScramMechanismFactory",
    "ScramServerMechanism",
    "SingleMessageMechanism",
    "Step",
    "channel_bindings",
    "parse_oauthbearer",
    "parse_plain",
    "tls_server_end_point",
]
