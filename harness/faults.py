"""The fault corpora: bad images, hostile or broken upload zips, and bad admin commands.

Each case carries what a correct bot does with it, so tests and `bench/reliability.py` can
check every reply the same way.
"""

from __future__ import annotations

import csv
import io
import math
import stat
import struct
import zipfile
import zlib
from typing import Any

import numpy as np

from harness import DATASETS
from harness.user import pet_photos


def _encode(image: Any, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def _png_bomb(side: int = 30000) -> bytes:
    """A valid PNG header declaring side x side pixels over a few KB of zeros."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (side + 1) * 4)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def bad_images() -> dict[str, tuple[bytes, bool]]:
    """The image corpus: name -> (bytes sent as `x.jpg`, whether a breed answer is expected)."""
    from PIL import Image

    photo = pet_photos(1)[0]
    upright = Image.open(io.BytesIO(photo)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° CW to view": the pixels are stored lying on their side
    frames = [upright, upright.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    grey16 = np.asarray(upright.convert("L"), dtype=np.uint16) * 257  # the full 16-bit range
    return {
        "truncated JPEG": (photo[: len(photo) // 3], False),
        "GIF named .jpg": (_encode(upright.convert("P"), "GIF"), True),
        "PNG named .jpg": (_encode(upright, "PNG"), True),
        "0-byte file": (b"", False),
        "text file named .jpg": (b"just some notes, not a photo\n" * 10, False),
        "decompression bomb (30000x30000 PNG)": (_png_bomb(), False),
        "1x1 image": (_encode(Image.new("RGB", (1, 1)), "PNG"), False),
        "CMYK JPEG": (_encode(upright.convert("CMYK"), "JPEG"), True),
        "16-bit PNG": (_encode(Image.fromarray(grey16), "PNG"), True),
        "animated GIF": (_encode(frames[0], "GIF", save_all=True, append_images=frames[1:]), True),
        "animated WebP": (
            _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
            True,
        ),
        "EXIF-rotated photo": (
            _encode(upright.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif),
            True,
        ),
    }


# 49 MP: just under the 50 MP pixel limit, which alone let these through (issue 20).
COSTLY_SIDE = 7000


def costly_images() -> dict[str, bytes]:
    """Cheap files that were costly to decode: under the pixel limit, a few KB each, they took
    seconds and up to a GB each (16-bit grey PNG 97 KB, palette PNG with transparency 6 KB,
    lossless WebP 1.9 KB)."""
    from PIL import Image

    side = COSTLY_SIDE
    return {
        "16-bit grey PNG": _encode(Image.new("I;16", (side, side)), "PNG"),
        "RGBA PNG": _encode(Image.new("RGBA", (side, side), (10, 20, 30, 128)), "PNG"),
        "palette PNG with transparency": _encode(
            Image.new("P", (side, side)), "PNG", transparency=0
        ),
        "lossless WebP": _encode(Image.new("RGB", (side, side), (1, 2, 3)), "WEBP", lossless=True),
    }


def budget_images(budget: int) -> dict[str, bytes]:
    """The costliest files a decode budget of `budget` bytes still accepts, one per kind."""
    from PIL import Image

    wide = math.isqrt(budget // 4)  # RGBA and WebP hold 4 bytes a pixel
    grey = math.isqrt(budget // 2)
    return {
        "16-bit grey PNG at the budget": _encode(Image.new("I;16", (grey, grey)), "PNG"),
        "RGBA PNG at the budget": _encode(
            Image.new("RGBA", (wide, wide), (10, 20, 30, 128)), "PNG"
        ),
        "lossless WebP at the budget": _encode(
            Image.new("RGB", (wide, wide), (1, 2, 3)), "WEBP", lossless=True
        ),
    }


# Class names that cannot name a folder or disguise themselves (issue 20): each was "Retrain
# failed: ValueError/OSError" and left the upload's photos in the blob store.
HOSTILE_CLASS_NAMES = {
    "a slash": ("a/b", "class_name_path"),
    "dot-dot": ("..", "class_name_path"),
    "300 characters": ("x" * 300, "class_name_too_long"),
    "right-to-left override": ("cat\u202egpj.exe", "class_name_bidi"),
}


def hostile_class_zip(label: str) -> bytes:
    """A labels.csv upload: 3 photos of "cat" and 3 of `label` (a name no folder can carry)."""
    photos = pet_photos(6)
    labels = ["cat"] * 3 + [label] * 3
    rows = "".join(f"p{i},{lbl}\n" for i, lbl in enumerate(labels))
    members = {f"train/p{i}.jpg": photo for i, photo in enumerate(photos)}
    return _zip({**members, "labels.csv": ("id,breed\n" + rows).encode()})


def folder_entries_zip(folders: int) -> bytes:
    """Two classes of 3 photos plus `folders` empty folder entries (60,000 fit in 5.4 MB)."""
    members = _classes(["cat", "dog"])
    members |= {f"empty{i}/": b"" for i in range(folders)}
    return _zip(members)


def _zip(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return out.getvalue()


def _classes(names: list[str], per_class: int = 3) -> dict[str, bytes]:
    photos = pet_photos(len(names) * per_class)
    return {
        f"{n}/{i}.jpg": photos[c * per_class + i]
        for c, n in enumerate(names)
        for i in range(per_class)
    }


def _csv_zip(variant: str) -> bytes:
    """Four photos per breed of csv-sample with a labels.csv: missing rows, extra column, BOM."""
    sample = DATASETS / "csv-sample"
    header, *body = list(csv.reader(io.StringIO((sample / "labels.csv").read_text())))
    rows = [r for b in sorted({r[1] for r in body}) for r in [x for x in body if x[1] == b][:4]]
    members = {f"train/{r[0]}.jpg": (sample / "train" / f"{r[0]}.jpg").read_bytes() for r in rows}
    if variant == "missing":
        rows += [[f"missing{i}", rows[0][1]] for i in range(3)]
    if variant == "extra":
        header, rows = [*header, "extra"], [[*r, "x"] for r in rows]
    text = "\n".join(",".join(r) for r in [header, *rows]) + "\n"
    members["labels.csv"] = (("\ufeff" if variant == "bom" else "") + text).encode()
    return _zip(members)


def _encrypted() -> bytes:
    """A zip whose entry is flagged encrypted (the stdlib cannot encrypt; readers check it)."""
    data = bytearray(_zip({"a/0.jpg": b"ciphertext"}))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        local, central = archive.infolist()[0].header_offset, archive.start_dir
    data[local + 6] |= 0x1
    data[central + 8] |= 0x1
    return bytes(data)


def bad_zips(full: bool) -> dict[str, tuple[bytes, bool]]:
    """The upload corpus: name -> (zip bytes, whether a model may be trained from it)."""
    three = _classes(["cat", "dog", "fox"])
    cases: dict[str, tuple[bytes, bool]] = {
        "path traversal (../, absolute, symlink)": (
            _zip(
                {**three, "../evil.jpg": b"x", "/tmp/evil-abs.jpg": b"x"},
                {"cat/link.jpg": "/etc/passwd"},
            ),
            True,
        ),
        "zip bomb (ratio)": (_zip({"a/bomb.jpg": b"\0" * 50 * 2**20}), False),
        "nested zip only": (_zip({"inner.zip": _zip(three)}), False),
        "encrypted zip": (_encrypted(), False),
        "empty zip": (_zip({}), False),
        "only one class": (_zip(_classes(["cat"], 5)), False),
        "a class with one image": (_zip({**three, "solo/0.jpg": pet_photos(10)[9]}), False),
        "names differing only in case": (_zip(_classes(["Cat", "cat"])), False),
    }
    if full:
        many = {f"c{i % 2}/{i}.jpg": b"x" for i in range(25_000)}
        cases |= {
            "zip bomb (many files)": (_zip(many), False),
            "unicode and emoji class names": (_zip(_classes(["café", "🐱 cat", "ñandú"])), True),
            "labels.csv naming missing files": (_csv_zip("missing"), True),
            "labels.csv with extra columns": (_csv_zip("extra"), True),
            "labels.csv with a BOM": (_csv_zip("bom"), True),
        }
    return cases


COMMANDS = {
    "unknown option": ("/retrain speed=fast", "retrain_bad_options"),
    "steps=-1": ("/retrain steps=-1", "retrain_bad_options"),
    "lr=1e9": ("/retrain lr=1e9", "retrain_bad_options"),
    "/promote of a missing version": ("/promote 999", "job_failed"),
}
