"""Ids and other anchored patterns match the whole value: Python's `$` also matches before a
final newline, so `re.match` let `"evil\n"` through as an id (a banner was stored under it)."""

from __future__ import annotations

import pytest

from beeoclock.ids import entity_id
from commands.errors import NotFound


@pytest.mark.parametrize("value", ["evil\n", "a\nb", "", "x" * 65, "a b"])
def test_an_id_with_anything_but_its_alphabet_is_not_found(value: str) -> None:
    with pytest.raises(NotFound):
        entity_id(value, "service")


def test_an_id_of_its_alphabet_is_itself() -> None:
    assert entity_id("67c2dd0f2b9a4c1d8e7f6a5b", "service") == "67c2dd0f2b9a4c1d8e7f6a5b"
    assert entity_id("a_B-9", "service") == "a_B-9"
