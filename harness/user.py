"""The simulated users: real photos sent through the emulator, and what came back to them."""

from __future__ import annotations

import io
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fakegram.api import FakeTelegram, PlaygroundClient
from harness import DATASETS
from harness.stack import ADMIN, Stack

TRAINING = "🏋️ Training step"
# A retrain's last word: live, kept out by the gate, failed, or refused.
FINISHED = ("✅ Model v", "⚠️ Model v", "❌ Retrain failed", "Sorry, I could not do that")
ERROR_REPLIES = ("Sorry", "I could not")  # what a closed-loop user counts as an error


def pet_photos(n: int) -> list[bytes]:
    """`n` real pet photos, spread over the breeds (cycled when `n` exceeds the set)."""
    files = sorted((DATASETS / "pets-dev").rglob("*.jpg"))
    spread = files[::3] + files[1::3] + files[2::3]
    return [spread[i % len(spread)].read_bytes() for i in range(n)]


def csv_sample_zip() -> bytes:
    """The Kaggle-style csv-sample (3 breeds x 20 photos) as a zip."""
    from ops.cli import zip_dataset

    return zip_dataset(DATASETS / "csv-sample")


def breeds_zip(breeds: dict[str, int]) -> bytes:
    """A folder-per-class zip of the first `n` pets-dev photos of each breed."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for breed, n in breeds.items():
            for path in sorted((DATASETS / "pets-dev" / breed).glob("*.jpg"))[:n]:
                archive.write(path, f"{breed}/{path.name}")
    return buffer.getvalue()


def kaggle_zip(folder_name: str = "csv-sample") -> bytes:
    """A Kaggle-style upload (`labels.csv` plus `train/<id>.jpg`) of a shared dataset folder."""
    folder = DATASETS / folder_name
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(folder / "labels.csv", "labels.csv")
        for path in sorted((folder / "train").glob("*.jpg")):
            archive.write(path, f"train/{path.name}")
    return buffer.getvalue()


def retrain_by_reply(chat: PlaygroundClient, admin: int, archive: bytes, command: str) -> None:
    """An admin uploads a zip, then replies to it with a /retrain command, as the README says."""
    upload = chat.send(admin, file=archive, kind="document", filename="pets.zip",
                       mime_type="application/zip", user_id=admin)  # fmt: skip
    chat.send(admin, text=command, user_id=admin,
              reply_to_message_id=upload["message"]["message_id"])  # fmt: skip


def reply_events(events: list[dict[str, Any]], message_id: int) -> list[dict[str, Any]]:
    """The "sent" events of bot messages replying to the user's message `message_id`."""
    return [
        e
        for e in events
        if e["type"] == "sent"
        and e["message"].get("reply_to_message", {}).get("message_id") == message_id
    ]


def replies_to(events: list[dict[str, Any]], message_id: int) -> list[dict[str, Any]]:
    """Bot messages sent as a reply to the user's message `message_id`."""
    return [e["message"] for e in reply_events(events, message_id)]


def all_events(fake: FakeTelegram, chat_id: int) -> list[dict[str, Any]]:
    """A snapshot of every emulator event of one chat."""
    return [e for e in list(fake.events) if e["chat_id"] == chat_id]


def texts(fake: FakeTelegram, chat_id: int, kinds: tuple[str, ...]) -> list[str]:
    """The texts (or captions) of a chat's events of the given types."""
    return [
        e["message"].get("text") or e["message"].get("caption") or ""
        for e in all_events(fake, chat_id)
        if e["type"] in kinds
    ]


def finals(fake: FakeTelegram) -> list[str]:
    """Final retrain messages seen in the admin's chat (edits of a status message or texts)."""
    return [t for t in texts(fake, ADMIN, ("edited", "sent")) if t.startswith(FINISHED)]


@dataclass
class Sent:
    """One photo a simulated user sent."""

    chat_id: int
    message_id: int
    sent_at: float


def send_photos(
    stack: Stack, photos: list[bytes], users: int, first_user: int = 1000, pace: float = 0.0
) -> list[Sent]:
    """Send the photos round-robin from `users` users in parallel, without waiting for answers."""
    client = stack.client()

    def user(u: int) -> list[Sent]:
        sent = []
        for photo in photos[u::users]:
            at = time.time()
            message = client.send(first_user + u, file=photo)["message"]
            sent.append(Sent(first_user + u, message["message_id"], at))
            time.sleep(pace)
        return sent

    try:
        with ThreadPoolExecutor(users) as pool:
            return [s for batch in pool.map(user, range(users)) for s in batch]
    finally:
        client.close()


def answers(stack: Stack, sent: list[Sent]) -> dict[tuple[int, int], list[dict[str, Any]]]:
    """Every bot reply to each sent photo, keyed by (chat, message)."""
    assert stack.fake is not None
    by_chat = {s.chat_id: all_events(stack.fake, s.chat_id) for s in sent}
    return {(s.chat_id, s.message_id): replies_to(by_chat[s.chat_id], s.message_id) for s in sent}


def wait_answered(stack: Stack, sent: list[Sent], timeout: float) -> dict[str, Any]:
    """Wait until every photo has a reply (or `timeout`); counts of answered, twice, missing."""
    deadline = time.monotonic() + timeout
    while True:
        got = answers(stack, sent)
        missing = [k for k, v in got.items() if not v]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    time.sleep(2)  # a duplicate would arrive right after the first answer
    got = answers(stack, sent)
    replies = [(m.get("caption") or m.get("text") or "") for v in got.values() for m in v]
    return {
        "sent": len(sent),
        "answered": sum(bool(v) for v in got.values()),
        "answered_twice": sum(len(v) > 1 for v in got.values()),
        "missing": sum(not v for v in got.values()),
        "errors": sum(t.startswith(("Sorry", "Desculpe")) for t in replies),
    }


def closed_loop(
    client: PlaygroundClient, user: int, photos: list[bytes], until: float = 0.0
) -> list[dict[str, Any]]:
    """One user sending each photo as soon as the previous one is answered (cycling through them
    until `time.monotonic()` passes `until`); per photo, ms from update to reply and whether the
    reply was an error."""
    done: list[dict[str, Any]] = []
    cursor = i = 0
    while i < len(photos) or time.monotonic() < until:
        asked = time.time()  # the emulator runs in this process: the same clock as its events
        sent = client.send(user, file=photos[i % len(photos)])["message"]["message_id"]
        # Only the bot's messages: one long poll per photo, not one per event of the chat (the
        # bench's simulated users share the two cores with the stack they measure).
        events = client.wait_for(
            user,
            lambda ev, m=sent: bool(reply_events(ev, m)),
            timeout=120,
            after=cursor,
            types=("sent",),
        )
        reply = reply_events(events, sent)[0]
        text = reply["message"].get("caption") or reply["message"].get("text") or ""
        done.append({"ms": (reply["at"] - asked) * 1e3, "error": text.startswith(ERROR_REPLIES)})
        cursor, i = events[-1]["seq"], i + 1
    return done


def stuck_jobs(stack: Stack) -> int:
    """Messages still queued or unacknowledged in Redis (0 once every job is done)."""
    client = stack.redis()
    try:
        queued = sum(client.llen(q) for q in ("infer", "train", "control"))
        return queued + client.hlen("unacked")
    finally:
        client.close()


def wait_drained(stack: Stack, timeout: float) -> int:
    """Wait for the queues to empty; the number of stuck jobs left."""
    deadline = time.monotonic() + timeout
    while (left := stuck_jobs(stack)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def send_document(
    client: PlaygroundClient, user: int, data: bytes, filename: str, mime_type: str, **form: Any
) -> int:
    """A user sends a file as a document (not a photo); returns its message id."""
    sent = client.send(
        user, file=data, kind="document", filename=filename, mime_type=mime_type, **form
    )
    return sent["message"]["message_id"]


def send_retrain(
    client: PlaygroundClient, zip_bytes: bytes, caption: str, user: int = ADMIN, **form: Any
) -> int:
    """A user (the admin) sends a zip with a `/retrain ...` caption; returns its message id."""
    return send_document(
        client,
        user,
        zip_bytes,
        "data.zip",
        "application/zip",
        caption=caption,
        user_id=user,
        **form,
    )
