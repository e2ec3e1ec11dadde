"""End to end: the real PTB bot and a real Celery worker on real Redis, through the emulator."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pillow_heif
import pytest
from celery import Celery
from PIL import Image

import contract
from bot.i18n import problem_text, t
from bot.render import CHART_WIDTH
from fakegram.api import PlaygroundClient
from harness.services import Service
from harness.stack import Stack
from harness.user import breeds_zip, kaggle_zip, retrain_by_reply
from harness.waiting import wait_until
from store.blobs import Store, open_store
from tests.browser import chromium_or_skip
from worker import feedback
from worker.settings import WorkerSettings

# The bot module starts with the zero-shot model live: replies name "Model v0".
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("zero_shot", "stack")]

ADMIN = 4242
BOT_ENV = {"ADMIN_IDS": str(ADMIN), "ALBUM_WAIT_SECONDS": "0.5"}


def _photo(datasets: Path, folder: str, index: int = 0) -> bytes:
    return sorted((datasets / folder).glob("*.jpg"))[index].read_bytes()


def _start_bot(stack: Stack, **env: str) -> None:
    """(Re)start the real bot with the test's admin and album settings, plus `env`."""
    stack.start_bot(**BOT_ENV, **env)


@pytest.fixture(scope="module")
def stack(worker: Service, session_stack: Stack) -> Iterator[Stack]:
    """The session's worker and emulator, and one bot for this module."""
    _start_bot(session_stack)
    yield session_stack
    assert session_stack.bot is not None
    session_stack.bot.kill()


@pytest.fixture(scope="module")
def chat(emulator_url: str) -> Iterator[PlaygroundClient]:
    """The user's side of the emulator."""
    with contextlib.closing(PlaygroundClient(emulator_url)) as client:
        yield client


@pytest.fixture(scope="module")
def feedback_store(worker_settings: WorkerSettings) -> Store:
    """Where workers file feedback photos."""
    return open_store(worker_settings.store_location)


def _filed(store: Store, photo_id: str) -> str | None:
    """The label a photo is filed under in the store, None while it is not."""
    key = f"{feedback.PREFIX}{photo_id}.json"
    return json.loads(store.get(key))["label"] if store.exists(key) else None


def _sent(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["message"] for e in events if e["type"] == "sent"]


def _replies(n: int = 1):
    return lambda events: len(_sent(events)) >= n


def test_photo_gets_breed_reply_with_chart_and_buttons(
    chat: PlaygroundClient, datasets: Path
) -> None:
    """A pug photo: a chart picture whose caption names the breed, guesses and version."""
    sent = chat.send(101, file=_photo(datasets, "pets-dev/pug"))
    events = chat.wait_for(101, _replies(), timeout=180)
    reply = _sent(events)[0]
    assert reply["reply_to_message"]["message_id"] == sent["message"]["message_id"]
    assert "Pug" in reply["caption"].splitlines()[0]
    assert "%" in reply["caption"] and "Model v0" in reply["caption"]
    assert "Next guesses:" in reply["caption"]
    assert chat.file(reply["photo"][0]["file_id"]).startswith(b"\x89PNG")
    buttons = [b["text"] for row in reply["reply_markup"]["inline_keyboard"] for b in row]
    assert buttons == ["✅ right", "❌ wrong"]


def _buttons(message: dict[str, Any]) -> dict[str, str]:
    rows = message.get("reply_markup", {}).get("inline_keyboard", [])
    return {b["text"]: b["callback_data"] for row in rows for b in row}


def _edits(events: list[dict[str, Any]]) -> list[str]:
    return [e["message"].get("text", "") for e in events if e["type"] == "edited"]


def test_image_file_is_answered(chat: PlaygroundClient, datasets: Path) -> None:
    """An image sent as a PNG file (not a photo) gets the same kind of answer."""
    png = io.BytesIO()
    Image.open(io.BytesIO(_photo(datasets, "pets-dev/samoyed", 1))).save(png, "PNG")
    chat.send(102, file=png.getvalue(), kind="document", filename="dog.png", mime_type="image/png")
    reply = _sent(chat.wait_for(102, _replies()))[0]
    assert "Samoyed" in reply["caption"].splitlines()[0]


def test_album_gets_one_reply_listing_each_photo(chat: PlaygroundClient, datasets: Path) -> None:
    """Three photos of one media group: one text reply with three numbered lines."""
    for folder, index in (("pets-dev/pug", 0), ("pets-dev/samoyed", 1), ("flowers-dev/daisy", 0)):
        chat.send(103, file=_photo(datasets, folder, index), media_group_id="album-1")
    reply = _sent(chat.wait_for(103, _replies()))[0]
    lines = reply["text"].splitlines()
    assert lines[0] == "Album of 3 photos:"
    assert lines[1].startswith("1. Pug") and lines[2].startswith("2. Samoyed")
    assert lines[3].startswith("3. I see no cat or dog here")
    # Each breed answer can be corrected: ✅ / ❌ for photos 1 and 2 (3 has no breed to correct).
    buttons = _buttons(reply)
    assert list(buttons) == ["1 ✅ right", "1 ❌ wrong", "2 ✅ right", "2 ❌ wrong"]
    cursor = chat.events(103)[-1]["seq"]
    sender = {"user_id": 1}  # who sent the album (the emulator's default user), as they type
    chat.press(103, reply["message_id"], buttons["1 ✅ right"], **sender)

    def edited(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e["message"] for e in events if e["type"] == "edited"]

    # Photo 1 answered: only photo 2's buttons are left.
    left = edited(chat.wait_for(103, edited, after=cursor))[-1]
    assert list(_buttons(left)) == ["2 ✅ right", "2 ❌ wrong"]
    cursor = chat.events(103)[-1]["seq"]
    chat.press(103, reply["message_id"], buttons["2 ❌ wrong"], **sender)
    choices = _buttons(edited(chat.wait_for(103, edited, after=cursor))[-1])
    assert "✏️ another breed (type it)" in choices and "2 ✅ right" not in choices
    cursor = chat.events(103)[-1]["seq"]
    chat.send(103, text="samoyed")
    thanks = _sent(chat.wait_for(103, _replies(), after=cursor))[0]["text"]
    assert thanks == "Thanks! Saved as Samoyed."
    done = chat.wait_for(103, lambda ev: any(not _buttons(m) for m in edited(ev)), after=cursor)
    assert not _buttons(edited(done)[-1])  # every photo answered: no buttons left


def test_not_a_pet_names_the_imagenet_guess(chat: PlaygroundClient, datasets: Path) -> None:
    """A daisy: no cat or dog, and the ImageNet guess."""
    chat.send(104, file=_photo(datasets, "flowers-dev/daisy"))
    reply = _sent(chat.wait_for(104, _replies()))[0]
    assert reply["text"].startswith("I see no cat or dog here. Looks like: daisy")
    assert "reply_markup" not in reply


def test_too_big_and_not_an_image(chat: PlaygroundClient) -> None:
    """Over Telegram's 20 MB getFile cap, and a file that is no image: clear messages."""
    chat.send(105, file=os.urandom(21 * 2**20), kind="document", filename="huge.jpg",
              mime_type="image/jpeg")  # fmt: skip
    chat.send(105, file=b"hello", kind="document", filename="notes.txt", mime_type="text/plain")
    texts = [m["text"] for m in _sent(chat.wait_for(105, _replies(2)))]
    assert "20 MB" in texts[0] and "21.0 MB" in texts[0]
    assert texts[1].startswith("That file is not an image")


def test_portuguese_reply(chat: PlaygroundClient, datasets: Path) -> None:
    """language_code pt-br: the answer and its buttons in Portuguese."""
    chat.send(106, file=_photo(datasets, "pets-dev/pug"), language_code="pt-br")
    reply = _sent(chat.wait_for(106, _replies()))[0]
    assert "Próximos palpites:" in reply["caption"] and "Modelo v0" in reply["caption"]
    assert set(_buttons(reply)) == {"✅ certo", "❌ errado"}


def test_feedback_is_filed_once_under_a_folder_name(
    chat: PlaygroundClient, datasets: Path, feedback_store: Store
) -> None:
    """✅ files the photo under the top label and removes the keyboard; a later ❌ changes
    nothing. ❌ then another breed files a second photo under that breed's folder name (v0's
    ImageNet names have spaces; folders never do, so a feedback retrain sees one class each)."""
    chat.send(107, file=_photo(datasets, "pets-dev/pug", 1))
    reply = _sent(chat.wait_for(107, _replies()))[0]
    photo_id = _buttons(reply)["✅ right"].split(":")[1]
    chat.press(107, reply["message_id"], _buttons(reply)["✅ right"])
    events = chat.wait_for(107, lambda ev: any(e["type"] == "edited" for e in ev))
    assert [e["text"] for e in events if e["type"] == "answer"] == ["Thanks! Saved as Pug."]
    assert "reply_markup" not in [e for e in events if e["type"] == "edited"][-1]["message"]
    first = wait_until(lambda: _filed(feedback_store, photo_id), 60, what="the photo filed")
    assert first == "pug"
    cursor = events[-1]["seq"]
    chat.press(107, reply["message_id"], _buttons(reply)["❌ wrong"])
    events = chat.wait_for(107, lambda ev: any(e["type"] == "answer" for e in ev), after=cursor)
    # Only the callback's answer: the bot may log more (its getUpdates confirming the press).
    assert [e["text"] for e in events if e["type"] == "answer"] == [
        "This photo has its answer already. Thanks!"
    ]

    chat.send(107, file=_photo(datasets, "pets-dev/Egyptian_Mau", 0))
    cursor = events[-1]["seq"]
    second = _sent(chat.wait_for(107, _replies(), after=cursor))[0]
    other_id = _buttons(second)["❌ wrong"].split(":")[1]
    chat.press(107, second["message_id"], _buttons(second)["❌ wrong"])
    edited = chat.wait_for(107, lambda ev: any(e["type"] == "edited" for e in ev), after=cursor)
    choices = _buttons([e for e in edited if e["type"] == "edited"][-1]["message"])
    # Four other likely breeds, another one (typed), skip.
    assert "✏️ another breed (type it)" in choices and len(choices) == 6
    name, data = next(iter(choices.items()))
    chat.press(107, second["message_id"], data)
    folder = wait_until(lambda: _filed(feedback_store, other_id), 60, what="the photo filed")
    assert " " not in folder and folder.casefold() == "_".join(name.split()).casefold()
    assert _filed(feedback_store, photo_id) == first


def test_duplicate_update_is_answered_once(chat: PlaygroundClient, datasets: Path) -> None:
    """The same update_id delivered again: no second job, no second answer."""
    first = chat.send(108, file=_photo(datasets, "pets-dev/samoyed", 3))
    chat.wait_for(108, _replies())
    chat.redeliver(first["update_id"])
    later = chat.send(108, file=_photo(datasets, "pets-dev/pug"))
    replies = _sent(chat.wait_for(108, _replies(2)))
    targets = [m["reply_to_message"]["message_id"] for m in replies]
    assert targets == [first["message"]["message_id"], later["message"]["message_id"]]


def test_bot_restart_mid_job_still_answers_once(
    stack: Stack, chat: PlaygroundClient, datasets: Path
) -> None:
    """Kill the bot right after it queued a photo: the worker answers; the restarted bot
    neither loses nor repeats it, even when Telegram redelivers the update."""
    first = chat.send(109, file=_photo(datasets, "pets-dev/pug", 2))
    chat.wait_for(109, lambda ev: any(e["type"] == "confirmed" for e in ev))
    stack.bot.kill()
    chat.wait_for(109, _replies())
    _start_bot(stack)
    chat.redeliver(first["update_id"])
    later = chat.send(109, file=_photo(datasets, "pets-dev/samoyed", 2))
    replies = _sent(chat.wait_for(109, _replies(2)))
    targets = [m["reply_to_message"]["message_id"] for m in replies]
    assert targets == [first["message"]["message_id"], later["message"]["message_id"]]


def test_bot_killed_before_queueing_loses_nothing(
    stack: Stack, chat: PlaygroundClient, datasets: Path
) -> None:
    """Kill the bot while its handler still downloads a photo (nothing queued yet): the update
    was never confirmed to Telegram, so the restarted bot is sent it again and answers once."""
    before = chat.held_downloads()
    chat.hold_downloads(True)
    try:
        sent = chat.send(112, file=_photo(datasets, "pets-dev/pug", 3))
        wait_until(lambda: chat.held_downloads() > before, 60, what="a held download")
        stack.bot.kill()
    finally:
        chat.hold_downloads(False)
    _start_bot(stack)
    chat.wait_for(112, _replies())
    time.sleep(2)  # a second answer would come right after the first
    replies = _sent(chat.events(112))
    assert [m["reply_to_message"]["message_id"] for m in replies] == [sent["message"]["message_id"]]


def test_low_confidence_and_rate_limit(
    stack: Stack, chat: PlaygroundClient, datasets: Path
) -> None:
    """With LOW_CONFIDENCE=1 every answer is "not sure"; the third message in a window of two
    gets the polite rate-limit reply and no answer."""
    stack.bot.kill()
    _start_bot(stack, LOW_CONFIDENCE="1", RATE_LIMIT_COUNT="2", RATE_LIMIT_SECONDS="600")
    try:
        for index in range(3):
            chat.send(110, file=_photo(datasets, "pets-dev/Siamese", index))
        replies = _sent(chat.wait_for(110, _replies(3)))
    finally:
        stack.bot.kill()
        _start_bot(stack)
    texts = [m.get("caption") or m["text"] for m in replies]
    assert sum(t.startswith("Easy there!") for t in texts) == 1
    assert sum(t.startswith("🤔 Not sure. My best guess:") for t in texts) == 2


def test_commands_start_help_and_non_admin_refused(chat: PlaygroundClient) -> None:
    """/start and /help answer; /retrain and /stats from a non-admin are refused."""
    for text in ("/start", "/help", "/retrain steps=10", "/stats"):
        chat.send(111, text=text, first_name="Ana")
    texts = [m["text"] for m in _sent(chat.wait_for(111, _replies(4)))]
    assert texts[0].startswith("Hi Ana!") and "/breeds" in texts[1] and "/retrain" not in texts[1]
    assert texts[2:] == ["Sorry, only admins can do that."] * 2
    commands = chat.http.get("/test/commands").json()["commands"]
    assert [c["command"] for c in commands] == ["start", "help", "breeds"]


CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def test_playground_page_in_headless_chromium(
    emulator_url: str, datasets: Path, tmp_path: Path
) -> None:
    """The web chat: upload a photo, see the breed, press ✅ and see the thanks."""
    chromium = chromium_or_skip()  # skipped without Chromium, except in CI
    from playwright.sync_api import expect, sync_playwright

    photo = sorted((datasets / "pets-dev" / "pug").glob("*.jpg"))[0]
    profile = tmp_path / "profile"
    with sync_playwright() as playwright:
        # A new empty profile each run (playwright passes it as --user-data-dir).
        browser = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=chromium,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1100, "height": 800},
        )
        try:
            page = browser.new_page()
            page.goto(f"{emulator_url}/")
            expect(page.locator("#hint")).to_contain_text("123 cat and dog classes")
            page.set_input_files("#file", photo)
            page.click("#send-photo")
            answer = page.locator(".msg.bot .text").first
            expect(answer).to_contain_text("Pug", timeout=120_000)
            chart = page.locator(".msg.bot img").first
            expect(chart).to_be_visible()
            # The chart loaded in full: the Pillow picture, drawn for a phone's width.
            assert chart.evaluate("img => img.complete && img.naturalWidth") == CHART_WIDTH
            expect(page.locator("#hint")).to_have_count(0)
            page.screenshot(path=tmp_path / "playground.png")
            page.get_by_role("button", name="✅ right").click()
            # The toast sits right under the answer whose button was pressed.
            toast = page.locator(".msg.bot + .toast")
            expect(toast).to_have_text("Thanks! Saved as Pug.", timeout=60_000)

            # "↩ reply" under a sent file, then /retrain: the message is a reply to that file.
            notes = tmp_path / "notes.txt"
            notes.write_text("not a dataset")
            page.set_input_files("#file", notes)
            page.click("#send-file")
            page.locator(".msg.user .reply-link").last.click()
            expect(page.locator("#replying")).to_contain_text("notes.txt")
            page.fill("#text", "/retrain")
            page.click("#send-text")
            expect(page.locator(".msg.bot .text").last).to_have_text(
                "Sorry, only admins can do that.", timeout=60_000
            )
            with contextlib.closing(PlaygroundClient(emulator_url)) as user:
                asked = [e["message"] for e in user.events(1) if e["type"] == "user"][-1]
            assert asked["text"] == "/retrain"
            assert asked["reply_to_message"]["document"]["file_name"] == "notes.txt"
        finally:
            browser.close()


# True once the newest bot picture has loaded and the log shows its very end.
ANSWER_IN_VIEW = """() => {
  const img = [...document.querySelectorAll(".msg.bot img")].pop();
  const log = document.getElementById("log");
  return img && img.complete && img.naturalWidth > 0
    && log.scrollHeight > log.clientHeight
    && log.scrollTop + log.clientHeight >= log.scrollHeight - 2;
}"""


def test_playground_page_in_portuguese_follows_answers_and_reloads_quietly(
    emulator_url: str, datasets: Path, tmp_path: Path
) -> None:
    """Its own labels in pt-BR and a hint that names only what the page has; a HEIC photo shown
    in the user's bubble; the answer scrolled into view after its chart loads; old toasts not
    shown again on reload."""
    chromium = chromium_or_skip()  # skipped without Chromium, except in CI
    from playwright.sync_api import expect, sync_playwright

    pillow_heif.register_heif_opener()
    heic = tmp_path / "pug.heic"
    Image.open(sorted((datasets / "pets-dev" / "pug").glob("*.jpg"))[1]).save(heic, "HEIF")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            tmp_path / "profile", executable_path=chromium, args=CHROMIUM_FLAGS,
            viewport={"width": 1000, "height": 560},  # the answer overflows the log
        )  # fmt: skip
        try:
            page = browser.new_page()
            page.goto(f"{emulator_url}/?chat=31")  # a chat of its own: the hint shows
            page.select_option("#lang", "pt-br")
            expect(page.locator("#send-photo")).to_have_text("Enviar como foto")
            expect(page.locator("#send-file")).to_have_text("Enviar como arquivo")
            expect(page.locator("header")).to_contain_text("agir como admin")
            expect(page.locator("#hint")).to_contain_text("Escolha abaixo a foto")
            assert "📎" not in page.locator("#hint").inner_text()
            page.screenshot(path=tmp_path / "playground-pt-start.png")
            page.set_input_files("#file", heic)
            page.click("#send-photo")
            mine = page.locator(".msg.user img").last
            expect(mine).to_be_visible()
            page.wait_for_function("() => document.querySelector('.msg.user img').naturalWidth")
            expect(page.locator(".msg.bot .text").last).to_contain_text("Pug", timeout=120_000)
            page.wait_for_function(ANSWER_IN_VIEW, timeout=30_000)
            page.screenshot(path=tmp_path / "playground-pt-answer.png")
            page.locator(".msg.bot .keyboard button").first.click()
            expect(page.locator(".toast")).to_have_count(1, timeout=60_000)
            answers = page.locator(".msg.bot img").count()
            page.reload()
            expect(page.locator(".msg.bot img")).to_have_count(answers)  # the chat so far
            page.wait_for_function(ANSWER_IN_VIEW, timeout=30_000)
            assert page.locator(".toast").count() == 0
            page.screenshot(path=tmp_path / "playground-reloaded.png")
        finally:
            browser.close()


def test_retrain_bad_options_and_corrupt_zip(chat: PlaygroundClient) -> None:
    """Unknown or out-of-range options are named; a corrupt zip gets a clear failure."""
    chat.send(ADMIN, file=b"PK\x03\x04 not really a zip", kind="document",
              filename="data.zip", mime_type="application/zip",
              caption="/retrain steps=0 speed=fast", user_id=ADMIN)  # fmt: skip
    problems = _sent(chat.wait_for(ADMIN, _replies()))[0]["text"]
    assert "steps=0: use a whole number from 1 to 100000" in problems
    assert "speed=fast: there is no such option" in problems
    cursor = chat.events(ADMIN)[-1]["seq"]
    chat.send(ADMIN, file=b"PK\x03\x04 not really a zip", kind="document",
              filename="data.zip", mime_type="application/zip", caption="/retrain",
              user_id=ADMIN)  # fmt: skip
    status = _sent(chat.wait_for(ADMIN, _replies(), after=cursor))[0]
    assert status["text"] == "⏳ Retrain queued…"
    events = chat.wait_for(
        ADMIN,
        lambda ev: any(
            "Retrain failed" in e["message"].get("text", "") for e in ev if e["type"] == "edited"
        ),
        after=cursor,
    )
    final = [e for e in events if e["type"] == "edited"][-1]["message"]
    assert final["message_id"] == status["message_id"]
    assert "zip" in final["text"].lower()


def test_promote_of_a_missing_version_is_refused_in_the_users_language(
    chat: PlaygroundClient,
) -> None:
    """/promote 99 fails its task (a monitor sees a failure); the chat gets the reason in pt-BR."""
    cursor = chat.events(ADMIN)[-1]["seq"] if chat.events(ADMIN) else 0
    chat.send(ADMIN, text="/promote 99", user_id=ADMIN, language_code="pt-br")
    reply = _sent(chat.wait_for(ADMIN, _replies(), after=cursor))[0]["text"]
    reason = problem_text("pt-BR", "no_such_version", {"version": 99}, "")
    assert reply == t("pt-BR", "job_failed", reason=reason)
    assert "99" in reason and reason != "there is no model version 99"


def test_admin_retrain_progress_then_live_then_rollback(
    chat: PlaygroundClient, datasets: Path, celery_client: Celery
) -> None:
    """A labels.csv zip as a reply target: progress edits, the new version live, then
    /models, /stats, /rollback and /promote through the control queue."""
    versions = celery_client.send_task(contract.LIST_MODELS).get(timeout=30)
    new = max(contract.ModelVersion.from_dict(v).version for v in versions) + 1
    cursor = chat.events(ADMIN)[-1]["seq"] if chat.events(ADMIN) else 0
    retrain_by_reply(chat, ADMIN, kaggle_zip(), "/retrain steps=60 flip=0 min_acc=0.3")

    def finished(events: list[dict[str, Any]]) -> bool:
        return any(f"Model v{new} trained" in e["message"].get("text", "") for e in events
                   if e["type"] == "edited")  # fmt: skip

    events = chat.wait_for(ADMIN, finished, timeout=300, after=cursor)
    edits = [e["message"]["text"] for e in events if e["type"] == "edited"]
    assert any("Reading the photos" in text for text in edits)
    assert any("\n🏋️ Training step" in text for text in edits)  # under the backbone's name
    assert "It is live now." in edits[-1]
    # The accuracy with the photos behind it: every photo trains, 5 folds measure.
    accuracy = r"on all \d+ photos: 5-fold cross-validated accuracy [\d.]+% ± [\d.]+%"
    assert re.search(accuracy, edits[-1])
    saving = next(i for i, text in enumerate(edits) if text.startswith("💾"))
    assert not any(text.startswith(("🧠", "🔎")) for text in edits[saving:])  # in order
    # Breeds by display name, never by folder name (the open-set note names `open_set=0`).
    assert "american_bulldog" not in edits[-1]
    matrix = chat.wait_for(ADMIN, lambda ev: any("confusion" in (e["message"].get("caption") or "")
                                                 for e in ev if e["type"] == "sent"),
                           after=cursor)  # fmt: skip
    assert matrix

    cursor = chat.events(ADMIN)[-1]["seq"]
    for text in ("/models", "/stats", "/rollback", f"/promote {new}"):
        chat.send(ADMIN, text=text, user_id=ADMIN)
        # A text answer: the retrain's mistakes sheet (a picture) may still arrive meanwhile.
        got = chat.wait_for(ADMIN, lambda ev: any("text" in m for m in _sent(ev)), after=cursor)
        cursor = got[-1]["seq"]
        reply = next(m["text"] for m in _sent(got) if "text" in m)
        if text == "/models":
            assert f"▶ v{new}" in reply and "• v0" in reply
        elif text == "/stats":
            assert f"Active model: v{new}" in reply and "Jobs today:" in reply
        elif text == "/rollback":
            assert reply == "Model v0 is active now."
        else:
            assert reply == f"Model v{new} is active now."


def test_merge_retrain_adds_a_class_to_the_kept_photos(
    chat: PlaygroundClient, datasets: Path, worker_settings: WorkerSettings
) -> None:
    """Zip A (2 breeds), then `/retrain merge` with zip B (a third): the new version knows all
    three, the reply says where its photos came from, and A's bottlenecks come from the cache."""

    def retrain(zip_bytes: bytes, caption: str) -> str:
        cursor = chat.events(ADMIN)[-1]["seq"] if chat.events(ADMIN) else 0
        chat.send(ADMIN, file=zip_bytes, kind="document", filename="pets.zip",
                  mime_type="application/zip", caption=caption, user_id=ADMIN)  # fmt: skip
        events = chat.wait_for(ADMIN, lambda ev: any(
            re.search(r"live now\.|go live|Retrain failed", e["message"].get("text", ""))
            for e in ev if e["type"] == "edited"), timeout=300, after=cursor)  # fmt: skip
        return [e["message"]["text"] for e in events if e["type"] == "edited"][-1]

    first = retrain(breeds_zip({"pug": 6, "Bengal": 6}), "/retrain steps=30 force=1")
    base = int(re.search(r"Model v(\d+) trained", first)[1])  # type: ignore[index]
    new = base + 1
    final = retrain(breeds_zip({"Sphynx": 6}), "/retrain merge steps=30 force=1")
    assert f"Model v{new} trained on all 18 photos" in final
    assert f"Trained on 18 photos: 12 kept from version {base}, 6 from your upload." in final
    assert "1 new class: Sphynx" in final and "It is live now." in final

    def breeds() -> str:
        cursor = chat.events(ADMIN)[-1]["seq"]
        chat.send(ADMIN, text="/breeds", user_id=ADMIN)

        def answered(events: list[dict[str, Any]]) -> list[str]:  # not the confusion matrix
            return [m["text"] for m in _sent(events) if m.get("text", "").startswith("I know")]

        return answered(chat.wait_for(ADMIN, answered, after=cursor))[0]

    known = wait_until(
        lambda: (text := breeds()).startswith(f"I know 3 breeds (model v{new}):") and text,
        30,
        what=f"v{new} served",
    )
    assert all(name in known for name in ("Bengal", "Pug", "Sphynx"))
    metrics = json.loads((worker_settings.models_root / str(new) / "metrics.json").read_text())
    # Retrain A cached every view of each kept photo: at most the 6 new ones are computed.
    cached, computed = metrics["bottlenecks"]["cached"], metrics["bottlenecks"]["computed"]
    views = (cached + computed) // 18
    assert views >= 1 and cached >= 12 * views and computed <= 6 * views
