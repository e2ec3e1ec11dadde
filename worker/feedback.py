"""Corrected photos in the blob store, for `/retrain feedback` on any host.

A photo is a blob under its SHA-256; `feedback/<photo_id>.json` holds {"label", "sha256"}, the
user's latest answer. An old FEEDBACK_DIR (a folder per class) is imported once, on first use.
"""

from __future__ import annotations

import json
from pathlib import Path

import contract
from store import datasets
from store.blobs import Store, put_blob
from worker import fetch

PREFIX = "feedback/"
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


def store(request: contract.StoreFeedback, store: Store) -> str | None:
    """File the photo under `request.label` (the user's latest answer); "" only removes it.

    Returns the photo's SHA-256, or None when the entry was removed."""
    key = _key(request.photo_id)
    if not request.label:
        store.delete(key)
        return None
    datasets.check_label(request.label)
    data = fetch.decode_inline(request.image_b64, contract.MAX_IMAGE_BYTES)
    return _file(store, request.photo_id, request.label, data)


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
