"""End to end: the real PTB bot and a real Celery worker on real Redis, through the emulator."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.fake_api import FakeTelegram, PlaygroundClient, serve_in_thread
from bot.playground import page_app
from worker.redis_server import RedisServer

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
TOKEN = "123456:e2e-test-token"
ADMIN = 4242


def _photo(datasets: Path, folder: str, index: int = 0) -> bytes:
    return sorted((datasets / folder).glob("*.jpg"))[index].read_bytes()


class Services:
    """The emulator, Redis, one worker and one bot process (restartable)."""

    def __init__(self, tmp: Path, url: str, redis_url: str) -> None:
        self.tmp = tmp
        self.url = url
        self.redis_url = redis_url
        self.bot: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_API_URL": url,
            "REDIS_URL": redis_url,
            "VAR_DIR": str(tmp / "var"),
            "ADMIN_IDS": str(ADMIN),
            "ALBUM_WAIT_SECONDS": "0.5",
        }

    def _spawn(self, args: list[str], log: str, **env: str) -> subprocess.Popen[bytes]:
        out = (self.tmp / log).open("ab")
        return subprocess.Popen(
            args,
            cwd=self.tmp,
            env={**self.env, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_worker(self) -> None:
        """A real `celery worker` on every queue, threads pool."""
        self.worker = self._spawn(
            [PYTHON, "-m", "celery", "-A", "worker.celery_app", "worker", "-Q",
             "infer,train,control", "-c", "4", "--pool", "threads", "-l", "info"],
            "worker.log",
        )  # fmt: skip

    def start_bot(self, **env: str) -> None:
        """`python -m bot.app` against the emulator."""
        self.bot = self._spawn([PYTHON, "-m", "bot.app"], "bot.log", **env)

    def kill_bot(self) -> None:
        """SIGKILL the bot: no clean shutdown, as in a crash."""
        if self.bot is not None:
            os.killpg(self.bot.pid, signal.SIGKILL)
            self.bot.wait()
            self.bot = None

    def stop(self) -> None:
        """Stop what we started."""
        self.kill_bot()
        if self.worker is not None:
            os.killpg(self.worker.pid, signal.SIGTERM)
            try:
                self.worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.worker.pid, signal.SIGKILL)
                self.worker.wait()


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """Emulator + Redis + worker + bot for this module."""
    tmp = tmp_path_factory.mktemp("bot-e2e")
    fake = FakeTelegram(TOKEN)
    with serve_in_thread(page_app(fake)) as url, RedisServer(tmp / "redis") as server:
        running = Services(tmp, url, server.url)
        running.start_worker()
        running.start_bot()
        try:
            yield running
        finally:
            running.stop()


@pytest.fixture(scope="module")
def chat(services: Services) -> Iterator[PlaygroundClient]:
    """The user's side of the emulator."""
    client = PlaygroundClient(services.url)
    yield client
    client.close()


def _sent(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["message"] for e in events if e["type"] == "sent"]


def _replies(n: int = 1):
    return lambda events: len(_sent(events)) >= n


def test_photo_gets_breed_reply_with_chart_and_buttons(
    services: Services, chat: PlaygroundClient, datasets: Path
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


def _eventually(check: Any, timeout: float = 60) -> Any:
    """Poll a filesystem effect of a background job (tests only; the bot never polls)."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.1)
    return result


def test_image_file_is_answered(services: Services, chat: PlaygroundClient, datasets: Path) -> None:
    """An image sent as a PNG file (not a photo) gets the same kind of answer."""
    png = io.BytesIO()
    Image.open(io.BytesIO(_photo(datasets, "pets-dev/samoyed", 1))).save(png, "PNG")
    chat.send(102, file=png.getvalue(), kind="document", filename="dog.png", mime_type="image/png")
    reply = _sent(chat.wait_for(102, _replies()))[0]
    assert "Samoyed" in reply["caption"].splitlines()[0]


def test_album_gets_one_reply_listing_each_photo(
    services: Services, chat: PlaygroundClient, datasets: Path
) -> None:
    """Three photos of one media group: one text reply with three numbered lines."""
    for folder, index in (("pets-dev/pug", 0), ("pets-dev/samoyed", 1), ("flowers-dev/daisy", 0)):
        chat.send(103, file=_photo(datasets, folder, index), media_group_id="album-1")
    reply = _sent(chat.wait_for(103, _replies()))[0]
    lines = reply["text"].splitlines()
    assert lines[0] == "Album of 3 photos:"
    assert lines[1].startswith("1. Pug") and lines[2].startswith("2. Samoyed")
    assert lines[3].startswith("3. I see no cat or dog here")


def test_not_a_pet_names_the_imagenet_guess(
    services: Services, chat: PlaygroundClient, datasets: Path
) -> None:
    """A daisy: no cat or dog, and the ImageNet guess."""
    chat.send(104, file=_photo(datasets, "flowers-dev/daisy"))
    reply = _sent(chat.wait_for(104, _replies()))[0]
    assert reply["text"].startswith("I see no cat or dog here. Looks like: daisy")
    assert "reply_markup" not in reply


def test_too_big_and_not_an_image(services: Services, chat: PlaygroundClient) -> None:
    """Over Telegram's 20 MB getFile cap, and a file that is no image: clear messages."""
    chat.send(105, file=os.urandom(21 * 2**20), kind="document", filename="huge.jpg",
              mime_type="image/jpeg")  # fmt: skip
    chat.send(105, file=b"hello", kind="document", filename="notes.txt", mime_type="text/plain")
    texts = [m["text"] for m in _sent(chat.wait_for(105, _replies(2)))]
    assert "20 MB" in texts[0] and "21.0 MB" in texts[0]
    assert texts[1].startswith("That file is not an image")


def test_portuguese_reply(services: Services, chat: PlaygroundClient, datasets: Path) -> None:
    """language_code pt-br: the answer and its buttons in Portuguese."""
    chat.send(106, file=_photo(datasets, "pets-dev/pug"), language_code="pt-br")
    reply = _sent(chat.wait_for(106, _replies()))[0]
    assert "Próximos palpites:" in reply["caption"] and "Modelo v0" in reply["caption"]
    assert set(_buttons(reply)) == {"✅ certo", "❌ errado"}


def test_feedback_is_stored_once_and_last_answer_wins(
    services: Services, chat: PlaygroundClient, datasets: Path
) -> None:
    """✅ files the photo under the top label; ❌ then another breed moves it there."""
    chat.send(107, file=_photo(datasets, "pets-dev/pug", 1))
    reply = _sent(chat.wait_for(107, _replies()))[0]
    feedback_root = services.tmp / "var" / "feedback"
    right = _buttons(reply)["✅ right"]
    photo_id = right.split(":")[1]
    stored = chat.press(107, reply["message_id"], right)
    answers = chat.wait_for(107, lambda ev: any(e["type"] == "answer" for e in ev))
    assert answers[-1]["text"] == "Thanks! Saved as Pug."
    first = _eventually(lambda: list(feedback_root.glob(f"*/{photo_id}.jpg")))
    assert [p.parent.name for p in first] == ["pug"]

    cursor = answers[-1]["seq"]
    chat.press(107, reply["message_id"], _buttons(reply)["❌ wrong"])
    edited = chat.wait_for(107, lambda ev: any(e["type"] == "edited" for e in ev), after=cursor)
    choices = _buttons([e for e in edited if e["type"] == "edited"][-1]["message"])
    assert "other" in choices and len(choices) == 5  # four other likely breeds + other
    second_name, second = next(iter(choices.items()))
    chat.press(107, reply["message_id"], second)
    _eventually(lambda: [p for p in feedback_root.glob(f"*/{photo_id}.jpg") if p != first[0]])
    files = list(feedback_root.glob(f"*/{photo_id}.jpg"))
    assert len(files) == 1 and files[0].read_bytes() == _photo(datasets, "pets-dev/pug", 1)
    assert stored["callback_query_id"]
    assert second_name.lower().replace(" ", "_") in files[0].parent.name.lower().replace(" ", "_")


def test_duplicate_update_is_answered_once(
    services: Services, chat: PlaygroundClient, datasets: Path
) -> None:
    """The same update_id delivered again: no second job, no second answer."""
    first = chat.send(108, file=_photo(datasets, "pets-dev/samoyed", 3))
    chat.wait_for(108, _replies())
    chat.redeliver(first["update_id"])
    later = chat.send(108, file=_photo(datasets, "pets-dev/pug"))
    replies = _sent(chat.wait_for(108, _replies(2)))
    targets = [m["reply_to_message"]["message_id"] for m in replies]
    assert targets == [first["message"]["message_id"], later["message"]["message_id"]]


def test_bot_restart_mid_job_still_answers_once(
    services: Services, chat: PlaygroundClient, datasets: Path
) -> None:
    """Kill the bot right after it queued a photo: the worker answers; the restarted bot
    neither loses nor repeats it, even when Telegram redelivers the update."""
    first = chat.send(109, file=_photo(datasets, "pets-dev/pug", 2))
    chat.wait_for(109, lambda ev: any(e["type"] == "action" for e in ev))
    services.kill_bot()
    chat.wait_for(109, _replies())
    services.start_bot()
    chat.redeliver(first["update_id"])
    later = chat.send(109, file=_photo(datasets, "pets-dev/samoyed", 2))
    replies = _sent(chat.wait_for(109, _replies(2)))
    targets = [m["reply_to_message"]["message_id"] for m in replies]
    assert targets == [first["message"]["message_id"], later["message"]["message_id"]]


def test_low_confidence_and_rate_limit(
    services: Services, chat: PlaygroundClient, datasets: Path
) -> None:
    """With LOW_CONFIDENCE=1 every answer is "not sure"; the third message in a window of two
    gets the polite rate-limit reply and no answer."""
    services.kill_bot()
    services.start_bot(LOW_CONFIDENCE="1", RATE_LIMIT_COUNT="2", RATE_LIMIT_SECONDS="600")
    try:
        for index in range(3):
            chat.send(110, file=_photo(datasets, "pets-dev/Siamese", index))
        replies = _sent(chat.wait_for(110, _replies(3)))
    finally:
        services.kill_bot()
        services.start_bot()
    texts = [m.get("caption") or m["text"] for m in replies]
    assert sum(t.startswith("Easy there!") for t in texts) == 1
    assert sum(t.startswith("🤔 Not sure. My best guess:") for t in texts) == 2


def test_commands_start_help_and_non_admin_refused(
    services: Services, chat: PlaygroundClient
) -> None:
    """/start and /help answer; /retrain and /stats from a non-admin are refused."""
    for text in ("/start", "/help", "/retrain steps=10", "/stats"):
        chat.send(111, text=text, first_name="Ana")
    texts = [m["text"] for m in _sent(chat.wait_for(111, _replies(4)))]
    assert texts[0].startswith("Hi Ana!") and "/breeds" in texts[1] and "/retrain" not in texts[1]
    assert texts[2:] == ["Sorry, only admins can do that."] * 2
    commands = chat.http.get("/test/commands").json()["commands"]
    assert [c["command"] for c in commands] == ["start", "help", "breeds"]


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def test_playground_page_in_headless_chromium(
    services: Services, datasets: Path, tmp_path: Path
) -> None:
    """The web chat: upload a photo, see the breed, press ✅ and see the thanks."""
    from playwright.sync_api import expect, sync_playwright

    photo = sorted((datasets / "pets-dev" / "pug").glob("*.jpg"))[0]
    profile = tmp_path / "profile"
    with sync_playwright() as playwright:
        # A new empty profile each run (playwright passes it as --user-data-dir).
        browser = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1100, "height": 800},
        )
        try:
            page = browser.new_page()
            page.goto(f"{services.url}/")
            page.set_input_files("#file", photo)
            page.click("#send-photo")
            answer = page.locator(".msg.bot .text").first
            expect(answer).to_contain_text("Pug", timeout=120_000)
            expect(page.locator(".msg.bot img")).to_be_visible()
            page.screenshot(path=tmp_path / "playground.png")
            page.get_by_role("button", name="✅ right").click()
            expect(page.locator(".toast")).to_have_text("Thanks! Saved as Pug.", timeout=60_000)
        finally:
            browser.close()


def _zip_of(folder: Path, labels_csv: Path | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        if labels_csv:
            archive.write(labels_csv, "labels.csv")
        for path in sorted(folder.rglob("*.jpg")):
            archive.write(path, f"train/{path.name}")
    return buffer.getvalue()


def test_retrain_bad_options_and_corrupt_zip(services: Services, chat: PlaygroundClient) -> None:
    """Unknown or out-of-range options are named; a corrupt zip gets a clear failure."""
    chat.send(ADMIN, file=b"PK\x03\x04 not really a zip", kind="document",
              filename="data.zip", mime_type="application/zip",
              caption="/retrain steps=0 speed=fast", user_id=ADMIN)  # fmt: skip
    problems = _sent(chat.wait_for(ADMIN, _replies()))[0]["text"]
    assert "steps=0: out of range" in problems and "speed=fast: unknown option" in problems
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


def test_admin_retrain_progress_then_live_then_rollback(
    services: Services, chat: PlaygroundClient, datasets: Path
) -> None:
    """A labels.csv zip as a reply target: progress edits, the new version live, then
    /models, /stats, /rollback and /promote through the control queue."""
    csv_dir = datasets / "csv-sample"
    cursor = chat.events(ADMIN)[-1]["seq"] if chat.events(ADMIN) else 0
    upload = chat.send(ADMIN, file=_zip_of(csv_dir / "train", csv_dir / "labels.csv"),
                       kind="document", filename="pets.zip", mime_type="application/zip",
                       user_id=ADMIN)  # fmt: skip
    chat.send(ADMIN, text="/retrain steps=60 flip=0 min_acc=0.3", user_id=ADMIN,
              reply_to_message_id=upload["message"]["message_id"])  # fmt: skip

    def finished(events: list[dict[str, Any]]) -> bool:
        return any("Model v1 trained" in e["message"].get("text", "") for e in events
                   if e["type"] == "edited")  # fmt: skip

    events = chat.wait_for(ADMIN, finished, timeout=300, after=cursor)
    edits = [e["message"]["text"] for e in events if e["type"] == "edited"]
    assert any("bottlenecks" in text for text in edits)
    assert any(text.startswith("🏋️ Training step") for text in edits)
    assert "It is live now." in edits[-1] and "Weakest classes:" in edits[-1]
    matrix = chat.wait_for(ADMIN, lambda ev: any("confusion" in (e["message"].get("caption") or "")
                                                 for e in ev if e["type"] == "sent"),
                           after=cursor)  # fmt: skip
    assert matrix

    cursor = chat.events(ADMIN)[-1]["seq"]
    for text in ("/models", "/stats", "/rollback", "/promote 1"):
        chat.send(ADMIN, text=text, user_id=ADMIN)
        got = chat.wait_for(ADMIN, _replies(), after=cursor)
        cursor = got[-1]["seq"]
        reply = _sent(got)[0]["text"]
        if text == "/models":
            assert "▶ v1" in reply and "• v0" in reply
        elif text == "/stats":
            assert "Active model: v1" in reply and "Jobs today:" in reply
        elif text == "/rollback":
            assert reply == "Model v0 is active now."
        else:
            assert reply == "Model v1 is active now."
    chat.send(ADMIN, text="/promote 0", user_id=ADMIN)
    chat.wait_for(ADMIN, _replies(), after=cursor)
