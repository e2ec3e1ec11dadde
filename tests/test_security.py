"""Security: admin-only commands, forged callback data, JSON-only Celery, Flower behind auth,
secrets kept out of logs, uploads stored under names the bot chose. Real bot, real worker, real
password-protected Redis, through the Bot API emulator."""

from __future__ import annotations

import base64
import io
import json
import pickle
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

import contract
from fakegram.api import PlaygroundClient
from harness.services import Service
from harness.stack import ADMIN, REDIS_PASSWORD, TOKEN, Stack
from harness.user import all_events, pet_photos, replies_to, send_retrain
from harness.waiting import wait_until
from store.blobs import get_blob, open_store

pytestmark = [pytest.mark.slow, pytest.mark.reliability]

NOT_ADMIN = "Sorry, only admins can do that."
FLOWER_AUTH = ("admin", "flower-secret-pass")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, breedbot_home: Path) -> Iterator[Stack]:
    """One worker and one bot for the module, on a password-protected Redis."""
    with Stack(tmp_path_factory.mktemp("security")).running(
        BREEDBOT_HOME=str(breedbot_home)
    ) as running:
        running.start_worker("sec")
        running.start_bot()
        yield running


@pytest.fixture(scope="module")
def chat(stack: Stack) -> Iterator[PlaygroundClient]:
    """The users' side of the emulator."""
    client = stack.client()
    yield client
    client.close()


def _texts_after(stack: Stack, chat_id: int, after: int, n: int, timeout: float = 60) -> list[str]:
    assert stack.fake is not None

    def sent() -> list[str]:
        events = [e for e in all_events(stack.fake, chat_id) if e["seq"] > after]
        return [e["message"].get("text") or "" for e in events if e["type"] == "sent"]

    return wait_until(lambda: len(sent()) >= n and sent(), timeout) or sent()


def _last_seq(stack: Stack) -> int:
    assert stack.fake is not None
    return len(stack.fake.events)


ADMIN_TEXTS = [
    "/retrain",
    "/retrain steps=10 lr=0.5",
    "/retrain feedback",
    "/retrain feedback merge=1",
    "/retrain force=1 min_acc=0",
    "/retrain@breedbot_playground_bot steps=5",
    "/models",
    "/promote 0",
    "/promote 1",
    "/rollback",
    "/stats",
    "/STATS",
]


@pytest.mark.parametrize("language", ["en", "pt-br"])
def test_every_admin_command_and_option_refused(
    stack: Stack, chat: PlaygroundClient, language: str
) -> None:
    """Each admin command (with options, with the bot's @name) and a zip with a /retrain caption:
    a refusal in the user's language, and nothing reaches the worker."""
    user = 501 if language == "en" else 502
    before = stack.registry().list_versions()
    cursor = _last_seq(stack)
    for text in ADMIN_TEXTS:
        chat.send(user, text=text, language_code=language)
    send_retrain(chat, b"PK\x05\x06" + bytes(18), "/retrain steps=5", user, language_code=language)
    texts = _texts_after(stack, user, cursor, len(ADMIN_TEXTS) + 1)
    refusal = NOT_ADMIN if language == "en" else "Desculpe, só administradores podem fazer isso."
    assert texts == [refusal] * (len(ADMIN_TEXTS) + 1)
    assert stack.registry().list_versions() == before
    # The same commands from the admin are answered, so the refusal is about who asks.
    cursor = _last_seq(stack)
    chat.send(ADMIN, text="/stats", user_id=ADMIN)
    assert _texts_after(stack, ADMIN, cursor, 1)[0].startswith("Jobs today:")


def _answer_photo(stack: Stack, chat: PlaygroundClient, user: int) -> dict[str, Any]:
    assert stack.fake is not None
    sent = chat.send(user, file=pet_photos(1)[0])["message"]["message_id"]
    got = wait_until(lambda: replies_to(all_events(stack.fake, user), sent), 120)
    assert got, f"photo of user {user} not answered"
    return got[0]


def _buttons(message: dict[str, Any]) -> dict[str, str]:
    rows = message.get("reply_markup", {}).get("inline_keyboard", [])
    return {b["text"]: b["callback_data"] for row in rows for b in row}


def _press(stack: Stack, chat: PlaygroundClient, user: int, message_id: int, data: str) -> str:
    """Press a button with `data`; the text of the callback answer."""
    assert stack.fake is not None
    query = chat.press(user, message_id, data)["callback_query_id"]

    def answered() -> list[dict[str, Any]]:
        events = all_events(stack.fake, user)
        return [e for e in events if e["type"] == "answer" and e["callback_query_id"] == query]

    found = wait_until(answered, 30)
    assert found, f"callback {data!r} got no answer"
    return found[0]["text"] or ""


def test_forged_and_malformed_callback_data_refused(stack: Stack, chat: PlaygroundClient) -> None:
    """B presses a button naming A's photo, or a malformed payload: refused, nothing stored."""
    alice, bob = 601, 602
    alice_reply = _answer_photo(stack, chat, alice)
    bob_reply = _answer_photo(stack, chat, bob)
    alice_id = _buttons(alice_reply)["✅ right"].split(":")[1]
    bob_id = _buttons(bob_reply)["✅ right"].split(":")[1]
    forged = [
        f"fb:{alice_id}:ok",
        f"fb:{alice_id}:other",
        f"fb:{alice_id}:1",
        "fb:",
        "fb:nothing",
        "fb:::",
        f"fb:{bob_id}:99",
        f"fb:{bob_id}:-1",
        f"fb:{bob_id}:0",
        f"fb:{bob_id}:abc",
        f"fb:{bob_id}:ok:extra",
        "fb:../../etc:ok",
        "fb:" + "9" * 60 + ":ok",
    ]
    refused = [_press(stack, chat, bob, bob_reply["message_id"], data) for data in forged]
    assert refused == ["This answer is too old for feedback."] * len(forged)
    client = stack.redis()
    try:
        assert client.hget(contract.photo_key(alice_id), "label") is None
        assert client.hget(contract.photo_key(bob_id), "label") is None
    finally:
        client.close()
    assert stack.bot is not None and "error while handling" not in stack.bot.log_text()
    # Bob's own, well-formed button still works.
    assert _press(stack, chat, bob, bob_reply["message_id"], f"fb:{bob_id}:ok").startswith("Thanks")


class _Payload:
    """Unpickling this runs `touch <marker>`: what an attacker with Redis access would send."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return subprocess.call, (["touch", str(self.marker)],)


def _pickle_message(task: str, marker: Path, queue: str) -> str:
    """A Celery (protocol 2) message with a pickle body, as kombu would put it in Redis."""
    task_id = str(uuid.uuid4())
    body = pickle.dumps(((_Payload(marker),), {}, {"callbacks": None, "errbacks": None}))
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "binary",
            "content-type": "application/x-python-serialize",
            "headers": {
                "lang": "py",
                "task": task,
                "id": task_id,
                "root_id": task_id,
                "retries": 0,
                "timelimit": [None, None],
                "argsrepr": "x",
            },
            "properties": {
                "correlation_id": task_id,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )


def test_pickle_pushed_into_redis_is_rejected_and_never_runs(
    stack: Stack, chat: PlaygroundClient, tmp_path: Path
) -> None:
    """A pickle message on each queue: refused, its payload never runs, the worker lives."""
    worker = stack.services[0]
    control = tmp_path / "control-marker"
    pickle.loads(base64.b64decode(json.loads(_pickle_message("x", control, "q"))["body"]))
    assert control.exists(), "the payload is not live: the test would prove nothing"
    refused = "Refusing to deserialize untrusted content of type pickle"
    before = worker.log_text().count(refused)
    markers = []
    client = stack.redis()
    try:
        for task, queue in contract.TASK_QUEUES.items():
            markers.append(tmp_path / f"pwned-{task}")
            client.lpush(queue, _pickle_message(task, markers[-1], queue))
    finally:
        client.close()
    n = len(contract.TASK_QUEUES)
    assert wait_until(lambda: worker.log_text().count(refused) >= before + n, 60)
    assert not [m for m in markers if m.exists()]
    assert worker.alive()
    assert _answer_photo(stack, chat, 603)["caption"]


@pytest.fixture
def flower(stack: Stack) -> Iterator[tuple[Service, str]]:
    """Flower on a free port with basic auth."""
    proc = stack.start_flower(FLOWER_BASIC_AUTH=":".join(FLOWER_AUTH))
    yield proc, proc.url
    proc.stop()


FLOWER_PATHS = [
    "/",
    "/workers",
    "/tasks",
    "/broker",
    "/api/workers",
    "/api/tasks",
    "/api/task/info/x",
    "/worker/sec",
    "/api/queues/length",
    "/metrics",
]


def test_flower_ui_and_api_need_credentials(flower: tuple[Service, str]) -> None:
    """Every UI page and API route, /metrics included: 401 without or with wrong credentials,
    200 with them (the README: /metrics is public only with PUBLIC_METRICS)."""
    _, url = flower
    for path in FLOWER_PATHS:
        assert httpx.get(url + path, timeout=10).status_code == 401, path
        wrong = httpx.get(url + path, auth=("admin", "guess"), timeout=10)
        assert wrong.status_code == 401, path
    assert httpx.get(url + "/api/workers", auth=FLOWER_AUTH, timeout=10).status_code == 200
    assert httpx.get(url + "/", auth=FLOWER_AUTH, timeout=10).status_code == 200
    post = httpx.post(f"{url}/api/task/async-apply/{contract.STATS}", json={}, timeout=10)
    assert post.status_code == 401
    assert httpx.get(url + "/metrics", auth=FLOWER_AUTH, timeout=10).status_code == 200


def test_uploads_stored_under_names_the_bot_chose(stack: Stack, chat: PlaygroundClient) -> None:
    """A photo file and a zip with hostile names: stored (if at all) under the bot's own names."""
    assert stack.fake is not None
    user = 604
    photo = pet_photos(1)[0]
    sent = chat.send(
        user, file=photo, kind="document", filename="../../../evil name.jpg", mime_type="image/jpeg"
    )["message"]["message_id"]
    reply = wait_until(lambda: replies_to(all_events(stack.fake, user), sent), 120)[0]
    right = _buttons(reply)["✅ right"]
    assert _press(stack, chat, user, reply["message_id"], right).startswith("Thanks")
    store = open_store(str(Path(stack.env["VAR_DIR"]) / "store"))
    key = f"feedback/{right.split(':')[1]}.json"
    wait_until(lambda: store.exists(key), 60, what="the photo filed")
    kept = Image.open(io.BytesIO(get_blob(store, json.loads(store.get(key))["sha256"])))
    assert kept.format == "JPEG" and kept.size == Image.open(io.BytesIO(photo)).size  # re-encoded
    stored = [entry.key for entry in store.list("feedback/")]
    assert all(re.fullmatch(r"feedback/[0-9a-f]{12}\.json", k) for k in stored), stored
    cursor = _last_seq(stack)
    chat.send(
        ADMIN,
        file=b"PK\x05\x06" + bytes(18),
        kind="document",
        user_id=ADMIN,
        filename="../../pwned.zip",
        mime_type="application/zip",
        caption="/retrain",
    )
    finals = wait_until(
        lambda: [
            e
            for e in all_events(stack.fake, ADMIN)
            if e["seq"] > cursor
            and e["type"] == "edited"
            and "failed" in e["message"].get("text", "")
        ],
        120,
    )
    assert finals
    everything = [*stack.root.rglob("*"), *Path("/tmp").glob("*pwned*")]
    assert not [p for p in everything if "evil" in p.name or "pwned" in p.name]


def test_secrets_never_logged(stack: Stack, chat: PlaygroundClient) -> None:
    """After a photo, an admin command and a failing upload, no service log holds the bot
    token, the Redis password or the Flower password."""
    _answer_photo(stack, chat, 605)
    cursor = _last_seq(stack)
    chat.send(ADMIN, text="/models", user_id=ADMIN)
    assert _texts_after(stack, ADMIN, cursor, 1)
    logs = stack.all_logs()
    assert "sec@" in logs and "Application started" in logs  # the logs are really there
    secret_part = TOKEN.split(":", 1)[1]
    for secret in (secret_part, REDIS_PASSWORD, FLOWER_AUTH[1]):
        leaks = [line for line in logs.splitlines() if secret in line]
        assert not leaks, leaks[:3]
