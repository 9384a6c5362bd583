"""Logging for every process: one JSON object per line on stderr."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("kafka", "eventsourcing", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


_access = logging.getLogger("beeoclock.access")


def access(fields: dict[str, object]) -> None:
    """One access-log line, in the shape of every other line (logger `beeoclock.access`),
    written straight to the stream: the logging machinery costs more than a request."""
    if not _access.isEnabledFor(logging.INFO):
        return
    entry = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "level": "info",
        "logger": "beeoclock.access",
        "message": "request",
        **fields,
    }
    sys.stderr.write(orjson.dumps(entry).decode() + "\n")
