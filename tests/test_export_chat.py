"""/export end to end: the real bot, worker and reply sender through the emulator."""

from __future__ import annotations

import contextlib
import io
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from celery import Celery

import contract
from bot.i18n import problem_text, sentence, t
from fakegram.api import PlaygroundClient
from harness.services import Service
from harness.stack import Stack
from model.mistakes import PHOTO_LIMIT_BYTES
from model.runtime.images import decode_image

# The module starts with the zero-shot model live (version 0), as a new deployment does.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("zero_shot")]

ADMIN = 4343
SOMEONE = 777
PHOTOS = 10
TRAIN = 10  # photos per folder of the retrain
MISLABELED = 2  # of them, photos of the other species


@pytest.fixture(scope="module")
def chat(worker: Service, session_stack: Stack, emulator_url: str) -> Iterator[PlaygroundClient]:
    """The user's side of the emulator, talking to a bot started for this module's admin."""
    bot = session_stack.start_bot(ADMIN_IDS=str(ADMIN))
    with contextlib.closing(PlaygroundClient(emulator_url)) as client:
        yield client
    bot.kill()


def _ask(
    chat: PlaygroundClient,
    user: int,
    text: str,
    n: int,
    until: Callable[[dict[str, Any]], bool] | None = None,
    **form: Any,
) -> list[dict]:
    """Send `text` as `user` and wait for `n` messages from the bot (or one `until` accepts)."""
    events = chat.events(user)
    cursor = events[-1]["seq"] if events else 0
    chat.send(user, text=text, user_id=user, **form)

    def sent(evs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e["message"] for e in evs if e["type"] == "sent"]

    def done(evs: list[dict[str, Any]]) -> bool:
        return any(map(until, sent(evs))) if until else len(sent(evs)) >= n

    return sent(chat.wait_for(user, done, timeout=300, after=cursor))


def _worker_top1(celery_client: Celery, photo: bytes) -> str:
    """The served model's own top-1 (before the chat's species and open-set decision)."""
    request = contract.ClassifyRequest(image_b64=contract.encode_bytes(photo), top_k=1)
    answer = celery_client.send_task(contract.CLASSIFY, args=[request.to_dict()]).get(timeout=60)
    return contract.ClassifyResult.from_dict(answer).model_top_k[0]["label"]


def _check_export(
    chat: PlaygroundClient, celery_client: Celery, photos: list[Path], version: int
) -> str:
    """/export: three documents whose .tflite answers `photos` as the worker does; the README."""
    messages = _ask(chat, ADMIN, "/export", 3)
    files = [chat.file(m["document"]["file_id"]) for m in messages]
    model = next(data for data in files if data[4:8] == b"TFL3")
    readme = next(d for d in files if d.startswith(b"breedbot export")).decode()
    (labels,) = [d.decode().splitlines() for d in files if d not in (model, readme.encode())]
    assert messages[-1]["caption"] == t("en", "export_sent", version=version)
    runner = Interpreter(model_content=model).get_signature_runner()
    size = int(runner(image=np.zeros((1, 32, 32, 3), np.uint8))["image_size"][0])
    for path in photos:
        out = runner(image=decode_image(path.read_bytes(), size)[None])
        exported = labels[int(out["probabilities"][0].argmax())]
        assert exported == _worker_top1(celery_client, path.read_bytes()), path.name
    return readme


def test_export_sends_a_tflite_that_answers_as_the_worker(
    chat: PlaygroundClient, celery_client: Celery, datasets: Path
) -> None:
    photos = sorted((datasets / "pets-dev").glob("*/*.jpg"))[:: 599 // PHOTOS][:PHOTOS]
    readme = _check_export(chat, celery_client, photos, 0)
    assert "model_float.tflite" in readme  # version 0 serves float


def test_export_refusals_in_the_users_language(chat: PlaygroundClient) -> None:
    """Not an admin, no such version, not a number: each gets its answer, in pt-BR."""
    pt = {"language_code": "pt-br"}
    assert _ask(chat, SOMEONE, "/export", 1, **pt)[0]["text"] == t("pt-BR", "not_admin")
    reason = problem_text("pt-BR", "no_such_version", {"version": 99}, "")
    failed = _ask(chat, ADMIN, "/export 99", 1, **pt)[0]["text"]
    assert failed == sentence(t("pt-BR", "job_failed", reason=reason))
    assert _ask(chat, ADMIN, "/export v2", 1, **pt)[0]["text"] == t("pt-BR", "export_usage")


def _mislabeled_zip(datasets: Path) -> bytes:
    """cat and dog folders, each with MISLABELED photos of the other: sure out-of-fold mistakes
    on a model that is otherwise confident."""
    root = datasets / "pets-dev"
    cats = sorted((root / "Abyssinian").glob("*.jpg"))[:TRAIN]
    dogs = sorted((root / "beagle").glob("*.jpg"))[:TRAIN]
    folders = {
        "cat": cats[MISLABELED:] + dogs[:MISLABELED],
        "dog": dogs[MISLABELED:] + cats[:MISLABELED],
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for folder, paths in folders.items():
            for path in paths:
                archive.write(path, f"{folder}/{path.name}")
    return buffer.getvalue()


def test_retrain_sends_its_mistakes_then_exports(
    chat: PlaygroundClient, celery_client: Celery, datasets: Path, session_stack: Stack
) -> None:
    """A retrain with mistakes gets the contact sheet in pt-BR; the new version exports."""
    new = max(session_stack.registry().records(), default=0) + 1
    pt = {"language_code": "pt-br"}
    zipped = _mislabeled_zip(datasets)
    upload = chat.send(
        ADMIN, file=zipped, kind="document", filename="pets.zip", user_id=ADMIN, **pt
    )
    caption = t("pt-BR", "mistakes_sheet", version=new)
    sent = _ask(chat, ADMIN, "/retrain steps=60 min_acc=0.3", 1, **pt,
                reply_to_message_id=upload["message"]["message_id"],
                until=lambda m: m.get("caption") == caption)  # fmt: skip
    sheet = next(m for m in sent if m.get("caption") == caption)
    assert sheet["photo"][0]["file_size"] < PHOTO_LIMIT_BYTES
    assert session_stack.registry().active_version() == new
    unseen = [sorted((datasets / "pets-dev" / b).glob("*.jpg")) for b in ("Abyssinian", "beagle")]
    photos = [p for breed in unseen for p in breed[TRAIN : TRAIN + 5]]
    _check_export(chat, celery_client, photos, new)


def test_forged_export_payloads_are_refused(celery_client: Celery, datasets: Path) -> None:
    """Payloads no bot sends: the export task refuses each, and the worker keeps serving."""
    for version in ("../../etc/passwd", -1, 10**12):
        forged = celery_client.send_task(contract.EXPORT, args=[{"version": version}])
        with pytest.raises(contract.Refused) as refused:
            forged.get(timeout=120)
        assert refused.value.problem == "no_such_version"
    extra = celery_client.send_task(contract.EXPORT, args=[{"version": 0, "path": "/etc"}])
    with pytest.raises(ValueError, match="unknown fields"):
        extra.get(timeout=120)
    photo = sorted((datasets / "pets-dev").glob("*/*.jpg"))[0].read_bytes()
    assert _worker_top1(celery_client, photo)
