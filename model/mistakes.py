"""The mistakes as pictures: one contact sheet of misclassified photos, each captioned
"is X, answered Y (p %)", for the retrain's chat reply and `breedbot eval --html`.
"""

from __future__ import annotations

import io
import string
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from model.data import display_name
from model.runtime.images import ImageError, decode_image

MAX_TILES = 16  # the sheet shows at most this many mistakes, most confident first
COLUMNS = 4
TILE = 224  # each photo's side on the sheet
CAPTION_LINES = 3
FONT_SIZE = 14
LINE_HEIGHT = 17
MARGIN = 8
# Telegram's sendPhoto limit is 10 MB; a sheet is ~0.2 MB, and the test checks it stays under.
PHOTO_LIMIT_BYTES = 10 * 1000 * 1000
ENGLISH_CAPTION = "is {label}, answered {predicted} ({p:.0%})"
# What a caption template may use: it comes in a queue payload, so nothing else is formatted
# (no attribute access, no "{label:>999999999}").
CAPTION_FIELDS = {("label", ""), ("predicted", ""), ("p", ".0%")}
MAX_CAPTION_CHARS = 120


def safe_caption(template: str | None) -> str:
    """`template` if it uses only CAPTION_FIELDS and is short, else the English caption."""
    if not template or len(template) > MAX_CAPTION_CHARS:
        return ENGLISH_CAPTION
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        return ENGLISH_CAPTION
    used = {(name, spec) for _, name, spec, conversion in parsed if name is not None}
    plain = all(conversion is None for _, name, _, conversion in parsed if name is not None)
    return template if plain and used <= CAPTION_FIELDS else ENGLISH_CAPTION


def caption_font() -> ImageFont.FreeTypeFont:
    """The captions' font."""
    # Source Sans Pro (SIL OFL, the bot's chart font): Pillow's default one lacks "é", "ç".
    path = files("font_source_sans_pro") / "files" / "SourceSansPro-Regular.ttf"
    return ImageFont.truetype(str(path), FONT_SIZE, layout_engine=ImageFont.Layout.BASIC)


def wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """`text` in lines no wider than `width` pixels (a longer word gets a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _tile(photo: Path, caption: str, font: ImageFont.FreeTypeFont) -> Image.Image | None:
    try:
        pixels = decode_image(photo.read_bytes(), TILE)
    except (ImageError, OSError):  # gone or unreadable: the sheet shows the others
        return None
    tile = Image.new("RGB", (TILE, TILE + CAPTION_LINES * LINE_HEIGHT + MARGIN), "white")
    tile.paste(Image.fromarray(pixels), (0, 0))
    draw = ImageDraw.Draw(tile)
    lines = wrap(caption, font, TILE - 4)[:CAPTION_LINES]
    for i, line in enumerate(lines):
        draw.text((2, TILE + 2 + i * LINE_HEIGHT), line, fill="black", font=font)
    return tile


def contact_sheet(
    root: Path, misclassified: Sequence[dict[str, Any]], caption: str | None = None
) -> bytes | None:
    """A JPEG of up to MAX_TILES mistakes (photos under `root`), or None if there are none.

    `misclassified` items are the metrics' ("image", "label", "predicted", "probability");
    `caption` formats each with the display names of label and predicted, and p (see
    `safe_caption`).
    """
    caption = safe_caption(caption)
    font = caption_font()
    worst = sorted(misclassified, key=lambda m: -m["probability"])
    tiles = []
    for item in worst:
        if len(tiles) == MAX_TILES:
            break
        text = caption.format(
            label=display_name(item["label"]),
            predicted=display_name(item["predicted"]),
            p=item["probability"],
        )
        tile = _tile(Path(root) / item["image"], text, font)
        if tile is not None:
            tiles.append(tile)
    if not tiles:
        return None
    columns = min(COLUMNS, len(tiles))
    rows = -(-len(tiles) // columns)
    width, height = tiles[0].size
    sheet = Image.new(
        "RGB", (columns * (width + MARGIN) + MARGIN, rows * (height + MARGIN) + MARGIN), "white"
    )
    for i, tile in enumerate(tiles):
        row, column = divmod(i, columns)
        sheet.paste(tile, (MARGIN + column * (width + MARGIN), MARGIN + row * (height + MARGIN)))
    out = io.BytesIO()
    sheet.save(out, "JPEG", quality=85)
    return out.getvalue()
