"""An entity's history as its users read it: each event with who, when, under which request,
and what it changed in the entity's DTO (pure; the event store read is read_api/history.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from events.base import PanelEvent, event_data
from events.pii import ERASED, is_erased
from events.timefmt import iso_ms

#: DTO fields every event changes, or that never change: not worth listing
_NOISE = frozenset({"_version", "updatedAt", "object"})

Dto = dict[str, Any]


def changes(before: Dto | None, after: Dto) -> dict[str, dict[str, Any]]:
    """{field: {"from": old, "to": new}} for every DTO field whose value differs."""
    old = before or {}
    return {
        name: {"from": old.get(name), "to": value}
        for name, value in after.items()
        if name not in _NOISE and old.get(name) != value
    }


def entries(
    before: Any,
    events: Iterable[PanelEvent],
    evolve: Callable[[Any, PanelEvent], Any],
    to_dto: Callable[[Any], Dto],
) -> Iterator[Dto]:
    """The history entries of `events`, folded onto `before` (the state before the first of
    them, None for an entity's first event).

    An event whose personal data was erased still says which fields it set: each as ERASED."""
    state = before
    for event in events:
        after = evolve(state, event)
        before_dto = to_dto(state) if state is not None else None
        changed = changes(before_dto, to_dto(after))
        personal: dict[str, Any] = getattr(event, "personal", None) or {}
        if is_erased(personal):
            for name in personal:
                changed[name] = {"from": (before_dto or {}).get(name), "to": ERASED}
        yield {**_heading(event), "changes": changed}
        state = after


def event_record(event: PanelEvent) -> Dto:
    """An event as audits and exports show it: who, when, under which request, and what it
    said (personal data as the caller could open it)."""
    return {**_heading(event), "data": event_data(vars(event))}


def _heading(event: PanelEvent) -> Dto:
    """What history, audits and exports say of every event: which, when, by whom."""
    return {
        "version": event.originator_version,
        "type": type(event).__name__,
        "at": iso_ms(event.timestamp),
        "actor": event.actor,
        "requestId": event.request_id,
    }
