"""The orjson transcoder reads what the library's own JSON transcoder reads, the same way:
stored events written by either are read by both."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
)

from commands.application import OrjsonTranscoder

AT = datetime(2026, 11, 30, 12, 0, 1, 250000, tzinfo=UTC)


def transcoders() -> tuple[JSONTranscoder, JSONTranscoder]:
    pair = (JSONTranscoder(), OrjsonTranscoder())
    for transcoder in pair:
        for transcoding in (DatetimeAsISO(), DecimalAsStr()):
            transcoder.register(transcoding)
    return pair


@pytest.mark.parametrize(
    "state",
    [
        {"originator_id": "customer:t:c1", "timestamp": AT, "personal": {"sealed": "x"}},
        {"timestamp": AT, "state_history": [{"state": "active", "setAt": "2026-11-30"}]},
        {"timestamp": AT, "at": AT, "price": Decimal("12.50")},  # more than the timestamp
        {"created": AT, "note": 'a "_type_": in a string'},  # typed, but not `timestamp`
        {"timestamp": {"_type_": "decimal_str", "_data_": "3.5"}},  # written by hand
        {"timestamp": AT, "nested": {"id": "c1", "list": [AT, Decimal("1")]}},
        {"plain": [1, "two", None]},
        [AT, {"timestamp": AT}],
    ],
)
def test_both_read_the_same_bytes_the_same(state: Any) -> None:
    library, ours = transcoders()
    for written in (library.encode(state), ours.encode(state)):
        assert ours.decode(written) == library.decode(written)
        assert library.decode(written) == state or "decimal_str" in str(written)
