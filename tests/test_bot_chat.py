"""What the bot says by itself, without a worker: hints, usage answers, worded refusals.

The real bot process against the emulator and Redis; a worker only where a test names one.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import contract
from bot.handlers.feedback import folder_label, match_breed
from bot.i18n import problem_text, t
from bot.keyboards import feedback_keyboard
from fakegram.api import PlaygroundClient
from harness.stack import Stack
from harness.waiting import wait_until
from ops.redis_server import RedisServer
from store.registry import Registry
from worker import tf_jobs
from worker.settings import WorkerSettings

ADMIN = 5151


@pytest.fixture(scope="module")
def chat(session_stack: Stack) -> Iterator[PlaygroundClient]:
    """A bot of this module's own (admin: ADMIN), and the user's side of the emulator."""
    bot = session_stack.start("bot-chat", ["-m", "bot.app"], "bot", ADMIN_IDS=str(ADMIN))
    try:
        with contextlib.closing(session_stack.client()) as client:
            yield client
    finally:
        bot.kill()


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


def test_merge_without_a_zip_says_what_to_attach(chat: PlaygroundClient) -> None:
    """`/retrain merge` with nothing attached: what merge does and what to send, both languages."""
    assert _answer(chat, ADMIN, "/retrain merge") == t("en", "retrain_merge_usage")
    assert _answer(chat, ADMIN, "/retrain merge=1", language_code="pt-br").startswith(
        "O /retrain merge junta fotos às que o modelo ativo aprendeu: anexe o .zip"
    )


def test_option_errors_are_worded_for_people(chat: PlaygroundClient) -> None:
    """`steps=abc` says what a good value is, not "'abc' is not a valid int"."""
    reply = _answer(chat, ADMIN, "/retrain feedback steps=abc lr=5", language_code="pt-br")
    assert reply.splitlines()[1:] == [
        "• steps=abc: use um número inteiro de 1 a 100000",
        "• lr=5: use um número de 0.00001 a 1",
    ]


def test_one_class_feedback_retrain_says_to_collect_more(
    tmp_path: Path, datasets: Path, reg: Registry, registry_server: RedisServer
) -> None:
    """Corrections of one breed only: the admin is told to collect more, not to make folders."""
    feedback = tmp_path / "feedback" / "pug"
    feedback.mkdir(parents=True)
    # An old FEEDBACK_DIR (<label>/<photo id>.jpg): the retrain imports it into the store.
    for i, photo in enumerate(sorted((datasets / "pets-dev" / "pug").glob("*.jpg"))[:4]):
        (feedback / f"{i:012x}.jpg").write_bytes(photo.read_bytes())
    # An empty registry (`reg` flushed it): version 0 is active, with no kept dataset.
    redis_url = registry_server.url
    settings = WorkerSettings(_env_file=None, var_dir=tmp_path, redis_url=redis_url)
    dataset = contract.DatasetRef(name="feedback", feedback=True).to_dict()
    request = contract.RetrainRequest(dataset=dataset, params={}, requested_by=ADMIN)
    with pytest.raises(contract.Refused) as one_class:
        tf_jobs.run(request, settings, lambda _: None)
    refusal = one_class.value
    assert refusal.problem == "feedback_one_class"
    english = problem_text("en", refusal.problem, refusal.params, refusal.message)
    assert "cover only 1 breed(s): Pug." in english and "folder" not in english
    portuguese = problem_text("pt-BR", refusal.problem, refusal.params, refusal.message)
    assert "pelo menos 2: toque em ✅ ou ❌" in portuguese
    with pytest.raises(contract.Refused) as empty:
        tf_jobs.run(
            request,
            WorkerSettings(_env_file=None, var_dir=tmp_path / "none", redis_url=redis_url),
            lambda _: None,
        )
    refusal = empty.value
    reason = problem_text("en", refusal.problem, refusal.params, refusal.message)
    assert t("en", "retrain_failed", reason=reason) == (
        "❌ Retrain failed: No corrections yet: press ✅ or ❌ under answers to photos first."
    )


def test_zero_shot_and_retrained_labels_file_alike_and_typed_breeds_match() -> None:
    """v0's "Egyptian Mau" and a retrained "Egyptian_Mau" are one folder; typos still match."""
    assert folder_label("Egyptian Mau") == folder_label("Egyptian_Mau") == "Egyptian_Mau"
    known = [["Egyptian Mau", "Egyptian Mau"], ["Siamese cat", "Siamese cat"], ["pug", "Pug"]]
    assert match_breed("egyptian_mau", known) == known[0]
    assert match_breed("  Egyptain  Mau ", known) == known[0]
    assert match_breed("siamese kat", known) == known[1]
    assert match_breed("zebra", known) is None


def _buttons(message: dict[str, Any]) -> dict[str, str]:
    rows = message.get("reply_markup", {}).get("inline_keyboard", [])
    return {b["text"]: b["callback_data"] for row in rows for b in row}


def _answered_photo(
    chat: PlaygroundClient, stack: Stack, db: redis.Redis, datasets: Path, user: int
) -> tuple[list[str], dict[str, Any]]:
    """A photo `user` sent and its answer with the ✅/❌ row (the worker's part played here):
    the photo's Redis key (in a list) and the answer message."""
    photo = sorted((datasets / "pets-dev" / "Egyptian_Mau").glob("*.jpg"))[0].read_bytes()
    chat.send(user, file=photo, user_id=user)
    mine = wait_until(
        lambda: [k for k in db.scan_iter("breedbot:photo:*") if db.hget(k, "chat_id") == str(user)],
        30,
        "the bot to record the photo",
    )
    photo_id = mine[0].rsplit(":", 1)[1]
    # What the reply task does: the answer's guesses, the model's labels, the answer itself.
    guesses = [["tabby", "Tabby"], ["Egyptian Mau", "Egyptian Mau"], ["pug", "Pug"]]
    db.hset(mine[0], mapping={"labels": json.dumps(guesses), "version": 0})
    known = [*guesses, ["Siamese cat", "Siamese cat"]]
    db.set(contract.labels_key(0), json.dumps(known))
    answer = chat.http.post(
        f"/bot{stack.token}/sendMessage",
        json={
            "chat_id": user,
            "text": "Tabby — 51%",
            "reply_markup": feedback_keyboard(photo_id, "en"),
        },
    ).json()["result"]
    return mine, answer


def _press(chat: PlaygroundClient, user: int, message: dict[str, Any], data: str) -> list[str]:
    """Press a button; the texts of the bot's answers to the press (its toast)."""
    cursor = chat.events(user)[-1]["seq"]
    chat.press(user, message["message_id"], data)
    events = chat.wait_for(user, lambda ev: any(e["type"] == "answer" for e in ev), after=cursor)
    return [e["text"] for e in events if e["type"] == "answer"]


def test_a_typed_breed_is_awaited_only_until_the_user_moves_on(
    chat: PlaygroundClient, session_stack: Stack, redis_server: RedisServer, datasets: Path
) -> None:
    """After ❌ a command ends the wait (a later "olá" is not a breed name); "✏️ another breed"
    asks for the name and files the typed breed; "🚫 skip" is the way to use the photo for none."""
    user = 403
    db = redis.Redis.from_url(redis_server.url, decode_responses=True)
    mine, answer = _answered_photo(chat, session_stack, db, datasets, user)
    assert _press(chat, user, answer, _buttons(answer)["❌ wrong"]) == [t("en", "which")]
    assert _answer(chat, user, "/help").startswith("Send a photo")
    assert _answer(chat, user, "olá").startswith("I look at photos")  # not "no breed called olá"
    edited = [e["message"] for e in chat.events(user) if e["type"] == "edited"][-1]
    buttons = _buttons(edited)
    assert {"✏️ another breed (type it)", "🚫 skip this photo"} <= set(buttons)
    assert _press(chat, user, edited, buttons["✏️ another breed (type it)"]) == [
        "Type the breed's name as your next message."
    ]
    assert _answer(chat, user, "siamese cat") == "Thanks! Saved as Siamese cat."
    assert db.hget(mine[0], "label") == "Siamese_cat"


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        (ADMIN, "Got pets.zip. To train a new model on it, reply /retrain to it"),
        (404, "Only admins can retrain me with a zip of photos"),
    ],
)
def test_a_zip_alone_says_what_to_do_with_it(
    chat: PlaygroundClient, user: int, expected: str
) -> None:
    """Not "That file is not an image": the page's own hint sends a zip first."""
    cursor = chat.events(user)[-1]["seq"] if chat.events(user) else 0
    chat.send(user, file=b"PK\x05\x06" + bytes(18), kind="document", filename="pets.zip",
              mime_type="application/zip", user_id=user)  # fmt: skip
    events = chat.wait_for(user, lambda ev: any(e["type"] == "sent" for e in ev), after=cursor)
    assert next(e["message"]["text"] for e in events if e["type"] == "sent").startswith(expected)


def test_feedback_takes_one_answer_and_a_typed_breed(
    chat: PlaygroundClient, session_stack: Stack, redis_server: RedisServer, datasets: Path
) -> None:
    """❌, then the breed typed with a typo: filed once under the raw label, the keyboard gone,
    and a later press of the old ✅ changes nothing. (The worker's part is played here.)"""
    user = 402
    db = redis.Redis.from_url(redis_server.url, decode_responses=True)
    mine, answer = _answered_photo(chat, session_stack, db, datasets, user)
    cursor = chat.events(user)[-1]["seq"]
    chat.press(user, answer["message_id"], _buttons(answer)["❌ wrong"])
    events = chat.wait_for(user, lambda ev: any(e["type"] == "answer" for e in ev), after=cursor)
    assert [e["text"] for e in events if e["type"] == "answer"] == [
        "Which breed is it? Tap one, or type its name."
    ]
    assert _answer(chat, user, "zebra").startswith("I do not know a breed called “zebra”.")
    assert _answer(chat, user, "egyptain mau") == "Thanks! Saved as Egyptian Mau."
    assert db.hget(mine[0], "label") == "Egyptian_Mau"
    # The keyboard goes away with the answer.
    chat.wait_for(user, lambda ev: any(e["type"] == "edited" and "reply_markup" not in e["message"]
                                       for e in ev), after=cursor)  # fmt: skip
    cursor = chat.events(user)[-1]["seq"]
    chat.press(user, answer["message_id"], _buttons(answer)["✅ right"])
    events = chat.wait_for(user, lambda ev: any(e["type"] == "answer" for e in ev), after=cursor)
    # Only the callback's answer: the bot may log more (its getUpdates confirming the press).
    assert [e["text"] for e in events if e["type"] == "answer"] == [
        "This photo has its answer already. Thanks!"
    ]
    assert db.hget(mine[0], "label") == "Egyptian_Mau"
    assert _answer(chat, user, "egyptian mau").startswith("I look at photos")  # no longer asked
