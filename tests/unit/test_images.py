"""Uploaded images are judged by their bytes alone and stored re-encoded without metadata."""

from __future__ import annotations

import hashlib
import io
import logging
import random
import struct
import zlib
from typing import Any

import pytest
from PIL import ExifTags, Image, ImageCms, ImageFile, JpegImagePlugin, PngImagePlugin

from commands.errors import PayloadTooLarge, UnsupportedMedia
from commands.images import MAX_UPLOAD_BYTES, inspect_image

PILLOW_NAMES = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}


def picture(width: int = 64, height: int = 48, mode: str = "RGB") -> Image.Image:
    """A deterministic picture with detail in every row, so cutting its file hits pixel data."""
    gradient = Image.linear_gradient("L").resize((width, height))
    radial = Image.radial_gradient("L").resize((width, height))
    image = Image.merge("RGB", (gradient, radial, gradient.transpose(Image.Transpose.ROTATE_180)))
    return image.convert(mode)


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, PILLOW_NAMES.get(fmt, fmt), **params)
    return out.getvalue()


def reopen(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def blank_bilevel_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of any size, built row by row so the test never holds its pixels."""
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def exif_with_gps() -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "PhoneMaker"
    exif[ExifTags.Base.Artist] = "Anna Nowak"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 13.0, 30.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (21.0, 0.0, 42.0)
    return exif


SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><dc:creator>Anna Nowak</dc:creator></x:xmpmeta>'


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [("jpeg", "image/jpeg"), ("png", "image/png"), ("webp", "image/webp")],
)
def test_a_real_jpeg_png_or_webp_is_accepted_with_its_format_and_dimensions(
    fmt: str, content_type: str
) -> None:
    clean = inspect_image(encode(picture(64, 48), fmt))

    assert (clean.format, clean.content_type) == (fmt, content_type)
    assert (clean.width, clean.height) == (64, 48)
    assert clean.size == len(clean.data)
    assert clean.sha256 == hashlib.sha256(clean.data).hexdigest()
    stored = reopen(clean.data)
    assert (stored.format, stored.size) == (PILLOW_NAMES[fmt], (64, 48))


def test_the_same_upload_always_gets_the_same_content_address() -> None:
    upload = encode(picture(), "jpeg", quality=75)

    assert inspect_image(upload).sha256 == inspect_image(upload).sha256
    assert inspect_image(upload).data == inspect_image(upload).data


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_exif_with_gps_xmp_and_icc_profiles_are_gone_from_the_stored_image(fmt: str) -> None:
    upload = encode(picture(), fmt, exif=exif_with_gps(), xmp=XMP, icc_profile=SRGB_ICC)
    sent = reopen(upload)
    assert sent.getexif().get_ifd(ExifTags.IFD.GPSInfo), "the upload carries a location"
    assert "icc_profile" in sent.info

    stored = reopen(inspect_image(upload).data)

    assert not stored.getexif()
    assert not stored.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    assert not {"exif", "xmp", "icc_profile", "XML:com.adobe.xmp"} & set(stored.info)
    assert b"Anna Nowak" not in inspect_image(upload).data


def test_an_unusable_icc_profile_is_ignored_not_refused() -> None:
    upload = encode(picture(), "jpeg", icc_profile=b"not a colour profile" * 8)

    stored = reopen(inspect_image(upload).data)

    assert "icc_profile" not in stored.info


def test_a_jpeg_comment_is_gone_from_the_stored_image() -> None:
    upload = encode(picture(), "jpeg", comment=b"taken at Anna's home")
    assert reopen(upload).info["comment"] == b"taken at Anna's home"

    stored = inspect_image(upload).data

    assert "comment" not in reopen(stored).info
    assert b"Anna" not in stored


def test_png_text_chunks_are_gone_from_the_stored_image() -> None:
    text = PngImagePlugin.PngInfo()
    text.add_text("Author", "Anna Nowak")
    text.add_text("Comment", "Anna Nowak " * 50, zip=True)
    text.add_itxt("Description", "Anna Nowak's living room", lang="en")
    upload = encode(picture(), "png", pnginfo=text, exif=exif_with_gps())
    assert {"Author", "Comment", "Description"} <= set(reopen(upload).info)

    stored = inspect_image(upload).data

    assert not {"Author", "Comment", "Description", "exif"} & set(reopen(stored).info)
    for chunk in (b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"iCCP"):
        assert chunk not in stored


def test_exif_orientation_is_applied_to_the_pixels_before_it_is_stripped() -> None:
    # left half red, right half blue; orientation 6 means "rotate 90 degrees clockwise to show"
    image = Image.new("RGB", (40, 20), "red")
    image.paste("blue", (20, 0, 40, 20))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    upload = encode(image, "jpeg", exif=exif, quality=95)

    clean = inspect_image(upload)

    assert (clean.width, clean.height) == (20, 40)
    stored = reopen(clean.data)
    assert ExifTags.Base.Orientation not in stored.getexif()
    top = stored.convert("RGB").getpixel((10, 5))
    assert isinstance(top, tuple)
    red, _, blue = top
    assert red > 200 > blue, "the left of the photo is now its top"


def test_a_palette_png_keeps_its_transparency() -> None:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([255, 0, 0, 0, 0, 255])
    image.paste(1, (4, 0, 8, 8))
    upload = encode(image, "png", transparency=0)

    stored = reopen(inspect_image(upload).data).convert("RGBA")

    assert stored.getpixel((0, 0)) == (255, 0, 0, 0)
    assert stored.getpixel((7, 0)) == (0, 0, 255, 255)


@pytest.mark.parametrize(("mode", "key"), [("L", 7), ("I;16", 300), ("RGB", (1, 2, 3))])
def test_a_png_transparent_colour_stays_transparent(mode: str, key: int | tuple[int, ...]) -> None:
    image = Image.new(mode, (8, 8), key)
    image.paste(0, (4, 0, 8, 8))
    upload = encode(image, "png", transparency=key)

    stored = reopen(inspect_image(upload).data)

    if stored.mode == "RGBA":
        assert stored.getchannel("A").getextrema() == (0, 255)
    else:
        assert (stored.mode, stored.info["transparency"]) == (mode, key)


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_an_alpha_channel_is_kept(fmt: str) -> None:
    image = picture(mode="RGBA")
    alpha = Image.new("L", image.size, 255)
    alpha.paste(0, (0, 0, 32, 48))
    image.putalpha(alpha)

    stored = reopen(inspect_image(encode(image, fmt, lossless=True)).data)

    assert stored.mode == "RGBA"
    transparent, opaque = stored.getchannel("A").getextrema()
    assert transparent == 0
    assert opaque == 255


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_a_greyscale_or_cmyk_jpeg_is_stored_as_a_jpeg_browsers_show(mode: str) -> None:
    clean = inspect_image(encode(picture(mode=mode), "jpeg"))

    assert clean.format == "jpeg"
    assert reopen(clean.data).mode == ("L" if mode == "L" else "RGB")


@pytest.mark.parametrize("mode", ["1", "L", "LA", "I;16", "RGB"])
def test_pngs_of_every_common_mode_are_accepted(mode: str) -> None:
    clean = inspect_image(encode(picture(mode=mode), "png"))

    assert (clean.format, clean.width, clean.height) == ("png", 64, 48)


def test_a_multi_picture_jpeg_from_a_phone_keeps_its_primary_picture() -> None:
    primary, depth_map = picture(), picture().convert("L").convert("RGB")
    upload = encode(primary, "MPO", save_all=True, append_images=[depth_map])
    assert reopen(upload).format == "MPO"

    clean = inspect_image(upload)

    stored = reopen(clean.data)
    assert (clean.format, stored.format, stored.size) == ("jpeg", "JPEG", (64, 48))
    assert getattr(stored, "n_frames", 1) == 1


def test_bytes_appended_to_an_image_are_not_stored() -> None:
    upload = encode(picture(), "png") + b"<script>alert(document.cookie)</script>"

    assert b"<script>" not in inspect_image(upload).data


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_an_animated_image_is_refused(fmt: str) -> None:
    frames = [picture(), picture().transpose(Image.Transpose.ROTATE_180)]
    upload = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)

    with pytest.raises(UnsupportedMedia, match="animated"):
        inspect_image(upload)


def gif() -> bytes:
    return encode(picture().convert("P"), "GIF")


def cut_in_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


NOT_IMAGES: dict[str, bytes] = {
    "html (whatever it is named)": b"<!DOCTYPE html><html><body><script>x()</script></body></html>",
    "svg": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b'<script>alert(1)</script><rect width="10" height="10"/></svg>',
    "gif": gif(),
    "pdf": b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n%%EOF\n",
    "empty": b"",
    "random bytes": random.Random(7).randbytes(4096),
    "png signature then garbage": b"\x89PNG\r\n\x1a\n" + random.Random(8).randbytes(512),
    "jpeg signature then html": b"\xff\xd8\xff\xe0<html><body>hi</body></html>",
    "riff webp header then garbage": b"RIFF\x00\x01\x00\x00WEBPVP8 " + bytes(64),
    "truncated jpeg": cut_in_half(encode(picture(256, 256), "jpeg")),
    "truncated png": cut_in_half(encode(picture(256, 256), "png")),
    "truncated webp": cut_in_half(encode(picture(256, 256), "webp")),
}


@pytest.mark.parametrize("upload", NOT_IMAGES.values(), ids=NOT_IMAGES.keys())
def test_anything_but_a_complete_jpeg_png_or_webp_is_unsupported_media(upload: bytes) -> None:
    with pytest.raises(UnsupportedMedia) as refused:
        inspect_image(upload)

    assert refused.value.errors[0].field == "file"


def test_a_decompression_bomb_is_refused_from_its_header_as_too_large() -> None:
    bomb = blank_bilevel_png(20_000, 20_000)  # 400 million pixels
    assert len(bomb) < 200_000, "small on disk"

    with pytest.raises(PayloadTooLarge, match="pixels") as refused:
        inspect_image(bomb)
    assert "DOS attack" not in str(refused.value.errors[0].detail)  # Pillow's own words


def test_an_image_over_the_pixel_bound_but_under_pillows_own_guard_is_too_large() -> None:
    with pytest.raises(PayloadTooLarge, match="pixels"):
        inspect_image(blank_bilevel_png(8_000, 6_000))  # 48 million pixels

    with pytest.raises(PayloadTooLarge, match="pixels"):
        inspect_image(encode(picture(100, 100), "webp"), max_pixels=9_999)

    assert inspect_image(encode(picture(100, 100), "webp"), max_pixels=10_000).width == 100


def test_an_upload_over_the_byte_limit_is_too_large_before_it_is_decoded() -> None:
    oversized = encode(picture(), "png") + bytes(MAX_UPLOAD_BYTES)

    with pytest.raises(PayloadTooLarge):
        inspect_image(oversized)

    with pytest.raises(PayloadTooLarge):
        inspect_image(encode(picture(), "png"), max_bytes=100)


def test_cleaning_refuses_to_run_if_truncated_images_were_allowed_process_wide(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)

    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        inspect_image(encode(picture(), "png"))


PNG_WITHOUT_PALETTE = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000040000000408030000009e2f6e4c0000000b49444154789c63"
    "60c00400001400017dfe1eee0000000049454e44ae426082"
)


def test_a_palette_png_without_a_palette_is_unsupported_media_not_a_server_error() -> None:
    with pytest.raises(UnsupportedMedia) as refused:
        inspect_image(PNG_WITHOUT_PALETTE)

    assert refused.value.errors[0].field == "file"


@pytest.mark.parametrize(
    "upload",
    [
        NOT_IMAGES["truncated jpeg"],
        NOT_IMAGES["truncated png"],
        NOT_IMAGES["png signature then garbage"],
        NOT_IMAGES["riff webp header then garbage"],
        NOT_IMAGES["truncated webp"],
    ],
    ids=["truncated-jpeg", "truncated-png", "png-garbage", "webp-garbage", "truncated-webp"],
)
def test_a_refused_image_is_described_in_fixed_words_and_pillows_text_is_only_logged(
    upload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """The 415's detail said "{ExceptionType}: {Pillow's message}" (e.g. "OSError: image file
    is truncated (2 bytes not processed)"): Pillow's internals, not the client's business."""
    caplog.set_level(logging.INFO, logger="commands.images")
    with pytest.raises(UnsupportedMedia) as refused:
        inspect_image(upload)

    (error,) = refused.value.errors
    assert error.detail == "the decoder could not read it"
    assert error.message == refused.value.message
    assert "Error" not in error.message
    assert "refused" in caplog.text
    assert "Error" in caplog.text  # the exception's type and text, for the operator


def test_an_image_pillow_decodes_but_cannot_re_encode_is_unsupported_media(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken_save(*args: object, **kwargs: object) -> None:
        raise UnboundLocalError("cannot access local variable 'mode'")

    upload = encode(picture(), "png")
    monkeypatch.setattr(Image.Image, "save", broken_save)

    with pytest.raises(UnsupportedMedia, match="not a valid PNG"):
        inspect_image(upload)


def with_repeated_last_scan(jpeg: bytes, copies: int) -> bytes:
    """The JPEG with its last scan (SOS segment up to EOI) repeated: still decodes, but
    libjpeg re-processes the whole image once per scan."""
    last_scan, end = jpeg.rindex(b"\xff\xda"), jpeg.rindex(b"\xff\xd9")
    return jpeg[:end] + jpeg[last_scan:end] * copies + jpeg[end:]


def test_a_progressive_jpeg_with_too_many_scans_is_refused_before_it_is_decoded() -> None:
    progressive = encode(picture(64, 64), "jpeg", progressive=True)
    assert 1 < progressive.count(b"\xff\xda") < 20
    bomb = with_repeated_last_scan(progressive, 200)
    assert reopen(bomb).size == (64, 64), "Pillow alone decodes it"

    with pytest.raises(UnsupportedMedia, match="scans"):
        inspect_image(bomb)

    assert inspect_image(progressive).format == "jpeg"
    assert inspect_image(with_repeated_last_scan(progressive, 50)).format == "jpeg"


def with_declared_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with other dimensions in its frame header (only the header is ever read)."""
    sof = min(i for i in (jpeg.find(b"\xff\xc0"), jpeg.find(b"\xff\xc2")) if i >= 0)
    return jpeg[: sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9 :]


def test_png_and_webp_are_capped_at_4096_by_4096_pixels_from_the_header() -> None:
    with pytest.raises(PayloadTooLarge, match="pixels"):
        inspect_image(blank_bilevel_png(4097, 4096))

    clean = inspect_image(blank_bilevel_png(4096, 4096))

    assert (clean.width, clean.height) == (2560, 2560)


def test_a_baseline_jpeg_may_declare_more_pixels_but_a_progressive_one_may_not() -> None:
    baseline = encode(picture(64, 48), "jpeg")
    progressive = encode(picture(64, 48), "jpeg", progressive=True)

    with pytest.raises(PayloadTooLarge, match="pixels"):
        inspect_image(with_declared_size(baseline, 10_000, 5_001))  # 50 million and one
    with pytest.raises(PayloadTooLarge, match="pixels"):
        inspect_image(with_declared_size(progressive, 5_000, 4_000))  # 20 million
    # Under the baseline JPEG cap: decoded (libjpeg fills the missing pixels) and downscaled.
    assert inspect_image(with_declared_size(baseline, 5_000, 4_000)).width == 2560


def test_a_large_jpeg_is_decoded_reduced_and_stored_at_most_2560_pixels_wide(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded: list[tuple[int, int]] = []
    load = JpegImagePlugin.JpegImageFile.load

    def spy(self: JpegImagePlugin.JpegImageFile) -> Any:
        result = load(self)
        decoded.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", spy)
    upload = encode(picture(6000, 4000), "jpeg", quality=50)

    clean = inspect_image(upload)

    assert decoded[0] == (3000, 2000), "libjpeg decoded it at half size"
    assert (clean.width, clean.height) == (2560, 1707)
    assert reopen(clean.data).size == (2560, 1707)


@pytest.mark.parametrize(
    ("fmt", "mode"), [("png", "RGB"), ("png", "P"), ("png", "1"), ("png", "I;16"), ("webp", "RGB")]
)
def test_every_image_is_stored_at_most_2560_pixels_on_its_longest_side(fmt: str, mode: str) -> None:
    image = picture(1200, 3000)
    if mode == "P":  # a flat palette image (a dithered one would not fit once resampled)
        image = image.quantize(16, dither=Image.Dither.NONE)
    upload = encode(image.convert(mode), fmt)

    clean = inspect_image(upload)

    assert (clean.width, clean.height) == (1024, 2560)
    assert reopen(clean.data).size == (1024, 2560)


def test_the_stored_size_reports_the_downscaled_upright_photo() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    upload = encode(picture(3000, 1500), "jpeg", exif=exif)

    clean = inspect_image(upload)

    assert (clean.width, clean.height) == (1280, 2560)


def test_a_large_palette_png_with_transparency_keeps_it_when_downscaled() -> None:
    image = Image.new("P", (3000, 100), 0)
    image.putpalette([255, 0, 0, 0, 0, 255])
    image.paste(1, (1500, 0, 3000, 100))

    stored = reopen(inspect_image(encode(image, "png", transparency=0)).data).convert("RGBA")

    assert stored.size == (2560, 85)
    assert stored.getpixel((0, 0))[3] == 0  # type: ignore[index]
    assert stored.getpixel((2559, 0)) == (0, 0, 255, 255)


def noise(width: int, height: int) -> Image.Image:
    return Image.frombytes("RGB", (width, height), random.Random(3).randbytes(width * height * 3))


def test_an_image_too_large_once_cleaned_is_refused() -> None:
    upload = encode(noise(256, 256), "jpeg", quality=5)
    assert len(upload) < 6_000
    assert inspect_image(upload).size > 9_000, "re-encoding at quality 90 grows it"

    with pytest.raises(PayloadTooLarge, match="too large once cleaned"):
        inspect_image(upload, max_stored_bytes=9_000)


def test_a_lossless_webp_is_stored_losslessly() -> None:
    logo = Image.new("RGB", (64, 48), "white")
    logo.paste((200, 30, 30), (8, 8, 40, 40))
    logo.paste((20, 20, 220), (30, 20, 60, 44))
    upload = encode(logo, "webp", lossless=True)
    assert upload[12:16] == b"VP8L"

    clean = inspect_image(upload)

    assert b"VP8L" in clean.data
    assert reopen(clean.data).tobytes() == logo.tobytes()


def test_a_lossy_webp_stays_lossy() -> None:
    clean = inspect_image(encode(picture(), "webp", quality=80))

    assert b"VP8L" not in clean.data
    assert b"VP8 " in clean.data
