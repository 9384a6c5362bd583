"""Service banners end to end: both route forms, real images only, metadata stripped, bytes
served with the right headers, banners surviving a PUT, and tenant isolation of the bytes."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import httpx
import psycopg
import pytest
from PIL import Image

from beeoclock.settings import Settings
from tests.e2e.test_customer_slice import assert_error
from tests.e2e.test_service_api import create
from tests.support import Tenant, new_tenant


def image(
    fmt: str = "PNG", size: tuple[int, int] = (40, 20), color: str = "red", **kw: Any
) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, fmt, **kw)
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def pixel_bomb(side: int = 20000) -> bytes:
    """A valid 1-bit PNG of side x side pixels, a few dozen KB on the wire."""
    row = b"\x00" * (1 + (side + 7) // 8)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", data)
        + _chunk(b"IEND", b"")
    )


def upload(
    tenant: Tenant,
    path: str,
    data: bytes,
    name: str = "banner.png",
    content_type: str = "image/png",
    method: str = "POST",
    **fields: str,
) -> httpx.Response:
    return tenant.request(
        method, path, files={"file": (name, data, content_type)}, data=fields or None
    )


def add_banner(tenant: Tenant, service_id: str, data: bytes, **fields: str) -> dict[str, Any]:
    added = upload(tenant, f"/api/v1/service/{service_id}/media", data, **fields)
    assert added.status_code == 201, added.text
    dto: dict[str, Any] = added.json()
    return dto


def patch_banner(tenant: Tenant, service_id: str, data: bytes, **fields: str) -> httpx.Response:
    path = f"/api/v1/service-media/{service_id}/banners"
    return upload(tenant, path, data, method="PATCH", **fields)


def banners(tenant: Tenant, service_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = tenant.get(f"/api/v1/service/{service_id}").json()[
        "presentation"
    ]["banners"]
    return found


def test_an_uploaded_banner_is_a_media_dto_and_its_url_serves_the_bytes(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    service = create(tenant)
    added = upload(tenant, f"/api/v1/service/{service['_id']}/media", image(), description="Front")
    assert added.status_code == 201, added.text
    assert added.headers["ETag"] == '"2"'
    assert int(added.headers["X-Event-Position"]) > 0
    media = added.json()
    assert media["object"] == "MediaDto"
    assert media["mediaType"] == "serviceBanner"
    assert media["description"] == "Front"
    assert media["state"] == "active"
    assert media["_version"] == "1"
    assert media["stateHistory"] == [{"state": "active", "setAt": media["createdAt"]}]
    assert media["metadata"]["object"] == "MediaMetadataDto"
    assert (media["metadata"]["width"], media["metadata"]["height"]) == (40, 20)
    assert media["metadata"]["format"] == "png"
    assert banners(tenant, service["_id"]) == [media]

    served = tenant.get(media["url"])
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/png"
    assert served.headers["cache-control"] == "private, max-age=31536000, immutable"
    assert served.headers["x-content-type-options"] == "nosniff"
    assert len(served.content) == media["metadata"]["size"]
    assert Image.open(io.BytesIO(served.content)).size == (40, 20)
    etag = served.headers["etag"]
    unchanged = tenant.get(media["url"], headers={"If-None-Match": etag})
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    bare = tenant.get(media["url"].split("?")[0])  # no content version: revalidate
    assert bare.status_code == 200
    assert bare.headers["cache-control"] == "private, no-cache"
    assert bare.content == served.content


@pytest.mark.parametrize(("fmt", "mime"), [("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_jpeg_and_webp_are_accepted_and_served_as_such(
    client: httpx.Client, settings: Settings, fmt: str, mime: str
) -> None:
    tenant = new_tenant(client, settings)
    service = create(tenant)
    media = add_banner(tenant, service["_id"], image(fmt))
    assert media["metadata"]["format"] == fmt.lower()
    served = tenant.get(media["url"])
    assert served.headers["content-type"] == mime


def test_image_metadata_is_stripped(client: httpx.Client, settings: Settings) -> None:
    tenant = new_tenant(client, settings)
    service = create(tenant)
    exif = Image.Exif()
    exif[0x010E] = "secret description"  # ImageDescription
    exif[0x8825] = {1: "N", 2: (52.0, 13.0, 0.0)}  # GPSInfo
    original = image("JPEG", exif=exif.tobytes(), comment=b"a comment")
    assert b"secret description" in original
    media = add_banner(tenant, service["_id"], original)
    served = tenant.get(media["url"]).content
    assert b"secret description" not in served
    assert b"a comment" not in served
    assert not Image.open(io.BytesIO(served)).getexif()


def test_the_real_clients_patch_adds_then_replaces_a_banner_in_place(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    service = create(tenant)
    first = patch_banner(tenant, service["_id"], image(color="red"))
    assert first.status_code == 200, first.text
    second = patch_banner(tenant, service["_id"], image(color="blue"))
    old, other = first.json(), second.json()
    replaced = patch_banner(
        tenant, service["_id"], image("WEBP", (64, 48), "green"), _id=old["_id"]
    )
    assert replaced.status_code == 200, replaced.text
    new = replaced.json()
    assert new["_id"] == old["_id"]
    assert new["_version"] == "2"
    assert new["createdAt"] == old["createdAt"]
    assert new["metadata"]["format"] == "webp"
    assert (new["metadata"]["width"], new["metadata"]["height"]) == (64, 48)
    assert new["url"] != old["url"]
    assert [b["_id"] for b in banners(tenant, service["_id"])] == [old["_id"], other["_id"]]
    assert tenant.get(new["url"]).headers["content-type"] == "image/webp"
    # the old URL names old content: it is no longer served as immutable
    stale = tenant.get(old["url"])
    assert stale.headers["cache-control"] == "private, no-cache"
    assert stale.headers["content-type"] == "image/webp"


def test_a_put_sending_no_banners_keeps_the_stored_banners(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    service = create(tenant)
    media = add_banner(tenant, service["_id"], image())
    current = tenant.get(f"/api/v1/service/{service['_id']}").json()
    for presentation in ({"color": "#00ff00", "banners": []}, {"color": "#00ff00"}):
        updated = tenant.put(
            f"/api/v1/service/{service['_id']}", json={**current, "presentation": presentation}
        )
        assert updated.status_code == 200, updated.text
        assert updated.json()["presentation"]["banners"] == [media]
    assert banners(tenant, service["_id"]) == [media]


@pytest.mark.parametrize("form", ["docs", "client"])
def test_a_removed_banner_is_gone_and_its_url_answers_404(
    client: httpx.Client, settings: Settings, form: str
) -> None:
    """Removing it again is 200 with the same MediaDto, as the contract's soft deletes are
    (it was 404), and changes nothing; a banner never there is 404."""
    tenant = new_tenant(client, settings)
    service = create(tenant)
    keep = add_banner(tenant, service["_id"], image(color="blue"))
    media = add_banner(tenant, service["_id"], image())
    if form == "docs":
        path = f"/api/v1/service/{service['_id']}/media/{media['_id']}"
    else:
        path = f"/api/v1/service-media/{service['_id']}/{media['_id']}"
    removed = tenant.delete(path)
    assert removed.status_code == 200, removed.text
    assert removed.json()["_id"] == media["_id"]
    assert removed.json()["state"] == "deleted"
    assert [h["state"] for h in removed.json()["stateHistory"]] == ["active", "deleted"]
    assert removed.json()["updatedAt"] == removed.json()["stateHistory"][-1]["setAt"]
    assert banners(tenant, service["_id"]) == [keep]
    assert_error(tenant.get(media["url"]), 404)
    version = tenant.get(f"/api/v1/service/{service['_id']}").json()["_version"]
    again = tenant.delete(path)
    assert again.status_code == 200, again.text
    assert again.json() == removed.json()
    assert tenant.get(f"/api/v1/service/{service['_id']}").json()["_version"] == version
    assert_error(tenant.delete(path.replace(media["_id"], "a" * 24)), 404)
    assert tenant.get(keep["url"]).status_code == 200
    # added again under its id, then removed again: the repeat answers the last removal
    back = patch_banner(tenant, service["_id"], image(color="green"), _id=media["_id"])
    assert back.status_code == 200, back.text
    last = tenant.delete(path)
    assert last.status_code == 200
    assert last.json()["url"] != removed.json()["url"]  # the image added again
    assert tenant.delete(path).json() == last.json()


FORBIDDEN = {
    "html-named-png": (b"<!doctype html><html><script>alert(1)</script></html>", "x.png", 415),
    "svg": (
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b"<script>alert(1)</script></svg>",
        "x.svg",
        415,
    ),
    "gif": (image("GIF"), "x.gif", 415),
    "truncated-jpeg": (image("JPEG", (400, 300))[:-600], "x.jpg", 415),
    "empty": (b"", "x.png", 415),
    "pixel-bomb-png": (pixel_bomb(), "bomb.png", 413),
}


@pytest.mark.parametrize("kind", list(FORBIDDEN))
def test_a_file_that_is_not_an_accepted_image_is_refused_and_stores_nothing(
    client: httpx.Client, settings: Settings, kind: str
) -> None:
    tenant = new_tenant(client, settings)
    service = create(tenant)
    data, name, status = FORBIDDEN[kind]
    for refused in (
        upload(tenant, f"/api/v1/service/{service['_id']}/media", data, name),
        patch_banner(tenant, service["_id"], data),
    ):
        doc = assert_error(refused, status)
        assert [e["error"] for e in doc["errors"]] == ["file"]  # type: ignore[attr-defined]
    after = tenant.get(f"/api/v1/service/{service['_id']}").json()
    assert after["_version"] == "1"
    assert after["presentation"]["banners"] == []


def test_an_upload_over_5_mib_is_413(client: httpx.Client, settings: Settings) -> None:
    tenant = new_tenant(client, settings)
    service = create(tenant)
    data = image()
    data += b"\x00" * (5 * 1024 * 1024 + 1 - len(data))
    assert_error(upload(tenant, f"/api/v1/service/{service['_id']}/media", data), 413)
    assert banners(tenant, service["_id"]) == []


def test_an_upload_without_a_file_is_400(client: httpx.Client, settings: Settings) -> None:
    tenant = new_tenant(client, settings)
    service = create(tenant)
    path = f"/api/v1/service/{service['_id']}/media"
    # a multipart form, but without a `file` part
    assert_error(tenant.post(path, files={"description": (None, "x")}), 400)
    for not_an_id in ("not an id", "evil\n"):
        bad_id = patch_banner(tenant, service["_id"], image(), _id=not_an_id)
        assert_error(bad_id, 400)
    assert banners(tenant, service["_id"]) == []


def test_an_upload_sent_as_anything_but_multipart_is_415(
    client: httpx.Client, settings: Settings
) -> None:
    """The contract's code for a body in the wrong media type: JSON (the reviewer's case), a
    plain form, the bare image, or no Content-Type at all."""
    tenant = new_tenant(client, settings)
    service = create(tenant)
    for method, path in (
        ("POST", f"/api/v1/service/{service['_id']}/media"),
        ("PATCH", f"/api/v1/service-media/{service['_id']}/banners"),
    ):
        for sent in (
            {"json": {"file": "x"}},
            {"data": {"description": "x"}},
            {"content": image(), "headers": {"content-type": "image/png"}},
            {"content": image()},
        ):
            answer = tenant.request(method, path, **sent)
            doc = assert_error(answer, 415)
            assert doc["message"] == "send the image as multipart/form-data with a `file` part"
    assert banners(tenant, service["_id"]) == []


def test_media_of_a_service_that_does_not_exist_is_404(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    missing = "aaaaaaaaaaaaaaaaaaaaaaaa"
    assert_error(upload(tenant, f"/api/v1/service/{missing}/media", image()), 404)
    assert_error(patch_banner(tenant, missing, image()), 404)
    assert_error(tenant.get(f"/api/v1/service-media/{missing}/{missing}"), 404)


def test_another_tenant_can_neither_see_nor_change_a_tenants_media(
    client: httpx.Client, settings: Settings
) -> None:
    owner = new_tenant(client, settings)
    other = new_tenant(client, settings)
    service = create(owner)
    media = add_banner(owner, service["_id"], image())
    sid, mid = service["_id"], media["_id"]
    assert_error(other.get(media["url"]), 404)
    assert_error(other.get(f"/api/v1/service-media/{sid}/{mid}"), 404)
    assert_error(upload(other, f"/api/v1/service/{sid}/media", image()), 404)
    assert_error(patch_banner(other, sid, image(), _id=mid), 404)
    assert_error(other.delete(f"/api/v1/service/{sid}/media/{mid}"), 404)
    assert_error(other.delete(f"/api/v1/service-media/{sid}/{mid}"), 404)
    assert banners(owner, sid) == [media]
    assert owner.get(media["url"]).status_code == 200


def test_media_routes_need_a_valid_token(client: httpx.Client, settings: Settings) -> None:
    owner = new_tenant(client, settings)
    service = create(owner)
    media = add_banner(owner, service["_id"], image())
    anonymous = {"x-business-tenant-id": owner.tenant_id}
    assert_error(client.get(media["url"], headers=anonymous), 401)
    files = {"file": ("a.png", image(), "image/png")}
    path = f"/api/v1/service/{service['_id']}/media"
    assert_error(client.post(path, files=files, headers=anonymous), 401)
    assert len(banners(owner, service["_id"])) == 1


def test_a_stale_if_match_on_media_is_a_conflict(client: httpx.Client, settings: Settings) -> None:
    tenant = new_tenant(client, settings)
    service = create(tenant)
    path = f"/api/v1/service/{service['_id']}/media"
    stale = {"If-Match": '"7"'}
    refused = tenant.post(path, files={"file": ("a.png", image(), "image/png")}, headers=stale)
    assert_error(refused, 409)
    media = add_banner(tenant, service["_id"], image())
    assert_error(tenant.delete(f"{path}/{media['_id']}", headers=stale), 409)
    assert banners(tenant, service["_id"]) == [media]


def blob_count(settings: Settings) -> int:
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM media_blobs").fetchone()
    return int(row[0]) if row else 0


def test_an_upload_that_must_fail_is_refused_before_decoding_and_stores_no_bytes(
    client: httpx.Client, settings: Settings
) -> None:
    tenant = new_tenant(client, settings)
    service = create(tenant)
    path = f"/api/v1/service/{service['_id']}/media"
    before = blob_count(settings)
    fresh = image(size=(33, 17), color="navy")  # bytes no other test stores
    stale = tenant.post(
        path, files={"file": ("a.png", fresh, "image/png")}, headers={"If-Match": '"9"'}
    )
    assert_error(stale, 409)
    assert tenant.delete(f"/api/v1/service/{service['_id']}").status_code == 200
    assert_error(upload(tenant, path, fresh), 422)
    assert blob_count(settings) == before
    assert banners(tenant, service["_id"]) == []
