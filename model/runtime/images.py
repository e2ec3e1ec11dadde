"""Decode untrusted image bytes into fixed-size RGB arrays (numpy + Pillow only).

Everything here is safe to call from several threads at once: each call owns its Image objects
and no Pillow global is changed (in particular `ImageFile.LOAD_TRUNCATED_IMAGES` stays False, so
a cut-off upload is an error instead of a silently grey-padded photo).
"""

from __future__ import annotations

import io
from contextlib import AbstractContextManager, nullcontext
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

# iPhones save HEIC; a photo sent as a file keeps it. Registering adds a Pillow format (HEIF),
# once, at import; Pillow itself decodes AVIF.
register_heif_opener()

# The side photos are resized to unless a backbone asks for another (see backbones.image_size).
IMAGE_SIZE = 224
# Bump whenever decoding or resizing changes its output; `preprocessing_version` adds the side.
PREPROCESSING_VERSION = "pil-v2"  # v2: large images reduced in their own mode first

# 50 MP is beyond any phone camera's default output but far below what exhausts a worker; it is
# also below Pillow's own bomb warning threshold (~89 MP), so that warning can never fire for an
# image we go on to decode.
MAX_PIXELS = 50_000_000
# Smaller than any real photo or Telegram thumbnail; such images carry nothing to classify.
MIN_SIDE = 16
# The decode budget: bytes of the largest pixel buffer one decode may hold (after a JPEG's
# draft). Pixels alone do not price a file: a 97 KB 16-bit grey PNG of 49 MP cost 16 s and 1 GB,
# a 1.9 KB lossless WebP 1.25 s. 48 MiB still takes a 12 MP phone PNG or HEIC (4 bytes a pixel)
# and keeps a decode near 0.15 s on 2 cores (bench/costly_image_bench.py).
MAX_DECODE_BYTES = 48 * 2**20
# Above this a decode is heavy (a 4 MP RGBA PNG; a 12 MP JPEG drafts far below it): the caller
# may pass a gate (a semaphore) so only a few heavy decodes run at once and memory stays bounded.
LIGHT_DECODE_BYTES = 16 * 2**20
# Bytes a pixel takes in Pillow's memory, by mode; every other mode takes 4 (RGB is padded).
_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
# Modes Image.reduce refuses; they shrink with a box resize instead (nearest for "1" and "P").
_NO_REDUCE = frozenset({"1", "P", "I;16", "I;16B", "I;16L", "I;16N"})

FORMATS = ("jpeg", "png", "webp", "gif", "bmp", "heif", "avif")
_PILLOW_FORMATS = tuple(name.upper() for name in FORMATS)
# Sizes of the BMP info headers Pillow understands; checking it keeps text starting with "BM" out.
_BMP_HEADER_SIZES = {12, 40, 52, 56, 64, 108, 124}
# Image formats people upload that we recognise only to name them in the error.
_OTHER_FORMATS = (
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
)
# ISO base media files (HEIF, AVIF) name their kind in the brands of their first box, "ftyp".
_AVIF_BRANDS = {b"avif", b"avis"}
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
HEADER_BYTES = 64  # enough for the magic bytes of every format, ftyp brands included

ERROR_CODES = ("empty", "not_an_image", "unsupported_format", "truncated", "too_large", "too_small")


class ImageError(ValueError):
    """An upload that cannot be used as a photo; `code` is one of ERROR_CODES."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _ftyp_brands(data: bytes) -> set[bytes]:
    """The major and compatible brands of an ISO base media file's ftyp box (empty if none)."""
    if data[4:8] != b"ftyp":
        return set()
    end = min(int.from_bytes(data[:4], "big"), len(data))
    return {data[8:12]} | {data[i : i + 4] for i in range(16, end - 3, 4)}


def sniff_format(data: bytes) -> str | None:
    """Return "jpeg", "png", "webp", "gif", "bmp", "heif" or "avif" from the magic bytes."""
    brands = _ftyp_brands(data)
    if brands & _AVIF_BRANDS:
        return "avif"
    if brands & _HEIF_BRANDS:
        return "heif"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:2] == b"BM" and int.from_bytes(data[14:18], "little") in _BMP_HEADER_SIZES:
        return "bmp"
    return None


def _other_format(data: bytes) -> str | None:
    """Name an image format we recognise but do not accept."""
    for magic, name in _OTHER_FORMATS:
        if data.startswith(magic):
            return name
    return None


def _damaged(exc: Exception) -> ImageError:
    """Wrap a Pillow parsing failure."""
    return ImageError("truncated", f"The image data is incomplete or damaged ({exc}).")


def _open(fp: BinaryIO) -> Image.Image:
    """Open an image lazily after checking its format and size from the header alone."""
    head = fp.read(HEADER_BYTES)
    fp.seek(0)
    if not head:
        raise ImageError("empty", "The file is empty.")
    if sniff_format(head) is None:
        other = _other_format(head)
        if other:
            raise ImageError(
                "unsupported_format",
                f"{other} images are not supported; send a JPEG, PNG, WebP, HEIC, AVIF, GIF "
                "or BMP.",
            )
        raise ImageError("not_an_image", "The file is not an image.")
    try:
        img = Image.open(fp, formats=_PILLOW_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageError("too_large", f"The image has too many pixels: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageError("truncated", "The image header is damaged.") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _damaged(exc) from exc
    width, height = img.size
    if width * height > MAX_PIXELS:
        img.close()
        raise ImageError(
            "too_large",
            f"The image is {width}x{height} pixels; the limit is {MAX_PIXELS // 1_000_000} MP.",
        )
    if min(width, height) < MIN_SIDE:
        img.close()
        raise ImageError(
            "too_small",
            f"The image is {width}x{height} pixels; each side needs at least {MIN_SIDE}.",
        )
    return img


def decode_cost(img: Image.Image) -> int:
    """Bytes of the pixel buffer that loading this opened (and drafted) image allocates."""
    return img.width * img.height * _PIXEL_BYTES.get(img.mode, 4)


def _check_cost(img: Image.Image) -> None:
    """Refuse an image whose decoded pixels alone would exceed the decode budget."""
    cost = decode_cost(img)
    if cost > MAX_DECODE_BYTES:
        raise ImageError(
            "too_large",
            f"The image is {img.width}x{img.height} pixels in mode {img.mode}: decoding it "
            f"takes {cost // 2**20} MB, over the {MAX_DECODE_BYTES // 2**20} MB limit. Send it "
            "as a photo, or as a JPEG.",
        )


def _shrink(img: Image.Image, size: int) -> Image.Image:
    """Reduce a loaded image in its own mode to at least 2 x `size` a side, before any conversion
    (a 16-bit, palette or RGBA conversion of the full image is what made costly files slow)."""
    factor = min(img.width, img.height) // (2 * size)
    if factor < 2:
        return img
    if img.mode in _NO_REDUCE:
        target = (-(-img.width // factor), -(-img.height // factor))
        return img.resize(target, Image.Resampling.BOX)  # nearest for "1" and "P"
    return img.reduce(factor)


def probe_image(fp: BinaryIO) -> tuple[str, int, int]:
    """Check format and size from the header only (no pixel decode); return (format, w, h)."""
    with _open(fp) as img:
        return img.format.lower(), img.width, img.height


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, flattening transparency onto white."""
    if img.mode.startswith("I"):
        # Pillow clips 16/32-bit greyscale at 255 when converting; scale the full 16-bit range.
        values = np.clip(np.asarray(img, dtype=np.float64), 0, 65535) / 257.0
        img = Image.fromarray(np.rint(values).astype(np.uint8))
    if img.has_transparency_data:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _upright_rgb(img: Image.Image, size: int) -> Image.Image:
    """Load an opened image, shrink it in its own mode to about 2 x `size`, then convert it."""
    try:
        img.load()  # first frame only for animations; raises on truncated data
        upright = ImageOps.exif_transpose(_shrink(img, size))
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _damaged(exc) from exc
    return _to_rgb(upright)


def _opened(data: bytes, size: int) -> Image.Image:
    """Open untrusted bytes, drafting a JPEG towards 2 x `size`, within the decode budget."""
    img = _open(io.BytesIO(data))
    if img.format == "JPEG":
        # Let libjpeg decode at 1/2..1/8 scale: big photos load several times faster.
        img.draft("RGB", (2 * size, 2 * size))
    try:
        _check_cost(img)
    except ImageError:
        img.close()
        raise
    return img


def bounded_jpeg(data: bytes, side: int = 512, quality: int = 85) -> bytes:
    """Untrusted image bytes re-encoded as an upright RGB JPEG at most `side` px a side: what
    is kept of a photo is bounded whatever was sent (a JPEG padded with megabytes still
    decodes). Raises ImageError."""
    with _opened(data, side // 2) as img:
        rgb = _upright_rgb(img, side // 2)
    rgb.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=quality)
    return out.getvalue()


def decode_image(
    data: bytes, size: int = IMAGE_SIZE, heavy: AbstractContextManager[object] | None = None
) -> np.ndarray:
    """Decode untrusted bytes to a uint8 [size, size, 3] RGB array or raise ImageError.

    A decode costing over LIGHT_DECODE_BYTES runs inside `heavy` (e.g. a semaphore), if given.
    """
    with _opened(data, size) as img:
        costly = heavy is not None and decode_cost(img) > LIGHT_DECODE_BYTES
        with heavy if costly and heavy is not None else nullcontext():
            rgb = _upright_rgb(img, size)
    # Squash rather than crop, as TF Hub image modules and retrain.py expect.
    resized = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def preprocessing_version(size: int) -> str:
    """Part of every cache key: the decoder's version and the side it resizes photos to."""
    return f"{PREPROCESSING_VERSION}-{size}"


def to_float(batch: np.ndarray) -> np.ndarray:
    """Scale uint8 pixels (any shape, e.g. [N, H, W, 3]) to float32 in [0, 1]."""
    if batch.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {batch.dtype}")
    return batch.astype(np.float32) / np.float32(255.0)
