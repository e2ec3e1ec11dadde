"""Issue 20, the inputs: cheap files costly to decode, an uncapped backlog, feedback filling the
store, zip folder entries, hostile class names and file modes; each through the real interface
(the real worker, or the real bot against the emulator), with fast checks beside them."""

from __future__ import annotations

import contextlib
import io
import os
import stat
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import redis
from celery import Celery
from celery.result import AsyncResult
from PIL import Image

import contract
from bot.i18n import problem_text, t
from harness.faults import (
    HOSTILE_CLASS_NAMES,
    budget_images,
    costly_images,
    folder_entries_zip,
    hostile_class_zip,
)
from harness.services import Service
from harness.stack import Stack
from harness.user import pet_photos, send_document
from harness.waiting import wait_until
from model.runtime.classifier import Classifier
from model.runtime.images import MAX_DECODE_BYTES, ImageError, decode_image
from ops.redis_server import RedisServer
from store.blobs import LocalStore, open_store
from worker import feedback
from worker.batching import Batcher
from worker.settings import WorkerSettings

# What one decode may take from Pillow's arena (blocks of at most 16 MiB each: the decoded image,
# its reduction and the few small conversions after it) and from numpy. Before the budget a
# 49 MP RGBA PNG took 74 blocks, a 16-bit grey PNG 26 blocks and 794 MiB of numpy arrays.
MAX_PILLOW_BLOCKS = 20
MAX_NUMPY_BYTES = MAX_DECODE_BYTES + 2**20


def _accounted(data: bytes) -> tuple[str, int, int]:
    """(answered or the refusal's code, Pillow blocks allocated, numpy's peak bytes)."""
    before = Image.core.get_stats()["allocated_blocks"]
    tracemalloc.start()
    try:
        assert decode_image(data).shape == (224, 224, 3)
        outcome = "answered"
    except ImageError as error:
        assert f"{MAX_DECODE_BYTES // 2**20} MB" in str(error)  # says why, in words
        outcome = error.code
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return outcome, Image.core.get_stats()["allocated_blocks"] - before, peak


def test_costly_images_are_refused_or_decoded_within_the_budget() -> None:
    """The issue's 49 MP files: refused from the header, or (palette) decoded small; the
    costliest files the budget accepts are decoded within the memory bound."""
    outcomes = {}
    for name, data in {**costly_images(), **budget_images(MAX_DECODE_BYTES)}.items():
        outcome, blocks, numpy_peak = _accounted(data)
        assert blocks <= MAX_PILLOW_BLOCKS, (name, blocks)
        assert numpy_peak <= MAX_NUMPY_BYTES, (name, numpy_peak)
        outcomes[name] = outcome
    assert outcomes == {
        "16-bit grey PNG": "too_large",
        "RGBA PNG": "too_large",
        "palette PNG with transparency": "answered",
        "lossless WebP": "too_large",
        "16-bit grey PNG at the budget": "answered",
        "RGBA PNG at the budget": "answered",
        "lossless WebP at the budget": "answered",
    }


def test_a_shrunk_photo_keeps_its_exif_orientation() -> None:
    """A large PNG stored on its side (EXIF 6) is reduced before the rotation, and still upright."""
    lying = Image.new("RGB", (2000, 1000), "black")
    lying.paste("white", (0, 0, 2000, 500))  # upright, the white half is on the right
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    lying.save(out, "PNG", exif=exif)
    pixels = decode_image(out.getvalue())
    assert pixels[:, 180:].mean() > 200 and pixels[:, :40].mean() < 50


def _stand_in(image_size: int = 224) -> Classifier:
    """The real Classifier over a stand-in model (two classes, mean brightness decides)."""

    def classify(pixels: np.ndarray) -> dict[str, np.ndarray]:
        bright = pixels.mean(axis=(1, 2, 3))
        n = len(pixels)
        return {
            "probabilities": np.stack([bright, 1 - bright], axis=1),
            "pet_probability": np.full(n, -1.0),
            "imagenet_class": np.full(n, -1),
            "imagenet_probability": np.zeros(n),
        }

    labels = ["light", "dark"]
    return Classifier(classify, labels, labels, None, engine="stand-in", image_size=image_size)


def test_a_heavy_decode_holds_no_batch() -> None:
    """While a costly file waits for (or runs) its decode, another photo is answered: the
    gather loop only ever sees decoded pixels."""
    batcher, classifier = Batcher(), _stand_in()
    costly = budget_images(MAX_DECODE_BYTES)["RGBA PNG at the budget"]
    answers: list[object] = []
    with batcher.heavy:  # a heavy decode under way: the next one must wait
        heavy = threading.Thread(
            target=lambda: answers.append(batcher.submit(classifier, costly, 1).result())
        )
        heavy.start()
        light = batcher.submit(classifier, pet_photos(1)[0], 1).result(timeout=60)
        assert light.prediction.error is None and light.batch_size == 1
        assert heavy.is_alive() and not answers  # still waiting, and nobody waited for it
    heavy.join(timeout=120)
    assert len(answers) == 1


@pytest.mark.slow
@pytest.mark.usefixtures("zero_shot")
def test_the_worker_answers_or_refuses_costly_files_and_survives(
    worker: Service, celery_client: Celery
) -> None:
    """All the costly files at once through the real worker: the issue's 16-bit, RGBA and WebP
    refused in words, the rest answered; a normal photo is answered too; the worker lives."""
    files = {**costly_images(), **budget_images(MAX_DECODE_BYTES), "photo": pet_photos(1)[0]}
    requests = {
        name: contract.ClassifyRequest(contract.encode_bytes(data), top_k=1).to_dict()
        for name, data in files.items()
    }
    pending = {n: celery_client.send_task(contract.CLASSIFY, args=[r]) for n, r in requests.items()}
    answers = {n: contract.ClassifyResult.from_dict(p.get(timeout=300)) for n, p in pending.items()}
    refused = {n for n, a in answers.items() if a.error}
    assert refused == {"16-bit grey PNG", "RGBA PNG", "lossless WebP"}
    for name in refused:
        assert answers[name].error == "too_large" and "MB" in (answers[name].error_message or "")
    assert all(answers[n].top_k for n in set(files) - refused)
    assert worker.alive()


def _upload_keys(client: redis.Redis) -> list[str]:
    return list(client.scan_iter(match=contract.upload_key("*")))


@pytest.mark.slow
def test_a_queued_photo_is_kept_once_and_a_deep_queue_refuses_politely(
    tmp_path: Path, breedbot_home: Path, worker: Service
) -> None:
    """The real bot, no worker at first: a document's bytes are in Redis once (under
    their key, not in the queued message nor the outbox); with MAX_INFER_QUEUE=1 the next photo
    is refused in the user's language; a worker then answers the first and its bytes go."""
    big = io.BytesIO()
    Image.open(io.BytesIO(pet_photos(1)[0])).resize((1200, 900)).save(big, "JPEG", quality=95)
    photo = big.getvalue()  # ~200 KB: any copy of it would show in Redis' sizes
    stack = Stack(tmp_path / "stack", redis_password=None)
    with (
        stack.running(BREEDBOT_HOME=str(breedbot_home)),
        contextlib.closing(stack.client()) as chat,
    ):
        stack.start_bot(MAX_INFER_QUEUE="1")
        client = redis.Redis.from_url(stack.redis_url())
        send_document(chat, 601, photo, "cat.jpg", "image/jpeg")
        wait_until(lambda: client.llen(contract.QUEUE_INFER) == 1, 60, what="the photo queued")
        (key,) = wait_until(lambda: _upload_keys(client), 10, what="the upload key")
        assert client.get(key) == photo
        assert len(client.lindex(contract.QUEUE_INFER, 0) or b"") < 20_000
        (entry,) = client.hvals(contract.OUTBOX_JOBS)
        assert len(entry) < 20_000
        for user, language in ((602, "en"), (603, "pt-br")):
            send_document(chat, user, photo, "dog.jpg", "image/jpeg", language_code=language)
            events = chat.wait_for(user, lambda e: any(x["type"] == "sent" for x in e), 60)
            sent = [x["message"]["text"] for x in events if x["type"] == "sent"]
            assert sent == [t("pt-BR" if language == "pt-br" else "en", "busy")]
        stack.start_worker("w", BREEDBOT_HOME=str(breedbot_home))
        events = chat.wait_for(601, lambda e: any(x["type"] == "sent" for x in e), 180)
        assert any(x["type"] == "sent" and "caption" in x["message"] for x in events)
        wait_until(lambda: not _upload_keys(client), 30, what="the bytes removed once answered")
        client.close()


def _retrain(client: Celery, zip_bytes: bytes) -> contract.Refused:
    dataset = contract.DatasetRef(contract.encode_bytes(zip_bytes), "hostile.zip").to_dict()
    request = contract.RetrainRequest(dataset)
    job = client.send_task(contract.RETRAIN, args=[request.to_dict()])
    with pytest.raises(contract.Refused) as refused:
        job.get(timeout=300)
    return refused.value


def _store_keys(settings: WorkerSettings) -> set[str]:
    return {entry.key for entry in open_store(settings.store_location).list()}


@pytest.mark.slow
@pytest.mark.usefixtures("zero_shot")
def test_hostile_class_names_are_refused_in_words_and_leave_no_blobs(
    worker: Service, celery_client: Celery, worker_settings: WorkerSettings
) -> None:
    """`a/b`, `..`, 300 characters, U+202E as class names: each retrain is refused with its own
    problem (worded in English and Portuguese) and stores nothing."""
    for name, (label, problem) in HOSTILE_CLASS_NAMES.items():
        before = _store_keys(worker_settings)
        refused = _retrain(celery_client, hostile_class_zip(label))
        assert refused.problem == problem, name
        english = problem_text("en", refused.problem, refused.params, refused.message)
        assert "Class name" in english and "Error" not in english
        portuguese = problem_text("pt-BR", refused.problem, refused.params, refused.message)
        assert portuguese != english and "nome de classe" in portuguese
        assert _store_keys(worker_settings) == before, name
    assert worker.alive()


@pytest.mark.slow
@pytest.mark.usefixtures("zero_shot")
def test_zip_folder_entries_count_toward_max_files(worker: Service, celery_client: Celery) -> None:
    """6 photos and 20,000 empty folders: over the 20,000-entry limit, refused in words."""
    refused = _retrain(celery_client, folder_entries_zip(20_000))
    assert refused.problem == "zip_too_many_files"
    assert refused.params["files"] == 20_006 and refused.params["limit"] == 20_000
    assert "files and folders" in refused.message
    assert "arquivos e pastas" in problem_text("pt-BR", refused.problem, refused.params, "")
    assert worker.alive()


def _store_feedback(client: Celery, photo_id: str, data: bytes, owner: int) -> AsyncResult:
    request = contract.StoreFeedback(photo_id, "pug", contract.encode_bytes(data), owner)
    return client.send_task(contract.STORE_FEEDBACK, args=[request.to_dict()], queue="fb-only")


@pytest.mark.slow
def test_feedback_is_kept_small_and_a_chat_over_its_quota_is_refused(
    spawn_worker: Callable[..., Service], celery_client: Celery, tmp_path: Path
) -> None:
    """A real worker with FEEDBACK_PER_CHAT=2: a 3 MB padded photo is kept as a JPEG of at most
    512 px; the chat's third photo is refused with a worded problem; another chat still files."""
    store_url = str(tmp_path / "store")
    # Its own queue and store: the session's worker files feedback too, with the defaults.
    worker = spawn_worker("fb", queues="fb-only", STORE_URL=store_url, FEEDBACK_PER_CHAT="2")
    client = celery_client
    big = io.BytesIO()
    Image.open(io.BytesIO(pet_photos(1)[0])).resize((2000, 1500)).save(big, "JPEG")
    padded = big.getvalue() + os.urandom(3 * 2**20)  # still decodes
    for i in range(2):
        _store_feedback(client, f"own{i}", padded, 71).get(timeout=120)
    with pytest.raises(contract.Refused) as refused:
        _store_feedback(client, "own2", padded, 71).get(timeout=120)
    assert refused.value.problem == "feedback_quota_chat"
    assert "2" in problem_text("pt-BR", refused.value.problem, refused.value.params, "")
    sha = _store_feedback(client, "other0", padded, 72).get(timeout=120)
    store = LocalStore(Path(store_url))
    kept = Image.open(io.BytesIO(store.get(f"blobs/{sha[:2]}/{sha}")))
    assert kept.format == "JPEG" and max(kept.size) <= 512
    assert len(list(store.list(feedback.PREFIX))) == 3  # the same photo, from three answers
    assert worker.alive()


def _modes(root: Path) -> tuple[set[int], set[int]]:
    files, folders = set(), set()
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        (folders if path.is_dir() else files).add(mode)
    return files, folders


def test_store_files_are_private(tmp_path: Path, datasets: Path) -> None:
    """Blobs 0600, folders 0700 whatever the umask (they hold every user's photos)."""
    store = LocalStore(tmp_path / "store")
    answer = contract.StoreFeedback("m1", "pug", contract.encode_bytes(pet_photos(1)[0]), 5)
    feedback.store(answer, store)
    files, folders = _modes(tmp_path / "store")
    assert files == {0o600} and folders == {0o700}


@pytest.mark.slow
def test_the_embedded_redis_keeps_its_aof_private(tmp_path: Path) -> None:
    """`make up`'s redis-server: its folder 0700, the AOF (every queued photo) 0600."""
    with RedisServer(tmp_path / "redis") as server:
        client = redis.Redis.from_url(server.url)
        client.set("photo", b"x" * 1000)
        client.close()
        aof = [p for p in (tmp_path / "redis").rglob("*.aof*") if p.is_file()]
        assert aof
        assert {stat.S_IMODE(p.stat().st_mode) for p in aof} == {0o600}
        assert _modes(tmp_path / "redis")[1] == {0o700}
