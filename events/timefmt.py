"""The wire format of instants: ISO-8601 in UTC with milliseconds and a `Z`."""

from __future__ import annotations

from datetime import UTC, datetime

#: the instants a client may send (createdAt): anything else is a typo, not a date
EARLIEST_YEAR, LATEST_YEAR = 1900, 9998


def iso_ms(moment: datetime) -> str:
    utc = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (  # noqa: UP031 (the fastest, on a hot path)
        utc.year,
        utc.month,
        utc.day,
        utc.hour,
        utc.minute,
        utc.second,
        utc.microsecond // 1000,
    )


def client_instant(text: str) -> str:
    """A client's ISO-8601 instant in the wire format; ValueError if it isn't one or lies
    outside the years EARLIEST_YEAR..LATEST_YEAR."""
    try:
        moment = parse_iso(text)
        wire = iso_ms(moment)
    except (ValueError, OverflowError):
        moment = None
    if moment is None or not EARLIEST_YEAR <= moment.astimezone(UTC).year <= LATEST_YEAR:
        msg = "must be an ISO-8601 date-time such as 2025-02-25T09:37:56.085Z"
        raise ValueError(msg)
    return wire


def parse_iso(text: str) -> datetime:
    """Parse an ISO-8601 instant (a trailing `Z` allowed); naive means UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
