"""Corrected photos in the blob store, for `/retrain feedback` on any host.

A photo is a blob under its SHA-256, re-encoded to a bounded JPEG; `feedback/<photo_id>.json`
holds {"label", "sha256"}, the user's latest answer, and `feedback-owners/<chat>/<photo_id>` marks
whose it is, for the per-chat quota. An old FEEDBACK_DIR (a folder per class) is imported once, on
first use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import contract
from model.runtime import images as imagelib
from store import datasets
from store.blobs import Store, put_blob
from worker import fetch
from worker.settings import WorkerSettings

PREFIX = "feedback/"
OWNERS = "feedback-owners/"


@dataclass(frozen=True)
class Quota:
    """What the store keeps of feedback: each photo's longest side, photos per chat, in all."""

    side: int = 512
    per_chat: int = 500
    total: int = 50_000

    @classmethod
    def of(cls, settings: WorkerSettings) -> Quota:
        """The quota the worker's settings ask for."""
        return cls(settings.feedback_side, settings.feedback_per_chat, settings.feedback_total)


# Written into FEEDBACK_DIR once its photos are in the store: an answer removed later in the
# store must not come back from the old folder.
IMPORTED = ".imported-to-store"


def _key(photo_id: str) -> str:
    if not photo_id.isalnum():
        raise ValueError(f"refusing photo id {photo_id!r}")
    return f"{PREFIX}{photo_id}.json"


def _file(store: Store, photo_id: str, label: str, data: bytes) -> str:
    sha256 = put_blob(store, data)  # the photo first: an entry never names a missing blob
    store.put(_key(photo_id), json.dumps({"label": label, "sha256": sha256}).encode())
    return sha256


def _refused(problem: str, message: str, **params: object) -> contract.Refused:
    """A full quota, as the refusal the chat is told (worded from `problem` and `params`)."""
    return contract.Refused(message, problem, params)


def _check_quota(store: Store, request: contract.StoreFeedback, quota: Quota) -> None:
    """Refuse a new photo once its chat, or everyone together, has filed the most kept."""
    if store.exists(_key(request.photo_id)):
        return  # a changed answer replaces its entry
    limit = quota.per_chat
    owner = request.owner
    if owner is not None and sum(1 for _ in store.list(f"{OWNERS}{owner}/")) >= limit:
        raise _refused(
            "feedback_quota_chat",
            f"this chat has filed {limit} corrections, the most one chat may keep; thank you",
            limit=limit,
        )
    if sum(1 for _ in store.list(PREFIX)) >= quota.total:
        raise _refused(
            "feedback_quota_total",
            f"the bot keeps at most {quota.total} corrections and has them all; thank you",
            limit=quota.total,
        )


def store(request: contract.StoreFeedback, store: Store, quota: Quota | None = None) -> str | None:
    """File the photo under `request.label` (the user's latest answer); "" only removes it.

    Returns the photo's SHA-256, or None when the entry was removed. Raises contract.Refused
    when the quota is full or the photo cannot be read."""
    quota = quota or Quota()
    key = _key(request.photo_id)
    owned = f"{OWNERS}{request.owner}/{request.photo_id}" if request.owner is not None else None
    if not request.label:
        store.delete(key)
        if owned:
            store.delete(owned)
        return None
    datasets.check_label(request.label)
    _check_quota(store, request, quota)
    data = fetch.decode_inline(request.image_b64, contract.MAX_IMAGE_BYTES)
    try:
        photo = imagelib.bounded_jpeg(data, quota.side)
    except imagelib.ImageError as error:
        raise contract.Refused(str(error), None, {}) from error
    if owned:
        store.put(owned, b"")
    return _file(store, request.photo_id, request.label, photo)


def corrections(store: Store) -> datasets.Manifest:
    """Every filed correction as a manifest; a photo answered twice keeps its latest label."""
    entries = sorted(store.list(PREFIX), key=lambda entry: entry.modified)
    answers = [json.loads(store.get(entry.key)) for entry in entries]
    return datasets.manifest_of((answer["sha256"], answer["label"]) for answer in answers)


def import_folder(root: Path, store: Store) -> int:
    """Once per FEEDBACK_DIR: file its photos (<label>/<photo_id>.<ext>) into the store.

    An answer the store already holds is newer and stays. Returns how many were imported."""
    if not root.is_dir() or (root / IMPORTED).exists():
        return 0
    imported = 0
    for path in sorted(root.glob("*/*")):
        label, photo_id = path.parent.name, path.stem
        # Hidden names are a partial write's temporary file, or litter.
        wanted = path.is_file() and photo_id.isalnum() and not label.startswith(".")
        if wanted and not store.exists(_key(photo_id)):
            _file(store, photo_id, datasets.check_label(label), path.read_bytes())
            imported += 1
    (root / IMPORTED).write_text("the photos here are in the blob store under feedback/\n")
    return imported
