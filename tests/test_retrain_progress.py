"""A retrain as a chat user reads it: progress with its stage, backbone (which candidate of
`auto`) and the time the stage has left, in plain words (en and pt-BR); the confusion-matrix
picture, drawn by the bot in the user's language."""

from __future__ import annotations

import dataclasses
import io

import pytest
from PIL import Image

import contract
from bot import confusion_chart, render
from bot.i18n import STRINGS
from contract import RetrainResult
from worker.retraining import Reporter


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_reporter_names_stage_backbone_candidate_and_time_left() -> None:
    clock, sent = Clock(), []
    report = Reporter(sent.append, deadline=1e9, clock=clock)
    report("bottlenecks@efficientnet_lite1#2/3", 0, 60, None)
    clock.now += 10
    report("bottlenecks@efficientnet_lite1#2/3", 20, 60, None)  # 2 photos/s: 40 to go in 20 s
    clock.now += 1
    report("final@efficientnet_lite1", 100, 5000, 0.9)  # a new stage: no pace yet
    report("saving", 0, 1, None)
    assert sent == [
        contract.Progress("bottlenecks", 0, 60, None, "efficientnet_lite1", 2, 3),
        contract.Progress("bottlenecks", 20, 60, None, "efficientnet_lite1", 2, 3, 20.0),
        contract.Progress("final", 100, 5000, 0.9, "efficientnet_lite1"),
        contract.Progress("saving", 0, 1, 0.9),
    ]


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("en", "🔎 Choosing a backbone: trying 2 of 3, efficientnet_lite1\n"
               "🧮 Reading the photos 20/60 · about 20 seconds left"),
        ("pt-BR", "🔎 Escolhendo um backbone: testando 2 de 3, efficientnet_lite1\n"
                  "🧮 Lendo as fotos 20/60 · faltam cerca de 20 segundos"),
    ],
)  # fmt: skip
def test_progress_text_says_stage_backbone_and_time_left(language: str, expected: str) -> None:
    progress = contract.Progress("bottlenecks", 20, 60, None, "efficientnet_lite1", 2, 3, 20.0)
    assert render.progress_text(progress, language) == expected
    final = contract.Progress("final", 4000, 5000, 0.91, "efficientnet_lite1", seconds_left=130)
    assert render.progress_text(final, "en") == (
        "🧠 Backbone efficientnet_lite1\n"
        "🏁 Training the final model, step 4000/5000 · about 2 minutes left · "
        "validation accuracy 91%"
    )


def test_the_chat_has_no_tutorial_jargon_and_says_when_the_child_starts() -> None:
    for language, strings in STRINGS.items():
        assert not [k for k, v in strings.items() if "bottleneck" in v.lower()], language
        starting = render.progress_text(contract.Progress("starting", 0, 1), language)
        assert starting.startswith("⚙️") and starting != strings["retrain_queued"]


def _cv_result(accuracy: float, names: list[str], matrix: list[list[int]]) -> RetrainResult:
    cv = {"k": 5, "accuracy": accuracy, "std": 0.02}
    metrics = {"accuracy_source": "cross_validation", "cross_validation": cv, "n_train": 60}
    return RetrainResult(4, True, accuracy, metrics, confusion_matrix=matrix,
                                  class_names=names)  # fmt: skip


def test_confusion_picture_is_translated_titled_whole_and_rounded_as_the_text() -> None:
    names = ["Russian Blue", "American pit bull terrier", "Staffordshire bull terrier"]
    result = _cv_result(0.987, names, [[20, 0, 0], [0, 19, 1], [0, 0, 20]])
    for language, pct, words in (("en", "98.7%", "cross-validated"), ("pt-BR", "98,7%", "cruzada")):
        heading = confusion_chart.title(result, language)
        assert pct in heading and words in heading and "N=" not in heading
        assert pct in render.retrain_text(result, language).splitlines()[0]  # same rounding
        # Wrapped, never cut: every word of the title is drawn.
        lines = confusion_chart.title_lines(result, language)
        assert " ".join(lines) == heading and "…" not in heading
        picture = Image.open(io.BytesIO(confusion_chart.confusion_chart(result, language)))
        assert picture.format == "PNG" and picture.width >= confusion_chart.MIN_WIDTH
    # Thirty-seven breeds get a wider picture, a column each.
    many = _cv_result(0.9, [f"Breed {i}" for i in range(37)], [[1] * 37 for _ in range(37)])
    wide = Image.open(io.BytesIO(confusion_chart.confusion_chart(many, "en")))
    assert wide.width >= 37 * confusion_chart.CELL


def test_confusion_matrix_travels_as_numbers_with_display_names() -> None:
    """The worker sends the matrix and the names the chat shows; the bot draws the picture."""
    fields = {f.name for f in dataclasses.fields(contract.RetrainResult)}
    assert {"confusion_matrix", "class_names"} <= fields
    assert "confusion_png_b64" not in fields
