"""/export end to end: the real bot, worker and reply sender through the emulator."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from celery import Celery

import contract
from bot.i18n import problem_text, t
from fakegram.api import PlaygroundClient
from harness.services import Service
from harness.stack import Stack
from model.runtime.images import decode_image

# The module starts with the zero-shot model live (version 0), as a new deployment does.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("zero_shot", "stack")]

ADMIN = 4343
SOMEONE = 777
PHOTOS = 10


@pytest.fixture(scope="module")
def stack(worker: Service, session_stack: Stack) -> Iterator[Stack]:
    """The session's worker and emulator, and one bot with this module's admin."""
    session_stack.start_bot(ADMIN_IDS=str(ADMIN))
    yield session_stack
    assert session_stack.bot is not None
    session_stack.bot.kill()


@pytest.fixture(scope="module")
def chat(emulator_url: str) -> Iterator[PlaygroundClient]:
    """The user's side of the emulator."""
    with contextlib.closing(PlaygroundClient(emulator_url)) as client:
        yield client


def _ask(chat: PlaygroundClient, user: int, text: str, n: int, **form: Any) -> list[dict]:
    """Send `text` as `user` and wait for `n` messages from the bot."""
    events = chat.events(user)
    cursor = events[-1]["seq"] if events else 0
    chat.send(user, text=text, user_id=user, **form)

    def sent(evs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e["message"] for e in evs if e["type"] == "sent"]

    return sent(chat.wait_for(user, lambda evs: len(sent(evs)) >= n, timeout=240, after=cursor))


def _worker_top1(celery_client: Celery, photo: bytes) -> str:
    request = contract.ClassifyRequest(image_b64=contract.encode_bytes(photo), top_k=1)
    answer = celery_client.send_task(contract.CLASSIFY, args=[request.to_dict()]).get(timeout=60)
    return contract.ClassifyResult.from_dict(answer).top_k[0]["label"]


def test_export_sends_a_tflite_that_answers_as_the_worker(
    chat: PlaygroundClient, celery_client: Celery, datasets: Path
) -> None:
    messages = _ask(chat, ADMIN, "/export", 3)
    files = {m["message_id"]: chat.file(m["document"]["file_id"]) for m in messages}
    model = next(data for data in files.values() if data[4:8] == b"TFL3")
    readme = next(d for d in files.values() if d.startswith(b"breedbot export")).decode()
    (labels,) = [
        d.decode().splitlines() for d in files.values() if d not in (model, readme.encode())
    ]
    assert messages[-1]["caption"] == t("en", "export_sent", version=0)
    assert "model_float.tflite" in readme  # version 0 serves float
    runner = Interpreter(model_content=model).get_signature_runner()
    size = int(runner(image=np.zeros((1, 32, 32, 3), np.uint8))["image_size"][0])
    photos = sorted((datasets / "pets-dev").glob("*/*.jpg"))[:: 599 // PHOTOS][:PHOTOS]
    for path in photos:
        out = runner(image=decode_image(path.read_bytes(), size)[None])
        exported = labels[int(out["probabilities"][0].argmax())]
        assert exported == _worker_top1(celery_client, path.read_bytes()), path.name


def test_export_refusals_in_the_users_language(chat: PlaygroundClient) -> None:
    """Not an admin, no such version, not a number: each gets its answer, in pt-BR."""
    pt = {"language_code": "pt-br"}
    assert _ask(chat, SOMEONE, "/export", 1, **pt)[0]["text"] == t("pt-BR", "not_admin")
    reason = problem_text("pt-BR", "no_such_version", {"version": 99}, "")
    failed = _ask(chat, ADMIN, "/export 99", 1, **pt)[0]["text"]
    assert failed == t("pt-BR", "job_failed", reason=reason)
    assert _ask(chat, ADMIN, "/export v2", 1, **pt)[0]["text"] == t("pt-BR", "export_usage")
