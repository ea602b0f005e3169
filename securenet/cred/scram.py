"""
SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 5802, RFC 7677), server and client.

The server keeps only L{ScramKeys} (salt, iteration count, StoredKey,
ServerKey): nothing a client could log in with.  The client proves it knows
the password without sending it, and the server proves it holds the
ServerKey (the server signature, checked by L{ScramClientMechanism.verify_success}),
so a client never trusts a server that merely accepted its connection.

-PLUS binds the exchange to the TLS channel (L{securenet.cred.channel}): a
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
import hashlib
import hmac
import re
import secrets
from typing import Any, Literal

import attrs
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import defer
from zope.interface import Attribute, Interface, implementer

from securenet.cred.passwords import (
    MIN_SCRAM_ITERATIONS,
    LoginRefused,
    Runner,
    SASLprepError,
    normalize_password,
    saslprep,
)
from securenet.cred.sasl import (
    ChannelBindings,
    Challenge,
    Complete,
    IClientMechanism,
    IMechanismFactory,
    IMechanismProvider,
    IServerMechanism,
    MechanismError,
    Step,
)
from securenet.cred.store import ICredentialStore, User

SCRAM_SHA_256 = "SCRAM-SHA-256"
SCRAM_SHA_256_PLUS = "SCRAM-SHA-256-PLUS"

#: Channel-binding types we bind to, in the client's order of preference.
CHANNEL_BINDING_TYPES = ("tls-exporter", "tls-server-end-point")

#: The iteration count announced for users who do not exist: the default of
#: L{derive_scram_keys} (OWASP's figure for PBKDF2-HMAC-SHA256).
DEFAULT_ITERATIONS = 600_000
#: RFC 7677 section 4: a client must not accept fewer.
MIN_ITERATIONS = MIN_SCRAM_ITERATIONS
#: A client refuses more: a hostile server could otherwise make it spin.
MAX_ITERATIONS = 10_000_000
#: Length of the salts of users who do not exist: as long as the ones
#: L{derive_scram_keys} makes.
FAKE_SALT_LENGTH = 16

_KEY_LENGTH = hashlib.sha256().digest_size
_NONCE_BYTES = 24


class ChannelBindingError(MechanismError):
    """
    The client's channel-binding choice or data is refused: a flag that does
    not fit the mechanism, a possible downgrade, a binding type this
    connection does not have, or binding data from another channel.
    """


# -- primitives ---------------------------------------------------------------


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise MechanismError(f"SCRAM {what} is not valid base64") from None


def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    """
    SaltedPassword = Hi(Normalize(password), salt, i) (RFC 5802 section 3),
    the password prepared exactly as L{derive_scram_keys} prepares it.
    """
    return hashlib.pbkdf2_hmac("sha256", normalize_password(password).encode("utf-8"), salt, iterations)


def _client_and_server_keys(salted: bytes) -> tuple[bytes, bytes]:
    return _hmac(salted, b"Client Key"), _hmac(salted, b"Server Key")


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


# -- credentials and checker ----------------------------------------------------


class IScramCredentials(Interface):
    """
    The outcome of a SCRAM exchange, to be checked against the user's
    L{ScramKeys}: the proof and the AuthMessage it signs.
    """

    username = Attribute("The user, SASLprep'd and unescaped (str).")
    auth_message = Attribute("AuthMessage: client-first-bare,server-first,client-final-without-proof (bytes).")
    client_proof = Attribute("ClientProof from the client-final message (bytes).")
    server_signature = Attribute(
        "Set by the checker when the proof is right: ServerSignature (bytes), else None."
    )

    def server_final() -> bytes | None:
        """The server-final message (C{v=...}), or None before a successful check."""


@implementer(IScramCredentials)
@attrs.define
class ScramCredentials:
    username: str
    auth_message: bytes
    client_proof: bytes = attrs.field(repr=False)
    server_signature: bytes | None = attrs.field(default=None, repr=False)

    def server_final(self) -> bytes | None:
        if self.server_signature is None:
            return None
        return b"v=" + _b64(self.server_signature).encode("ascii")


@implementer(ICredentialsChecker, IMechanismProvider)
class ScramChecker:
    """
    Checks SCRAM-SHA-256 proofs against the L{ScramKeys} in a credential
    store, and offers SCRAM-SHA-256-PLUS and SCRAM-SHA-256 over the wire.

    Every failure -- unknown user, disabled user, user without SCRAM keys,
    wrong proof -- is a L{LoginRefused} saying only "invalid credentials"
    (as for C{PLAIN}); its C{reason} is for the audit log.

    Users who do not exist (or have no SCRAM keys) are announced a fake
    salt, stable for a name and derived from a secret, and
    C{default_iterations}, so the challenge does not say whether the user
    exists.  Set C{default_iterations} to the count users are enrolled with.
    The secret is random per checker unless given: pass a persistent one so
    that fake salts, like real ones, survive a restart.

    @param plus: whether SCRAM-SHA-256-PLUS is offered (it is whenever the
        connection has channel bindings).  A plain SCRAM-SHA-256 client that
        says it could bind (C{y}) is refused only when it is.
    """

    credentialInterfaces = (IScramCredentials,)

    def __init__(
        self,
        store: ICredentialStore,
        *,
        default_iterations: int = DEFAULT_ITERATIONS,
        plus: bool = True,
        secret: bytes | None = None,
    ) -> None:
        if default_iterations < MIN_ITERATIONS:
            raise ValueError(f"default_iterations must be at least {MIN_ITERATIONS}, not {default_iterations}")
        self.store = store
        self.default_iterations = default_iterations
        self.plus = plus
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        # Checked against when there are no keys, so every answer does the same work.
        self._decoy = _sha256(secrets.token_bytes(_KEY_LENGTH))
        self._factories = [ScramMechanismFactory(self, plus=False)]
        if plus:
            self._factories.insert(0, ScramMechanismFactory(self, plus=True))

    def mechanisms(self) -> list[IMechanismFactory]:
        return list(self._factories)

    def _fake_salt(self, username: str) -> bytes:
        return _hmac(self._secret, b"securenet SCRAM fake salt\x00" + username.encode("utf-8"))[:FAKE_SALT_LENGTH]

    def scram_parameters(self, username: str) -> defer.Deferred[tuple[bytes, int]]:
        """The salt and iteration count to announce to C{username} (fake if there are no keys)."""

        def found(user: User | None) -> tuple[bytes, int]:
            if user is not None and user.scram is not None:
                return user.scram.salt, user.scram.iterations
            return self._fake_salt(username), self.default_iterations

        return self.store.get_user(username).addCallback(found)

    def requestAvatarId(self, credentials: IScramCredentials) -> defer.Deferred[Any]:
        """Fires with the user name (str), and sets C{credentials.server_signature}."""
        return self.store.get_user(credentials.username).addCallback(self._verify, credentials)

    def _verify(self, user: User | None, credentials: IScramCredentials) -> str:
        name = credentials.username
        keys = user.scram if user is not None else None
        # The same work whatever the outcome: check against a decoy when there are no keys.
        stored_key = keys.stored_key if keys is not None else self._decoy
        proof: bytes = credentials.client_proof
        signature = _hmac(stored_key, credentials.auth_message)
        client_key = _xor(proof, signature) if len(proof) == len(signature) else b""
        matches = hmac.compare_digest(_sha256(client_key), stored_key)
        if user is None:
            raise LoginRefused(f"no user {name!r}")
        if keys is None:
            raise LoginRefused(f"user {name!r} has no SCRAM keys")
        if not matches:
            raise LoginRefused(f"wrong SCRAM proof for {name!r}")
        if user.disabled:
            raise LoginRefused(f"user {name!r} is disabled")
        credentials.server_signature = _hmac(keys.server_key, credentials.auth_message)
        return str(user.name)


# -- server mechanism ---------------------------------------------------------


@implementer(IMechanismFactory)
class ScramMechanismFactory:
    """Starts a L{ScramServerMechanism} for each attempt (one factory per mechanism name)."""

    second_factor_allowed = True

    def __init__(self, checker: ScramChecker, *, plus: bool) -> None:
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
    One SCRAM exchange, server side:

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
        checker: ScramChecker,
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
                raise ChannelBindingError(
                    f"unsupported channel-binding type; supported: {', '.join(CHANNEL_BINDING_TYPES)}"
                )
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
