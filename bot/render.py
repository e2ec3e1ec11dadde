"""Reply texts and pictures built from worker results (used by the reply task, not the bot loop)."""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from bot.i18n import PROBLEMS, duration, error_reason, percent, problem_text, t
from contract import Answer, ClassifyResult, Guess, Progress, RetrainResult


def _guesses(result: ClassifyResult) -> list[Guess]:
    return [Guess.from_dict(g) for g in result.top_k]


def headline(result: ClassifyResult, language: str, low_confidence: float) -> str:
    """One line: the breed and confidence, "not sure", "no cat or dog" or why the image failed."""
    if result.error:
        reason = error_reason(language, result.error, result.error_message)
        return t(language, "bad_image", reason=reason)
    if result.is_pet is False:  # None: the backbone has no ImageNet head to gate with
        return t(
            language,
            "no_pet",
            label=result.imagenet_label,
            pct=percent(result.imagenet_probability, language),
        )
    answer = Answer.from_dict(result.answer) if result.answer else None
    if answer is not None and not answer.trained and answer.species:
        return _outside(answer, language)
    best = _guesses(result)[0]
    name, score = best.display_name, best.probability
    if answer is not None and answer.trained:  # the decision's calibrated probability
        name, score = answer.display_name or name, answer.score
    sure = score >= low_confidence and not result.pet_unsure
    key = "result" if sure else "not_sure"
    return t(language, key, name=name, pct=percent(score, language))


def _outside(answer: Answer, language: str) -> str:
    """ "A dog, but not one of the 3 breeds I know", with ImageNet's breed when it named one."""
    if answer.display_name:
        return t(
            language,
            f"outside_{answer.species}_breed",
            n=answer.known_breeds,
            name=answer.display_name,
            pct=percent(answer.score, language),
        )
    return t(language, f"outside_{answer.species}", n=answer.known_breeds)


def classification_text(result: ClassifyResult, language: str, low_confidence: float) -> str:
    """The full answer to one photo: headline, the next two guesses and the model version."""
    lines = [headline(result, language, low_confidence)]
    if not result.error and result.is_pet is not False:
        following = ", ".join(
            f"{g.display_name} ({percent(g.probability, language)})" for g in _guesses(result)[1:3]
        )
        if following:
            lines.append(t(language, "next_guesses", guesses=following))
    lines.append(t(language, "model_version", version=result.model_version))
    return "\n".join(lines)


def album_text(results: Sequence[ClassifyResult], language: str, low_confidence: float) -> str:
    """One reply for an album: a numbered headline per photo, then the model version."""
    lines = [t(language, "album", n=len(results))]
    lines += [
        t(language, "album_item", i=i, text=headline(r, language, low_confidence))
        for i, r in enumerate(results, start=1)
    ]
    versions = sorted({r.model_version for r in results})
    lines.append(t(language, "model_version", version="/".join(map(str, versions))))
    return "\n".join(lines)


# The chart is drawn for a phone: Telegram shows a photo about 360 px wide, so at 720 px every
# size below is halved on screen (names 15 px). Each guess gets the full width: its name (wrapped
# to two lines, then cut with "…") and percentage on one row, a bar against a 100 % track below.
CHART_WIDTH = 720
MARGIN = 28
NAME_SIZE, TITLE_SIZE, AXIS_SIZE = 30, 34, 24
BAR_HEIGHT, ROW_GAP, NAME_GAP = 20, 22, 6
INK, WHITE = (31, 35, 40), (255, 255, 255)
# The picture is drawn straight into 8-bit palette indices: a PNG of those encodes three times
# faster than RGB and needs no colour quantizing (which cost more than all the drawing). Indices
# 0..PAPER ramp from ink to white, so antialiased text blends along it (Pillow blends indices);
# the bars' solid colours sit above it, and text is never drawn over a bar.
PAPER = 200
TEXT, MUTED = 0, 90  # ink, and a grey on the ramp
BEST, OTHERS, TRACK = PAPER + 1, PAPER + 2, PAPER + 3
PALETTE = [
    *(
        round(ink + (white - ink) * k / PAPER)
        for k in range(PAPER + 1)
        for ink, white in zip(INK, WHITE, strict=True)
    ),
    *(0xDD, 0x84, 0x52),  # best guess: orange
    *(0x4C, 0x72, 0xB0),  # the others: blue
    *(0xE6, 0xE9, 0xEF),  # the 100 % track
]


@functools.cache
def _font(size: int, weight: str = "Regular") -> ImageFont.FreeTypeFont:
    # Source Sans Pro (SIL OFL) ships in a wheel and covers Latin with its accents; Pillow's own
    # default font has ASCII only. Basic layout: breed names need no shaping, and it is faster.
    path = files("font_source_sans_pro") / "files" / f"SourceSansPro-{weight}.ttf"
    return ImageFont.truetype(str(path), size, layout_engine=ImageFont.Layout.BASIC)


@functools.lru_cache(maxsize=4096)
def _glyphs(text: str, font: ImageFont.FreeTypeFont, anchor: str) -> tuple[Image.Image, int, int]:
    """`text` rendered once as a 1-bit mask, and its offset from the anchor point."""
    left, top, right, bottom = font.getbbox(text, anchor=anchor, mode="1")
    mask = Image.new("1", (max(right - left, 1), max(bottom - top, 1)), 0)
    ImageDraw.Draw(mask).text((-left, -top), text, font=font, fill=1, anchor=anchor)
    return mask, left, top


def _text(
    image: Image.Image,
    xy: tuple[float, float],
    text: str,
    font: ImageFont.FreeTypeFont,
    fill: int,
    anchor: str = "la",
) -> None:
    """`ImageDraw.text` on the palette picture, pixel for pixel, from a cache of rendered texts.

    Rendering glyphs was a third of the chart's CPU; breed names, titles, axis labels and
    percentages repeat from one answer to the next. (Pillow draws text on a palette image
    without antialiasing, which a 1-bit mask reproduces exactly.)
    """
    mask, left, top = _glyphs(text, font, anchor)
    image.paste(fill, (round(xy[0]) + left, round(xy[1]) + top), mask)


@functools.lru_cache(maxsize=4096)
def _length(text: str, font: ImageFont.FreeTypeFont) -> float:
    """`font.getlength(text)`, measured once per text: the same names are wrapped every time."""
    return font.getlength(text)


def _fit(text: str, font: ImageFont.FreeTypeFont, width: float) -> str:
    """`text` cut to `width` pixels, with "…" when it did not fit."""
    if _length(text, font) <= width:
        return text
    while text and _length(text + "…", font) > width:
        text = text[:-1]
    return text.rstrip() + "…"


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: float, lines: int = 2) -> list[str]:
    """Word-wrap `text` to at most `lines` lines of `width` pixels; the last one is cut."""
    words, out = text.split(), []
    while words and len(out) < lines - 1:
        line = words.pop(0)
        while words and _length(f"{line} {words[0]}", font) <= width:
            line = f"{line} {words.pop(0)}"
        if _length(line, font) > width:  # one word longer than the line
            words.insert(0, line)
            break
        out.append(line)
    if words:
        out.append(_fit(" ".join(words), font, width))
    return out


def top_k_chart(result: ClassifyResult, language: str = "en") -> bytes:
    """A bar chart of the top-k probabilities, best on top, as PNG bytes (Pillow, no matplotlib)."""
    guesses = _guesses(result)
    title_font, axis_font = _font(TITLE_SIZE, "Semibold"), _font(AXIS_SIZE)
    # The best guess in semibold, the others regular.
    fonts = [
        _font(NAME_SIZE, "Semibold" if rank == 0 else "Regular") for rank in range(len(guesses))
    ]
    inner = CHART_WIDTH - 2 * MARGIN
    name_width = inner - _length("100 %", fonts[0]) - 16
    rows = [_wrap(g.display_name, f, name_width) for g, f in zip(guesses, fonts, strict=True)]
    line_height = NAME_SIZE + 4
    title = t(language, "chart_title", n=len(guesses), version=result.model_version)
    height = MARGIN + TITLE_SIZE + ROW_GAP
    height += sum(len(r) * line_height + NAME_GAP + BAR_HEIGHT + ROW_GAP for r in rows)
    height += AXIS_SIZE * 2 + MARGIN
    image = Image.new("P", (CHART_WIDTH, height), PAPER)
    image.putpalette(PALETTE)
    draw = ImageDraw.Draw(image)
    _text(image, (MARGIN, MARGIN), _fit(title, title_font, inner), title_font, TEXT)
    y = MARGIN + TITLE_SIZE + ROW_GAP
    for rank, (guess, lines, font) in enumerate(zip(guesses, rows, fonts, strict=True)):
        for line in lines:
            _text(image, (MARGIN, y), line, font, TEXT)
            y += line_height
        _text(
            image,
            (CHART_WIDTH - MARGIN, y - line_height),
            percent(guess.probability, language),
            font,
            TEXT,
            anchor="ra",
        )
        y += NAME_GAP
        draw.rectangle((MARGIN, y, CHART_WIDTH - MARGIN, y + BAR_HEIGHT), fill=TRACK)
        end = MARGIN + round(inner * min(max(guess.probability, 0.0), 1.0))
        if end > MARGIN:
            draw.rectangle((MARGIN, y, end, y + BAR_HEIGHT), fill=BEST if rank == 0 else OTHERS)
        y += BAR_HEIGHT + ROW_GAP
    # The axis: the track spans 0 to 100 %, named in the user's language.
    for share, anchor in ((0.0, "la"), (0.5, "ma"), (1.0, "ra")):
        x = MARGIN + inner * share
        _text(image, (x, y - ROW_GAP + 4), percent(share, language), axis_font, MUTED, anchor)
    axis = t(language, "chart_axis")
    _text(image, (CHART_WIDTH / 2, y + AXIS_SIZE), axis, axis_font, MUTED, anchor="ma")
    buffer = io.BytesIO()
    image.save(buffer, format="png", compress_level=3)
    return buffer.getvalue()


def progress_text(progress: Progress, language: str) -> str:
    """A running retrain's status: which backbone (which candidate of `auto`), then the stage
    ("🏋️ Training step 300/500 · about 20 seconds left · validation accuracy 91%")."""
    text = t(language, f"progress_{progress.stage}", done=progress.done, total=progress.total)
    if progress.seconds_left is not None:
        text += " · " + t(language, "progress_left", time=duration(progress.seconds_left, language))
    if progress.validation_accuracy is not None:
        accuracy = t(language, "validation", pct=percent(progress.validation_accuracy, language))
        text = f"{text} · {accuracy}"
    if progress.candidate is not None:
        head = t(language, "progress_candidate", i=progress.candidate, n=progress.candidates,
                 backbone=progress.backbone)  # fmt: skip
        return f"{head}\n{text}"
    if progress.backbone is not None:
        return f"{t(language, 'progress_backbone', backbone=progress.backbone)}\n{text}"
    return text


def _dataset_lines(dataset: dict[str, Any] | None, language: str) -> list[str]:
    """Where the photos came from, when more than one upload went in (a merge, feedback)."""
    if not dataset or (dataset.get("base_version") is None and not dataset["sources"]["feedback"]):
        return []
    sources, version = dataset["sources"], dataset.get("base_version")
    parts = [
        t(language, f"source_{name}", n=sources[name], version=version)
        for name in ("kept", "upload", "feedback")
        if sources.get(name)
    ]
    lines = [t(language, "dataset_sources", n=dataset["photos"], parts=", ".join(parts))]
    new = dataset.get("new_classes") or []
    if new:
        key = "new_class" if len(new) == 1 else "new_classes"
        lines.append(t(language, key, n=len(new), names=", ".join(new)))
    return lines


def _open_set_lines(metrics: dict[str, Any], language: str) -> list[str]:
    """What the version knows, how other photos are answered, and its calibration."""
    report = metrics.get("open_set")
    if not report:
        return []
    n = len(report["species"])
    return [
        t(language, "retrain_knows", n=n),
        t(
            language,
            "retrain_open_set",
            claimed=percent(report["left_out_claimed"], language),
            refused=percent(report["right_refused"], language),
        ),
        t(
            language,
            "retrain_calibration",
            before=percent(report["ece_before"], language),
            after=percent(report["ece_after"], language),
        ),
    ]


def _retrain_headline(result: RetrainResult, language: str, cv: dict[str, Any] | None) -> str:
    """✅ with the accuracy, or ⚠️ for a version the gate kept out; one decimal, as the gate's."""
    live = "retrain_done" if result.activated else "retrain_kept"
    if cv:
        return t(
            language,
            f"{live}_cv",
            version=result.version,
            n=result.metrics.get("n_train", "?"),
            k=cv["k"],
            pct=percent(cv["accuracy"], language, digits=1),
            spread=percent(cv["std"], language, digits=1),
        )
    accuracy = percent(result.test_accuracy or 0, language, digits=1)
    n_test = result.metrics.get("n_test", 0)
    return t(language, live, version=result.version, pct=accuracy, n=n_test)


def retrain_text(result: RetrainResult, language: str) -> str:
    """The final status of a retrain: accuracy, weakest classes and whether it went live."""
    cv = result.metrics.get("cross_validation")
    cv = cv if result.metrics.get("accuracy_source") == "cross_validation" else None
    # The gate measured the cross-validated accuracy then: name it so, not "test accuracy".
    problem = f"{result.problem}_cv" if cv and result.problem else result.problem
    if problem not in PROBLEMS.get(language, {}):
        problem = result.problem
    reason = problem_text(language, problem, result.params, result.reason)
    lines = [_retrain_headline(result, language, cv)]
    auto = result.metrics.get("auto")
    if auto:
        scores = ", ".join(
            f"{name} {percent(c['cv_accuracy'], language, digits=1)}"
            for name, c in auto["candidates"].items()
        )
        lines.append(t(language, "backbone_auto", chosen=auto["chosen"], scores=scores))
    worst = result.metrics.get("worst_classes") or []
    if worst:
        lines.append(t(language, "worst_classes"))
        lines += [
            t(
                language,
                "worst_class",
                name=name,
                right=round(share * n),
                n=n,
                pct=percent(share, language),
            )
            for name, share, n in worst
        ]
    lines += _dataset_lines(result.metrics.get("dataset"), language)
    lines += _open_set_lines(result.metrics, language)
    if result.activated:
        lines.append(t(language, "retrain_live"))
    else:
        lines.append(t(language, "retrain_not_live", reason=reason))
    return "\n".join(lines)


# Telegram refuses longer texts and captions ("message is too long"); the answer would be lost.
MESSAGE_LIMIT = 4096
CAPTION_LIMIT = 1024


def fit(text: str, language: str, limit: int = MESSAGE_LIMIT) -> str:
    """`text` within Telegram's `limit`: cut at a line end where one is near, and a last line
    saying how much was left out (a retrain of 1,500 classes, /breeds of a big model)."""
    if len(text) <= limit:
        return text
    room = limit - len(t(language, "text_cut", n=len(text))) - 1
    cut = text[:room]
    line_end = cut.rfind("\n")
    if line_end > room // 2:  # whole lines, unless that throws away more than half
        cut = cut[:line_end]
    return f"{cut}\n{t(language, 'text_cut', n=len(text) - len(cut))}"
