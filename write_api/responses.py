"""Write responses: the DTO, its ETag, and the event position for read-your-writes."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


def entity_response(dto: dict[str, Any], status: int, position: int | None) -> Response:
    headers = {"ETag": f'"{dto["_version"]}"'}
    if position is not None:
        headers["X-Event-Position"] = str(position)
    return Response(orjson.dumps(dto), status, headers, media_type="application/json")
