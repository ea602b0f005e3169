"""
The backend conformance suite: one contract (L{ICredentialStore} and its
L{IRefreshTokenStore}) that every credential store must meet, written once
and run against each backend.

The suite is three mixins, each adding to the one before it:

  - L{StoreConformanceMixin}: every store.  Users, roles, attributes,
    password and SCRAM records, TOTP secrets and used steps, API keys, token
    revocations, throttle counters, secrets and refresh-token families.
  - L{PersistentStoreConformanceMixin}: stores whose data outlives the store
    object (a database).  Everything survives reopening; two store objects
    on the same data see each other's writes; counters, TOTP steps, secrets
    and refresh tokens stay exact when threads and store objects race.
  - L{FileStoreConformanceMixin}: stores kept in one file.  Created with mode
    0600, refused when group or others may access it, migrated from older
    schemas keeping the data, refused when newer, corrupt, unreadable or in
    the way of a dangling symbolic link; read-only files and directories.

A backend's test class mixes in what applies and implements the factory
methods (L{StoreConformanceMixin.make_store}, and for the others C{reopen},
C{open_another}, C{close}; for files C{open_path}, C{path_of}, C{age},
C{corrupt}, C{set_schema_version}, C{schema_version}), for example::

    class PostgresStoreConformance(PersistentStoreConformanceMixin, SynchronousTestCase):
        def make_store(self) -> ICredentialStore: ...
        def reopen(self, store: ICredentialStore) -> ICredentialStore: ...
        def open_another(self, store: ICredentialStore) -> ICredentialStore: ...
        def close(self, store: ICredentialStore) -> None: ...

The tests are synchronous (C{successResultOf}/C{failureResultOf}): the
stores the factories make must answer on the calling thread, as
L{SQLiteStore} does without a runner.  The stores of the persistent
mixin's races are called from several threads at once.

Failures are checked by their exact type and message: the messages of
refusals (C{UserExists}, C{NoSuchUser}, ...) are the same for every backend.
The file errors are structured (L{DatabaseFileError}: C{path} and
C{problem}; L{InsecureDatabaseFile}: C{mode}; L{UnsupportedSchema}:
C{found} and C{supported}), and other errors about the file name it.

The tests of read-only and unreadable files need file modes to count: run
as root, they drop to nobody's effective uid and gid for the duration
(L{FileStoreConformanceMixin.unprivileged}), in a directory nobody owns.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import sqlite3
import stat
import tempfile
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import attrs
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from securenet._errors import SecurenetError
from securenet.interfaces import ICredentialStore, IRefreshTokenStore
from securenet.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    APIKey,
    DatabaseFileError,
    InsecureDatabaseFile,
    MemoryStore,
    NoSuchAPIKey,
    NoSuchUser,
    RefreshToken,
    ScramKeys,
    SQLiteStore,
    StoreError,
    UnsupportedSchema,
    User,
    UserExists,
)
from securenet.store._sqlite import APPLICATION_ID
from tests.support import nobody_ids, unprivileged

T = TypeVar("T")

if TYPE_CHECKING:
    _Base = SynchronousTestCase
else:
    _Base = object

UTC = datetime.UTC
CREATED = datetime.datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
#: Far enough ahead that no store prunes it.
FAR = datetime.datetime(2100, 1, 1, tzinfo=UTC)

PASSWORD_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA"
SCRAM = ScramKeys(salt=b"\x00salt\xff\x00", iterations=4096, stored_key=bytes(range(32)), server_key=bytes(range(32, 64)))
ATTRIBUTES: dict[str, Any] = {
    "team": "blue",
    "level": 3,
    "ratio": 0.25,
    "big": 2**53 + 1,
    "tags": ["a", "b", "a"],
    "nested": {"x": None, "ok": True, "no": False, "deeper": {"list": [1, [2, {"three": 3}]]}},
    "name": "Zoë ☃ \u2028",
    "": "empty key",
}


def full_user(name: str = "alice") -> User:
    """A user with every field set."""
    return User(
        name=name,
        password_hash=PASSWORD_HASH,
        scram=SCRAM,
        roles=("ops", "admin"),
        attributes=ATTRIBUTES,
        totp_secret="JBSWY3DPEHPK3PXP",
        totp_last_step=57_000_000,
        disabled=True,
        created=CREATED,
    )


def api_key(key_id: str = "k1", user: str = "alice", **changes: Any) -> APIKey:
    """An API key with every field set."""
    values: dict[str, Any] = {
        "key_id": key_id,
        "user": user,
        "secret_hash": bytes(range(200, 232)),
        "scopes": ("read", "write"),
        "created": CREATED,
        "expires": CREATED + datetime.timedelta(days=30),
        "revoked": False,
    }
    values.update(changes)
    return APIKey(**values)


def refresh_token(token_id: str, family: str = "fam", **changes: Any) -> RefreshToken:
    """A refresh token with every field set (the record of the contract test that was in tests/test_web.py)."""
    values: dict[str, Any] = {
        "token_id": token_id,
        "family_id": family,
        "user": "alice",
        "secret_hash": b"h" * 32,
        "issued_at": 10.0,
        "expires_at": 100.0,
        "session_expires_at": 1000.0,
        "access_jti": f"jti-{token_id}",
        "access_expires_at": 50.0,
        "scopes": ("a",),
        "amr": ("pwd", "otp"),
    }
    values.update(changes)
    return RefreshToken(**values)


# -- every store -----------------------------------------------------------------


class StoreConformanceMixin(_Base):
    """
    What every L{ICredentialStore} does: mixed into a SynchronousTestCase
    per backend, which implements L{make_store}.
    """

    def make_store(self) -> ICredentialStore:
        """A new, empty store (closed by a cleanup the factory registers)."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_store")

    def setUp(self) -> None:
        self.store = self.make_store()
        self.refresh: IRefreshTokenStore = self.store.refresh_tokens

    def ok(self, d: defer.Deferred[T]) -> T:
        """The result of an operation that succeeded (and has already answered)."""
        return self.successResultOf(d)

    def refused(self, d: defer.Deferred[Any], kind: type[StoreError], message: str) -> StoreError:
        """The operation failed with exactly C{kind} (not a subclass), saying C{message}."""
        e = self.failureResultOf(d, kind).value
        self.assertIs(type(e), kind)
        self.assertEqual(str(e), message)
        return cast(StoreError, e)

    def revoked(self, d: defer.Deferred[list[tuple[str, float]]]) -> list[tuple[str, float]]:
        """The access tokens a revoke_family reported, in order."""
        reported = self.ok(d)
        return sorted(reported)

    def user(self, name: str) -> User:
        user = self.ok(self.store.get_user(name))
        assert user is not None, f"no user {name!r}"
        return user

    # -- the interfaces ----------------------------------------------------------

    def test_interfaces(self) -> None:
        """The store provides ICredentialStore, and its refresh_tokens IRefreshTokenStore."""
        self.assertTrue(verifyObject(ICredentialStore, self.store))
        self.assertTrue(verifyObject(IRefreshTokenStore, self.store.refresh_tokens))

    # -- users -------------------------------------------------------------------

    def test_getUnknownUser(self) -> None:
        self.assertIsNone(self.ok(self.store.get_user("nobody")))
        self.assertEqual(self.ok(self.store.list_users()), [])

    def test_addAndGetUser(self) -> None:
        """Every field comes back as it went in."""
        self.assertIsNone(self.ok(self.store.add_user(full_user())))
        self.assertEqual(self.user("alice"), full_user())

    def test_minimalUser(self) -> None:
        """A user with nothing but a name (no password, SCRAM keys, TOTP or creation time)."""
        self.ok(self.store.add_user(User("bot")))
        self.assertEqual(self.user("bot"), User("bot"))

    def test_emptyStrings(self) -> None:
        """Empty strings are values, not missing ones."""
        self.ok(self.store.add_user(User("blank", password_hash="", totp_secret="", roles=("",))))
        self.assertEqual(self.user("blank"), User("blank", password_hash="", totp_secret="", roles=("",)))

    def test_namesAreCaseSensitive(self) -> None:
        """Names are case-sensitive exact strings: alice and Alice are two users."""
        self.ok(self.store.add_user(User("alice", roles=("lower",))))
        self.ok(self.store.add_user(User("Alice", roles=("upper",))))
        self.assertEqual(self.user("alice").roles, ("lower",))
        self.assertEqual(self.user("Alice").roles, ("upper",))
        for other in ("ALICE", "alice ", " alice", "alicé"):
            self.assertIsNone(self.ok(self.store.get_user(other)), other)
        self.ok(self.store.delete_user("Alice"))
        self.assertEqual(self.ok(self.store.list_users()), [User("alice", roles=("lower",))])
        self.refused(self.store.update_user(User("ALICE")), NoSuchUser, "no user 'ALICE'")

    def test_addExisting(self) -> None:
        """UserExists; the first record is untouched."""
        self.ok(self.store.add_user(full_user()))
        self.refused(self.store.add_user(User("alice")), UserExists, "user 'alice' already exists")
        self.assertEqual(self.user("alice"), full_user())
        self.assertEqual(self.ok(self.store.list_users()), [full_user()])

    def test_updateUser(self) -> None:
        """The whole record is replaced: every field, none merged."""
        self.ok(self.store.add_user(full_user()))
        changed = User(
            "alice",
            password_hash="$argon2id$v=19$m=8,t=1,p=1$b3RoZXI$b3RoZXI",
            scram=ScramKeys(salt=b"new", iterations=10_000, stored_key=b"\xff" * 32, server_key=b"\x00" * 32),
            roles=("viewer",),
            attributes={"only": "this"},
            totp_secret="NEWSECRETNEWSECR",
            totp_last_step=None,
            disabled=False,
            created=CREATED + datetime.timedelta(seconds=1),
        )
        self.assertIsNone(self.ok(self.store.update_user(changed)))
        self.assertEqual(self.user("alice"), changed)

    def test_updateUnknown(self) -> None:
        """NoSuchUser, and no user is created."""
        self.refused(self.store.update_user(User("nobody")), NoSuchUser, "no user 'nobody'")
        self.assertIsNone(self.ok(self.store.get_user("nobody")))
        self.assertEqual(self.ok(self.store.list_users()), [])

    def test_deleteUser(self) -> None:
        """The user goes, others stay."""
        self.ok(self.store.add_user(full_user("alice")))
        self.ok(self.store.add_user(full_user("bob")))
        self.assertIsNone(self.ok(self.store.delete_user("alice")))
        self.assertIsNone(self.ok(self.store.get_user("alice")))
        self.assertEqual(self.ok(self.store.list_users()), [full_user("bob")])

    def test_deleteUnknown(self) -> None:
        self.ok(self.store.add_user(User("alice")))
        self.refused(self.store.delete_user("nobody"), NoSuchUser, "no user 'nobody'")
        self.assertEqual(self.ok(self.store.list_users()), [User("alice")])

    def test_deleteTwice(self) -> None:
        self.ok(self.store.add_user(User("alice")))
        self.ok(self.store.delete_user("alice"))
        self.refused(self.store.delete_user("alice"), NoSuchUser, "no user 'alice'")

    def test_addAfterDelete(self) -> None:
        """A new user of a deleted user's name starts afresh: no old fields, no old API keys."""
        self.ok(self.store.add_user(full_user()))
        self.ok(self.store.add_api_key(api_key("k1")))
        self.ok(self.store.delete_user("alice"))
        self.ok(self.store.add_user(User("alice")))
        self.assertEqual(self.user("alice"), User("alice"))
        self.assertEqual(self.ok(self.store.list_api_keys("alice")), [])
        self.assertIsNone(self.ok(self.store.get_api_key("k1")))

    def test_listUsers(self) -> None:
        """Full records, by name in code point order, whatever the order of creation."""
        for name in ["zed", "Zoë", "alice", "Ärger", "bob", "Bob", "_x", "1"]:
            self.ok(self.store.add_user(User(name, roles=(name,))))
        users = self.ok(self.store.list_users())
        self.assertEqual([u.name for u in users], ["1", "Bob", "Zoë", "_x", "alice", "bob", "zed", "Ärger"])
        self.assertEqual(users, [User(u.name, roles=(u.name,)) for u in users])

    # -- roles and attributes --------------------------------------------------

    def test_rolesKeepTheirOrder(self) -> None:
        """Roles are a tuple, in the order given, duplicates included."""
        self.ok(self.store.add_user(User("alice", roles=("zeta", "alpha", "zeta", "Ops"))))
        self.assertEqual(self.user("alice").roles, ("zeta", "alpha", "zeta", "Ops"))
        self.assertIsInstance(self.user("alice").roles, tuple)

    def test_attributes(self) -> None:
        """JSON values of every kind come back equal, of the same types."""
        self.ok(self.store.add_user(User("alice", attributes=ATTRIBUTES)))
        got = self.user("alice").attributes
        self.assertEqual(got, ATTRIBUTES)
        self.assertEqual(json.dumps(got, sort_keys=True), json.dumps(ATTRIBUTES, sort_keys=True))
        self.assertIs(type(got["level"]), int)
        self.assertIs(type(got["ratio"]), float)
        self.assertIs(type(got["nested"]["ok"]), bool)
        self.assertEqual(got["big"], 2**53 + 1)

    def test_rolesAndAttributesReplaced(self) -> None:
        """An update replaces roles and attributes; it does not merge them."""
        self.ok(self.store.add_user(User("alice", roles=("a", "b"), attributes={"x": 1, "y": 2})))
        self.ok(self.store.update_user(User("alice", roles=("c",), attributes={"y": 3})))
        self.assertEqual(self.user("alice"), User("alice", roles=("c",), attributes={"y": 3}))
        self.ok(self.store.update_user(User("alice")))
        self.assertEqual(self.user("alice"), User("alice"))

    # -- password hash and SCRAM records ------------------------------------------

    def test_passwordHash(self) -> None:
        self.ok(self.store.add_user(User("alice", password_hash=PASSWORD_HASH)))
        self.assertEqual(self.user("alice").password_hash, PASSWORD_HASH)
        self.ok(self.store.update_user(User("alice")))
        self.assertIsNone(self.user("alice").password_hash)

    def test_scramKeys(self) -> None:
        """Salt and keys are bytes, exactly (NUL and 0xff bytes included)."""
        self.ok(self.store.add_user(User("alice", scram=SCRAM)))
        scram = self.user("alice").scram
        self.assertEqual(scram, SCRAM)
        assert scram is not None
        for value in (scram.salt, scram.stored_key, scram.server_key):
            self.assertIs(type(value), bytes)
        self.assertIs(type(scram.iterations), int)
        self.ok(self.store.update_user(User("alice", password_hash=PASSWORD_HASH)))
        self.assertEqual(self.user("alice"), User("alice", password_hash=PASSWORD_HASH))

    def test_createdAndDisabled(self) -> None:
        """created keeps microseconds and its offset (or its lack of one); disabled is a bool."""
        plus_0530 = datetime.datetime(2025, 6, 1, 12, 0, 0, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=5, minutes=30)))
        naive = datetime.datetime(2025, 6, 1, 12, 0, 0, 999999)
        self.ok(self.store.add_user(User("a", created=plus_0530, disabled=True)))
        self.ok(self.store.add_user(User("b", created=naive)))
        a, b = self.user("a"), self.user("b")
        self.assertEqual((a.created, a.created.utcoffset() if a.created else None), (plus_0530, plus_0530.utcoffset()))
        self.assertEqual((b.created, b.created.tzinfo if b.created else "missing"), (naive, None))
        self.assertIs(a.disabled, True)
        self.assertIs(b.disabled, False)

    # -- TOTP secrets and used steps ---------------------------------------------

    def test_totpSecret(self) -> None:
        self.ok(self.store.add_user(User("alice", totp_secret="JBSWY3DPEHPK3PXP")))
        self.assertEqual(self.user("alice"), User("alice", totp_secret="JBSWY3DPEHPK3PXP"))

    def test_markTotpStep(self) -> None:
        """A step is accepted once, and only if later than the last one."""
        self.ok(self.store.add_user(User("alice", totp_secret="JBSWY3DPEHPK3PXP")))
        self.assertIs(self.ok(self.store.mark_totp_step("alice", 100)), True)
        self.assertIs(self.ok(self.store.mark_totp_step("alice", 100)), False)
        self.assertIs(self.ok(self.store.mark_totp_step("alice", 99)), False)
        self.assertIs(self.ok(self.store.mark_totp_step("alice", 102)), True)
        self.assertIs(self.ok(self.store.mark_totp_step("alice", 101)), False)
        self.assertEqual(self.user("alice"), User("alice", totp_secret="JBSWY3DPEHPK3PXP", totp_last_step=102))

    def test_markTotpStepFirstUse(self) -> None:
        """With no step recorded, any step is accepted, zero included; the record's other fields stay."""
        self.ok(self.store.add_user(attrs.evolve(full_user(), totp_last_step=None)))
        self.assertIs(self.ok(self.store.mark_totp_step("alice", 0)), True)
        self.assertEqual(self.user("alice"), attrs.evolve(full_user(), totp_last_step=0))
        self.assertIs(self.ok(self.store.mark_totp_step("alice", 0)), False)

    def test_markTotpStepPerUser(self) -> None:
        self.ok(self.store.add_user(User("alice", totp_secret="A")))
        self.ok(self.store.add_user(User("bob", totp_secret="A")))
        self.assertIs(self.ok(self.store.mark_totp_step("alice", 7)), True)
        self.assertIs(self.ok(self.store.mark_totp_step("bob", 7)), True)
        self.assertEqual(self.user("bob").totp_last_step, 7)

    def test_markTotpStepUnknown(self) -> None:
        self.refused(self.store.mark_totp_step("nobody", 1), NoSuchUser, "no user 'nobody'")
        self.assertIsNone(self.ok(self.store.get_user("nobody")))

    def test_totpStepNeverGoesBack(self) -> None:
        """
        While the TOTP secret is unchanged, update_user never moves
        totp_last_step backwards: a record read before a TOTP login and
        written after it does not make the used code valid again.  A later
        step is taken; a new secret (re-enrolment) or none starts afresh.
        """
        self.ok(self.store.add_user(User("alice", totp_secret="OLDSECRET")))
        stale = self.user("alice")
        self.assertIs(self.ok(self.store.mark_totp_step("alice", 500)), True)
        # The stale record (no step yet) is written back.
        self.ok(self.store.update_user(attrs.evolve(stale, roles=("admin",))))
        self.assertEqual(self.user("alice"), User("alice", totp_secret="OLDSECRET", totp_last_step=500, roles=("admin",)))
        self.assertIs(self.ok(self.store.mark_totp_step("alice", 500)), False)
        # An older step, with the same secret: kept at 500; the rest of the record is written.
        self.ok(self.store.update_user(User("alice", totp_secret="OLDSECRET", totp_last_step=499, disabled=True)))
        self.assertEqual(self.user("alice"), User("alice", totp_secret="OLDSECRET", totp_last_step=500, disabled=True))
        # A later step is taken.
        self.ok(self.store.update_user(User("alice", totp_secret="OLDSECRET", totp_last_step=600)))
        self.assertEqual(self.user("alice"), User("alice", totp_secret="OLDSECRET", totp_last_step=600))
        # Re-enrolment with a new secret resets the step, even to an older one.
        self.ok(self.store.update_user(User("alice", totp_secret="NEWSECRET", totp_last_step=None)))
        self.assertEqual(self.user("alice"), User("alice", totp_secret="NEWSECRET"))
        self.assertIs(self.ok(self.store.mark_totp_step("alice", 400)), True)
        self.ok(self.store.update_user(User("alice", totp_secret="OTHER", totp_last_step=10)))
        self.assertEqual(self.user("alice"), User("alice", totp_secret="OTHER", totp_last_step=10))
        # Removing TOTP clears the step.
        self.ok(self.store.update_user(User("alice")))
        self.assertEqual(self.user("alice"), User("alice"))

    def test_totpStepWithoutSecretNeverGoesBack(self) -> None:
        """The rule holds for a user without a secret too (no secret is the same as no secret)."""
        self.ok(self.store.add_user(User("alice")))
        self.assertIs(self.ok(self.store.mark_totp_step("alice", 5)), True)
        self.ok(self.store.update_user(User("alice", roles=("x",))))
        self.assertEqual(self.user("alice"), User("alice", roles=("x",), totp_last_step=5))

    # -- API keys ------------------------------------------------------------------

    def test_apiKeys(self) -> None:
        """add, get and list (by key id, all or one user's)."""
        self.ok(self.store.add_user(User("alice")))
        self.ok(self.store.add_user(User("bob")))
        self.assertIsNone(self.ok(self.store.get_api_key("k1")))
        self.assertEqual(self.ok(self.store.list_api_keys()), [])
        bare = api_key("k3", "alice", created=None, expires=None, scopes=())
        for key in [api_key("k2", "bob"), api_key("k1", "alice"), bare]:
            self.assertIsNone(self.ok(self.store.add_api_key(key)))
        self.assertEqual(self.ok(self.store.get_api_key("k1")), api_key("k1", "alice"))
        self.assertEqual(self.ok(self.store.get_api_key("k3")), bare)
        self.assertEqual(self.ok(self.store.list_api_keys()), [api_key("k1", "alice"), api_key("k2", "bob"), bare])
        self.assertEqual(self.ok(self.store.list_api_keys("alice")), [api_key("k1", "alice"), bare])
        self.assertEqual(self.ok(self.store.list_api_keys("bob")), [api_key("k2", "bob")])
        self.assertEqual(self.ok(self.store.list_api_keys("nobody")), [])
        self.assertEqual(self.ok(self.store.list_api_keys("Alice")), [])
        self.assertIsNone(self.ok(self.store.get_api_key("K1")))

    def test_apiKeyFields(self) -> None:
        """Every field comes back exactly: bytes, scopes in order, datetimes with their offsets, revoked."""
        self.ok(self.store.add_user(User("alice")))
        offset = datetime.timezone(datetime.timedelta(hours=-7))
        key = api_key(
            "k1",
            secret_hash=b"\x00" * 31 + b"\xff",
            scopes=("write", "read", "admin.*"),
            created=datetime.datetime(2025, 3, 4, 5, 6, 7, 8, tzinfo=offset),
            expires=datetime.datetime(2026, 3, 4, 5, 6, 7),
            revoked=True,
        )
        self.ok(self.store.add_api_key(key))
        got = self.ok(self.store.get_api_key("k1"))
        assert got is not None
        self.assertEqual(got, key)
        self.assertIs(type(got.secret_hash), bytes)
        self.assertEqual(got.created.utcoffset() if got.created else None, datetime.timedelta(hours=-7))
        self.assertIsNone(got.expires.tzinfo if got.expires else "missing")
        self.assertIs(got.revoked, True)

    def test_apiKeyOrder(self) -> None:
        """Listed by key id, in code point order."""
        self.ok(self.store.add_user(User("alice")))
        for key_id in ["b", "B", "a", "aa", "_", "0"]:
            self.ok(self.store.add_api_key(api_key(key_id)))
        self.assertEqual([k.key_id for k in self.ok(self.store.list_api_keys())], ["0", "B", "_", "a", "aa", "b"])

    def test_duplicateApiKey(self) -> None:
        """Refused with StoreError itself (not a subclass); the first key is untouched."""
        self.ok(self.store.add_user(User("alice")))
        self.ok(self.store.add_user(User("bob")))
        self.ok(self.store.add_api_key(api_key("k1", "alice")))
        self.refused(self.store.add_api_key(api_key("k1", "bob")), StoreError, "API key id 'k1' already exists")
        self.assertEqual(self.ok(self.store.list_api_keys()), [api_key("k1", "alice")])

    def test_apiKeyForUnknownUser(self) -> None:
        self.ok(self.store.add_user(User("alice")))
        self.refused(self.store.add_api_key(api_key("k1", "nobody")), NoSuchUser, "no user 'nobody'")
        self.refused(self.store.add_api_key(api_key("k2", "Alice")), NoSuchUser, "no user 'Alice'")
        self.assertEqual(self.ok(self.store.list_api_keys()), [])

    def test_revokeApiKey(self) -> None:
        """Only that key is marked revoked; revoking it again is harmless."""
        self.ok(self.store.add_user(User("alice")))
        self.ok(self.store.add_api_key(api_key("k1")))
        self.ok(self.store.add_api_key(api_key("k2")))
        self.assertIsNone(self.ok(self.store.revoke_api_key("k1")))
        self.assertEqual(self.ok(self.store.get_api_key("k1")), api_key("k1", revoked=True))
        self.assertEqual(self.ok(self.store.get_api_key("k2")), api_key("k2"))
        self.assertIsNone(self.ok(self.store.revoke_api_key("k1")))
        self.assertEqual(self.ok(self.store.list_api_keys()), [api_key("k1", revoked=True), api_key("k2")])

    def test_revokeUnknownApiKey(self) -> None:
        self.refused(self.store.revoke_api_key("nope"), NoSuchAPIKey, "no API key 'nope'")
        self.assertIsNone(self.ok(self.store.get_api_key("nope")))

    def test_apiKeysCascadeOnUserDelete(self) -> None:
        """Deleting a user deletes their API keys (revoked ones too), and only theirs."""
        self.ok(self.store.add_user(User("alice")))
        self.ok(self.store.add_user(User("bob")))
        self.ok(self.store.add_api_key(api_key("a1", "alice")))
        self.ok(self.store.add_api_key(api_key("a2", "alice", revoked=True)))
        self.ok(self.store.add_api_key(api_key("b1", "bob")))
        self.ok(self.store.delete_user("alice"))
        self.assertEqual(self.ok(self.store.list_api_keys()), [api_key("b1", "bob")])
        self.assertEqual(self.ok(self.store.list_api_keys("alice")), [])
        self.assertIsNone(self.ok(self.store.get_api_key("a1")))
        self.assertIsNone(self.ok(self.store.get_api_key("a2")))
        self.refused(self.store.revoke_api_key("a1"), NoSuchAPIKey, "no API key 'a1'")
        # The id is free again.
        self.ok(self.store.add_api_key(api_key("a1", "bob")))
        self.assertEqual(self.ok(self.store.get_api_key("a1")), api_key("a1", "bob"))

    # -- token revocations --------------------------------------------------------

    def test_revokedTokens(self) -> None:
        """Revoked ids are remembered (aware and naive-UTC expiries); ids are exact strings."""
        later = datetime.datetime.now(UTC) + datetime.timedelta(hours=1)
        self.assertIs(self.ok(self.store.is_token_revoked("t1")), False)
        self.assertIsNone(self.ok(self.store.revoke_token("t1", later)))
        self.ok(self.store.revoke_token("t2", later.replace(tzinfo=None)))
        self.assertIs(self.ok(self.store.is_token_revoked("t1")), True)
        self.assertIs(self.ok(self.store.is_token_revoked("t2")), True)
        self.assertIs(self.ok(self.store.is_token_revoked("t3")), False)
        self.assertIs(self.ok(self.store.is_token_revoked("T1")), False)
        # Revoking twice is harmless.
        self.ok(self.store.revoke_token("t1", later))
        self.assertIs(self.ok(self.store.is_token_revoked("t1")), True)

    def test_revocationKeptUntilExpiry(self) -> None:
        """
        A revocation is remembered at least until its token expires: later
        revocations (which may prune the moot ones, of tokens long
        expired) never drop it, nor does revoking it again with an earlier
        expiry.  (What happens to a revocation after its token expired is
        left to the store: it is moot.)
        """
        now = datetime.datetime.now(UTC)
        self.ok(self.store.revoke_token("soon", now + datetime.timedelta(minutes=5)))
        self.ok(self.store.revoke_token("far", FAR))
        self.ok(self.store.revoke_token("far", now - datetime.timedelta(days=30)))
        for i in range(5):
            self.ok(self.store.revoke_token(f"expired-{i}", now - datetime.timedelta(days=10 + i)))
            self.ok(self.store.revoke_token(f"new-{i}", now + datetime.timedelta(hours=i + 1)))
        for jti in ["soon", "far", *(f"new-{i}" for i in range(5))]:
            self.assertIs(self.ok(self.store.is_token_revoked(jti)), True, jti)

    # -- throttle counters ------------------------------------------------------------

    def test_failures(self) -> None:
        """Consecutive failures per key and the time of the last; a reset forgets them."""
        self.assertEqual(self.ok(self.store.get_failures("user:alice")), (0, 0.0))
        self.assertEqual(self.ok(self.store.record_failure("user:alice", 10.5)), 1)
        self.assertEqual(self.ok(self.store.record_failure("user:alice", 20.25)), 2)
        self.assertEqual(self.ok(self.store.record_failure("addr:192.0.2.1", 30.0)), 1)
        self.assertEqual(self.ok(self.store.get_failures("user:alice")), (2, 20.25))
        self.assertEqual(self.ok(self.store.get_failures("addr:192.0.2.1")), (1, 30.0))
        self.assertIsNone(self.ok(self.store.reset_failures("user:alice")))
        self.assertEqual(self.ok(self.store.get_failures("user:alice")), (0, 0.0))
        self.assertEqual(self.ok(self.store.get_failures("addr:192.0.2.1")), (1, 30.0))
        self.assertEqual(self.ok(self.store.record_failure("user:alice", 40.0)), 1)

    def test_failureTypes(self) -> None:
        """The count is an int and the time a float, also for an unknown key."""
        count, last = self.ok(self.store.get_failures("k"))
        self.assertEqual((type(count), type(last)), (int, float))
        self.ok(self.store.record_failure("k", 1_700_000_000.123456))
        count, last = self.ok(self.store.get_failures("k"))
        self.assertEqual((count, last), (1, 1_700_000_000.123456))
        self.assertEqual((type(count), type(last)), (int, float))

    def test_failureTimeIsTheLatestCall(self) -> None:
        """The time kept is that of the latest failure recorded, even if it is earlier."""
        self.ok(self.store.record_failure("k", 20.0))
        self.ok(self.store.record_failure("k", 10.0))
        self.assertEqual(self.ok(self.store.get_failures("k")), (2, 10.0))

    def test_failureKeysAreExact(self) -> None:
        self.ok(self.store.record_failure("user:alice", 1.0))
        self.assertEqual(self.ok(self.store.get_failures("user:Alice")), (0, 0.0))
        self.assertEqual(self.ok(self.store.get_failures("user:alice ")), (0, 0.0))
        self.ok(self.store.reset_failures("user:Alice"))
        self.assertEqual(self.ok(self.store.get_failures("user:alice")), (1, 1.0))

    def test_forgiveFailure(self) -> None:
        """forgive_failure takes one failure back, keeping the time; at zero the key is gone."""
        self.ok(self.store.record_failure("addr:x", 1.0))
        self.ok(self.store.record_failure("addr:x", 2.0))
        self.assertEqual(self.ok(self.store.forgive_failure("addr:x")), 1)
        self.assertEqual(self.ok(self.store.get_failures("addr:x")), (1, 2.0))
        self.assertEqual(self.ok(self.store.forgive_failure("addr:x")), 0)
        self.assertEqual(self.ok(self.store.get_failures("addr:x")), (0, 0.0))
        self.assertEqual(self.ok(self.store.forgive_failure("addr:x")), 0)
        self.assertEqual(self.ok(self.store.forgive_failure("addr:never")), 0)
        self.assertEqual(self.ok(self.store.get_failures("addr:never")), (0, 0.0))
        # Counting starts again from one.
        self.assertEqual(self.ok(self.store.record_failure("addr:x", 3.0)), 1)

    def test_resetUnknownFailures(self) -> None:
        self.assertIsNone(self.ok(self.store.reset_failures("user:nobody")))
        self.assertEqual(self.ok(self.store.get_failures("user:nobody")), (0, 0.0))

    # -- secrets -------------------------------------------------------------------

    def test_secret(self) -> None:
        """A named secret is 32 random bytes, made once and then always the same; names are exact."""
        first = self.ok(self.store.secret("scram-fake-salt"))
        self.assertIs(type(first), bytes)
        self.assertEqual(len(first), 32)
        self.assertEqual(self.ok(self.store.secret("scram-fake-salt")), first)
        others = [self.ok(self.store.secret(name)) for name in ("other", "SCRAM-fake-salt", "")]
        self.assertEqual(len({first, *others}), 4)
        self.assertEqual(self.ok(self.store.secret("scram-fake-salt")), first)

    # -- refresh-token families ---------------------------------------------------------

    def test_refreshTokenContract(self) -> None:
        """The whole life of a family in one run (the contract test that was in tests/test_web.py)."""
        store = self.refresh
        self.ok(store.add(refresh_token("t1")))
        self.assertEqual(self.ok(store.get("t1")), refresh_token("t1"))
        self.assertIsNone(self.ok(store.get("nope")))
        self.assertFalse(self.ok(store.is_family_revoked("fam")))
        self.assertTrue(self.ok(store.is_family_revoked("unknown")))
        self.assertTrue(self.ok(store.consume("t1", 20.0)))
        self.assertFalse(self.ok(store.consume("t1", 21.0)))
        self.assertEqual(self.ok(store.get("t1")), refresh_token("t1", used_at=20.0))
        self.ok(store.add(refresh_token("t2")))
        self.assertEqual(self.revoked(store.revoke_family("fam", 30.0)), [("jti-t1", 50.0), ("jti-t2", 50.0)])
        self.assertTrue(self.ok(store.is_family_revoked("fam")))
        self.assertFalse(self.ok(store.consume("t2", 31.0)))
        self.refused(store.add(refresh_token("t3")), StoreError, "refresh family 'fam' is revoked")
        self.refused(store.add(refresh_token("t1", family="other")), StoreError, "refresh token id 't1' already exists")
        self.ok(store.add(refresh_token("t4", family="old", session_expires_at=5.0)))
        self.assertEqual(self.ok(store.prune(6.0)), 1)
        self.assertIsNone(self.ok(store.get("t4")))
        self.assertIsNotNone(self.ok(store.get("t1")))

    def test_refreshTokenFields(self) -> None:
        """Every field comes back exactly, tuples as tuples and bytes as bytes."""
        token = refresh_token(
            "t1",
            user="Alice",
            secret_hash=bytes(range(256))[:32],
            issued_at=1_800_000_000.25,
            expires_at=1_800_086_400.5,
            session_expires_at=1_802_592_000.75,
            access_jti="0123456789abcdef",
            access_expires_at=1_800_000_900.125,
            scopes=("write", "read", "read"),
            amr=(),
        )
        self.assertIsNone(self.ok(self.refresh.add(token)))
        got = self.ok(self.refresh.get("t1"))
        self.assertEqual(got, token)
        assert got is not None
        self.assertEqual((type(got.scopes), type(got.amr), type(got.secret_hash)), (tuple, tuple, bytes))
        self.assertIsNone(got.used_at)

    def test_refreshTokenIdsAreExact(self) -> None:
        self.ok(self.refresh.add(refresh_token("t1")))
        self.assertIsNone(self.ok(self.refresh.get("T1")))
        self.assertIs(self.ok(self.refresh.consume("T1", 1.0)), False)
        self.assertIs(self.ok(self.refresh.is_family_revoked("FAM")), True)

    def test_refreshConsumeOnce(self) -> None:
        """Each token is consumed once; its successors separately; unknown tokens never."""
        self.ok(self.refresh.add(refresh_token("t1")))
        self.ok(self.refresh.add(refresh_token("t2")))
        self.assertIs(self.ok(self.refresh.consume("t1", 20.0)), True)
        self.assertIs(self.ok(self.refresh.consume("t1", 21.0)), False)
        self.assertEqual(self.ok(self.refresh.get("t1")), refresh_token("t1", used_at=20.0))
        self.assertEqual(self.ok(self.refresh.get("t2")), refresh_token("t2"))
        self.assertIs(self.ok(self.refresh.consume("t2", 22.0)), True)
        self.assertEqual(self.ok(self.refresh.get("t2")), refresh_token("t2", used_at=22.0))
        self.assertIs(self.ok(self.refresh.consume("never", 23.0)), False)
        self.assertIsNone(self.ok(self.refresh.get("never")))
        # Consuming is no revocation.
        self.assertIs(self.ok(self.refresh.is_family_revoked("fam")), False)

    def test_refreshRevokeFamily(self) -> None:
        """
        Revoking fires with the access tokens of every member, used or not,
        of that family only; it is idempotent; the members stay readable
        but can no longer be consumed, and the family takes no new member.
        """
        self.ok(self.refresh.add(refresh_token("t1")))
        self.ok(self.refresh.consume("t1", 20.0))
        self.ok(self.refresh.add(refresh_token("t2", access_expires_at=60.0)))
        self.ok(self.refresh.add(refresh_token("o1", family="other")))
        self.assertEqual(self.revoked(self.refresh.revoke_family("fam", 30.0)), [("jti-t1", 50.0), ("jti-t2", 60.0)])
        self.assertIs(self.ok(self.refresh.is_family_revoked("fam")), True)
        self.assertIs(self.ok(self.refresh.is_family_revoked("other")), False)
        self.assertIs(self.ok(self.refresh.consume("t2", 31.0)), False)
        self.assertEqual(self.ok(self.refresh.get("t2")), refresh_token("t2", access_expires_at=60.0))
        self.assertEqual(self.ok(self.refresh.get("t1")), refresh_token("t1", used_at=20.0))
        self.assertIs(self.ok(self.refresh.consume("o1", 32.0)), True)
        # Again: the same tokens, still revoked.
        self.assertEqual(self.revoked(self.refresh.revoke_family("fam", 40.0)), [("jti-t1", 50.0), ("jti-t2", 60.0)])
        self.assertIs(self.ok(self.refresh.is_family_revoked("fam")), True)
        self.refused(self.refresh.add(refresh_token("t3")), StoreError, "refresh family 'fam' is revoked")
        self.assertIsNone(self.ok(self.refresh.get("t3")))

    def test_refreshRevokeUnknownFamily(self) -> None:
        """An unknown family: nothing to revoke, and it counts as revoked."""
        self.assertEqual(self.ok(self.refresh.revoke_family("ghost", 1.0)), [])
        self.assertIs(self.ok(self.refresh.is_family_revoked("ghost")), True)

    def test_refreshDuplicateTokenId(self) -> None:
        """A token id is refused again, in its family or another; a family of a refused token is not made."""
        self.ok(self.refresh.add(refresh_token("t1")))
        self.refused(self.refresh.add(refresh_token("t1")), StoreError, "refresh token id 't1' already exists")
        self.refused(
            self.refresh.add(refresh_token("t1", family="other", user="mallory")),
            StoreError,
            "refresh token id 't1' already exists",
        )
        self.assertEqual(self.ok(self.refresh.get("t1")), refresh_token("t1"))
        self.assertIs(self.ok(self.refresh.is_family_revoked("other")), True)
        self.assertEqual(self.ok(self.refresh.revoke_family("other", 1.0)), [])

    def test_refreshPrune(self) -> None:
        """
        Families whose session ended before the time (strictly) are
        forgotten with their tokens, revoked or not; the count is of
        families; a forgotten family counts as revoked.
        """
        self.ok(self.refresh.add(refresh_token("a1", family="a", session_expires_at=100.0)))
        self.ok(self.refresh.add(refresh_token("a2", family="a", session_expires_at=100.0)))
        self.ok(self.refresh.add(refresh_token("b1", family="b", session_expires_at=150.0)))
        self.ok(self.refresh.revoke_family("b", 10.0))
        self.ok(self.refresh.add(refresh_token("c1", family="c", session_expires_at=200.0)))
        self.ok(self.refresh.add(refresh_token("d1", family="d", session_expires_at=200.5)))
        self.assertEqual(self.ok(self.refresh.prune(100.0)), 0)
        self.assertEqual(self.ok(self.refresh.prune(200.0)), 2)
        for gone in ("a1", "a2", "b1"):
            self.assertIsNone(self.ok(self.refresh.get(gone)), gone)
            self.assertIs(self.ok(self.refresh.consume(gone, 201.0)), False)
        self.assertIs(self.ok(self.refresh.is_family_revoked("a")), True)
        self.assertEqual(self.ok(self.refresh.revoke_family("a", 202.0)), [])
        self.assertEqual(self.ok(self.refresh.get("c1")), refresh_token("c1", family="c", session_expires_at=200.0))
        self.assertIs(self.ok(self.refresh.is_family_revoked("c")), False)
        self.assertEqual(self.ok(self.refresh.prune(200.0)), 0)
        self.assertEqual(self.ok(self.refresh.prune(10_000.0)), 2)
        self.assertIsNone(self.ok(self.refresh.get("d1")))

    def test_refreshPrunedFamilyStartsAfresh(self) -> None:
        """A family id forgotten by pruning, even a revoked one, is a new family when used again."""
        self.ok(self.refresh.add(refresh_token("t1", session_expires_at=5.0)))
        self.ok(self.refresh.revoke_family("fam", 1.0))
        self.assertEqual(self.ok(self.refresh.prune(6.0)), 1)
        self.ok(self.refresh.add(refresh_token("t2")))
        self.assertIs(self.ok(self.refresh.is_family_revoked("fam")), False)
        self.assertEqual(self.ok(self.refresh.revoke_family("fam", 2.0)), [("jti-t2", 50.0)])

    def test_refreshFamilySessionFixedAtCreation(self) -> None:
        """
        A family's session ends when its first token said, however often it
        is refreshed: a later member cannot extend it (the family is created
        with its first token; later ones join it).
        """
        self.ok(self.refresh.add(refresh_token("t1", session_expires_at=1000.0)))
        self.ok(self.refresh.add(refresh_token("t2", session_expires_at=5000.0)))
        self.assertEqual(self.ok(self.refresh.get("t2")), refresh_token("t2", session_expires_at=1000.0))
        self.assertEqual(self.ok(self.refresh.prune(1000.5)), 1)
        self.assertIsNone(self.ok(self.refresh.get("t2")))


# -- stores whose data outlives the store object -------------------------------------------


class PersistentStoreConformanceMixin(StoreConformanceMixin):
    """
    What a store whose data outlives the store object also does.

    Subclasses implement, besides L{make_store}: L{reopen}, L{open_another}
    and L{close}.  The stores they return may be called from several
    threads at once and answer on the calling thread.
    """

    #: The races: this many threads, each making this many calls.
    THREADS = 4
    CALLS = 50

    def reopen(self, store: ICredentialStore) -> ICredentialStore:
        """Close C{store}, and open a new store on its data."""
        raise NotImplementedError(f"{type(self).__name__} must implement reopen")

    def open_another(self, store: ICredentialStore) -> ICredentialStore:
        """A second store object on the data of C{store}, which stays open."""
        raise NotImplementedError(f"{type(self).__name__} must implement open_another")

    def close(self, store: ICredentialStore) -> None:
        """Close C{store}."""
        raise NotImplementedError(f"{type(self).__name__} must implement close")

    def race(self, stores: list[ICredentialStore], work: Callable[[ICredentialStore, int], defer.Deferred[T]]) -> list[T]:
        """
        Run C{work(store, thread number)} THREADS x CALLS times, all threads
        started together, thread i on store i mod len(stores); every result.
        """
        results: list[T] = []
        errors: list[object] = []
        lock = threading.Lock()
        start = threading.Barrier(self.THREADS, timeout=30)

        def worker(number: int) -> None:
            store = stores[number % len(stores)]
            try:
                start.wait()
                for _ in range(self.CALLS):
                    outcome: list[Any] = []
                    work(store, number).addBoth(outcome.append)
                    with lock:
                        if not outcome:
                            errors.append("no answer on the calling thread")
                        elif isinstance(outcome[0], Failure):
                            errors.append(outcome[0].value)
                        else:
                            results.append(outcome[0])
            except BaseException as e:
                with lock:
                    errors.append(e)

        threads = [threading.Thread(target=worker, args=(i,), name=f"race-{i}", daemon=True) for i in range(self.THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual([t.name for t in threads if t.is_alive()], [])
        self.assertEqual(errors, [])
        self.assertEqual(len(results), self.THREADS * self.CALLS)
        return results

    # -- persistence -----------------------------------------------------------------

    def test_everythingSurvivesReopening(self) -> None:
        self.ok(self.store.add_user(full_user()))
        self.ok(self.store.add_user(User("bob")))
        self.ok(self.store.mark_totp_step("alice", 57_000_001))
        self.ok(self.store.add_api_key(api_key("k1")))
        self.ok(self.store.add_api_key(api_key("k2")))
        self.ok(self.store.revoke_api_key("k2"))
        self.ok(self.store.revoke_token("t1", FAR))
        self.ok(self.store.record_failure("user:alice", 5.0))
        self.ok(self.store.record_failure("user:alice", 6.5))
        secret = self.ok(self.store.secret("scram-fake-salt"))
        self.ok(self.refresh.add(refresh_token("r1")))
        self.ok(self.refresh.consume("r1", 20.0))
        self.ok(self.refresh.add(refresh_token("r2")))
        self.ok(self.refresh.add(refresh_token("x1", family="revoked")))
        self.ok(self.refresh.revoke_family("revoked", 21.0))

        again = self.reopen(self.store)
        self.assertEqual(self.ok(again.list_users()), [attrs.evolve(full_user(), totp_last_step=57_000_001), User("bob")])
        self.assertIs(self.ok(again.mark_totp_step("alice", 57_000_001)), False)
        self.assertEqual(self.ok(again.list_api_keys()), [api_key("k1"), api_key("k2", revoked=True)])
        self.assertIs(self.ok(again.is_token_revoked("t1")), True)
        self.assertEqual(self.ok(again.get_failures("user:alice")), (2, 6.5))
        self.assertEqual(self.ok(again.secret("scram-fake-salt")), secret)
        refresh = again.refresh_tokens
        self.assertEqual(self.ok(refresh.get("r1")), refresh_token("r1", used_at=20.0))
        self.assertIs(self.ok(refresh.consume("r1", 22.0)), False)
        self.assertIs(self.ok(refresh.is_family_revoked("fam")), False)
        self.assertIs(self.ok(refresh.consume("r2", 22.0)), True)
        self.assertIs(self.ok(refresh.is_family_revoked("revoked")), True)
        self.assertEqual(self.ok(refresh.get("x1")), refresh_token("x1", family="revoked"))

    def test_secretStableAcrossReopening(self) -> None:
        """A named secret is the same after reopening, and to another store on the same data."""
        secret = self.ok(self.store.secret("scram-fake-salt"))
        again = self.reopen(self.store)
        self.assertEqual(self.ok(again.secret("scram-fake-salt")), secret)
        another = self.open_another(again)
        self.assertEqual(self.ok(another.secret("scram-fake-salt")), secret)
        made_by_another = self.ok(another.secret("new"))
        self.assertEqual(self.ok(again.secret("new")), made_by_another)
        self.assertNotEqual(made_by_another, secret)
        self.assertEqual(self.ok(self.reopen(again).secret("new")), made_by_another)

    def test_writesSeenByAnotherStore(self) -> None:
        """Two store objects on the same data see each other's writes at once."""
        another = self.open_another(self.store)
        self.ok(self.store.add_user(full_user()))
        self.assertEqual(self.ok(another.get_user("alice")), full_user())
        self.refused(another.add_user(User("alice")), UserExists, "user 'alice' already exists")
        self.assertIs(self.ok(another.mark_totp_step("alice", 57_000_005)), True)
        self.assertIs(self.ok(self.store.mark_totp_step("alice", 57_000_005)), False)
        self.ok(self.store.record_failure("k", 1.0))
        self.assertEqual(self.ok(another.record_failure("k", 2.0)), 2)
        self.assertEqual(self.ok(self.store.get_failures("k")), (2, 2.0))
        self.ok(another.revoke_token("t1", FAR))
        self.assertIs(self.ok(self.store.is_token_revoked("t1")), True)
        self.ok(self.refresh.add(refresh_token("r1")))
        self.assertIs(self.ok(another.refresh_tokens.consume("r1", 5.0)), True)
        self.assertIs(self.ok(self.refresh.consume("r1", 6.0)), False)
        self.ok(another.delete_user("alice"))
        self.assertIsNone(self.ok(self.store.get_user("alice")))

    # -- races -------------------------------------------------------------------------

    def test_recordFailureThreads(self) -> None:
        """Threads on one store: every failure counted, each count returned once."""
        counts = self.race([self.store], lambda s, _: s.record_failure("user:alice", 1.0))
        total = self.THREADS * self.CALLS
        self.assertEqual(sorted(counts), list(range(1, total + 1)))
        self.assertEqual(self.ok(self.store.get_failures("user:alice")), (total, 1.0))

    def test_recordFailureTwoStores(self) -> None:
        """Threads on two store objects on the same data: the same."""
        stores = [self.store, self.open_another(self.store)]
        counts = self.race(stores, lambda s, _: s.record_failure("user:alice", 2.0))
        total = self.THREADS * self.CALLS
        self.assertEqual(sorted(counts), list(range(1, total + 1)))
        for store in stores:
            self.assertEqual(self.ok(store.get_failures("user:alice")), (total, 2.0))

    def test_recordAndForgiveRace(self) -> None:
        """Failures recorded and forgiven at once, on two stores: none lost, none forgiven twice."""
        forgiving = self.THREADS // 2 * self.CALLS
        for _ in range(forgiving):
            self.ok(self.store.record_failure("addr:x", 1.0))
        stores = [self.store, self.open_another(self.store)]

        def work(store: ICredentialStore, number: int) -> defer.Deferred[int]:
            if number < self.THREADS // 2:
                return store.record_failure("addr:x", 7.0)
            return store.forgive_failure("addr:x")

        counts = self.race(stores, work)
        self.assertTrue(all(0 <= c <= 2 * forgiving for c in counts), counts)
        self.assertEqual(self.ok(self.store.get_failures("addr:x")), (forgiving, 7.0))

    def test_markTotpStepRace(self) -> None:
        """Racing logins with one code, on two stores: exactly one is accepted."""
        stores = [self.store, self.open_another(self.store)]
        self.ok(self.store.add_user(User("alice", totp_secret="JBSWY3DPEHPK3PXP")))
        accepted = self.race(stores, lambda s, _: s.mark_totp_step("alice", 1234))
        self.assertEqual(accepted.count(True), 1)
        self.assertEqual(self.user("alice").totp_last_step, 1234)

    def test_consumeRace(self) -> None:
        """Racing refreshes with one token, on two stores: exactly one consumes it."""
        stores = [self.store, self.open_another(self.store)]
        self.ok(self.refresh.add(refresh_token("t1")))
        consumed = self.race(stores, lambda s, _: s.refresh_tokens.consume("t1", 20.0))
        self.assertEqual(consumed.count(True), 1)
        self.assertEqual(self.ok(self.refresh.get("t1")), refresh_token("t1", used_at=20.0))

    def test_secretRace(self) -> None:
        """Two stores making one new secret at once agree on it."""
        stores = [self.store, self.open_another(self.store)]
        made = self.race(stores, lambda s, _: s.secret("fresh"))
        self.assertEqual(len(set(made)), 1)
        self.assertEqual(len(made[0]), 32)
        self.assertEqual(self.ok(self.store.secret("fresh")), made[0])


# -- stores in one file ---------------------------------------------------------------


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def modes_in(directory: Path) -> dict[str, int]:
    """The mode of every file in C{directory}, by name."""
    return {name: mode_of(directory / name) for name in os.listdir(directory)}


def _contents(path: Path) -> bytes | None:
    """The bytes of the file at C{path}, or None if it cannot be read."""
    try:
        return path.read_bytes()
    except OSError:
        return None


def _remove_tree(path: Path) -> None:
    """Remove C{path}, whatever the modes the tests left in it."""
    for directory, _, _ in os.walk(path):
        os.chmod(directory, 0o700)
    shutil.rmtree(path, ignore_errors=True)


class FileStoreConformanceMixin(PersistentStoreConformanceMixin):
    """
    What a store kept in one file also does.  Subclasses implement, besides
    the persistent mixin's methods: L{open_path}, L{path_of}, L{age},
    L{corrupt}, L{set_schema_version} and L{schema_version}.
    """

    def open_path(self, path: Path) -> ICredentialStore:
        """Open the store at C{path} (closed by a cleanup the method registers)."""
        raise NotImplementedError(f"{type(self).__name__} must implement open_path")

    def path_of(self, store: ICredentialStore) -> Path:
        raise NotImplementedError(f"{type(self).__name__} must implement path_of")

    def schema_version(self, store: ICredentialStore) -> int:
        """The schema version of the open store's file."""
        raise NotImplementedError(f"{type(self).__name__} must implement schema_version")

    def age(self, path: Path, version: int) -> None:
        """
        Write a file at C{path} (mode 0600) of schema C{version} (older than
        the current one), as the securenet of that version would have,
        holding the L{OLD} records of the tables that version had.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement age")

    def corrupt(self, path: Path) -> None:
        """Damage the (closed) file at C{path} so that its data cannot be trusted."""
        raise NotImplementedError(f"{type(self).__name__} must implement corrupt")

    def set_schema_version(self, path: Path, version: int) -> None:
        """Mark the (closed) file at C{path} as of schema C{version}, as a newer securenet would."""
        raise NotImplementedError(f"{type(self).__name__} must implement set_schema_version")

    # -- helpers -----------------------------------------------------------------

    def refused_open(self, path: Path, kind: type[DatabaseFileError], problem: str) -> DatabaseFileError:
        """
        Opening C{path} fails with exactly C{kind}: a structured error with
        the path and the problem, in one line; the file is left as it was.
        """
        before = _contents(path)
        e: DatabaseFileError = self.assertRaises(kind, self.open_path, path)
        self.assertIs(type(e), kind)
        self.assertIsInstance(e, StoreError)
        self.assertIsInstance(e, SecurenetError)
        self.assertEqual(e.path, path)
        self.assertIsInstance(e.path, Path)
        self.assertEqual(e.problem, problem)
        self.assertEqual(str(e), f"{path}: {problem}")
        self.assertNotIn("\n", str(e))
        self.assertEqual(_contents(path), before)
        return e

    def closed_file(self) -> Path:
        """The path of a closed store file holding data."""
        path = self.path_of(self.store)
        self.ok(self.store.add_user(full_user()))
        self.close(self.store)
        return path

    def scratch(self) -> Path:
        """
        A new directory for the file-mode tests, that the user of
        L{unprivileged} owns (under the system's temporary directory, not the
        test's: root's test directory may be closed to other users).
        """
        directory = Path(tempfile.mkdtemp(prefix="securenet-store-test-"))
        self.addCleanup(_remove_tree, directory)
        if os.geteuid() == 0:
            uid, gid = nobody_ids()
            os.chown(directory, uid, gid)
        return directory

    def unprivileged(self) -> AbstractContextManager[None]:
        """Run the block without root's power to ignore file modes (L{tests.support.unprivileged})."""
        return unprivileged()

    # -- creation ------------------------------------------------------------------

    def test_missingFileCreated0600(self) -> None:
        """
        A missing file is created with mode 0600 (and its directory 0700),
        even under a permissive umask, at the current schema; so is every
        file the store keeps beside it.
        """
        path = Path(self.mktemp()) / "sub" / "creds.db"
        old = os.umask(0)
        try:
            store = self.open_path(path)
            self.ok(store.add_user(User("alice")))
            self.ok(store.refresh_tokens.add(refresh_token("t1")))
        finally:
            os.umask(old)
        self.assertEqual(mode_of(path), 0o600)
        self.assertEqual(mode_of(path.parent), 0o700)
        self.assertTrue(stat.S_ISREG(os.lstat(path).st_mode))
        modes = modes_in(path.parent)
        self.assertIn("creds.db", modes)
        self.assertEqual(modes, dict.fromkeys(modes, 0o600))
        self.assertEqual(self.schema_version(store), SCHEMA_VERSION)
        self.assertEqual(self.ok(self.reopen(store).get_user("alice")), User("alice"))

    def test_emptyFileBecomesStore(self) -> None:
        """An empty 0600 file (made with install -m 600, say) is a new store."""
        path = Path(self.mktemp()) / "creds.db"
        path.parent.mkdir()
        path.touch(mode=0o600)
        store = self.open_path(path)
        self.assertEqual(self.schema_version(store), SCHEMA_VERSION)
        self.assertEqual(self.ok(store.list_users()), [])
        self.assertEqual(mode_of(path), 0o600)

    # -- schema versions ---------------------------------------------------------------

    def test_migrationsFromEveryOlderSchema(self) -> None:
        """
        A file of any older schema (the first N migrations only, with the
        rows that securenet wrote) is brought to the current version at
        open, its data kept and the new tables usable; it reopens as is.
        """
        self.assertGreater(SCHEMA_VERSION, 1)
        for version in range(1, SCHEMA_VERSION):
            path = Path(self.mktemp()) / f"v{version}.db"
            self.age(path, version)
            store = self.open_path(path)
            self.assertEqual(self.schema_version(store), SCHEMA_VERSION, version)
            self.assertOldData(store, version)
            # Every table is usable, old and new.
            self.ok(store.add_user(User("carol")))
            self.ok(store.add_api_key(api_key("k2", "carol")))
            self.ok(store.refresh_tokens.add(refresh_token("new", family="new-family")))
            self.assertIs(self.ok(store.refresh_tokens.consume("new", 1.0)), True)
            made = self.ok(store.secret("made-after-migration"))
            again = self.reopen(store)
            self.assertEqual(self.schema_version(again), SCHEMA_VERSION, version)
            self.assertOldData(again, version)
            self.assertEqual(self.ok(again.secret("made-after-migration")), made)
            self.assertEqual(self.ok(again.refresh_tokens.get("new")), refresh_token("new", family="new-family", used_at=1.0))
            self.assertEqual(mode_of(path), 0o600)

    def test_currentSchemaOpensAsIs(self) -> None:
        """A file of the current schema, as written by C{age}, opens with all of its data."""
        path = Path(self.mktemp()) / "current.db"
        self.age(path, SCHEMA_VERSION)
        store = self.open_path(path)
        self.assertEqual(self.schema_version(store), SCHEMA_VERSION)
        self.assertOldData(store, SCHEMA_VERSION)

    def assertOldData(self, store: ICredentialStore, version: int) -> None:
        """C{store} holds the L{OLD} records that a file of schema C{version} had."""
        self.assertEqual(self.ok(store.list_users())[:2], [OLD.alice, OLD.bob], version)
        self.assertEqual(self.ok(store.get_api_key(OLD.key.key_id)), OLD.key, version)
        self.assertEqual(self.ok(store.list_api_keys(OLD.alice.name)), [OLD.key], version)
        self.assertIs(self.ok(store.is_token_revoked(OLD.revoked_jti)), True, version)
        self.assertEqual(self.ok(store.get_failures(OLD.failure_key)), OLD.failures, version)
        self.assertIs(self.ok(store.mark_totp_step(OLD.alice.name, OLD.alice.totp_last_step or 0)), False, version)
        if version >= 2:
            self.assertEqual(self.ok(store.secret(OLD.secret_name)), OLD.secret, version)
        if version >= 3:
            self.assertEqual(self.ok(store.refresh_tokens.get(OLD.refresh.token_id)), OLD.refresh, version)
            self.assertIs(self.ok(store.refresh_tokens.is_family_revoked(OLD.refresh.family_id)), False, version)

    def test_newerSchemaRefused(self) -> None:
        """A file of a newer securenet is refused (not misread), with both versions; it is left as it was."""
        path = self.closed_file()
        for newer in (SCHEMA_VERSION + 1, SCHEMA_VERSION + 10):
            self.set_schema_version(path, newer)
            e = self.refused_open(
                path,
                UnsupportedSchema,
                f"credential database schema version {newer} is newer than this securenet supports ({SCHEMA_VERSION}); "
                "upgrade securenet",
            )
            assert isinstance(e, UnsupportedSchema)
            self.assertEqual((e.found, e.supported), (newer, SCHEMA_VERSION))
            self.assertIsInstance(e, DatabaseFileError)

    # -- damaged and foreign files --------------------------------------------------------

    def test_corruptFileRefused(self) -> None:
        """A damaged file is refused with DatabaseFileError: the path, and the problem found."""
        path = self.closed_file()
        self.corrupt(path)
        before = path.read_bytes()
        e = self.assertRaises(DatabaseFileError, self.open_path, path)
        self.assertIs(type(e), DatabaseFileError)
        self.assertEqual(e.path, path)
        prefix = "credential database is corrupt (quick_check: "
        self.assertTrue(e.problem.startswith(prefix), e.problem)
        self.assertTrue(e.problem.endswith(")"), e.problem)
        self.assertGreater(len(e.problem), len(prefix) + 1)
        self.assertEqual(str(e), f"{path}: {e.problem}")
        self.assertNotIn("\n", str(e))
        self.assertEqual(path.read_bytes(), before)

    def test_notADatabaseRefused(self) -> None:
        """A file of something else is refused, and left alone."""
        path = Path(self.mktemp()) / "creds.db"
        path.parent.mkdir()
        # Another file a 0600 path may hold: a private key, made for this test.
        key = ec.generate_private_key(ec.SECP256R1())
        path.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        path.chmod(0o600)
        self.refused_open(path, DatabaseFileError, "not an SQLite database (corrupt or wrong file)")

    def test_truncatedFileRefused(self) -> None:
        path = self.closed_file()
        data = path.read_bytes()
        path.write_bytes(data[:100])
        self.refused_open(path, DatabaseFileError, "not a usable SQLite database (database disk image is malformed)")

    def test_directoryRefused(self) -> None:
        path = Path(self.mktemp()) / "creds.db"
        path.mkdir(parents=True)
        self.refused_open(path, DatabaseFileError, "credential database path is not a regular file")

    def test_danglingSymlinkRefused(self) -> None:
        """
        A symbolic link to nowhere where the file (or its directory) should
        be is refused with DatabaseFileError, and left alone (it crashed
        with RecursionError).
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        for link in (directory / "creds.db", directory / "sub"):
            os.symlink(directory / "nowhere" / "x", link)
        problem = "cannot create the credential database (a dangling symbolic link is in the way)"
        self.refused_open(directory / "creds.db", DatabaseFileError, problem)
        self.refused_open(directory / "sub" / "creds.db", DatabaseFileError, problem)
        self.assertEqual(os.readlink(directory / "creds.db"), str(directory / "nowhere" / "x"))
        self.assertFalse((directory / "nowhere").exists())

    # -- modes -----------------------------------------------------------------------

    def test_groupOrOtherAccessRefused(self) -> None:
        """A file that group or others may read, write or run is refused, like a private key; left alone."""
        path = self.closed_file()
        for bad in (0o640, 0o604, 0o660, 0o644, 0o610, 0o601, 0o666, 0o400 | 0o040):
            path.chmod(bad)
            e = self.refused_open(
                path,
                InsecureDatabaseFile,
                f"credential database has mode {bad:04o}; it must not be accessible by group or others (chmod 600 {path})",
            )
            assert isinstance(e, InsecureDatabaseFile)
            self.assertEqual(e.mode, bad)
            self.assertEqual(mode_of(path), bad)
        path.chmod(0o600)
        self.assertEqual(self.ok(self.open_path(path).get_user("alice")), full_user())

    def test_unreadableFileRefused(self) -> None:
        """A file its owner may not read (mode 0200, 0000)."""
        path = self.scratch() / "creds.db"
        with self.unprivileged():
            self.close(self.open_path(path))
            for unreadable in (0o200, 0o000):
                path.chmod(unreadable)
                self.refused_open(path, DatabaseFileError, "cannot read the credential database (Permission denied)")

    def test_unsearchableDirectoryRefused(self) -> None:
        """A directory its owner may not search (mode 0600): the file cannot even be looked at."""
        directory = self.scratch() / "dir"
        path = directory / "creds.db"
        with self.unprivileged():
            self.close(self.open_path(path))
            directory.chmod(0o600)
            self.refused_open(path, DatabaseFileError, "cannot open the credential database (Permission denied)")

    def test_readOnlyFile(self) -> None:
        """
        A read-only file (mode 0400, in a writable directory) opens: reads
        answer, with its data; every write that would change it fails with
        a StoreError naming the file, and changes nothing.  So does
        secret(), even of a name it holds (secrets are made on first use, in
        a write transaction).
        """
        path = self.scratch() / "creds.db"
        with self.unprivileged():
            store = self.open_path(path)
            self.ok(store.add_user(full_user()))
            self.ok(store.add_api_key(api_key("k1")))
            self.ok(store.record_failure("user:alice", 3.0))
            self.ok(store.revoke_token("t1", FAR))
            self.ok(store.secret("scram-fake-salt"))
            self.ok(store.refresh_tokens.add(refresh_token("r1")))
            self.close(store)
            path.chmod(0o400)
            before = path.read_bytes()

            store = self.open_path(path)
            refresh = store.refresh_tokens
            self.assertEqual(self.ok(store.list_users()), [full_user()])
            self.assertEqual(self.ok(store.list_api_keys()), [api_key("k1")])
            self.assertEqual(self.ok(store.get_failures("user:alice")), (1, 3.0))
            self.assertIs(self.ok(store.is_token_revoked("t1")), True)
            self.assertEqual(self.ok(refresh.get("r1")), refresh_token("r1"))
            self.assertIs(self.ok(refresh.is_family_revoked("fam")), False)

            message = f"{path}: attempt to write a readonly database"
            writes: list[defer.Deferred[Any]] = [
                store.add_user(User("bob")),
                store.update_user(User("alice")),
                store.delete_user("alice"),
                store.mark_totp_step("alice", 57_000_001),
                store.add_api_key(api_key("k2")),
                store.revoke_api_key("k1"),
                store.revoke_token("t2", FAR),
                store.record_failure("user:alice", 4.0),
                store.forgive_failure("user:alice"),
                store.reset_failures("user:alice"),
                store.secret("new"),
                store.secret("scram-fake-salt"),
                refresh.add(refresh_token("r2")),
                refresh.consume("r1", 20.0),
                refresh.revoke_family("fam", 20.0),
                refresh.prune(2000.0),
            ]
            outcomes = [(type(f.value), str(f.value)) for f in map(self.failureResultOf, writes)]
            self.assertEqual(outcomes, [(StoreError, message)] * len(writes))
            self.assertEqual(self.ok(store.list_users()), [full_user()])
            self.assertEqual(self.ok(refresh.get("r1")), refresh_token("r1"))
            self.close(store)
        self.assertEqual(path.read_bytes(), before)
        self.assertEqual(mode_of(path), 0o400)

    def test_readOnlySessionLeavesReadOnlySidecars(self) -> None:
        """
        Opening a read-only file leaves the files SQLite keeps beside it
        (-wal, -shm) behind, read-only like it; made writable again (chmod
        600), the file is still refused at open, until the stale -shm is
        removed.  Then it opens with its data, and takes writes.
        """
        path = self.scratch() / "creds.db"
        with self.unprivileged():
            store = self.open_path(path)
            self.ok(store.add_user(User("alice")))
            secret = self.ok(store.secret("scram-fake-salt"))
            self.close(store)
            self.assertEqual(modes_in(path.parent), {"creds.db": 0o600})
            path.chmod(0o400)
            self.close(self.open_path(path))
            self.assertEqual(modes_in(path.parent), {"creds.db": 0o400, "creds.db-shm": 0o400, "creds.db-wal": 0o400})
            path.chmod(0o600)
            self.refused_open(path, DatabaseFileError, "not a usable SQLite database (attempt to write a readonly database)")
            os.remove(f"{path}-shm")
            store = self.open_path(path)
            self.assertEqual(self.ok(store.list_users()), [User("alice")])
            self.assertEqual(self.ok(store.secret("scram-fake-salt")), secret)
            self.ok(store.add_user(User("bob")))
            self.close(store)
            self.assertEqual(modes_in(path.parent), {"creds.db": 0o600})

    def test_readOnlyFileNeedingMigration(self) -> None:
        """A read-only file of an older schema cannot be migrated: refused, left at its version."""
        path = self.scratch() / "creds.db"
        with self.unprivileged():
            self.age(path, 1)
            path.chmod(0o400)
            self.refused_open(path, DatabaseFileError, "not a usable SQLite database (attempt to write a readonly database)")
            path.chmod(0o600)
            self.assertEqual(self.schema_version(self.open_path(path)), SCHEMA_VERSION)

    def test_readOnlyDirectory(self) -> None:
        """
        A file (mode 0600) in a read-only directory (0500) is refused at
        open: the store cannot make the files it keeps beside it.
        """
        directory = self.scratch() / "dir"
        path = directory / "creds.db"
        with self.unprivileged():
            self.close(self.open_path(path))
            self.assertEqual(os.listdir(directory), ["creds.db"])
            directory.chmod(0o500)
            self.refused_open(path, DatabaseFileError, "not a usable SQLite database (attempt to write a readonly database)")
            path.chmod(0o400)
            self.refused_open(path, DatabaseFileError, "not a usable SQLite database (attempt to write a readonly database)")
            self.assertEqual(os.listdir(directory), ["creds.db"])

    def test_readOnlyDirectoryMissingFile(self) -> None:
        """A missing file cannot be created in a read-only directory, nor in a directory to be made there."""
        directory = self.scratch() / "dir"
        with self.unprivileged():
            directory.mkdir(mode=0o500)
            problem = "cannot create the credential database (Permission denied)"
            self.refused_open(directory / "creds.db", DatabaseFileError, problem)
            self.refused_open(directory / "sub" / "creds.db", DatabaseFileError, problem)
            self.assertEqual(os.listdir(directory), [])

    # -- closed stores ------------------------------------------------------------------

    def test_closedStore(self) -> None:
        """After close, every operation (refresh tokens' too) fails with a StoreError naming the file."""
        path = self.path_of(self.store)
        self.close(self.store)
        self.close(self.store)
        message = f"{path}: the credential database is closed"
        store, refresh = self.store, self.refresh
        calls: list[defer.Deferred[Any]] = [
            store.secret("s"),
            store.get_user("alice"),
            store.add_user(User("alice")),
            store.update_user(User("alice")),
            store.delete_user("alice"),
            store.list_users(),
            store.mark_totp_step("alice", 1),
            store.add_api_key(api_key()),
            store.get_api_key("k1"),
            store.list_api_keys(),
            store.list_api_keys("alice"),
            store.revoke_api_key("k1"),
            store.revoke_token("t1", FAR),
            store.is_token_revoked("t1"),
            store.record_failure("k", 1.0),
            store.forgive_failure("k"),
            store.get_failures("k"),
            store.reset_failures("k"),
            refresh.add(refresh_token("t1")),
            refresh.get("t1"),
            refresh.consume("t1", 1.0),
            refresh.revoke_family("fam", 1.0),
            refresh.is_family_revoked("fam"),
            refresh.prune(1.0),
        ]
        outcomes = [(type(f.value), str(f.value)) for f in map(self.failureResultOf, calls)]
        self.assertEqual(outcomes, [(StoreError, message)] * len(calls))
        self.assertEqual(self.assertRaises(StoreError, self.schema_version, store).args, (message,))


# -- what the file-backed tests expect of old files -------------------------------------------


@attrs.frozen
class _OldRecords:
    """The records that L{FileStoreConformanceMixin.age} writes, as the store must read them."""

    alice: User
    bob: User
    key: APIKey
    revoked_jti: str
    revoked_until: datetime.datetime
    failure_key: str
    failures: tuple[int, float]
    secret_name: str
    secret: bytes
    refresh: RefreshToken


OLD = _OldRecords(
    alice=full_user(),
    bob=User("bob"),
    key=api_key("k1", "alice"),
    revoked_jti="jti-revoked-long-ago",
    revoked_until=FAR,
    failure_key="user:alice",
    failures=(3, 12.5),
    secret_name="scram-fake-salt",
    secret=bytes(range(100, 132)),
    refresh=refresh_token("rt-old", family="fam-old", session_expires_at=4_000_000_000.0, used_at=11.0),
)


# -- the backends -------------------------------------------------------------------------


class MemoryStoreConformance(StoreConformanceMixin, SynchronousTestCase):
    """L{MemoryStore}: the reference behaviour."""

    def make_store(self) -> ICredentialStore:
        return MemoryStore()


class SQLiteStoreConformance(FileStoreConformanceMixin, SynchronousTestCase):
    """L{SQLiteStore}, on the calling thread (no runner)."""

    def make_store(self) -> ICredentialStore:
        return self.open_path(Path(self.mktemp()) / "creds.db")

    def open_path(self, path: Path) -> ICredentialStore:
        store = SQLiteStore.open(path)
        self.addCleanup(store.close)
        return store

    def sqlite(self, store: ICredentialStore) -> SQLiteStore:
        assert isinstance(store, SQLiteStore), store
        return store

    def path_of(self, store: ICredentialStore) -> Path:
        return self.sqlite(store).path

    def close(self, store: ICredentialStore) -> None:
        self.sqlite(store).close()

    def reopen(self, store: ICredentialStore) -> ICredentialStore:
        self.close(store)
        return self.open_path(self.path_of(store))

    def open_another(self, store: ICredentialStore) -> ICredentialStore:
        return self.open_path(self.path_of(store))

    def schema_version(self, store: ICredentialStore) -> int:
        return self.sqlite(store).schema_version

    def age(self, path: Path, version: int) -> None:
        """Apply only the first C{version} migrations with sqlite3 itself, and insert the old rows by hand."""
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            for migration in MIGRATIONS[:version]:
                for statement in migration:
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {version}")
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
            self._insert_old_rows(connection, tables)
        finally:
            connection.close()
        path.chmod(0o600)

    @staticmethod
    def _insert_old_rows(c: sqlite3.Connection, tables: set[str]) -> None:
        alice, key, token = OLD.alice, OLD.key, OLD.refresh
        assert alice.scram is not None and alice.created is not None and key.created and key.expires
        c.execute(
            "INSERT INTO users (name, password_hash, scram_salt, scram_iterations, scram_stored_key, scram_server_key, "
            "roles, attributes, totp_secret, totp_last_step, disabled, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                alice.name,
                alice.password_hash,
                alice.scram.salt,
                alice.scram.iterations,
                alice.scram.stored_key,
                alice.scram.server_key,
                json.dumps(list(alice.roles)),
                json.dumps(dict(alice.attributes)),
                alice.totp_secret,
                alice.totp_last_step,
                1,
                alice.created.isoformat(),
            ),
        )
        c.execute("INSERT INTO users (name) VALUES (?)", (OLD.bob.name,))
        c.execute(
            "INSERT INTO api_keys (key_id, user, secret_hash, scopes, created, expires, revoked) VALUES (?, ?, ?, ?, ?, ?, 0)",
            (
                key.key_id,
                key.user,
                key.secret_hash,
                json.dumps(list(key.scopes)),
                key.created.isoformat(),
                key.expires.isoformat(),
            ),
        )
        c.execute("INSERT INTO revoked_tokens (jti, expires) VALUES (?, ?)", (OLD.revoked_jti, OLD.revoked_until.timestamp()))
        c.execute("INSERT INTO failures (key, count, last) VALUES (?, ?, ?)", (OLD.failure_key, *OLD.failures))
        if "secrets" in tables:
            c.execute("INSERT INTO secrets (name, value) VALUES (?, ?)", (OLD.secret_name, OLD.secret))
        if "refresh_families" in tables:
            c.execute(
                "INSERT INTO refresh_families (family_id, user, expires, revoked) VALUES (?, ?, ?, NULL)",
                (token.family_id, token.user, token.session_expires_at),
            )
            c.execute(
                "INSERT INTO refresh_tokens (token_id, family_id, user, secret_hash, issued, expires, access_jti, "
                "access_expires, scopes, amr, used) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    token.token_id,
                    token.family_id,
                    token.user,
                    token.secret_hash,
                    token.issued_at,
                    token.expires_at,
                    token.access_jti,
                    token.access_expires_at,
                    json.dumps(list(token.scopes)),
                    json.dumps(list(token.amr)),
                    token.used_at,
                ),
            )

    def corrupt(self, path: Path) -> None:
        """Overwrite the third page of a file with more than a few pages of users."""
        store = self.open_path(path)
        for i in range(300):
            self.ok(store.add_user(User(f"user{i:03}", password_hash="x" * 100)))
        self.close(store)
        data = bytearray(path.read_bytes())
        self.assertGreater(len(data), 4096 * 4)
        data[4096 * 2 : 4096 * 3] = b"\xab" * 4096
        path.write_bytes(bytes(data))

    def set_schema_version(self, path: Path, version: int) -> None:
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            connection.execute(f"PRAGMA user_version = {version}")
        finally:
            connection.close()


# -- the errors themselves ------------------------------------------------------------------


class StoreErrorTests(SynchronousTestCase):
    """The store's errors are one hierarchy, and the file errors carry their facts as attributes."""

    def test_hierarchy(self) -> None:
        for kind in (NoSuchUser, UserExists, NoSuchAPIKey, DatabaseFileError, InsecureDatabaseFile, UnsupportedSchema):
            self.assertTrue(issubclass(kind, StoreError), kind)
        self.assertTrue(issubclass(StoreError, SecurenetError))
        self.assertTrue(issubclass(InsecureDatabaseFile, DatabaseFileError))
        self.assertTrue(issubclass(UnsupportedSchema, DatabaseFileError))

    def test_databaseFileError(self) -> None:
        e = DatabaseFileError(Path("/var/lib/securenet/creds.db"), "it is broken")
        self.assertEqual((e.path, e.problem), (Path("/var/lib/securenet/creds.db"), "it is broken"))
        self.assertEqual(str(e), "/var/lib/securenet/creds.db: it is broken")

    def test_insecureDatabaseFile(self) -> None:
        e = InsecureDatabaseFile(Path("/db"), "mode 0644", 0o644)
        self.assertEqual((e.path, e.problem, e.mode), (Path("/db"), "mode 0644", 0o644))
        self.assertEqual(str(e), "/db: mode 0644")
        self.assertEqual(InsecureDatabaseFile(Path("/db"), "x").mode, 0)

    def test_unsupportedSchema(self) -> None:
        e = UnsupportedSchema(Path("/db"), "too new", 9, 3)
        self.assertEqual((e.path, e.problem, e.found, e.supported), (Path("/db"), "too new", 9, 3))
        self.assertEqual(str(e), "/db: too new")
        self.assertEqual(UnsupportedSchema(Path("/db"), "x").supported, SCHEMA_VERSION)

    def test_raisable(self) -> None:
        """They are exceptions that can be raised and caught as StoreError."""
        with self.assertRaises(StoreError) as caught:
            raise UnsupportedSchema(Path("/db"), "too new", 9, 3)
        self.assertIsInstance(caught.exception, UnsupportedSchema)
