"""Bounded request bodies: a JSON body over MAX_BODY_BYTES is refused with 413 before it is
buffered, whether it declares its length or streams it in chunks.

Routes that bound their own bodies (media uploads, see write_api/service_media.py) are
exempt by path. Bounding bodies also bounds events: no valid request can produce an event too
large for the broker (which would otherwise stall the relay for every tenant)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from starlette.exceptions import HTTPException

from beeoclock.errors import error_response

MAX_BODY_BYTES = 1024 * 1024


class BodySizeLimit:
    def __init__(
        self, app: Any, exempt: Iterable[str] = (), max_bytes: int = MAX_BODY_BYTES
    ) -> None:
        self.app = app
        self.exempt = [re.compile(p) for p in exempt]
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or any(p.match(scope["path"]) for p in self.exempt):
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await error_response(413, self._message())(scope, receive, send)
            return
        received = 0

        async def bounded_receive() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI lets an HTTPException raised while reading the body through
                    # to the error handlers, which answer in the contract's shape.
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, bounded_receive, send)

    def _message(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes"
