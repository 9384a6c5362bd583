"""Personal data protection by crypto-shredding.

Each customer has a data key of its own (AES-256-GCM). Every personal field an event carries
(the attributes an event class names in `personal_data`) is sealed with that key before the
event is stored, so the event store, its snapshots, the Kafka messages and any copy of them
hold only ciphertext. The data keys live in `pii_keys`, each wrapped (encrypted) by the master
key from the settings, bound to its tenant and customer. Erasing a customer destroys its data
key: every sealed copy, wherever it went, becomes unreadable for good, while the events
themselves stay (who did what, when), and no key is made for that customer again.

A sealed value is `{"sealed": "<base64 nonce|ciphertext>", "fields": [names present]}`; the
field names are kept in clear so that, once erased, history can still say which fields an
event set, showing each as `ERASED`.

Keys are looked up per operation: a `session()` (one command, one projector batch, one
history request) remembers the keys it fetched, and forgets them when it ends, so no process
keeps a key beyond the operation that needed it and an erasure takes effect everywhere at
once.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

#: What an erased personal field reads as, in history, time travel and exports.
ERASED = "[erased]"
NONCE_BYTES = 12

Subject = tuple[str, str]  # (tenant id, customer id)
NewKey = tuple[str, str, bytes]  # (tenant id, customer id, wrapped key)
CursorFactory = Callable[[], AbstractContextManager[Any]]

_GET = "SELECT subject_id, wrapped FROM pii_keys WHERE tenant_id = %s AND subject_id = ANY(%s)"
#: one index probe per subject: as a plain join, the planner turns a batch of a few thousand
#: subjects (a replay's) into a hash of the whole key table, read from end to end per batch
#: (150 ms for 5,000 of 150,000 keys, against 55 ms probing); LIMIT 1 keeps the lookup a
#: subquery of its own, run once per subject
_GET_MANY = (
    "SELECT s.tenant_id, s.subject_id, k.wrapped "
    "FROM unnest(%b::text[], %b::text[]) AS s(tenant_id, subject_id) "
    "CROSS JOIN LATERAL (SELECT wrapped FROM pii_keys WHERE tenant_id = s.tenant_id "
    "AND subject_id = s.subject_id LIMIT 1) k"
)
_CREATE = (
    "INSERT INTO pii_keys (tenant_id, subject_id, wrapped) VALUES (%s, %s, %s) "
    "ON CONFLICT (tenant_id, subject_id) DO NOTHING RETURNING subject_id, wrapped"
)
#: Destroys a subject's key for good; the row stays, so no new key is ever made for them.
FORGET = (
    "UPDATE pii_keys SET wrapped = NULL, erased_at = now() "
    "WHERE tenant_id = %s AND subject_id = %s AND wrapped IS NOT NULL"
)


@dataclass
class _Session:
    """One operation's keys, as ready AES-GCM objects (building one costs more than a
    decrypt); with `defer`, the keys it makes and the event store has yet to save."""

    keys: dict[Subject, AESGCM | None] = field(default_factory=dict)
    defer: bool = False
    unsaved: dict[Subject, bytes] = field(default_factory=dict)
    #: subjects whose made key was not saved: looked up (or made) in the database from now on
    no_guess: set[Subject] = field(default_factory=set)


_session: ContextVar[_Session | None] = ContextVar("pii_keys", default=None)


def unsaved_keys() -> list[NewKey]:
    """(tenant, subject, wrapped key) of the keys this operation made and has not saved: the
    event store saves them in the transaction of the events sealed with them."""
    session = _session.get()
    if session is None:
        return []
    return [(t, s, wrapped) for (t, s), wrapped in session.unsaved.items()]


def keys_saved(keys: Iterable[NewKey]) -> None:
    session = _session.get()
    if session is not None:
        for tenant, subject, _ in keys:
            session.unsaved.pop((tenant, subject), None)


def keys_not_saved(keys: Iterable[NewKey]) -> None:
    """The save that carried these keys failed: forget them (nothing was sealed with them
    that is stored), and take these subjects' keys from the database from now on (one may
    be there already, made by whoever won the race)."""
    session = _session.get()
    if session is not None:
        for tenant, subject, _ in keys:
            session.unsaved.pop((tenant, subject), None)
            session.keys.pop((tenant, subject), None)
            session.no_guess.add((tenant, subject))


class VaultError(Exception):
    """A sealed value could not be opened although its key exists (tampering, or the wrong
    master key)."""


class ErasedSubject(Exception):
    """Personal data can't be stored for an erased subject: their key is destroyed."""


def is_sealed(value: object) -> bool:
    return isinstance(value, dict) and isinstance(value.get("sealed"), str)


def erased(sealed: dict[str, Any]) -> dict[str, Any]:
    return dict.fromkeys(sealed.get("fields", ()), ERASED)


def is_erased(personal: object) -> bool:
    return isinstance(personal, dict) and bool(personal) and set(personal.values()) == {ERASED}


def _aad(subject: Subject) -> bytes:
    return f"{subject[0]}\x00{subject[1]}".encode()


@dataclass
class Vault:
    """Seals and opens personal data with per-customer keys kept in `pii_keys`.

    `cursor` gives a cursor (rows as tuples) on an autocommit connection, or inside the
    caller's transaction, each time it is called."""

    master_key: bytes
    cursor: CursorFactory

    def __post_init__(self) -> None:
        if len(self.master_key) != 32:
            msg = "the master key must be 32 bytes (BEEOCLOCK_MASTER_KEY)"
            raise ValueError(msg)
        self._master = AESGCM(self.master_key)

    # -- keys --------------------------------------------------------------------------

    @contextmanager
    def session(self, *, defer: bool = False) -> Iterator[None]:
        """Remember fetched keys until the block ends (nested sessions share the outer one).

        `defer` (a command, saved by commands/recorder.py): a key made for a subject that has
        none is not inserted at once but saved with the events sealed with it, in their
        transaction (`unsaved_keys`): one round trip less per new customer, and never a key
        without the events it was made for."""
        if _session.get() is not None:
            yield
            return
        token = _session.set(_Session(defer=defer))
        try:
            yield
        finally:
            _session.reset(token)

    def _wrap(self, subject: Subject, key: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._master.encrypt(nonce, key, _aad(subject))

    def _unwrap(self, subject: Subject, wrapped: bytes) -> bytes:
        try:
            return self._master.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _aad(subject))
        except InvalidTag:
            msg = "a data key could not be unwrapped: is BEEOCLOCK_MASTER_KEY the right one?"
            raise VaultError(msg) from None

    def prefetch(self, subjects: Iterable[Subject]) -> None:
        """Fetch the keys of many subjects in one query (within a session)."""
        session = _session.get()
        if session is None:
            return
        cache = session.keys
        wanted = sorted({s for s in subjects if s not in cache})
        if not wanted:
            return
        with self.cursor() as cur:
            rows = cur.execute(
                _GET_MANY, ([t for t, _ in wanted], [s for _, s in wanted])
            ).fetchall()
        found = {(t, s): bytes(w) for t, s, w in rows if w is not None}
        for subject in wanted:
            wrapped = found.get(subject)
            cache[subject] = AESGCM(self._unwrap(subject, wrapped)) if wrapped else None

    def key(self, subject: Subject, *, create: bool = False) -> AESGCM | None:
        """The subject's data key; None once erased (or never made, unless `create`)."""
        session = _session.get()
        cache = session.keys if session is not None else None
        if cache is not None and subject in cache:
            known = cache[subject]
            if known is not None or not create:
                return known
        elif create and session is not None and session.defer and subject not in session.no_guess:
            # a subject never seen in this command: guess it has no key yet (the event
            # store's transaction checks, see commands/recorder.py)
            material = AESGCM.generate_key(256)
            session.unsaved[subject] = self._wrap(subject, material)
            guessed = session.keys[subject] = AESGCM(material)
            return guessed
        with self.cursor() as cur:
            row = None
            if create:  # the insert says what it made
                made = self._wrap(subject, AESGCM.generate_key(256))
                row = cur.execute(_CREATE, (*subject, made)).fetchone()
            if row is None:
                row = cur.execute(_GET, (subject[0], [subject[1]])).fetchone()
        key = AESGCM(self._unwrap(subject, bytes(row[1]))) if row and row[1] is not None else None
        if cache is not None:
            cache[subject] = key
        return key

    # -- values ------------------------------------------------------------------------

    def seal(self, subject: Subject, value: dict[str, Any]) -> dict[str, Any]:
        key = self.key(subject, create=True)
        if key is None:
            msg = f"the personal data of {subject[0]}/{subject[1]} was erased"
            raise ErasedSubject(msg)
        nonce = os.urandom(NONCE_BYTES)
        box = key.encrypt(nonce, orjson.dumps(value), _aad(subject))
        return {
            "sealed": base64.b64encode(nonce + box).decode(),
            "fields": sorted(k for k, v in value.items() if v is not None),
        }

    def open(self, subject: Subject, value: Any) -> Any:
        """The plain value of a sealed one (a plain value is returned as it is); the fields as
        ERASED when the subject's key is gone."""
        if not is_sealed(value):
            return value
        key = self.key(subject)
        if key is None:
            return erased(value)
        raw = base64.b64decode(value["sealed"])
        try:
            plain = key.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(subject))
        except InvalidTag:
            msg = f"sealed personal data of {subject[0]}/{subject[1]} failed authentication"
            raise VaultError(msg) from None
        opened: dict[str, Any] = orjson.loads(plain)
        return opened
