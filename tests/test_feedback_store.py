"""Feedback in the blob store (worker/feedback.py) on a local store with real photos."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

import contract
from store.blobs import LocalStore, get_blob
from worker import feedback


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def _photo(datasets: Path, breed: str, index: int = 0) -> bytes:
    return sorted((datasets / "pets-dev" / breed).glob("*.jpg"))[index].read_bytes()


def _answer(photo_id: str, label: str, data: bytes = b"") -> contract.StoreFeedback:
    return contract.StoreFeedback(photo_id, label, contract.encode_bytes(data) if data else None)


def test_last_answer_wins_and_empty_removes(store: LocalStore, datasets: Path) -> None:
    pug, mau = _photo(datasets, "pug"), _photo(datasets, "Egyptian_Mau")
    sha = feedback.store(_answer("p1", "pug", pug), store)
    kept = Image.open(io.BytesIO(get_blob(store, sha)))  # re-encoded, not the bytes sent
    assert kept.format == "JPEG" and kept.size == Image.open(io.BytesIO(pug)).size
    assert json.loads(store.get("feedback/p1.json")) == {"label": "pug", "sha256": sha}
    mau_sha = feedback.store(_answer("p2", "Egyptian_Mau", mau), store)
    feedback.store(_answer("p1", "Bengal", pug), store)  # changed their mind
    assert feedback.corrections(store) == sorted([[sha, "Bengal"], [mau_sha, "Egyptian_Mau"]])
    assert feedback.store(_answer("p1", ""), store) is None
    assert [label for _, label in feedback.corrections(store)] == ["Egyptian_Mau"]
    feedback.store(_answer("p1", ""), store)  # removing twice is fine


@pytest.mark.parametrize(
    ("photo_id", "label"), [("p1", ".hidden"), ("p1", "a/b"), ("p1", "a\\b"), ("../x", "pug")]
)
def test_bad_labels_and_photo_ids_are_refused(store: LocalStore, photo_id: str, label: str) -> None:
    with pytest.raises(ValueError, match="refusing"):
        feedback.store(_answer(photo_id, label, b"\xff\xd8\xff"), store)
    assert not list(store.list())


def test_an_old_feedback_dir_is_imported_once_without_overwriting_newer_answers(
    store: LocalStore, datasets: Path, tmp_path: Path
) -> None:
    old = tmp_path / "feedback"
    for breed, photo_id in (("pug", "a1"), ("pug", "a2"), ("Bengal", "b1")):
        (old / breed).mkdir(parents=True, exist_ok=True)
        shutil.copy(
            sorted((datasets / "pets-dev" / breed).glob("*.jpg"))[0],
            old / breed / f"{photo_id}.jpg",
        )
    (old / "pug" / ".a3.partial").write_bytes(b"half a photo")
    feedback.store(_answer("a2", "Samoyed", _photo(datasets, "samoyed")), store)  # newer
    assert feedback.import_folder(old, store) == 2
    labels = {json.loads(store.get(f"feedback/{i}.json"))["label"] for i in ("a1", "a2", "b1")}
    assert labels == {"pug", "Samoyed", "Bengal"}
    feedback.store(_answer("b1", ""), store)
    assert feedback.import_folder(old, store) == 0  # the removal stays removed
    assert len(feedback.corrections(store)) == 2
    assert feedback.import_folder(tmp_path / "nowhere", store) == 0
