"""Request bodies are bounded before they are buffered: declared or streamed, in the
contract's error shape; routes with their own bound are exempt."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request
from pydantic import BaseModel

from beeoclock import errors
from beeoclock.bodylimit import BodySizeLimit


class Body(BaseModel):
    text: str


def app() -> FastAPI:
    api = FastAPI()
    errors.install(api)
    api.add_middleware(BodySizeLimit, exempt=[r"^/upload$"], max_bytes=1000)

    @api.post("/json")
    async def json_route(body: Body) -> dict[str, int]:
        return {"length": len(body.text)}

    @api.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        return {"length": len(await request.body())}

    return api


def post(path: str, content: bytes | AsyncIterator[bytes]) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app())
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post(
                path, content=content, headers={"content-type": "application/json"}
            )

    return asyncio.run(go())


def test_a_body_within_the_bound_is_served() -> None:
    assert post("/json", b'{"text": "' + b"x" * 900 + b'"}').json() == {"length": 900}


def test_a_declared_body_over_the_bound_is_413_in_the_contract_shape() -> None:
    answer = post("/json", b'{"text": "' + b"x" * 2000 + b'"}')
    assert answer.status_code == 413
    assert answer.json()["statusCode"] == 413
    assert "larger than 1000 bytes" in answer.json()["message"]


def test_a_streamed_body_over_the_bound_is_413_without_reading_it_all() -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"text": "'
        for _ in range(1000):
            sent += 1
            yield b"x" * 500

    answer = post("/json", chunks())
    assert answer.status_code == 413
    assert answer.json()["error"] == "Payload Too Large"
    assert sent < 10


def test_an_exempt_route_bounds_its_own_body() -> None:
    assert post("/upload", b"x" * 5000).json() == {"length": 5000}
