"""Uploaded images: decide from the bytes alone whether an upload is a real JPEG, PNG or WebP
image, and clean it for storage.

The format comes from the file's magic bytes and is confirmed by Pillow's decoder for that one
format (never from a file name or a Content-Type, and no other Pillow plugin ever sees the
bytes). Every accepted image is fully decoded, then re-encoded from its pixels alone, so no
metadata survives (EXIF with GPS, XMP, ICC profiles, comments, PNG text chunks) and nothing
appended to the file (a polyglot's second payload) is kept.

Decisions:

- Too many pixels is 413, like too many bytes: the image may be fine, only too big for us.
  The pixel count is checked from the header, before any pixel is decoded, so a
  decompression bomb (a small file declaring a huge canvas) costs nothing; Pillow's own bomb
  guard, which fires inside `Image.open` for much larger canvases, ends in the same 413.
- `MAX_PIXELS` is 40 million: an 8000x5000 photo passes, which is more than any upload
  within `MAX_UPLOAD_BYTES` realistically holds, while one decoded frame stays at most
  160 MB (4 bytes a pixel).
- Animated PNG and WebP are refused (415): a banner is a still image, and keeping only the
  first frame would silently store something other than what the user sees in the browser.
  A JPEG carrying extra MPO pictures (phone cameras' depth maps, stereo pairs) is not an
  animation: its primary picture is kept.
- A truncated or corrupt file is 415: pixels are always decoded in full, and the process-wide
  `ImageFile.LOAD_TRUNCATED_IMAGES` must stay off (checked on every call).
- EXIF orientation is applied to the pixels before the metadata goes, so photos stay upright;
  pixels in another colour space (an ICC profile, e.g. a phone's Display P3) are converted to
  sRGB before the profile goes, so colours stay right. A profile that cannot be used is
  ignored rather than refused.
- The output keeps the input's format; JPEG and WebP are re-encoded at quality 90.

`inspect_image` is pure and CPU-bound (tens to hundreds of milliseconds for large photos, up
to several hundred MB of memory at the pixel limit): call it from a worker thread, never on
the event loop, and bound how many run at once.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from commands.errors import FieldError, PayloadTooLarge, UnsupportedMedia

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_PIXELS = 40_000_000

_FIELD = "file"
_ACCEPTED = "an image in JPEG, PNG or WebP format"


@dataclass(frozen=True)
class CleanImage:
    data: bytes
    format: str
    content_type: str
    width: int
    height: int
    size: int
    sha256: str


@dataclass(frozen=True)
class _Format:
    name: str
    pillow: str
    content_type: str
    title: str


_JPEG = _Format("jpeg", "JPEG", "image/jpeg", "JPEG")
_PNG = _Format("png", "PNG", "image/png", "PNG")
_WEBP = _Format("webp", "WEBP", "image/webp", "WebP")

# Modes each encoder writes as they are; anything else is converted first.
_KEPT_MODES = {
    "jpeg": ("L", "RGB"),
    "png": ("1", "L", "LA", "I;16", "P", "RGB", "RGBA"),
    "webp": ("RGB", "RGBA"),
}


def inspect_image(
    data: bytes, *, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS
) -> CleanImage:
    """The upload as a clean image; raises PayloadTooLarge (413) or UnsupportedMedia (415)."""
    if len(data) > max_bytes:
        raise _too_large(f"the image is larger than {max_bytes} bytes", f"size: {len(data)}")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # A programming error, not the upload's: truncated files would be stored padded.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay off")
    fmt = _sniff(data)
    image, transparency = _decode(data, fmt, max_pixels)
    out = io.BytesIO()
    image.save(out, fmt.pillow, **_encoder_options(fmt, transparency))
    cleaned = out.getvalue()
    return CleanImage(
        data=cleaned,
        format=fmt.name,
        content_type=fmt.content_type,
        width=image.width,
        height=image.height,
        size=len(cleaned),
        sha256=hashlib.sha256(cleaned).hexdigest(),
    )


def _sniff(data: bytes) -> _Format:
    if data.startswith(b"\xff\xd8\xff"):
        return _JPEG
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _PNG
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _WEBP
    what = "the file is empty" if not data else "the file is not a JPEG, PNG or WebP image"
    raise _unsupported(what)


def _decode(data: bytes, fmt: _Format, max_pixels: int) -> tuple[Image.Image, Any]:
    """Fully decoded, upright pixels with no metadata left, and the palette transparency to
    write back (pixel data, not metadata)."""
    with _invalid_as_unsupported(fmt, max_pixels):
        image: Image.Image = Image.open(io.BytesIO(data), formats=[fmt.pillow])
    width, height = image.size
    if width * height > max_pixels:
        raise _too_large(
            f"the image has more than {max_pixels} pixels", f"dimensions: {width}x{height}"
        )
    if fmt is not _JPEG and getattr(image, "is_animated", False):
        raise _unsupported("animated images are not supported; upload a still image")
    with _invalid_as_unsupported(fmt, max_pixels):
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        image, transparency = _normalize_mode(image, fmt)
    image.info = {}
    return image, transparency


@contextmanager
def _invalid_as_unsupported(fmt: _Format, max_pixels: int) -> Iterator[None]:
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large(f"the image has more than {max_pixels} pixels", str(exc)) from exc
    except MemoryError:
        raise
    except Exception as exc:
        # Pillow's parsers end hostile or broken input in many exception types (OSError,
        # SyntaxError, ValueError, struct.error, EOFError...): all of them mean "not a valid
        # image", never a server error.
        raise _unsupported(f"the file is not a valid {fmt.title} image", exc) from exc


def _normalize_mode(image: Image.Image, fmt: _Format) -> tuple[Image.Image, Any]:
    transparency = image.info.get("transparency")
    if fmt is _PNG and image.mode in ("1", "L", "I;16", "P"):
        # Never colour-converted, so their transparent key (or palette alpha) stays valid.
        return image, transparency
    if transparency is not None:
        # An RGB colour key would no longer match after the colour conversion below.
        image = image.convert("RGBA")
    image = _to_srgb(image)
    if image.mode not in _KEPT_MODES[fmt.name]:
        keep_alpha = "A" in image.mode and fmt is not _JPEG
        image = image.convert("RGBA" if keep_alpha else "RGB")
    return image, None


def _to_srgb(image: Image.Image) -> Image.Image:
    icc = image.info.get("icc_profile")
    if not icc or image.mode not in ("RGB", "RGBA", "CMYK"):
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(
            image,
            source,
            ImageCms.createProfile("sRGB"),
            outputMode="RGBA" if image.mode == "RGBA" else "RGB",
        )
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        # A profile lcms cannot use: the pixels are shown as they are, as browsers do.
        return image
    return converted if converted is not None else image


def _encoder_options(fmt: _Format, transparency: Any) -> dict[str, Any]:
    if fmt is not _PNG:
        return {"quality": 90}
    options: dict[str, Any] = {"optimize": False}
    if transparency is not None:
        options["transparency"] = transparency
    return options


def _too_large(message: str, detail: str) -> PayloadTooLarge:
    return PayloadTooLarge(message, [FieldError(_FIELD, message, detail)])


def _unsupported(message: str, cause: BaseException | None = None) -> UnsupportedMedia:
    if cause is None:
        detail = f"expected {_ACCEPTED}"
    elif isinstance(cause, UnidentifiedImageError):
        detail = "the decoder does not recognise it"  # its text only names a BytesIO
    else:
        detail = f"{type(cause).__name__}: {cause}"
    return UnsupportedMedia(message, [FieldError(_FIELD, message, detail[:200])])
