"""A retrain's progress as a chat user reads it: which stage, which backbone (which candidate of
`auto`), about how long the stage has left, in plain words (en and pt-BR)."""

from __future__ import annotations

import pytest

import contract
from bot import render
from bot.i18n import STRINGS
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
