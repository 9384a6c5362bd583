"""How every handler saves: an aggregate's new events and its uniqueness records in one
transaction, deciding again after a lost race.

Two requests that change one entity (or take one unique value) race for the same
(stream, version) in the event store; exactly one commits. The loser decides again on the
newer state, so it ends in a clear outcome (a 409 from a taken value or a pinned version, or
its change applied on top), never in a lost update or a duplicate. (An insert whose commit
acknowledgement was lost is retried by the recorder, which recognises its own stored events:
commands/recorder.py. An `IntegrityError` that reaches a handler is always a lost race.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, Concatenate, ParamSpec, TypeVar

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import BaseAggregate
from eventsourcing.persistence import IntegrityError

from commands import uniqueness
from commands.application import PanelApplication, Statements
from commands.context import Meta
from commands.errors import Conflict, NotFound
from events.pii import ErasedSubject

RETRIES = 8


E = TypeVar("E", bound=BaseAggregate[str])
T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")
UniqueValues = Callable[[Any], Mapping[str, str | None]]


def load(app: PanelApplication, stream: str, noun: str, entity_id: str) -> Any:
    try:
        with app.keys():
            return app.repository.get(stream)
    except AggregateNotFoundError:
        msg = f"{noun} {entity_id} not found"
        raise NotFound(msg) from None


def _with_keys(
    handle: Callable[Concatenate[PanelApplication, P], R],
) -> Callable[Concatenate[PanelApplication, P], R]:
    """One command, one use of personal-data keys (events/pii.py): its loads and its save,
    which stores a key it made in the transaction of the events sealed with it."""

    @functools.wraps(handle)
    def within(app: PanelApplication, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with app.keys(defer=True):
            return handle(app, *args, **kwargs)

    return within


@_with_keys
def create(
    app: PanelApplication,
    meta: Meta,
    entity_id: str,
    noun: str,
    make: Callable[[], E],
    unique_values: UniqueValues,
) -> tuple[E, int | None]:
    """Save a new entity; an id already taken is a 409.

    The first attempt guesses its unique values unused (no read before the save); a wrong
    guess collides like any lost race and the next attempt reads the records."""
    for attempt in range(RETRIES):
        entity = make()
        state = entity.state  # type: ignore[attr-defined]
        records = uniqueness.changes(
            app, meta, entity_id, {}, unique_values(state), noun, guess_new=attempt == 0
        )
        try:
            return entity, app.commit(entity, *records)
        except ErasedSubject:  # the id was a customer's, erased since: it stays taken
            msg = f"a {noun} with _id {entity_id} already exists"
            raise Conflict(msg) from None
        except IntegrityError:
            try:
                app.repository.get(entity.id)
            except AggregateNotFoundError:
                continue  # a uniqueness record moved under us: decide again
            msg = f"a {noun} with _id {entity_id} already exists"
            raise Conflict(msg) from None
    raise _busy(noun)


@_with_keys
def change(
    app: PanelApplication,
    meta: Meta,
    stream: str,
    entity_id: str,
    noun: str,
    decide: Callable[[E], T],
    unique_values: UniqueValues,
    also: Statements = (),
) -> tuple[E, T, int | None]:
    """Load, decide, save (with `also`'s statements in the same transaction). After a lost
    race the decision is made again on the newer state; a command pinned to a version
    (If-Match) then fails its version check (409)."""
    for _ in range(RETRIES):
        entity: E = load(app, stream, noun, entity_id)
        before = unique_values(entity.state)  # type: ignore[attr-defined]
        result = decide(entity)
        after = unique_values(entity.state)  # type: ignore[attr-defined]
        records = uniqueness.changes(app, meta, entity_id, before, after, noun)
        try:
            return entity, result, app.commit(entity, *records, also=also)
        except IntegrityError:
            continue  # a lost race: decide again on the newer state
    raise _busy(noun)


def _busy(noun: str) -> Conflict:
    return Conflict(f"the {noun} is being changed by other requests; try again")
