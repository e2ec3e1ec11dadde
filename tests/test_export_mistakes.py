"""The mistakes as pictures (contact sheet, eval's HTML page) on real photos; fast, no model."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.i18n import t
from model import metrics
from model.mistakes import (
    ENGLISH_CAPTION,
    MARGIN,
    MAX_TILES,
    PHOTO_LIMIT_BYTES,
    caption_font,
    contact_sheet,
    safe_caption,
    wrap,
)
from model.report_html import html_report


@pytest.fixture
def pets(datasets: Path) -> Path:
    return datasets / "pets-dev"


def _mistakes(root: Path, n: int) -> list[dict]:
    photos = sorted(root.glob("*/*.jpg"))[:: 599 // max(n, 1)][:n]
    return [
        {"image": str(p.relative_to(root)), "label": p.parent.name, "predicted": "pug",
         "probability": 0.4 + i / 100}
        for i, p in enumerate(photos)
    ]  # fmt: skip


def test_sheet_shows_at_most_16_under_telegrams_photo_limit(pets: Path) -> None:
    sheet = contact_sheet(pets, _mistakes(pets, 20), t("pt-BR", "mistake_caption"))
    assert sheet is not None and len(sheet) < PHOTO_LIMIT_BYTES
    image = Image.open(io.BytesIO(sheet))
    assert image.format == "JPEG"
    # 4 x 4 tiles; Telegram wants width + height <= 10000 and a ratio of at most 20.
    assert image.width + image.height <= 10_000 and max(image.size) / min(image.size) <= 20
    one = contact_sheet(pets, _mistakes(pets, 1))
    assert one is not None
    single = Image.open(io.BytesIO(one)).size  # one tile and its margins
    side = int(MAX_TILES**0.5)
    assert image.size == tuple(side * (x - MARGIN) + MARGIN for x in single)


def test_no_mistakes_no_sheet(pets: Path, tmp_path: Path) -> None:
    assert contact_sheet(pets, []) is None
    # A photo gone from disk is left out; with nothing left there is no sheet either.
    gone = [{"image": "nope.jpg", "label": "pug", "predicted": "boxer", "probability": 0.9}]
    assert contact_sheet(tmp_path, gone) is None


def test_caption_templates_from_the_queue_are_checked() -> None:
    """The template rides in a queue payload: only its three fields, plainly, are formatted."""
    for language in ("en", "pt-BR"):
        assert safe_caption(t(language, "mistake_caption")) == t(language, "mistake_caption")
    for hostile in (
        "{label:>999999999}",
        "{p.__class__.__mro__}",
        "{label!r}",
        "{0}",
        "{",
        "x" * 500,
    ):
        assert safe_caption(hostile) == ENGLISH_CAPTION
    text = t("pt-BR", "mistake_caption").format(label="Beagle", predicted="Pug", p=0.93)
    assert text == "é Beagle, respondi Pug (93%)"


def test_wrap_keeps_lines_within_the_tile() -> None:
    font = caption_font()
    lines = wrap(
        "is Staffordshire bull terrier, answered American pit bull terrier (51%)", font, 220
    )
    assert len(lines) >= 2 and all(font.getlength(line) <= 220 for line in lines)


def test_html_report_is_self_contained(pets: Path, tmp_path: Path) -> None:
    classes = ["beagle", "pug", "Bengal"]
    photos = [p for c in classes for p in sorted((pets / c).glob("*.jpg"))[:3]]
    truth = np.array([classes.index(p.parent.name) for p in photos])
    probs = np.full((len(photos), 3), 0.1)
    probs[np.arange(len(photos)), (truth + (np.arange(len(photos)) % 3 == 0)) % 3] = 0.8
    report = metrics.summarize(truth, probs, classes, [str(p.relative_to(pets)) for p in photos])
    report["model"] = "v<1>"
    page = html_report(report, pets)
    assert "v&lt;1&gt;" in page and "<script" not in page and "http" not in page
    assert "Confusion matrix" in page and "Per-class accuracy" in page
    (uri,) = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', page)
    assert Image.open(io.BytesIO(base64.b64decode(uri))).width > 0
    assert f"{len(report['misclassified'])} of {len(report['misclassified'])}" in page
    report["misclassified"] = []
    assert "No mistakes." in html_report(report, pets)
