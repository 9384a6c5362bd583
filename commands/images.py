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
- The pixel caps follow from the memory one decode takes. PNG and WebP decoders always
  decode at full size, up to 4 bytes a pixel (and a conversion briefly holds a second copy),
  so `MAX_PIXELS` is 4096x4096 = 16.8 million: at most 64 MiB a decoded frame. (A
  1.6 KB WebP declaring 6300x6300 took 1 GB of RSS under the old 40-million cap.)
  A baseline JPEG may declare up to `MAX_JPEG_PIXELS` (50 million, a phone camera's full
  resolution) because libjpeg decodes it reduced by 1/2, 1/4 or 1/8 (`Image.draft`) to the
  smallest size still at least `MAX_SIDE` on its longest side: under 2 x `MAX_SIDE` a side,
  so at most about 26 million decoded pixels whatever the header says (measured: an
  8000x5000 JPEG decodes in 42 MB instead of 156 MB). A progressive JPEG is held to
  `MAX_PIXELS`: libjpeg keeps every DCT coefficient of the full-size image while it reads the
  scans (up to 6 bytes a pixel, reduced decoding or not; 270 MB for 40 million pixels).
- Every image is stored at most `MAX_SIDE` (2560) pixels on its longest side, downscaled
  with Lanczos after the EXIF orientation is applied; the width and height reported are the
  stored image's. 2560 covers a full-width banner on a 1280-pixel-wide layout at 2x
  (retina) density, or a 2560-pixel desktop at 1x; more pixels add bytes and encode time,
  not visible detail. Re-encoding can still grow a file (a lossless noise tile, a coarsely
  quantised JPEG re-encoded at quality 90), so a cleaned image larger than
  `MAX_STORED_BYTES` (the upload limit) is refused: 413 "too large once cleaned".
- A JPEG with more than `MAX_JPEG_SCANS` (100) scans is refused (415) before it is decoded:
  libjpeg re-processes the whole image once per scan and Pillow sets no limit, so a few
  hundred KB of repeated scans cost minutes of CPU. Real encoders write 1 (baseline) to
  about 10-20 (progressive) scans; nothing legitimate comes near 100, so this is a hostile
  or broken file, not a too-big image. The scans are counted as `FF DA` (SOS) byte pairs:
  an `FF` in entropy-coded data is always stuffed as `FF 00`, so only an embedded
  thumbnail's scans (or a stray pair inside a metadata segment) are over-counted.
- Animated PNG and WebP are refused (415): a banner is a still image, and keeping only the
  first frame would silently store something other than what the user sees in the browser.
  A JPEG carrying extra MPO pictures (phone cameras' depth maps, stereo pairs) is not an
  animation: its primary picture is kept.
- A truncated or corrupt file is 415: pixels are always decoded in full, and the process-wide
  `ImageFile.LOAD_TRUNCATED_IMAGES` must stay off (checked on every call). Every Pillow step
  (open, the animation check, decoding, conversions, re-encoding) runs under the same error
  mapping, so a file that decodes but cannot be re-encoded (a palette PNG without a PLTE
  chunk) is 415 too, never a 500. `MemoryError` is not mapped: with the caps above it means
  the server is out of memory, not that the upload is wrong.
- EXIF orientation is applied to the pixels before the metadata goes, so photos stay upright;
  pixels in another colour space (an ICC profile, e.g. a phone's Display P3) are converted to
  sRGB before the profile goes, so colours stay right. A profile that cannot be used is
  ignored rather than refused.
- The output keeps the input's format; JPEG and lossy WebP are re-encoded at quality 90, a
  lossless WebP (a `VP8L` image chunk) losslessly, so logos and flat artwork do not degrade.

`inspect_image` is pure and CPU-bound (tens to hundreds of milliseconds for large photos, up
to about 1-2 s for a worst case at the limits, and up to a few hundred MB of memory): call it
from a worker thread, never on the event loop, and bound how many run at once.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageCms, ImageFile, ImageOps

from commands.errors import FieldError, PayloadTooLarge, UnsupportedMedia

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_PIXELS = 4096 * 4096  # PNG, WebP and progressive JPEG: decoded at full size
MAX_JPEG_PIXELS = 50_000_000  # baseline JPEG: decoded reduced, see Image.draft
MAX_SIDE = 2560  # longest side of a stored image
MAX_STORED_BYTES = MAX_UPLOAD_BYTES
MAX_JPEG_SCANS = 100

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
    data: bytes,
    *,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_jpeg_pixels: int = MAX_JPEG_PIXELS,
    max_side: int = MAX_SIDE,
    max_stored_bytes: int = MAX_STORED_BYTES,
) -> CleanImage:
    """The upload as a clean image; raises PayloadTooLarge (413) or UnsupportedMedia (415).

    `max_pixels` bounds PNG, WebP and progressive JPEG canvases, `max_jpeg_pixels` baseline
    JPEG ones (decoded reduced); the stored image is at most `max_side` pixels on its longest
    side and `max_stored_bytes` long."""
    if len(data) > max_bytes:
        raise _too_large(f"the image is larger than {max_bytes} bytes", f"size: {len(data)}")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # A programming error, not the upload's: truncated files would be stored padded.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay off")
    fmt = _sniff(data)
    if fmt is _JPEG:
        _check_scan_count(data)
    image, transparency = _decode(data, fmt, max_pixels, max_jpeg_pixels, max_side)
    options = _encoder_options(fmt, transparency, lossless=_is_lossless_webp(data))
    out = io.BytesIO()
    with _invalid_as_unsupported(fmt, max_pixels):
        image.save(out, fmt.pillow, **options)
    cleaned = out.getvalue()
    if len(cleaned) > max_stored_bytes:
        raise _too_large(
            "the image is too large once cleaned",
            f"size once cleaned: {len(cleaned)}, limit: {max_stored_bytes}",
        )
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


def _check_scan_count(data: bytes) -> None:
    scans = data.count(b"\xff\xda")
    if scans > MAX_JPEG_SCANS:
        message = f"the JPEG has more than {MAX_JPEG_SCANS} scans"
        raise UnsupportedMedia(message, [FieldError(_FIELD, message, f"scans: {scans}")])


def _is_lossless_webp(data: bytes) -> bool:
    """Whether a WebP's image chunk is VP8L (lossless) rather than VP8 (lossy). Pillow does
    not say, so the RIFF chunks are walked: a simple file starts with its image chunk, an
    extended one (VP8X) has ICCP/ALPH/EXIF... chunks first."""
    if not (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return False
    position = 12
    while position + 8 <= len(data):
        kind = data[position : position + 4]
        if kind == b"VP8L":
            return True
        if kind == b"VP8 ":
            return False
        size = int.from_bytes(data[position + 4 : position + 8], "little")
        position += 8 + size + (size & 1)
    return False


def _decode(
    data: bytes, fmt: _Format, max_pixels: int, max_jpeg_pixels: int, max_side: int
) -> tuple[Image.Image, Any]:
    """Fully decoded, upright pixels at most `max_side` a side with no metadata left, and the
    palette transparency to write back (pixel data, not metadata)."""
    with _invalid_as_unsupported(fmt, max_pixels):
        image: Image.Image = Image.open(io.BytesIO(data), formats=[fmt.pillow])
    width, height = image.size
    reduced = fmt is _JPEG and not image.info.get("progressive")
    limit = max_jpeg_pixels if reduced else max_pixels
    if width * height > limit:
        raise _too_large(f"the image has more than {limit} pixels", f"dimensions: {width}x{height}")
    with _invalid_as_unsupported(fmt, max_pixels):
        if fmt is not _JPEG and getattr(image, "is_animated", False):
            raise _unsupported("animated images are not supported; upload a still image")
        if fmt is _JPEG:
            _decode_reduced(image, max_side)
        image.load()
        if image.mode == "P" and image.palette is None:
            raise _unsupported(f"the file is not a valid {fmt.title} image: it has no palette")
        ImageOps.exif_transpose(image, in_place=True)
        image, transparency = _normalize_mode(image, fmt)
        image, transparency = _downscale(image, transparency, max_side)
    image.info = {}
    return image, transparency


def _decode_reduced(image: Image.Image, max_side: int) -> None:
    """Have libjpeg decode at 1/2, 1/4 or 1/8 scale while the longest side stays at least
    `max_side`. The requested size keeps the aspect ratio: Pillow picks the scale from the
    smaller of the two ratios."""
    width, height = image.size
    longest = max(width, height)
    if longest <= max_side:
        return
    target = (max(1, width * max_side // longest), max(1, height * max_side // longest))
    image.draft(None, target)


@contextmanager
def _invalid_as_unsupported(fmt: _Format, max_pixels: int) -> Iterator[None]:
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        log.info("image refused (Pillow's bomb guard): %s", exc)
        message = f"the image has more than {max_pixels} pixels"
        raise _too_large(message, "refused from its header, before decoding") from exc
    except (MemoryError, PayloadTooLarge, UnsupportedMedia):
        raise
    except Exception as exc:
        # Pillow's parsers and encoders end hostile or broken input in many exception types
        # (OSError, SyntaxError, ValueError, struct.error, EOFError, even UnboundLocalError
        # from PngImagePlugin's save...): all of them mean "not a valid image", never a
        # server error.
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


def _downscale(image: Image.Image, transparency: Any, max_side: int) -> tuple[Image.Image, Any]:
    if max(image.size) <= max_side:
        return image, transparency
    if image.mode == "P":
        # Palette indexes cannot be blended: resample the colours they stand for.
        image = image.convert("RGBA" if image.has_transparency_data else "RGB")
        transparency = None
    if transparency is not None:
        # A transparent key colour (1, L, I;16 PNGs) must stay exact to stay transparent, so
        # these rare large keyed images are resampled without blending.
        image.thumbnail((max_side, max_side), Image.Resampling.NEAREST)
        return image, transparency
    if image.mode == "1":
        image = image.convert("L")
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image, transparency


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


def _encoder_options(fmt: _Format, transparency: Any, *, lossless: bool) -> dict[str, Any]:
    if fmt is _WEBP and lossless:
        return {"lossless": True}
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
    else:
        # Pillow's own words ("OSError: image file is truncated (2 bytes not processed)") are
        # its internals: the operator reads them in the log, the client gets fixed ones
        log.info("image refused (%s): %s: %s", message, type(cause).__name__, cause)
        detail = "the decoder could not read it"
    return UnsupportedMedia(message, [FieldError(_FIELD, message, detail)])
