"""Corrected photos filed under their label, a folder per class, for `/retrain feedback`."""

from __future__ import annotations

from pathlib import Path

import contract
from worker import fetch


def _files_of(root: Path, photo_id: str) -> list[Path]:
    return [p for p in root.glob(f"*/{photo_id}.*") if p.is_file()]


def store(request: contract.StoreFeedback, root: Path) -> str | None:
    """File the photo under `request.label` (the user's latest answer); "" only removes it."""
    label = request.label
    if label and (label.startswith(".") or "/" in label or "\\" in label):
        raise ValueError(f"refusing label {label!r} as a folder name")
    if not request.photo_id.isalnum():
        raise ValueError(f"refusing photo id {request.photo_id!r}")
    for old in _files_of(root, request.photo_id):
        old.unlink()
    if not label:
        return None
    data = fetch.decode_inline(request.image_b64, contract.MAX_IMAGE_BYTES)
    folder = root / label
    folder.mkdir(parents=True, exist_ok=True)
    # Write then rename: a retrain reading the folder never sees half a photo.
    target = folder / f"{request.photo_id}.jpg"
    partial = folder / f".{request.photo_id}.partial"
    partial.write_bytes(data)
    partial.replace(target)
    return str(target)
