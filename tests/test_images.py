"""Decoding of real photos and of a generated corpus of hostile or unusual files."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from model.runtime.images import (
    ERROR_CODES,
    IMAGE_SIZE,
    MAX_PIXELS,
    ImageError,
    decode_image,
    probe_image,
    sniff_format,
    to_float,
)


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    """Save a Pillow image to bytes."""
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def halves(mode: str, dark: object, light: object, size: int = 64) -> Image.Image:
    """An image whose left half is `dark` and right half is `light` (RGB colours for "P")."""
    img = Image.new("RGB" if mode == "P" else mode, (size, size), dark)
    img.paste(light, (size // 2, 0, size, size))
    return img.convert("P") if mode == "P" else img


def error_code(data: bytes) -> str:
    """The ImageError code decode_image raises for these bytes."""
    with pytest.raises(ImageError) as info:
        decode_image(data)
    assert str(info.value)  # every error carries an English message
    assert info.value.code in ERROR_CODES
    return info.value.code


@pytest.fixture(scope="module")
def photos(datasets: Path) -> list[Path]:
    """All pets-dev photos, sorted."""
    return sorted((datasets / "pets-dev").rglob("*.jpg"))


@pytest.fixture(scope="module")
def photo(photos: list[Path]) -> Image.Image:
    """One real RGB photo, fully loaded."""
    with Image.open(photos[0]) as img:
        return img.convert("RGB")


def test_every_pets_dev_photo_decodes(photos: list[Path]) -> None:
    assert len(photos) == 599
    for path in photos:
        pixels = decode_image(path.read_bytes())
        assert pixels.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
        assert pixels.dtype == np.uint8
        assert pixels.std() > 5, path  # a real photo, not a blank or padded frame


def test_custom_size(photos: list[Path]) -> None:
    assert decode_image(photos[1].read_bytes(), size=96).shape == (96, 96, 3)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP"])
def test_sniff_format_reads_content(photo: Image.Image, fmt: str) -> None:
    data = encode(photo, fmt)
    assert sniff_format(data) == fmt.lower()
    assert decode_image(data).shape == (IMAGE_SIZE, IMAGE_SIZE, 3)


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, this is text", b"BM but not a bitmap at all", b"PK\x03\x04zip", b"\xff\xd8"],
)
def test_sniff_format_rejects_non_images(data: bytes) -> None:
    assert sniff_format(data) is None


def test_names_do_not_matter_gif_and_png_posing_as_jpeg(photo: Image.Image, tmp_path: Path) -> None:
    for fmt in ("GIF", "PNG"):
        fake = tmp_path / f"really_{fmt}.jpg"
        fake.write_bytes(encode(photo, fmt))
        assert sniff_format(fake.read_bytes()) == fmt.lower()
        assert decode_image(fake.read_bytes()).shape == (IMAGE_SIZE, IMAGE_SIZE, 3)


def test_empty_and_text_files_are_rejected() -> None:
    assert error_code(b"") == "empty"
    assert error_code(b"just some text named photo.jpg\n") == "not_an_image"


def test_known_but_unsupported_formats_are_named(photo: Image.Image) -> None:
    with pytest.raises(ImageError, match="TIFF") as info:
        decode_image(encode(photo, "TIFF"))
    assert info.value.code == "unsupported_format"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "WEBP"])
def test_truncated_files_are_errors_not_grey_padding(photo: Image.Image, fmt: str) -> None:
    data = encode(photo, fmt)
    assert error_code(data[: len(data) * 2 // 3]) == "truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_garbage_after_magic_is_damaged() -> None:
    assert error_code(b"\xff\xd8\xff" + bytes(range(256)) * 4) == "truncated"


@pytest.mark.parametrize(
    "size",
    [(14_000, 13_000), (10_000, 10_000), (8_000, 7_000)],
    ids=["beyond-pillow-error", "pillow-warning-range", "over-our-cap"],
)
def test_decompression_bombs_are_refused_from_the_header(size: tuple[int, int]) -> None:
    # 1-bit PNGs compress to a few kB however many pixels they declare.
    data = encode(Image.new("1", size), "PNG")
    assert len(data) < 200_000
    assert size[0] * size[1] > MAX_PIXELS
    # Pillow itself only warns in this range; our header check must still refuse it.
    in_warning_range = Image.MAX_IMAGE_PIXELS < size[0] * size[1] <= 2 * Image.MAX_IMAGE_PIXELS
    with pytest.warns(Image.DecompressionBombWarning) if in_warning_range else nullcontext():
        assert error_code(data) == "too_large"


@pytest.mark.parametrize("size", [(1, 1), (500, 8)])
def test_tiny_images_are_too_small(size: tuple[int, int]) -> None:
    assert error_code(encode(Image.new("RGB", size, "red"), "PNG")) == "too_small"


def test_probe_reads_the_header_only(photo: Image.Image) -> None:
    data = encode(photo, "JPEG")
    assert probe_image(io.BytesIO(data)) == ("jpeg", photo.width, photo.height)
    # A truncated body passes the header probe; only a full decode notices.
    assert probe_image(io.BytesIO(data[: len(data) // 2]))[0] == "jpeg"


def test_cmyk_jpeg_matches_its_rgb_source(photo: Image.Image) -> None:
    reference = decode_image(encode(photo, "JPEG", quality=95)).astype(int)
    cmyk = decode_image(encode(photo.convert("CMYK"), "JPEG", quality=95)).astype(int)
    assert np.abs(cmyk - reference).mean() < 6


def test_sixteen_bit_png_maps_to_the_full_8_bit_range() -> None:
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    data = encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    pixels = decode_image(data, size=64)[..., 0].astype(int)
    expected = np.rint(ramp / 257.0)
    assert np.abs(pixels - expected).max() <= 2
    assert pixels[:, 32].mean() == pytest.approx(130, abs=3)  # clipping would give 255


@pytest.mark.parametrize(
    ("mode", "dark", "light"),
    [
        ("1", 0, 1),
        ("L", 0, 255),
        ("P", (0, 0, 0), (255, 255, 255)),
        ("RGB", (0, 0, 0), (255, 255, 255)),
        ("I;16", 0, 65535),
    ],
)
def test_any_mode_becomes_rgb(mode: str, dark: object, light: object) -> None:
    pixels = decode_image(encode(halves(mode, dark, light), "PNG"), size=64).astype(int)
    assert pixels[:, :24].max() < 10
    assert pixels[:, 40:].min() > 245


@pytest.mark.parametrize(
    ("mode", "clear"),
    [("RGBA", (200, 0, 0, 0)), ("LA", (30, 0)), ("PA", (3, 0))],
)
def test_transparency_is_flattened_onto_white(mode: str, clear: tuple[int, ...]) -> None:
    opaque = (0, 0, 0, 255) if mode == "RGBA" else (0, 255)
    data = encode(halves(mode, clear, opaque), "PNG" if mode != "PA" else "WEBP", lossless=True)
    pixels = decode_image(data, size=64).astype(int)
    assert pixels[:, :24].min() > 245  # transparent half: white, whatever colour it hid
    assert pixels[:, 40:].max() < 10


def test_palette_transparency_and_colour_key_are_flattened() -> None:
    palette = Image.new("P", (64, 64), 1)
    palette.paste(2, (32, 0, 64, 64))
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    pixels = decode_image(encode(palette, "GIF", transparency=1), size=64).astype(int)
    assert pixels[:, :24].min() > 245
    assert tuple(pixels[:, 40:].mean(axis=(0, 1)).round()) == (0, 0, 255)

    keyed = halves("RGB", (10, 200, 10), (0, 0, 0))
    pixels = decode_image(encode(keyed, "PNG", transparency=(10, 200, 10)), size=64)
    assert pixels[:, :24].min() > 245


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animations_use_the_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (64, 64), colour) for colour in ("red", "blue", "lime")]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    red, green, blue = decode_image(data, size=32).astype(int).mean(axis=(0, 1))
    assert red > 240 and green < 15 and blue < 15


def test_exif_orientation_is_applied(photo: Image.Image) -> None:
    # Orientation 6: stored sideways, viewers rotate it 90 degrees clockwise.
    sideways = photo.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    tagged = decode_image(encode(sideways, "JPEG", quality=95, exif=exif)).astype(int)
    upright = decode_image(encode(photo, "JPEG", quality=95)).astype(int)
    ignored = decode_image(encode(sideways, "JPEG", quality=95)).astype(int)
    assert np.abs(tagged - upright).mean() < 4
    assert np.abs(ignored - upright).mean() > 4 * np.abs(tagged - upright).mean()


def test_large_jpeg_draft_decode_matches_a_full_decode(photo: Image.Image) -> None:
    # A mosaic of the photo keeps fine detail that too coarse a draft scale would blur away.
    big = Image.new("RGB", (photo.width * 12, photo.height * 12))
    for x in range(0, big.width, photo.width):
        for y in range(0, big.height, photo.height):
            big.paste(photo, (x, y))
    data = encode(big, "JPEG", quality=92)
    fast = decode_image(data).astype(int)
    full = np.asarray(
        Image.open(io.BytesIO(data)).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    ).astype(int)
    assert np.abs(fast - full).mean() < 1


def test_thread_pool_gives_the_same_pixels(photos: list[Path]) -> None:
    blobs = [path.read_bytes() for path in photos[::15]]
    sequential = [decode_image(blob) for blob in blobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(decode_image, blobs))
    for one, other in zip(sequential, threaded, strict=True):
        np.testing.assert_array_equal(one, other)


def test_to_float_scales_to_unit_range(photos: list[Path]) -> None:
    batch = np.stack([decode_image(path.read_bytes()) for path in photos[:3]])
    floats = to_float(batch)
    assert floats.dtype == np.float32
    assert floats.shape == batch.shape
    assert floats.min() >= 0.0 and floats.max() <= 1.0
    np.testing.assert_allclose(floats * 255, batch, atol=1e-3)
    with pytest.raises(ValueError, match="uint8"):
        to_float(floats)


@pytest.mark.parametrize(("fmt", "name"), [("HEIF", "heif"), ("AVIF", "avif")])
def test_iphone_heic_and_avif_are_answered_like_any_photo(
    photos: list[Path], fmt: str, name: str
) -> None:
    """Real photos converted by pillow-heif (HEIC) and Pillow (AVIF): recognised by their
    magic bytes and decoded to nearly the JPEG's pixels, under the same limits."""
    for path in photos[:3]:
        with Image.open(path) as img:
            original = img.convert("RGB")
        data = encode(original, fmt, quality=90)
        assert sniff_format(data[:64]) == name
        assert probe_image(io.BytesIO(data)) == (name, *original.size)
        converted = decode_image(data).astype(np.int16)
        reference = decode_image(encode(original, "PNG")).astype(np.int16)
        assert np.abs(converted - reference).mean() < 8  # lossy, but the same picture
    tiny = encode(Image.new("RGB", (12, 12), "white"), fmt)
    assert error_code(tiny) == "too_small"
    assert error_code(data[: len(data) * 2 // 3]) == "truncated"
