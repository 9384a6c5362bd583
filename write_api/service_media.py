"""Service media write routes, in both forms the contract names:

- the docs': `POST /api/v1/service/{id}/media` (multipart `file`, optional `description`),
  201 with the new banner's MediaDto; `DELETE /api/v1/service/{id}/media/{mediaId}`;
- the real client's: `PATCH /api/v1/service-media/{serviceId}/banners` (multipart `file`,
  optional `_id` of a banner to replace: same `_id`, same position), 200 with the banner's
  MediaDto (an update of the service's banners, not a new resource: a given `_id` the service
  has no banner with becomes a new banner with that `_id`, like entity ids);
  `DELETE /api/v1/service-media/{serviceId}/{mediaId}`.

A DELETE answers 200 with the removed banner's MediaDto (state `deleted`); the bytes stay in
the blob store (content-addressed and shared, they are never rewritten). `ETag` is the
service's version, for `If-Match` on its next change; `If-Match` works here too.

The body is read through a bound: past MAX_UPLOAD_BYTES (plus room for the form's other
parts) the upload is 413, and nothing beyond that bound is kept in memory or on disk. The
image is then decoded and cleaned in a worker thread (commands/images.py), its bytes stored
in the blob store, and only then the event saved: an acknowledged event never points at a
missing blob. (A save that fails after the blob was stored leaves an unreferenced blob:
harmless, and content-addressed, so a retry reuses it.)
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import anyio.to_thread
import orjson
from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.responses import Response

from beeoclock.blobs import BlobStore
from beeoclock.deps import ExpectedVersionDep, MetaDep, PrincipalDep
from beeoclock.errors import Overloaded
from beeoclock.ids import ENTITY_ID, entity_id, new_object_id
from beeoclock.text import printable
from commands import service_handlers as handlers
from commands.application import PanelApplication
from commands.context import Meta
from commands.errors import FieldError, InvalidCommand, PayloadTooLarge, UnsupportedMedia
from commands.images import MAX_UPLOAD_BYTES, CleanImage, inspect_image
from commands.service import PutServiceBanner, RemoveServiceBanner
from events.service import Banner, ServiceState
from write_api.deps import ApplicationDep

router = APIRouter(tags=["service media"])

#: Room for the multipart framing and the small fields beside the file.
FORM_OVERHEAD = 64 * 1024
#: An oversized body is read (and dropped) up to this much, so that the client, still
#: sending, reads the 413 instead of a reset connection; past it the connection is dropped.
DRAIN_LIMIT = 4 * MAX_UPLOAD_BYTES
MAX_DESCRIPTION = 1000
#: Uploads a process takes at once (each holds up to MAX_UPLOAD_BYTES); more are 503.
MAX_UPLOADS_IN_FLIGHT = 8
#: Decoding takes up to a few hundred MB and a core: two at a time per process, waiting
#: OUTSIDE the shared thread pool, so queued uploads never starve other requests' threads.
DECODERS = 2
_uploads_in_flight = 0
_decoders: anyio.CapacityLimiter | None = None


def _decoder_limiter() -> anyio.CapacityLimiter:
    global _decoders
    if _decoders is None:
        _decoders = anyio.CapacityLimiter(DECODERS)
    return _decoders


_UPLOAD_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "a JPEG, PNG or WebP image, at most 5 MiB",
                        },
                        "description": {"type": "string", "maxLength": MAX_DESCRIPTION},
                        "_id": {
                            "type": "string",
                            "description": "PATCH banners only: the banner to replace",
                        },
                    },
                }
            }
        },
    }
}


async def get_blob_store(request: Request) -> BlobStore:
    store: BlobStore = request.app.state.blob_store
    return store


BlobStoreDep = Annotated[BlobStore, Depends(get_blob_store)]


@dataclass(frozen=True)
class Upload:
    """The file's bytes (at most MAX_UPLOAD_BYTES + 1) and the form's text fields."""

    data: bytes
    fields: dict[str, str]


def _too_large() -> PayloadTooLarge:
    msg = f"the upload is larger than {MAX_UPLOAD_BYTES} bytes"
    return PayloadTooLarge(msg, [FieldError("file", msg)])


async def _bounded(stream: AsyncIterator[bytes], limit: int) -> AsyncGenerator[bytes, None]:
    received = 0
    async for chunk in stream:
        received += len(chunk)
        if received <= limit:
            yield chunk
        elif received > DRAIN_LIMIT:
            break
    if received > limit:
        raise _too_large()


async def read_upload(request: Request, _: PrincipalDep) -> AsyncIterator[Upload]:
    """The multipart body's `file` (bytes) and its text fields, read within the bound, and
    only once the caller is authenticated; at most MAX_UPLOADS_IN_FLIGHT at once."""
    global _uploads_in_flight
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        # the body's media type is wrong (JSON, a bare image, none at all): 415, as any other
        # body sent in a type the route does not take; a form without `file` is a 400
        msg = "send the image as multipart/form-data with a `file` part"
        raise UnsupportedMedia(msg)
    limit = MAX_UPLOAD_BYTES + FORM_OVERHEAD
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large()
    if _uploads_in_flight >= MAX_UPLOADS_IN_FLIGHT:
        msg = "too many uploads at once; retry shortly"
        raise Overloaded(msg)
    _uploads_in_flight += 1
    try:
        yield await _read_form(request, limit)
    finally:
        _uploads_in_flight -= 1


async def _read_form(request: Request, limit: int) -> Upload:
    parser = MultiPartParser(
        request.headers,
        _bounded(request.stream(), limit),
        max_files=1,
        max_fields=8,
        max_part_size=16 * 1024,
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InvalidCommand(f"the multipart body is invalid: {exc.message}") from None
    try:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            msg = "a `file` part with the image is required"
            raise InvalidCommand(msg, [FieldError("file", "is required")])
        data = await file.read(MAX_UPLOAD_BYTES + 1)
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    finally:
        await form.close()
    return Upload(data, fields)


UploadDep = Annotated[Upload, Depends(read_upload)]


def _description(upload: Upload) -> str | None:
    value = upload.fields.get("description")
    if value is None or not value.strip():
        return None
    try:
        printable(value, multiline=True)
    except ValueError as exc:
        raise InvalidCommand(f"description {exc}", [FieldError("description", str(exc))]) from None
    if len(value) > MAX_DESCRIPTION:
        msg = f"must be at most {MAX_DESCRIPTION} characters"
        raise InvalidCommand(f"description {msg}", [FieldError("description", msg)])
    return value.strip()


def _media_id(upload: Upload) -> str | None:
    value = upload.fields.get("_id")
    if value is None or not value.strip():
        return None
    if not ENTITY_ID.fullmatch(value):
        msg = "is not a media id"
        raise InvalidCommand(f"_id {msg}", [FieldError("_id", msg, f"value: {value[:80]!r}")])
    return value


async def _store_banner(
    app: PanelApplication,
    blobs: BlobStore,
    meta: Meta,
    service_id: str,
    media_id: str,
    upload: Upload,
    description: str | None,
    expected_version: int | None,
) -> handlers.BannerOutcome:
    """Check the service may take the banner (404, 409, 422 before any decoding), decode and
    clean, store the bytes, then save the event."""
    service = await run_in_threadpool(handlers.load_service, app, meta.tenant_id, service_id)
    service.check_banner(media_id, expected_version)
    image = await anyio.to_thread.run_sync(inspect_image, upload.data, limiter=_decoder_limiter())
    return await run_in_threadpool(
        _save_banner, app, blobs, meta, service_id, media_id, image, description, expected_version
    )


def _save_banner(
    app: PanelApplication,
    blobs: BlobStore,
    meta: Meta,
    service_id: str,
    media_id: str,
    image: CleanImage,
    description: str | None,
    expected_version: int | None,
) -> handlers.BannerOutcome:
    blobs.put(image.sha256, image.data, image.content_type)
    return handlers.put_banner(
        app,
        PutServiceBanner(
            meta=meta,
            service_id=service_id,
            media_id=media_id,
            image={
                "sha256": image.sha256,
                "contentType": image.content_type,
                "format": image.format,
                "width": image.width,
                "height": image.height,
                "size": image.size,
            },
            description=description,
            expected_version=expected_version,
        ),
    )


def media_response(
    state: ServiceState, banner: Banner, status: int, position: int | None, media_state: str
) -> Response:
    headers = {"ETag": f'"{state.version}"'}
    if position is not None:
        headers["X-Event-Position"] = str(position)
    body = orjson.dumps(state.media_dto(banner, media_state))
    return Response(body, status, headers, media_type="application/json")


@router.post("/api/v1/service/{service_id}/media", status_code=201, openapi_extra=_UPLOAD_SCHEMA)
async def upload_service_media(
    service_id: str,
    meta: MetaDep,
    expected_version: ExpectedVersionDep,
    upload: UploadDep,
    app: ApplicationDep,
    blobs: BlobStoreDep,
) -> Response:
    """Add a banner (the docs' form)."""
    outcome = await _store_banner(
        app,
        blobs,
        meta,
        entity_id(service_id, "service"),
        new_object_id(),
        upload,
        _description(upload),
        expected_version,
    )
    return media_response(outcome.state, outcome.banner, 201, outcome.position, "active")


@router.patch("/api/v1/service-media/{service_id}/banners", openapi_extra=_UPLOAD_SCHEMA)
async def put_service_banner(
    service_id: str,
    meta: MetaDep,
    expected_version: ExpectedVersionDep,
    upload: UploadDep,
    app: ApplicationDep,
    blobs: BlobStoreDep,
) -> Response:
    """Add a banner, or replace the banner `_id` (the real client's form)."""
    outcome = await _store_banner(
        app,
        blobs,
        meta,
        entity_id(service_id, "service"),
        _media_id(upload) or new_object_id(),
        upload,
        _description(upload),
        expected_version,
    )
    return media_response(outcome.state, outcome.banner, 200, outcome.position, "active")


def _remove(
    app: PanelApplication,
    meta: Meta,
    service_id: str,
    media_id: str,
    expected_version: int | None,
) -> Response:
    outcome = handlers.remove_banner(
        app,
        RemoveServiceBanner(
            meta=meta,
            service_id=entity_id(service_id, "service"),
            media_id=entity_id(media_id, "media"),
            expected_version=expected_version,
        ),
    )
    return media_response(outcome.state, outcome.banner, 200, outcome.position, "deleted")


@router.delete("/api/v1/service/{service_id}/media/{media_id}")
def delete_service_media(
    service_id: str,
    media_id: str,
    meta: MetaDep,
    app: ApplicationDep,
    expected_version: ExpectedVersionDep,
) -> Response:
    """Remove a banner (the docs' form)."""
    return _remove(app, meta, service_id, media_id, expected_version)


@router.delete("/api/v1/service-media/{service_id}/{media_id}")
def delete_service_banner(
    service_id: str,
    media_id: str,
    meta: MetaDep,
    app: ApplicationDep,
    expected_version: ExpectedVersionDep,
) -> Response:
    """Remove a banner (the real client's form)."""
    return _remove(app, meta, service_id, media_id, expected_version)
