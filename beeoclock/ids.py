"""Entity ids: the client's 24-hex ObjectIds and anything of the same alphabet; never parsed."""

from __future__ import annotations

import re
import secrets
import time

from commands.errors import NotFound

ENTITY_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Path words of the read API that can't be ids.
RESERVED_IDS = frozenset({"paged"})


def entity_id(value: str, kind: str) -> str:
    """A path id: one that can't exist answers 404, like any id never created."""
    if not ENTITY_ID.fullmatch(value):
        msg = f"{kind} {value[:64]!r} not found"
        raise NotFound(msg)
    return value


def new_object_id() -> str:
    """A 24-hex id shaped like the client's MongoDB ObjectIds: seconds, then random bytes."""
    return f"{int(time.time()):08x}{secrets.token_hex(8)}"
