"""
Tests for L{securenet.cred._apikeys}: the key format and what is stored,
each way a key is refused (with its audit reason), and the APIKEY
mechanism.  The store is a L{MemoryStore}; time is a L{Clock}.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import math
import os
import re
from collections import Counter
from typing import Any, cast

import attrs
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import securenet.cred._apikeys
import securenet.cred._strcred
from securenet.cred._apikeys import APIKeyChecker, APIKeyRefused, PresentedAPIKey, VerifiedAPIKey, create_api_key, parse_api_key
from securenet.cred._credentials import APIKeyCredentials
from securenet.cred._identity import IdentityRealm
from securenet.cred._strcred import CheckerArgumentError, apiKeyCheckerFactory
from securenet.interfaces import IClientMechanism, ICredentialStore, IMechanismFactory, IServerMechanism
from securenet.sasl._apikey import APIKeyClientMechanism, APIKeyMechanismFactory
from securenet.sasl._mechanism import Challenge, ChannelBindings, Complete, MechanismError
from securenet.sasl._offer import offered_mechanisms
from securenet.session._errors import AuthenticationFailed
from securenet.session._server import SessionFactory, identity_of
from securenet.store._errors import NoSuchUser
from securenet.store._memory import MemoryStore
from securenet.store._records import APIKey, User
from securenet.testing import EphemeralPKI, connect_in_memory

NOW = 1_800_000_000
UTC = datetime.UTC


class APIKeyTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = MemoryStore()
        self.store.users["alice"] = User("alice")
        self.checker = APIKeyChecker(self.store, self.clock)

    def create(self, user: str = "alice", **kw: Any) -> tuple[str, APIKey]:
        result: tuple[str, APIKey] = self.successResultOf(create_api_key(self.store, user, clock=self.clock, **kw))
        return result

    def assertAccepted(self, key: str, checker: APIKeyChecker | None = None, user: str = "alice") -> VerifiedAPIKey:
        credentials = PresentedAPIKey(key)
        self.assertEqual(self.successResultOf((checker or self.checker).requestAvatarId(credentials)), user)
        assert credentials.verified is not None
        return credentials.verified

    def assertRefused(self, key: str, reason: str, checker: APIKeyChecker | None = None) -> None:
        checker = checker or self.checker
        credentials = PresentedAPIKey(key)
        for d in (checker.verify(key), checker.requestAvatarId(credentials)):
            failure = self.failureResultOf(d, APIKeyRefused)
            self.assertEqual(failure.value.reason, reason)
            self.assertIsInstance(failure.value, UnauthorizedLogin)
            self.assertEqual(str(failure.value), "authentication failed")
        self.assertIsNone(credentials.verified)


class CreateTests(APIKeyTestCase):
    """What create_api_key returns and what it stores."""

    def test_format(self) -> None:
        key, record = self.create()
        match = re.fullmatch(r"sn_([A-Za-z0-9]{12})\.([A-Za-z0-9_-]{43})", key)
        assert match is not None
        self.assertEqual(match.group(1), record.key_id)
        self.assertEqual(parse_api_key(key), (record.key_id, match.group(2)))

    def test_key_ids_are_letters_and_digits(self) -> None:
        """Never a leading '-' (which a command line would take for an option), no '_' either."""
        ids = [self.create()[1].key_id for _ in range(300)]
        self.assertTrue(all(re.fullmatch(r"[A-Za-z0-9]{12}", i) for i in ids), ids)
        self.assertEqual(len(set(ids)), 300)

    def test_secret_has_at_least_128_bits(self) -> None:
        """43 URL-safe characters are 258 bits of encoding; distinct every time; characters well spread."""
        secrets = [self.create()[0].split(".")[1] for _ in range(200)]
        self.assertEqual(len(set(secrets)), 200)
        self.assertGreaterEqual(len(secrets[0]) * math.log2(64), 256)
        counts = Counter("".join(secrets))
        self.assertGreater(len(counts), 60)

    def test_only_the_hash_is_stored(self) -> None:
        """The record holds SHA-256 of the secret; nothing in the store contains the secret or the key."""
        key, record = self.create(scopes=["read"])
        secret = key.split(".")[1]
        stored = self.store.api_keys[record.key_id]
        self.assertEqual(stored, record)
        self.assertEqual(stored.secret_hash, hashlib.sha256(secret.encode()).digest())
        everything = repr(attrs.asdict(stored)) + repr(self.store.__dict__)
        self.assertNotIn(secret, everything)
        self.assertNotIn(key, everything)

    def test_record(self) -> None:
        key, record = self.create(scopes=["read", "write", "read"], expires=datetime.timedelta(days=30))
        self.assertEqual(record.user, "alice")
        self.assertEqual(record.scopes, ("read", "write"))
        self.assertEqual(record.created, datetime.datetime.fromtimestamp(NOW, UTC))
        self.assertEqual(record.expires, datetime.datetime.fromtimestamp(NOW + 30 * 86400, UTC))
        self.assertFalse(record.revoked)

    def test_absolute_expiry(self) -> None:
        when = datetime.datetime.fromtimestamp(NOW + 60, UTC)
        self.assertEqual(self.create(expires=when)[1].expires, when)

    def test_unknown_user(self) -> None:
        d = create_api_key(self.store, "bob", clock=self.clock)
        self.assertEqual(str(self.failureResultOf(d, NoSuchUser).value), "no user 'bob'")
        self.assertEqual(self.store.api_keys, {})

    def test_bad_arguments(self) -> None:
        with self.assertRaises(ValueError):
            create_api_key(self.store, "alice", scopes=["has space"], clock=self.clock)
        with self.assertRaises(ValueError):
            create_api_key(self.store, "alice", expires=datetime.timedelta(0), clock=self.clock)
        with self.assertRaises(ValueError):
            create_api_key(self.store, "alice", expires=datetime.datetime.fromtimestamp(NOW - 1, UTC), clock=self.clock)
        self.assertEqual(self.store.api_keys, {})


class CheckTests(APIKeyTestCase):
    """Every way a key is accepted or refused."""

    def test_valid(self) -> None:
        key, record = self.create(scopes=["read"])
        verified = self.assertAccepted(key)
        self.assertEqual(verified, VerifiedAPIKey(record.key_id, "alice", ("read",), None))
        self.assertEqual(self.successResultOf(self.checker.requestAvatarId(APIKeyCredentials(key))), "alice")

    def test_wrong_secret(self) -> None:
        key, _ = self.create()
        other, _ = self.create()
        self.assertRefused(key.split(".")[0] + "." + other.split(".")[1], "wrong secret")

    def test_unknown_id(self) -> None:
        """An unknown id is refused after a comparison against a dummy hash."""
        compared: list[tuple[bytes, bytes]] = []
        real = hmac.compare_digest

        def spy(a: bytes, b: bytes) -> bool:
            compared.append((a, b))
            return real(a, b)

        self.patch(hmac, "compare_digest", spy)
        key, _ = self.create()
        self.assertRefused("sn_AAAAAAAAAAAA." + key.split(".")[1], "unknown key id")
        self.assertEqual(len(compared), 2)
        self.assertEqual(compared[0][1], hashlib.sha256(key.split(".")[1].encode()).digest())

    def test_malformed(self) -> None:
        key, _ = self.create()
        key_id, secret = key[3:].split(".")
        for bad in (
            "",
            key[3:],
            "SN_" + key[3:],
            f"sn_{key_id}{secret}",
            f"sn_{key_id}.{secret}x",
            f"sn_{key_id}.{secret[:-1]}",
            f"sn_{key_id[:-1]}.{secret}",
            f"sn_-{key_id[1:]}.{secret}",
            f"sn_{key_id[:-1]}_.{secret}",
            f"sn_{key_id}.{secret[:-1]}=",
            f" {key}",
            f"{key}\n",
            f"sn_{key_id}.{secret[:-1]}é",
        ):
            self.assertRefused(bad, "malformed key")

    def test_revoked(self) -> None:
        """Accepted before revocation, refused at the very next attempt (no caching)."""
        key, record = self.create()
        self.assertAccepted(key)
        self.successResultOf(self.store.revoke_api_key(record.key_id))
        self.assertRefused(key, "key revoked")

    def test_expired(self) -> None:
        key, _ = self.create(expires=datetime.timedelta(hours=1))
        self.clock.advance(3599)
        self.assertAccepted(key)
        self.clock.advance(1)
        self.assertRefused(key, "key expired")

    def test_naive_stored_expiry_is_utc(self) -> None:
        key, record = self.create()
        self.store.api_keys[record.key_id] = attrs.evolve(
            record, expires=datetime.datetime.fromtimestamp(NOW + 10, UTC).replace(tzinfo=None)
        )
        self.assertAccepted(key)
        self.clock.advance(10)
        self.assertRefused(key, "key expired")

    def test_wrong_scope(self) -> None:
        checker = APIKeyChecker(self.store, self.clock, required_scope="admin")
        read, _ = self.create(scopes=["read"])
        admin, _ = self.create(scopes=["read", "admin"])
        self.assertRefused(read, "key lacks the required scope 'admin'", checker)
        self.assertEqual(self.assertAccepted(admin, checker).scopes, ("read", "admin"))
        self.assertAccepted(read)

    def test_required_scope_validated(self) -> None:
        with self.assertRaises(ValueError):
            APIKeyChecker(self.store, self.clock, required_scope="a b")

    def test_disabled_owner(self) -> None:
        key, _ = self.create()
        self.store.users["alice"] = User("alice", disabled=True)
        self.assertRefused(key, "owner disabled")

    def test_unknown_owner(self) -> None:
        """A record whose user vanished (a store without cascading deletes) is refused."""
        key, _ = self.create()
        del self.store.users["alice"]
        self.assertRefused(key, "owner unknown")

    def test_interfaces(self) -> None:
        self.assertTrue(verifyObject(ICredentialsChecker, self.checker))
        offered = offered_mechanisms(Portal(IdentityRealm(self.store), [self.checker]), False, ChannelBindings())
        self.assertEqual(list(offered), ["APIKEY"])
        factory = offered["APIKEY"]
        self.assertTrue(verifyObject(IMechanismFactory, factory))
        self.assertEqual((factory.name, factory.second_factor_allowed), ("APIKEY", False))

    def test_key_not_in_repr(self) -> None:
        key, _ = self.create()
        self.assertNotIn(key.split(".")[1], repr(PresentedAPIKey(key)))
        self.assertNotIn(key.split(".")[1], repr(APIKeyClientMechanism(key)))


class MechanismTests(APIKeyTestCase):
    """SASL APIKEY, server and client."""

    def mechanism(self) -> Any:
        mechanism = APIKeyMechanismFactory()(ChannelBindings(), "peer")
        self.assertTrue(verifyObject(IServerMechanism, mechanism))
        return mechanism

    def test_initial_response(self) -> None:
        key, _ = self.create()
        step = self.successResultOf(self.mechanism().step(key.encode()))
        self.assertEqual(step, Complete(PresentedAPIKey(key)))
        self.assertEqual(self.successResultOf(self.checker.requestAvatarId(step.credentials)), "alice")

    def test_no_initial_response(self) -> None:
        key, _ = self.create()
        mechanism = self.mechanism()
        self.assertEqual(self.successResultOf(mechanism.step(None)), Challenge(b""))
        step = self.successResultOf(mechanism.step(key.encode()))
        self.assertEqual(step, Complete(PresentedAPIKey(key)))
        self.failureResultOf(mechanism.step(key.encode()), MechanismError)

    def test_malformed_messages(self) -> None:
        for message in (b"", b"\xff" * 10, b"a" * 513):
            failure = self.failureResultOf(self.mechanism().step(message), MechanismError)
            self.assertTrue(str(failure.value).startswith("APIKEY: "))
        mechanism = self.mechanism()
        mechanism.step(None)
        self.failureResultOf(mechanism.step(None), MechanismError)

    def test_badly_formatted_key_reaches_the_checker(self) -> None:
        """An ASCII message that is not a key is the checker's refusal (counted as a failed attempt)."""
        step = self.successResultOf(self.mechanism().step(b"sn_nope"))
        failure = self.failureResultOf(self.checker.requestAvatarId(step.credentials), APIKeyRefused)
        self.assertEqual(failure.value.reason, "malformed key")

    def test_client(self) -> None:
        key, _ = self.create()
        client = APIKeyClientMechanism(key)
        self.assertTrue(verifyObject(IClientMechanism, client))
        self.assertEqual(client.name, "APIKEY")
        self.assertEqual(client.initial(), key.encode())
        self.assertEqual(client.respond(b""), key.encode())
        with self.assertRaises(MechanismError):
            client.respond(b"challenge")
        client.verify_success(None)
        with self.assertRaises(MechanismError):
            client.verify_success(b"data")
        with self.assertRaises(MechanismError):
            APIKeyClientMechanism("clé").initial()


class StrcredTests(APIKeyTestCase):
    """C{--auth apikey:db=PATH[,scope=S]}."""

    def test_generate(self) -> None:
        opened: list[tuple[str, str]] = []

        def open_store(path: str, auth_type: str) -> ICredentialStore:
            opened.append((path, auth_type))
            return self.store

        self.patch(securenet.cred._strcred, "open_store", open_store)
        checker = apiKeyCheckerFactory.generateChecker("db=creds.db,scope=admin")
        self.assertIsInstance(checker, APIKeyChecker)
        self.assertEqual((checker.store, checker.required_scope), (self.store, "admin"))
        self.assertEqual(opened, [("creds.db", "apikey")])
        key, _ = self.create(scopes=["admin"])
        self.assertAccepted(key, checker)

    def test_errors(self) -> None:
        self.patch(securenet.cred._strcred, "open_store", lambda path, auth_type: self.store)
        cases = {
            "": "--auth apikey: db=PATH (the credential database) is required",
            "db=x,scope=a\\b": (
                "--auth apikey: invalid scope 'a\\\\b': a scope is printable ASCII without spaces, quotes or backslashes"
            ),
            "db=x,user=y": "--auth apikey: unknown option 'user'; known: db, scope",
        }
        for argstring, message in cases.items():
            with self.assertRaises(CheckerArgumentError) as e:
                apiKeyCheckerFactory.generateChecker(argstring)
            self.assertEqual(str(e.exception), message)

    def test_open_store_errors(self) -> None:
        """A database that cannot be opened is one --auth line, naming the file."""
        with self.assertRaises(CheckerArgumentError) as e:
            securenet.cred._strcred.open_store("", "apikey")
        self.assertEqual(str(e.exception), "--auth apikey: db= needs a path")
        directory = self.mktemp()
        os.mkdir(directory)
        with self.assertRaises(CheckerArgumentError) as e:
            securenet.cred._strcred.open_store(directory, "apikey")
        self.assertEqual(str(e.exception), f"--auth apikey: {directory}: credential database path is not a regular file")


class StoreContractTests(SynchronousTestCase):
    """The checker reads the store at every attempt (a Deferred that fires later works too)."""

    def test_asynchronous_store(self) -> None:
        clock = Clock()
        store = MemoryStore()
        store.users["alice"] = User("alice")
        key, record = self.successResultOf(create_api_key(store, "alice", clock=clock))
        pending: list[defer.Deferred[APIKey | None]] = []

        class Slow(MemoryStore):
            def get_api_key(self, key_id: str) -> defer.Deferred[APIKey | None]:
                d: defer.Deferred[APIKey | None] = defer.Deferred()
                pending.append(d)
                return d

        slow = Slow()
        slow.users = store.users
        d = APIKeyChecker(slow, clock).requestAvatarId(PresentedAPIKey(key))
        self.assertNoResult(d)
        pending[0].callback(record)
        self.assertEqual(self.successResultOf(d), "alice")


class WireTests(APIKeyTestCase):
    """APIKEY through the real exchange, TLS in memory (securenet.testing)."""

    def login(self, key: str) -> tuple[list[object], list[Any]]:
        identities: list[Any] = []

        class App(Protocol):
            def connectionMade(self) -> None:
                identities.append(identity_of(self))

        pki = EphemeralPKI.create()
        portal = Portal(IdentityRealm(self.store), [self.checker])
        conn = connect_in_memory(
            server_policy=pki.server_policy(),
            client_policy=pki.client_policy(),
            server_factory=SessionFactory(Factory.forProtocol(App), portal, self.clock),
            client_factory=Factory.forProtocol(Protocol),
            clock=self.clock,
            mechanism=APIKeyClientMechanism(key),
        )
        conn.pump.flush()
        ready: list[object] = []
        conn.client_ready.addBoth(ready.append)
        return ready, identities

    def test_accepted_then_revoked(self) -> None:
        key, record = self.create()
        _, identities = self.login(key)
        self.assertEqual([(i.avatar_id, i.mechanism) for i in identities], [("alice", "APIKEY")])
        self.successResultOf(self.store.revoke_api_key(record.key_id))
        ready, identities = self.login(key)
        self.assertEqual(identities, [])
        [failure] = ready
        assert isinstance(failure, Failure)
        failure.trap(AuthenticationFailed)
        self.assertEqual(cast(AuthenticationFailed, failure.value).code, "AUTH-FAILED")
