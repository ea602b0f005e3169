"""
SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 5802, RFC 7677), server and client.

The server keeps only L{ScramKeys} (salt, iteration count, StoredKey,
ServerKey): nothing a client could log in with.  The client proves it knows
the password without sending it, and the server proves it holds the
ServerKey (the server signature, checked by L{ScramClientMechanism.verify_success}),
so a client never trusts a server that merely accepted its connection.

-PLUS binds the exchange to the TLS channel (L{securenet.sasl.channel_bindings}): a
relay that terminates TLS and reconnects to the server has different
channel bindings on each side, and the proof no longer verifies.

Server side, the pieces are:

  - L{ScramChecker}: the C{twisted.cred} checker of L{IScramCredentials}; it
    also provides L{IMechanismProvider} (both mechanisms) and hands the
    mechanism each user's salt and iteration count;
  - L{ScramMechanismFactory} / L{ScramServerMechanism}: the message parser
    and state machine (L{IServerMechanism}).

The mechanism checks every message's syntax and the channel binding; the
checker alone decides whether the proof is right, so throttling and audit
see SCRAM logins like any other.

Written by hand with hashlib/hmac/secrets rather than on top of scramp:
scramp implements C{tls-server-end-point} but refuses C{tls-exporter}
(RFC 9266), the binding TLS 1.3 needs, and one implementation should serve
both bindings.  scramp stays in the tests as an independent implementation
to interoperate with.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets
from typing import Literal

from twisted.internet import defer
from zope.interface import implementer

from securenet._threads import Runner
from securenet.cred._saslprep import SASLprepError, normalize_password, saslprep
from securenet.cred._scram import (
    _KEY_LENGTH,
    MAX_ITERATIONS,
    MIN_ITERATIONS,
    ScramCredentials,
    _b64,
    _client_and_server_keys,
    _hmac,
    _sha256,
    _xor,
    salted_password,
)
from securenet.interfaces import IClientMechanism, IMechanismFactory, IScramChecker, IServerMechanism
from securenet.sasl._mechanism import Challenge, ChannelBindings, Complete, MechanismError, Step

SCRAM_SHA_256 = "SCRAM-SHA-256"
SCRAM_SHA_256_PLUS = "SCRAM-SHA-256-PLUS"

#: Channel-binding types we bind to, in the client's order of preference.
CHANNEL_BINDING_TYPES = ("tls-exporter", "tls-server-end-point")
_NONCE_BYTES = 24


class ChannelBindingError(MechanismError):
    """
    The client's channel-binding choice or data is refused: a flag that does
    not fit the mechanism, a possible downgrade, a binding type this
    connection does not have, or binding data from another channel.
    """


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise MechanismError(f"SCRAM {what} is not valid base64") from None


def escape_saslname(name: str) -> str:
    """A name as it appears in C{n=} / C{a=}: C{=} and C{,} escaped."""
    return name.replace("=", "=3D").replace(",", "=2C")


_SASLNAME = re.compile(r"(?:[^=,]|=2C|=3D)+")


def unescape_saslname(text: str) -> str:
    """The name in a C{n=} / C{a=} value; MechanismError for a stray C{=}."""
    if not _SASLNAME.fullmatch(text):
        raise MechanismError("SCRAM user name is badly escaped ('=' must be followed by 2C or 3D)")
    return re.sub(r"=(2C|3D)", lambda m: "," if m.group(1) == "2C" else "=", text)


def prepare_user_name(name: str) -> str:
    """
    A user name as SCRAM names it: SASLprep'd as a query (RFC 5802 section
    5.1), the form user names are stored in.

    @raise SASLprepError: SASLprep refuses the name.
    """
    return saslprep(name, allow_unassigned=True)


def _prepared_name(escaped: str) -> str:
    try:
        name = prepare_user_name(unescape_saslname(escaped))
    except SASLprepError:
        raise MechanismError("SCRAM user name is not valid SASLprep text") from None
    if not name:
        raise MechanismError("SCRAM user name is empty")
    return name


def _valid_nonce(nonce: str) -> bool:
    return bool(nonce) and all(0x21 <= ord(c) <= 0x7E and c != "," for c in nonce)


def _new_nonce() -> str:
    return secrets.token_urlsafe(_NONCE_BYTES)


def _decode(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise MechanismError(f"SCRAM {what} is not UTF-8") from None


def _attributes(text: str, what: str) -> list[tuple[str, str]]:
    """C{k=v,k=v,...}: each key one ASCII letter, each value non-empty."""
    result = []
    for part in text.split(","):
        if len(part) < 3 or part[1] != "=" or not (part[0].isascii() and part[0].isalpha()):
            raise MechanismError(f"SCRAM {what} is malformed (expected attribute=value pairs)")
        result.append((part[0], part[2:]))
    return result


def _expect(attributes: list[tuple[str, str]], keys: str, what: str) -> None:
    """The leading attributes must be exactly C{keys}, in order (the rest are extensions)."""
    if attributes and attributes[0][0] == "m":
        raise MechanismError(f"SCRAM {what} has a mandatory extension (m=) we do not support")
    found = "".join(k for k, _ in attributes[: len(keys)])
    if found != keys:
        raise MechanismError(f"SCRAM {what} is malformed (expected attributes {', '.join(keys)} in that order)")


# -- server mechanism ---------------------------------------------------------


@implementer(IMechanismFactory)
class ScramMechanismFactory:
    """Starts a L{ScramServerMechanism} for each attempt (one factory per mechanism name)."""

    second_factor_allowed = True

    def __init__(self, checker: IScramChecker, *, plus: bool) -> None:
        self.checker = checker
        self.plus = plus
        self.name = SCRAM_SHA_256_PLUS if plus else SCRAM_SHA_256

    def __call__(self, bindings: ChannelBindings, peer: str) -> ScramServerMechanism:
        has_bindings = bindings.tls_exporter is not None or bindings.tls_server_end_point is not None
        return ScramServerMechanism(
            self.checker,
            bindings,
            peer,
            plus=self.plus,
            offers_plus=self.checker.plus and has_bindings,
        )


_ServerState = Literal["start", "client-first", "looking-up", "client-final", "done"]


@implementer(IServerMechanism)
class ScramServerMechanism:
    """
    One SCRAM exchange, server side::

        client-first  ->  Challenge(server-first)
        client-final  ->  Complete(ScramCredentials, success_data=server-final)

    Any malformed or out-of-order message fails with L{MechanismError} and
    ends the exchange.

    @param offers_plus: whether SCRAM-SHA-256-PLUS is offered on this
        connection; if so a client flag C{y} is a downgrade and is refused.
    @param nonce: the server nonce (tests inject RFC vectors); random otherwise.
    """

    def __init__(
        self,
        checker: IScramChecker,
        bindings: ChannelBindings,
        peer: str,
        *,
        plus: bool,
        offers_plus: bool,
        nonce: str | None = None,
    ) -> None:
        if nonce is not None and not _valid_nonce(nonce):
            raise ValueError("a SCRAM nonce is printable ASCII without ','")
        self.checker = checker
        self.bindings = bindings
        self.peer = peer
        self.plus = plus
        self.offers_plus = offers_plus
        self.name = SCRAM_SHA_256_PLUS if plus else SCRAM_SHA_256
        self._server_nonce = nonce if nonce is not None else _new_nonce()
        self._state: _ServerState = "start"
        self._username = ""
        self._nonce = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._cbind_input = b""

    def step(self, response: bytes | None) -> defer.Deferred[Step]:
        try:
            if self._state == "start" and response is None:
                # No initial response: an empty challenge asks for client-first.
                self._state = "client-first"
                return defer.succeed(Challenge(b""))
            if response is None:
                raise MechanismError(f"{self.name} expects a message, got none")
            if self._state in ("start", "client-first"):
                return self._client_first(response)
            if self._state == "client-final":
                return defer.succeed(self._client_final(response))
            raise MechanismError(f"{self.name} message out of order")
        except MechanismError:
            self._state = "done"
            return defer.fail()

    def _client_first(self, response: bytes) -> defer.Deferred[Step]:
        text = _decode(response, "client-first message")
        flag, comma1, rest = text.partition(",")
        authzid, comma2, bare = rest.partition(",")
        if not comma1 or not comma2:
            raise MechanismError("SCRAM client-first message has no GS2 header")
        gs2_header = f"{flag},{authzid},"
        cb_data = self._check_binding_flag(flag)

        attributes = _attributes(bare, "client-first message")
        _expect(attributes, "nr", "client-first message")
        username = _prepared_name(attributes[0][1])
        nonce = attributes[1][1]
        if not _valid_nonce(nonce):
            raise MechanismError("SCRAM client nonce must be printable ASCII")
        if authzid:
            if not authzid.startswith("a="):
                raise MechanismError("SCRAM authorization identity is malformed (expected a=...)")
            if _prepared_name(authzid[2:]) != username:
                raise MechanismError("SCRAM authorization identity must be empty or the user name")

        self._username = username
        self._nonce = nonce + self._server_nonce
        self._client_first_bare = bare
        self._cbind_input = gs2_header.encode("utf-8") + cb_data
        self._state = "looking-up"
        d = self.checker.scram_parameters(username)
        return d.addCallback(self._server_first_message)

    def _check_binding_flag(self, flag: str) -> bytes:
        """The channel-binding data the client must echo for C{flag} (RFC 5802 section 6)."""
        if flag in ("n", "y"):
            if self.plus:
                raise ChannelBindingError(f"{self.name} requires channel binding (GS2 flag p=)")
            if flag == "y" and self.offers_plus:
                raise ChannelBindingError(
                    f"the client says the server cannot bind, but it offers {SCRAM_SHA_256_PLUS}: possible downgrade"
                )
            return b""
        if flag.startswith("p="):
            if not self.plus:
                raise ChannelBindingError(f"channel binding asked with {self.name}: use {SCRAM_SHA_256_PLUS}")
            cb_name = flag[2:]
            if cb_name not in CHANNEL_BINDING_TYPES:
                raise ChannelBindingError(f"unsupported channel-binding type; supported: {', '.join(CHANNEL_BINDING_TYPES)}")
            data = self.bindings.get(cb_name)
            if data is None:
                raise ChannelBindingError(f"channel binding {cb_name} is not available on this connection")
            return data
        raise MechanismError("SCRAM GS2 channel-binding flag must be n, y or p=<type>")

    def _server_first_message(self, parameters: tuple[bytes, int]) -> Step:
        salt, iterations = parameters
        self._server_first = f"r={self._nonce},s={_b64(salt)},i={iterations}"
        self._state = "client-final"
        return Challenge(self._server_first.encode("ascii"))

    def _client_final(self, response: bytes) -> Step:
        text = _decode(response, "client-final message")
        attributes = _attributes(text, "client-final message")
        _expect(attributes, "cr", "client-final message")
        if len(attributes) < 3 or attributes[-1][0] != "p":
            raise MechanismError("SCRAM client-final message must end with the proof (p=)")
        self._state = "done"
        without_proof = text.rpartition(",")[0]
        channel = attributes[0][1]
        if not hmac.compare_digest(channel.encode("utf-8"), _b64(self._cbind_input).encode("ascii")):
            raise ChannelBindingError("SCRAM channel binding (c=) does not match this channel")
        if attributes[1][1] != self._nonce:
            raise MechanismError("SCRAM nonce (r=) does not match the one of this exchange")
        proof = _unb64(attributes[-1][1], "proof (p=)")
        if len(proof) != _KEY_LENGTH:
            raise MechanismError(f"SCRAM proof must be {_KEY_LENGTH} bytes")
        auth_message = ",".join((self._client_first_bare, self._server_first, without_proof)).encode("utf-8")
        credentials = ScramCredentials(self._username, auth_message, proof)
        return Complete(credentials, success_data=credentials.server_final)


# -- client mechanism ------------------------------------------------------------


_ClientState = Literal["start", "sent-first", "sent-final", "done"]


@implementer(IClientMechanism)
class ScramClientMechanism:
    """
    One SCRAM exchange, client side.

    With C{plus}, binds to the channel with C{cb_name} (the binding must be
    available in C{bindings}).  Without, the GS2 flag says whether this client
    could bind: C{n} if C{bindings} has no C{cb_name} data, C{y} if it has
    but the server did not offer -PLUS.  A client that could bind but picks
    plain SCRAM although the server offers -PLUS is refused at construction:
    that is the downgrade -PLUS exists to prevent (pass empty bindings to
    opt out of binding on purpose).

    @param nonce: the client nonce (tests inject RFC vectors); random otherwise.
    @param runner: where to run the PBKDF2 key derivation (e.g.
        C{reactor_thread_pool_runner(reactor)}); then L{respond} answers with a
        Deferred and the reactor stays responsive.  Without one it runs inline
        (fine for a command-line client).
    """

    def __init__(
        self,
        username: str,
        password: str,
        *,
        plus: bool,
        bindings: ChannelBindings,
        cb_name: str = "tls-exporter",
        server_offers_plus: bool = False,
        nonce: str | None = None,
        runner: Runner | None = None,
    ) -> None:
        if cb_name not in CHANNEL_BINDING_TYPES:
            raise ValueError(f"unsupported channel-binding type {cb_name!r}; use one of {', '.join(CHANNEL_BINDING_TYPES)}")
        if nonce is not None and not _valid_nonce(nonce):
            raise ValueError("a SCRAM nonce is printable ASCII without ','")
        prepared = prepare_user_name(username)
        if not prepared:
            raise ValueError("the SCRAM user name is empty")
        data = bindings.get(cb_name)
        if plus:
            if data is None:
                raise ValueError(f"{SCRAM_SHA_256_PLUS} needs {cb_name} channel-binding data, and this connection has none")
            gs2_header = f"p={cb_name},,"
            cb_data = data
        elif data is None:
            gs2_header, cb_data = "n,,", b""
        elif server_offers_plus:
            raise ValueError(f"the server offers {SCRAM_SHA_256_PLUS} and this client can bind: use plus=True")
        else:
            gs2_header, cb_data = "y,,", b""
        self.name = SCRAM_SHA_256_PLUS if plus else SCRAM_SHA_256
        self.username = prepared
        self._password = password
        normalize_password(password)  # refuse now a password no user can have
        self._nonce = nonce if nonce is not None else _new_nonce()
        self._runner = runner
        self._cbind_input = gs2_header.encode("ascii") + cb_data
        self._client_first_bare = f"n={escape_saslname(prepared)},r={self._nonce}"
        self._gs2_header = gs2_header
        self._server_signature = b""
        self._state: _ClientState = "start"

    def __repr__(self) -> str:
        return f"<ScramClientMechanism {self.name} for {self.username!r}>"

    def initial(self) -> bytes:
        if self._state != "start":
            raise MechanismError(f"{self.name} client-first message already sent")
        self._state = "sent-first"
        return (self._gs2_header + self._client_first_bare).encode("utf-8")

    def respond(self, challenge: bytes) -> bytes | defer.Deferred[bytes]:
        if self._state == "start" and challenge == b"":
            return self.initial()
        if self._state != "sent-first":
            raise MechanismError(f"{self.name} challenge out of order")
        self._state = "done"
        text = _decode(challenge, "server-first message")
        attributes = _attributes(text, "server-first message")
        _expect(attributes, "rsi", "server-first message")
        nonce, salt_text, iterations_text = (v for _, v in attributes[:3])
        if not _valid_nonce(nonce) or not nonce.startswith(self._nonce) or len(nonce) == len(self._nonce):
            raise MechanismError("SCRAM server nonce does not extend the client nonce")
        salt = _unb64(salt_text, "salt (s=)")
        if not salt:
            raise MechanismError("SCRAM salt is empty")
        if not re.fullmatch(r"[1-9][0-9]{0,9}", iterations_text):
            raise MechanismError("SCRAM iteration count (i=) is not a positive integer")
        iterations = int(iterations_text)
        if iterations < MIN_ITERATIONS:
            raise MechanismError(f"SCRAM iteration count {iterations} is below the minimum {MIN_ITERATIONS}")
        if iterations > MAX_ITERATIONS:
            raise MechanismError(f"SCRAM iteration count {iterations} is above the maximum {MAX_ITERATIONS}")

        password, self._password = self._password, ""
        if self._runner is not None:
            return self._runner(salted_password, password, salt, iterations).addCallback(self._final, text, nonce)
        return self._final(salted_password(password, salt, iterations), text, nonce)

    def _final(self, salted: bytes, text: str, nonce: str) -> bytes:
        client_key, server_key = _client_and_server_keys(salted)
        without_proof = f"c={_b64(self._cbind_input)},r={nonce}"
        auth_message = ",".join((self._client_first_bare, text, without_proof)).encode("utf-8")
        proof = _xor(client_key, _hmac(_sha256(client_key), auth_message))
        self._server_signature = _hmac(server_key, auth_message)
        self._state = "sent-final"
        return f"{without_proof},p={_b64(proof)}".encode("ascii")

    def verify_success(self, data: bytes | None) -> None:
        if self._state != "sent-final":
            raise MechanismError(f"{self.name} success before the exchange finished")
        self._state = "done"
        if data is None:
            raise MechanismError("the server did not prove it knows the SCRAM keys (no server signature)")
        text = _decode(data, "server-final message")
        attributes = _attributes(text, "server-final message")
        if attributes[0][0] == "e":
            raise MechanismError(f"the server reported a SCRAM error: {attributes[0][1]}")
        _expect(attributes, "v", "server-final message")
        signature = _unb64(attributes[0][1], "server signature (v=)")
        if not hmac.compare_digest(signature, self._server_signature):
            raise MechanismError("the server signature is wrong: the server does not know the SCRAM keys")
