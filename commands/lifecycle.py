"""Decisions every entity shares: its state history (CONTRACT.md, Common DTO fields) and the
version a change may be pinned to (If-Match)."""

from __future__ import annotations

from datetime import datetime

from commands.errors import Conflict
from events.timefmt import iso_ms

StateEntry = dict[str, str]


def first_history(state: str, sent: list[StateEntry], at: datetime) -> list[StateEntry]:
    """On creation, a sent history is kept; `[]` becomes one entry for the initial state."""
    return list(sent) or [{"state": state, "setAt": iso_ms(at)}]


def next_history(
    current: str, history: list[StateEntry], state: str, sent: list[StateEntry], at: datetime
) -> list[StateEntry]:
    """A sent history is stored verbatim; `[]` keeps the stored one, appending on change."""
    if sent:
        return list(sent)
    if state != current:
        return [*history, {"state": state, "setAt": iso_ms(at)}]
    return history


def check_version(noun: str, version: int, expected: int | None) -> None:
    """A change pinned to a version that is no longer the entity's is a conflict (409)."""
    if expected is not None and expected != version:
        msg = f"{noun} is at version {version}, not {expected}"
        raise Conflict(msg)
