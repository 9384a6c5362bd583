"""The one place where errors become HTTP answers, in the NestJS shape the panel client reads:
`{"statusCode", "error", "message", "errors": [{"error", "message", "detail"}]}`."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import orjson
import psycopg
from eventsourcing import persistence as es_persistence
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException
from starlette.responses import Response

from beeoclock.auth import Forbidden, Unauthenticated
from beeoclock.consistency import NotCaughtUp, PositionsUnavailable
from commands.errors import (
    Conflict,
    DomainError,
    FieldError,
    InvalidCommand,
    NotFound,
    PayloadTooLarge,
    RuleViolation,
    UnsupportedMedia,
)
from projections.paging import BadCursor

log = logging.getLogger(__name__)


class Overloaded(Exception):
    """The process is at its bound for this kind of work; the client should retry shortly."""


_STATUS: dict[type[Exception], int] = {
    InvalidCommand: 400,
    BadCursor: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    PayloadTooLarge: 413,
    UnsupportedMedia: 415,
    RuleViolation: 422,
    NotCaughtUp: 503,
    PositionsUnavailable: 503,
    Overloaded: 503,
    # A store that is briefly unreachable: the client may retry; nothing was half-done.
    es_persistence.OperationalError: 503,
    es_persistence.InterfaceError: 503,
    psycopg.OperationalError: 503,
    PoolTimeout: 503,
    # A value PostgreSQL refuses (validation should have caught it): the caller's input.
    psycopg.DataError: 400,
    es_persistence.DataError: 400,
}


#: A value PostgreSQL refused, by SQLSTATE, in words for the client. PostgreSQL's own text
#: names types and columns, and often holds the value itself: it is never sent, nor logged.
_DATA_ERRORS = {
    "22003": "a number in the request is out of range",
    "22001": "a text in the request is too long",
    "22021": "a text in the request holds a character that can't be stored",
    "22P05": "a text in the request holds a character that can't be stored",
    "22008": "a date or time in the request is out of range",
    "22007": "a date or time in the request is out of range",
}
_DATA_ERROR = "a value in the request can't be stored (out of range or malformed)"


def _data_error_message(exc: Exception) -> str:
    """The client's message for a value the database refused (logged by its SQLSTATE only:
    PostgreSQL's text may hold personal data, and no personal data reaches the logs)."""
    cause = exc if isinstance(exc, psycopg.Error) else exc.__cause__
    sqlstate = cause.sqlstate if isinstance(cause, psycopg.Error) else None
    log.warning(
        "a value the database refused reached it (validation should catch it): %s, SQLSTATE %s",
        type(cause or exc).__name__,
        sqlstate,
    )
    return _DATA_ERRORS.get(sqlstate or "", _DATA_ERROR)


#: NestJS's names where Python's differ (and change between Python versions).
_PHRASES = {413: "Payload Too Large", 422: "Unprocessable Entity"}


def error_response(
    status: int,
    message: str,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "statusCode": status,
        "error": _PHRASES.get(status) or HTTPStatus(status).phrase,
        "message": message,
    }
    if errors:
        body["errors"] = [
            {"error": e.field, "message": e.message, **({"detail": e.detail} if e.detail else {})}
            for e in errors
        ]
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def _field_errors(exc: RequestValidationError) -> list[FieldError]:
    found = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":  # its loc is the character where it stopped
            reason = str((err.get("ctx") or {}).get("error") or "").lower()
            at = err.get("loc", ("body", None))[-1]
            found.append(
                FieldError("body", "is not valid JSON", f"{reason} at character {at}".strip())
            )
            continue
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        detail = None
        if "input" in err and err.get("type") != "missing":
            detail = f"value: {str(err['input'])[:80]!r}"
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        found.append(FieldError(".".join(loc) or "body", message, detail))
    return found


def _not_json(request: Request, exc: RequestValidationError) -> bool:
    """A body that failed as a whole, sent as something other than JSON: FastAPI does not
    parse it, so the fault is its media type (415), not its fields. That includes a body sent
    without any Content-Type: FastAPI (`strict_content_type`, its default) leaves it unparsed,
    as it should: a browser sends such a body cross-site without a CORS preflight. A request
    with no body at all is not that: what it lacks is the body (400)."""
    given = request.headers.get("content-type")
    if not given:
        return isinstance(exc.body, bytes) and bool(exc.body)
    media = given.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return False
    return any(tuple(err.get("loc", ())) == ("body",) for err in exc.errors())


def install(app: FastAPI) -> None:
    async def known(_: Request, exc: Exception) -> Response:
        status = next(s for t, s in _STATUS.items() if isinstance(exc, t))
        errors = exc.errors if isinstance(exc, DomainError) else None
        headers = {"Retry-After": "1"} if status == 503 else None
        if status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        message = exc.message if isinstance(exc, DomainError) else str(exc)
        if isinstance(exc, psycopg.DataError | es_persistence.DataError):
            message = _data_error_message(exc)
        elif isinstance(exc, NotCaughtUp):
            message = "the read models have not caught up with your last write yet; retry"
        elif isinstance(exc, Overloaded):
            message = str(exc)
        elif status == 503:
            log.warning("storage unavailable: %r", exc)
            message = "storage is unavailable; retry"
        return error_response(status, message, errors, headers)

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        if _not_json(request, exc):
            message = "send the body as JSON (Content-Type: application/json)"
            return error_response(415, message)
        errors = _field_errors(exc)
        message = "; ".join(
            e.message if e.field == "body" else f"{e.field} {e.message}" for e in errors[:5]
        )
        return error_response(400, message or "invalid request", errors)

    async def http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_response(
            exc.status_code, str(exc.detail), headers=dict(exc.headers) if exc.headers else None
        )

    for exc_type in _STATUS:
        app.add_exception_handler(exc_type, known)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http)
