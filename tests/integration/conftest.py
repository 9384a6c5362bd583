"""Integration tests drive one component directly, so each module gets a database of its own
that no running relay or projector follows (the session's end-to-end stack would otherwise
project the events these tests write, before they do)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from beeoclock.settings import Settings
from tests.support import create_database, drop_database, settings_for


@pytest.fixture(scope="module")
def settings(servers: dict[str, str]) -> Iterator[Settings]:
    url = create_database(servers["postgres"])
    yield settings_for(url, servers["kafka"], servers["redis"])
    drop_database(servers["postgres"], url)
