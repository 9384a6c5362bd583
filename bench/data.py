"""Test data: unique customers (ids, emails and valid Polish mobile numbers derived from one
sequence number), and fast seeding straight into the event store.

Sequence numbers are unique across the whole run (`Sequence.take`), so ids, emails and phones
never collide, whichever tenant a customer lands in. The same formulas are written in Lua for
wrk (bench/wrk.py), so both load generators make the same bodies.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: two-digit prefixes of Polish mobile numbers that `phonenumbers` accepts (+48 PP xxx xx xx)
PHONE_PREFIXES = ("45", "50", "51", "53", "57", "60", "66", "69", "72", "73", "78", "79", "88")
PHONE_SPACE = len(PHONE_PREFIXES) * 10**7
FIRST_NAMES = (
    "Anna", "Piotr", "Maria", "Krzysztof", "Katarzyna", "Andrzej", "Małgorzata", "Tomasz",
    "Agnieszka", "Paweł", "Barbara", "Michał", "Ewa", "Marcin", "Magdalena", "Jakub",
    "Joanna", "Adam", "Zofia", "Olena",
)  # fmt: skip
LAST_NAMES = (
    "Nowak", "Kowalska", "Wiśniewski", "Wójcik", "Kowalczyk", "Kamińska", "Lewandowski",
    "Zielińska", "Szymański", "Woźniak", "Dąbrowska", "Kozłowski", "Jankowska", "Mazur",
    "Kwiatkowski", "Krawczyk", "Piotrowska", "Grabowski", "Nowakowska", "Pawłowski",
    "Michalska", "Król", "Wieczorek", "Jabłoński", "Wróbel", "Majewska", "Olszewski",
    "Stępień", "Malinowska", "Jaworski",
)  # fmt: skip
#: phrases for `phrase` searches: parts of names (each matches 1/20 or 1/30 of a tenant)
PHRASES = ("kowal", "nowak", "wiśn", "mazur", "król", "anna", "piotr", "ewa", "jab", "stęp")

#: the prefix of every bench `_id` (10 hex digits) and email domain
EMAIL_DOMAIN = "bench.example.com"


def phone(n: int) -> str:
    """A valid Polish mobile number, one per n (mod 130M), formatted as users type it."""
    p = n % PHONE_SPACE
    digits = PHONE_PREFIXES[p // 10**7] + f"{p % 10**7:07d}"
    return f"+48 {digits[:3]} {digits[3:6]} {digits[6:]}"


def phone_digits(n: int) -> str:
    """`phone(n)` as the system keeps it: digits only, with the country code."""
    return "48" + phone(n)[4:].replace(" ", "")


def customer_id(tag: str, n: int) -> str:
    return f"{tag}{n:014x}"


def email(tag: str, n: int) -> str:
    return f"c{n}.{tag}@{EMAIL_DOMAIN}"


def first_name(n: int) -> str:
    return FIRST_NAMES[n % len(FIRST_NAMES)]


def last_name(n: int) -> str:
    return LAST_NAMES[(n // len(FIRST_NAMES)) % len(LAST_NAMES)]


def customer_body(tag: str, n: int) -> dict[str, str]:
    """What a client POSTs: the fields the panel's form sends."""
    return {
        "_id": customer_id(tag, n),
        "firstName": first_name(n),
        "lastName": last_name(n),
        "email": email(tag, n),
        "phone": phone(n),
    }


def new_tag() -> str:
    return uuid.uuid4().hex[:10]


@dataclass
class Sequence:
    """Hands out disjoint blocks of sequence numbers (so every customer is unique)."""

    next_n: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, count: int) -> int:
        with self.lock:
            base = self.next_n
            self.next_n += max(1, count)
            return base


def tenant_id(prefix: str, i: int) -> str:
    return f"{prefix}{i:05d}"


# --- seeding straight into the event store -------------------------------------------------


@dataclass
class SeedStats:
    customers: int
    events: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def _customer_aggregates(app: Any, tenant: str, tag: str, n: int, at: datetime) -> list[Any]:
    """A registered customer and its email and phone uniqueness records, as the write path
    saves them (the records are created directly: every value is new)."""
    from commands.contact import email_key
    from commands.context import Meta
    from commands.customer import Customer, RegisterCustomer
    from commands.uniqueness import UniqueValue, UniqueValueRecorded, record_id

    meta = Meta(tenant, "bench-seed", f"seed-{tag}-{n}", at)
    cid = customer_id(tag, n)
    mail = email(tag, n)
    digits = phone_digits(n)
    cmd = RegisterCustomer(
        meta=meta,
        customer_id=cid,
        personal={
            "firstName": first_name(n),
            "lastName": last_name(n),
            "email": mail,
            "phone": digits,
            "note": None,
        },
        customer_type="regular",
        state="active",
        state_history=[],
        created_at=None,
    )
    customer = Customer.register(cmd)
    key = app.uniqueness_key
    records = [
        UniqueValue._create(
            UniqueValueRecorded,
            id=record_id(key, tenant, kind, value),
            owner=cid,
            **meta.event_fields(),
        )
        for kind, value in (("email", email_key(mail)), ("phone", digits))
    ]
    return [customer, *records]


def seed_customers(
    app: Any,
    plan: Iterator[tuple[str, int]],
    tag: str,
    per_save: int = 100,
    deadline: float | None = None,
) -> SeedStats:
    """Save the customers of `plan` ((tenant, n) pairs), `per_save` customers (each with its
    two uniqueness records) per `save()` call: one transaction, one table lock."""
    started = time.perf_counter()
    customers = events = 0
    batch: list[Any] = []
    count = 0

    def flush() -> None:
        with key_session(app):
            create_keys(app, batch)
            app.save(*batch)

    for tenant, n in plan:
        batch.extend(_customer_aggregates(app, tenant, tag, n, datetime.now(UTC)))
        count += 1
        if count == per_save:
            flush()
            customers += count
            events += len(batch)
            batch, count = [], 0
            if deadline is not None and time.monotonic() > deadline:
                break
    if batch:
        flush()
        customers += count
        events += len(batch)
    return SeedStats(customers, events, time.perf_counter() - started)


def application(settings: Any, pool_size: int | None = None) -> Any:
    """The project's PanelApplication as its processes build it (with the personal-data vault
    when the project has one)."""
    try:
        from beeoclock.bootstrap import panel_application
    except ImportError:
        from commands.application import PanelApplication

        env = dict(settings.eventsourcing_env())
        if pool_size is not None:
            env["POSTGRES_POOL_SIZE"] = str(pool_size)
        return PanelApplication(env=env)
    return panel_application(settings, pool_size=pool_size)


@contextlib.contextmanager
def key_session(app: Any) -> Iterator[None]:
    """One operation's use of personal-data keys, where the project has them."""
    keys = getattr(app, "keys", None)
    if keys is None:
        yield
        return
    with keys():
        yield


def prefetch_keys(app: Any, notifications: Any) -> None:
    """Fetch the data keys of a batch's customers at once (inside a key session), as a
    batch reader would; a no-op where the project has no vault."""
    vault = getattr(app, "vault", None)
    if vault is None or not hasattr(vault, "prefetch"):
        return
    subjects = set()
    for n in notifications:
        kind, _, rest = n.originator_id.partition(":")
        if kind == "customer":
            tenant, _, entity = rest.partition(":")
            subjects.add((tenant, entity))
    vault.prefetch(subjects)


def create_keys(app: Any, aggregates: list[Any]) -> None:
    """Make the personal-data keys of a batch of new customers in one statement and load them
    into the key session, instead of the vault's three round trips per customer: the same
    keys (the vault's own wrapping, its own table), made in bulk as a seeder may. A no-op
    where the project has no vault; the vault's own path if its internals changed."""
    vault = getattr(app, "vault", None)
    if vault is None:
        return
    subjects = set()
    for aggregate in aggregates:
        kind, _, rest = str(aggregate.id).partition(":")
        if kind == "customer":
            tenant, _, entity = rest.partition(":")
            subjects.add((tenant, entity))
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        from events.pii import _CREATE

        rows = [(t, e, vault._wrap((t, e), AESGCM.generate_key(256))) for t, e in subjects]
        with vault.cursor() as cur:
            cur.executemany(_CREATE, rows)
        vault.prefetch(subjects)
    except (ImportError, AttributeError, TypeError):
        return
