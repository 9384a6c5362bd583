"""Text that may enter the system: printable only (PostgreSQL refuses NUL in text, and control
characters have no business in names or search phrases)."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x1f\x7f]")
#: half of a UTF-16 pair on its own: JSON's `\ud800` escapes decode to it, but it is no
#: character, and no UTF-8 text (an event, a row) can hold it
_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(value: str, *, multiline: bool = False) -> str:
    """Return the value, or raise ValueError if it holds control characters (newlines and tabs
    are allowed when `multiline`) or a lone surrogate."""
    if (_CONTROL if multiline else _CONTROL_OR_NEWLINE).search(value):
        msg = "must not contain control characters"
        raise ValueError(msg)
    if _SURROGATE.search(value):
        msg = "must be Unicode text (it holds half of a UTF-16 surrogate pair)"
        raise ValueError(msg)
    return value
