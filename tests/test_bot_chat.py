"""What the bot says by itself, without a worker: hints, usage answers, worded refusals.

The real bot process against the emulator and Redis; a worker only where a test names one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from bot import render
from bot.fake_api import PlaygroundClient
from worker import contract, retraining
from worker.settings import WorkerSettings

if TYPE_CHECKING:
    from conftest import ServiceHandle

ADMIN = 5151


@pytest.fixture(scope="module")
def chat(
    spawn_service: Callable[..., ServiceHandle], emulator_url: str
) -> Iterator[PlaygroundClient]:
    """A bot of this module's own (admin: ADMIN), and the user's side of the emulator."""
    handle = spawn_service("bot-chat", ["-m", "bot.app"], ADMIN_IDS=str(ADMIN))
    try:
        with contextlib.closing(PlaygroundClient(emulator_url)) as client:
            yield client
    finally:
        handle.kill()


def _answer(chat: PlaygroundClient, user: int, text: str, **form: Any) -> str:
    """Send `text` as `user` and return the bot's next message."""
    before = chat.events(user)
    cursor = before[-1]["seq"] if before else 0
    chat.send(user, text=text, user_id=user, **form)
    events = chat.wait_for(
        user, lambda ev: any(e["type"] == "sent" for e in ev), timeout=60, after=cursor
    )
    return next(e["message"]["text"] for e in events if e["type"] == "sent")


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        ("hello there", "en", "I look at photos of cats and dogs: send me one. /help"),
        ("oi, tudo bem?", "pt-br", "Eu olho fotos de gatos e cachorros: mande uma. /help"),
        ("/frobnicate now", "en", "I do not know /frobnicate. /help lists what I can do."),
        ("/frobnicate", "pt-br", "Não conheço /frobnicate. /help lista o que sei fazer."),
    ],
)
def test_plain_text_and_unknown_commands_get_a_hint(
    chat: PlaygroundClient, text: str, language: str, expected: str
) -> None:
    """No silence: plain text and unknown commands point to /help, in the user's language."""
    assert _answer(chat, 401, text, language_code=language).startswith(expected)


def test_promote_without_a_number_says_how(chat: PlaygroundClient) -> None:
    """`/promote abc` explains itself with an example, in both languages."""
    assert _answer(chat, ADMIN, "/promote abc") == (
        "Which version? Write its number, for example /promote 3 (/models lists them)."
    )
    assert _answer(chat, ADMIN, "/promote", language_code="pt-br").startswith(
        "Qual versão? Escreva o número, por exemplo /promote 3"
    )


def test_option_errors_are_worded_for_people(chat: PlaygroundClient) -> None:
    """`steps=abc` says what a good value is, not "'abc' is not a valid int"."""
    reply = _answer(chat, ADMIN, "/retrain feedback steps=abc lr=5", language_code="pt-br")
    assert reply.splitlines()[1:] == [
        "• steps=abc: use um número inteiro de 1 a 100000",
        "• lr=5: use um número de 0.00001 a 1",
    ]


def test_one_class_feedback_retrain_says_to_collect_more(tmp_path: Path, datasets: Path) -> None:
    """Corrections of one breed only: the admin is told to collect more, not to make folders."""
    feedback = tmp_path / "feedback" / "pug"
    feedback.mkdir(parents=True)
    for photo in sorted((datasets / "pets-dev" / "pug").glob("*.jpg"))[:4]:
        (feedback / photo.name).write_bytes(photo.read_bytes())
    settings = WorkerSettings(_env_file=None, var_dir=tmp_path)
    dataset = contract.DatasetRef(name="feedback", feedback=True).to_dict()
    request = contract.RetrainRequest(dataset=dataset, params={}, requested_by=ADMIN)
    result = retraining.run(request, settings, lambda _: None)
    assert result.problem == "feedback_one_class"
    english = render.retrain_text(result, "en")
    assert "cover only 1 breed(s): 'pug'" in english and "folder" not in english
    assert "pelo menos 2: toque em ✅ ou ❌" in render.retrain_text(result, "pt-BR")
    empty = retraining.run(
        request, WorkerSettings(_env_file=None, var_dir=tmp_path / "none"), lambda _: None
    )
    assert render.retrain_text(empty, "en") == (
        "❌ Retrain failed: No corrections yet: press ✅ or ❌ under answers to photos first."
    )
