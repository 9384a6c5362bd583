"""The bytes of a service's banners: GET /api/v1/service-media/{serviceId}/{mediaId}.

Tenant-scoped like every read: the banner is looked up in the tenant's service read model
(another tenant's ids are 404), then its bytes in the blob store by content hash. The
MediaDto's `url` names the content (`?v=<hash prefix>`), so that URL's answer never changes
and may be cached for a year (`immutable`); the same path without `v`, or with an old `v`,
answers the current image with `no-cache` (revalidate with `If-None-Match`, 304).
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from starlette.responses import Response

from beeoclock.blobs import AsyncBlobReader
from beeoclock.ids import entity_id
from commands.errors import NotFound
from projections import services
from read_api.deps import READ_HEADERS, Reader, Reading

log = logging.getLogger(__name__)

router = APIRouter(tags=["service media"])
ReadingDep = Annotated[Reading, Depends(Reader(services.STREAM))]
IMMUTABLE = "private, max-age=31536000, immutable"
REVALIDATE = "private, no-cache"


async def get_blob_reader(request: Request) -> AsyncBlobReader:
    reader: AsyncBlobReader = request.app.state.blob_reader
    return reader


BlobReaderDep = Annotated[AsyncBlobReader, Depends(get_blob_reader)]


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


@router.get("/api/v1/service-media/{service_id}/{media_id}", openapi_extra=READ_HEADERS)
async def get_service_media(
    service_id: str,
    media_id: str,
    reading: ReadingDep,
    blobs: BlobReaderDep,
    v: Annotated[str | None, Query(max_length=64)] = None,
    if_none_match: Annotated[str | None, Header(max_length=1024)] = None,
) -> Response:
    entity_id(service_id, "service")
    entity_id(media_id, "media")
    async with reading.pool.connection(reading.tenant_id) as conn:
        sha256 = await services.find_media_hash(conn, reading.tenant_id, service_id, media_id)
    if sha256 is None:
        msg = f"media {media_id} not found"
        raise NotFound(msg)
    etag = f'"{sha256}"'
    current = v is not None and len(v) >= 16 and sha256.startswith(v)
    headers = {
        "ETag": etag,
        "Cache-Control": IMMUTABLE if current else REVALIDATE,
        "X-Content-Type-Options": "nosniff",
    }
    if _matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    blob = await blobs.get(sha256)
    if blob is None:
        log.error("blob %s of media %s/%s is missing", sha256, service_id, media_id)
        msg = f"media {media_id} not found"
        raise NotFound(msg)
    headers["Content-Disposition"] = "inline"
    return Response(blob.data, 200, headers, media_type=blob.content_type)
