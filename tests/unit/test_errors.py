"""Every error leaves in the contract's one shape, mapped in one place."""

from __future__ import annotations

import logging

import psycopg
import pytest
from eventsourcing import persistence as es_persistence
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from beeoclock import errors
from beeoclock.auth import Forbidden, Unauthenticated
from beeoclock.consistency import NotCaughtUp, PositionsUnavailable
from beeoclock.gate import RequestGate
from beeoclock.settings import Settings
from commands.errors import Conflict, FieldError, InvalidCommand, NotFound, RuleViolation


def app_raising(exc: Exception) -> TestClient:
    app = FastAPI()
    errors.install(app)
    app.add_middleware(
        RequestGate, routes=app.router.routes, settings=Settings(jwt_secret="k" * 40)
    )

    @app.get("/boom")
    def boom() -> None:
        raise exc

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize(
    ("exc", "status", "error"),
    [
        (
            InvalidCommand("bad", [FieldError("email", "is not valid", "value: 'x'")]),
            400,
            "Bad Request",
        ),
        (Unauthenticated("no token"), 401, "Unauthorized"),
        (Forbidden("not yours"), 403, "Forbidden"),
        (NotFound("customer x not found"), 404, "Not Found"),
        (Conflict("taken"), 409, "Conflict"),
        (RuleViolation("no"), 422, "Unprocessable Entity"),
        (NotCaughtUp(), 503, "Service Unavailable"),
        (PositionsUnavailable("the read API is shutting down"), 503, "Service Unavailable"),
        (RuntimeError("a bug"), 500, "Internal Server Error"),
    ],
)
def test_each_error_maps_to_its_status_in_one_shape(
    exc: Exception, status: int, error: str
) -> None:
    response = app_raising(exc).get("/boom")
    assert response.status_code == status
    body = response.json()
    assert body["statusCode"] == status
    assert body["error"] == error
    assert isinstance(body["message"], str)
    assert response.headers["x-request-id"]
    if status == 400:
        assert body["errors"] == [
            {"error": "email", "message": "is not valid", "detail": "value: 'x'"}
        ]
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    if status == 503:
        assert response.headers["retry-after"] == "1"


def test_an_unexpected_error_reveals_nothing_of_itself() -> None:
    response = app_raising(RuntimeError("secret detail")).get("/boom")
    assert response.json() == {
        "statusCode": 500,
        "error": "Internal Server Error",
        "message": "internal error",
    }


def test_unknown_routes_and_methods_are_in_the_same_shape() -> None:
    client = app_raising(RuntimeError())
    assert client.get("/nowhere").json()["statusCode"] == 404
    assert client.post("/boom").json()["statusCode"] == 405


def _wrapped(cause: Exception) -> Exception:
    """As the `eventsourcing` library raises it: its own DataError, from psycopg's."""
    wrapped = es_persistence.DataError(str(cause))
    wrapped.__cause__ = cause
    return wrapped


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (
            psycopg.errors.NumericValueOutOfRange(
                'value "99999999999" is out of range for type integer'
            ),
            "a number in the request is out of range",
        ),
        (
            psycopg.errors.StringDataRightTruncation(
                "value too long for type character varying(50)"
            ),
            "a text in the request is too long",
        ),
        (
            psycopg.errors.CharacterNotInRepertoire(
                'invalid byte sequence for encoding "UTF8": 0x00'
            ),
            "a text in the request holds a character that can't be stored",
        ),
        (
            _wrapped(psycopg.errors.DatetimeFieldOverflow("date/time field value out of range")),
            "a date or time in the request is out of range",
        ),
        (
            psycopg.errors.InvalidTextRepresentation('invalid input syntax for type uuid: "x"'),
            "a value in the request can't be stored (out of range or malformed)",
        ),
    ],
    ids=["number", "too-long", "character", "datetime-wrapped", "other"],
)
def test_a_value_the_database_refuses_is_a_400_in_our_words_not_postgresqls(
    exc: Exception, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL's own text names types, columns and even the value: the client gets a fixed
    message, the log gets the SQLSTATE."""
    caplog.set_level(logging.WARNING, logger="beeoclock.errors")
    response = app_raising(exc).get("/boom")
    assert response.status_code == 400
    assert response.json() == {"statusCode": 400, "error": "Bad Request", "message": message}
    assert "SQLSTATE" in caplog.text


class Thing(BaseModel):
    name: str


def app_taking_json() -> TestClient:
    app = FastAPI()
    errors.install(app)

    @app.post("/things")
    def create(body: Thing) -> dict[str, str]:
        return {"name": body.name}

    return TestClient(app, raise_server_exceptions=False)


def test_a_body_without_a_content_type_is_415_like_any_body_that_is_not_json() -> None:
    """FastAPI does not parse a body without Content-Type (a browser sends one without a CORS
    preflight); it was a confusing 400 "Input should be a valid dictionary"."""
    client = app_taking_json()
    for headers in ({}, {"content-type": "text/plain"}):
        sent = client.post("/things", content=b'{"name": "A"}', headers=headers)
        assert sent.status_code == 415, sent.text
        assert sent.json() == {
            "statusCode": 415,
            "error": "Unsupported Media Type",
            "message": "send the body as JSON (Content-Type: application/json)",
        }
    assert client.post("/things", json={"name": "A"}).json() == {"name": "A"}
    # no body at all: nothing was sent in a wrong type; what is missing is the body
    assert client.post("/things").status_code == 400
