"""A new version's confusion matrix as a picture for the chat, drawn with Pillow like the top-k
chart: in the user's language, breeds by display name, the title wrapped (never cut), and the
accuracy written as the retrain reply writes it."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

from bot.i18n import percent, t
from bot.render import _fit, _font, _wrap
from contract import RetrainResult

MIN_WIDTH = 720  # as the top-k chart: about 360 px on a phone
MARGIN = 28
TITLE_SIZE, TEXT_SIZE = 30, 22
CELL = 34  # a column per class: wider pictures for many classes, Telegram lets one zoom in
LABEL_WIDTH = 300  # the row names: "12. American pit bull terrier" fits, longer ones are cut
INK, MUTED, PAPER, GRID = (31, 35, 40), (100, 105, 112), (255, 255, 255), (222, 226, 232)
RIGHT, WRONG = (76, 114, 176), (221, 132, 82)  # the diagonal blue, mistakes orange (top-k's)


def _shade(colour: tuple[int, int, int], share: float) -> tuple[int, int, int]:
    """`colour` at `share` (0..1) over white paper."""
    return tuple(round(255 + (c - 255) * share) for c in colour)  # type: ignore[return-value]


def title(result: RetrainResult, language: str) -> str:
    """The version, what the accuracy is and on how many photos, as the reply says it."""
    cross_validated = result.metrics.get("accuracy_source") == "cross_validation"
    return t(
        language,
        "confusion_title_cv" if cross_validated else "confusion_title",
        version=result.version,
        pct=percent(result.test_accuracy, language, digits=1),
        n=sum(map(sum, result.confusion_matrix or [])),
    )


def title_lines(result: RetrainResult, language: str, width: int = MIN_WIDTH) -> list[str]:
    """The title wrapped to the picture's width: up to three lines, so it is never cut."""
    return _wrap(title(result, language), _font(TITLE_SIZE, "Semibold"), width - 2 * MARGIN, 3)


def confusion_chart(result: RetrainResult, language: str = "en") -> bytes:
    """The matrix as PNG bytes: numbered rows (true breed) against numbered columns (answer)."""
    matrix, names = result.confusion_matrix or [], result.class_names
    n = len(matrix)
    width = max(MIN_WIDTH, 2 * MARGIN + LABEL_WIDTH + n * CELL)
    title_font, text_font = _font(TITLE_SIZE, "Semibold"), _font(TEXT_SIZE)
    heading = title_lines(result, language, width)
    axes = _wrap(t(language, "confusion_axes"), text_font, width - 2 * MARGIN)
    top = MARGIN + len(heading) * (TITLE_SIZE + 6) + len(axes) * (TEXT_SIZE + 4) + 12
    grid_top = top + TEXT_SIZE + 8  # under the column numbers
    height = grid_top + n * CELL + MARGIN
    image = Image.new("RGB", (width, height), PAPER)
    draw = ImageDraw.Draw(image)
    y = MARGIN
    for line in heading:
        draw.text((MARGIN, y), line, font=title_font, fill=INK)
        y += TITLE_SIZE + 6
    for line in axes:
        draw.text((MARGIN, y), line, font=text_font, fill=MUTED)
        y += TEXT_SIZE + 4
    left = MARGIN + LABEL_WIDTH
    for i, row in enumerate(matrix):
        x = left + i * CELL + CELL / 2
        draw.text((x, top), str(i + 1), font=text_font, fill=MUTED, anchor="ma")
        y = grid_top + i * CELL
        name = names[i] if i < len(names) else "?"
        label = _fit(f"{i + 1}. {name}", text_font, LABEL_WIDTH - 8)
        draw.text((MARGIN, y + CELL / 2), label, font=text_font, fill=INK, anchor="lm")
        total = sum(row) or 1
        for j, count in enumerate(row):
            box = (left + j * CELL, y, left + (j + 1) * CELL, y + CELL)
            # Any mistake shows, however few: a fifth of the colour at least.
            share = max(count / total, 0.2) if count else 0.0
            colour = _shade(RIGHT if i == j else WRONG, share)
            draw.rectangle(box, fill=colour, outline=GRID)
            if count:
                ink = PAPER if count / total > 0.55 else INK
                centre = (box[0] + CELL / 2, y + CELL / 2)
                draw.text(centre, str(count), font=text_font, fill=ink, anchor="mm")
    buffer = io.BytesIO()
    image.save(buffer, format="png", optimize=False, compress_level=6)
    return buffer.getvalue()
