"""A retrain's training folder and its record's "dataset" entry, from the request's DatasetRef.

Every dataset is kept in the blob store (store/datasets.py), so a later retrain can build on it:
- an upload: its photos, kept;
- `merge` (an upload with `merge_last`): the active version's kept photos plus the upload, new
  classes included; a photo in both takes the upload's label;
- feedback: the active version's kept photos (when it has them) plus the corrections.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import contract
from model import data
from store import datasets as kept
from store.blobs import Store
from store.registry import ZERO_SHOT
from worker import feedback, fetch
from worker.settings import WorkerSettings


@dataclass(frozen=True)
class Prepared:
    """The folder to train on (a folder per class) and the record's "dataset" entry."""

    folder: Path
    record: dict[str, Any]


class NothingToMerge(Exception):
    """`merge` asked of an active version that kept no dataset; `version` says which."""

    def __init__(self, version: int) -> None:
        super().__init__(
            f"the active version {version} has no kept dataset to add to (it is the built-in "
            "model or was trained before datasets were kept); send /retrain with the full zip"
        )
        self.version = version


def _base(active: dict[str, Any] | None) -> tuple[int | None, str | None]:
    """The active version and the SHA-256 of its kept manifest (None when it kept none)."""
    if active is None:
        return None, None
    return int(active["version"]), (active.get("dataset") or {}).get("manifest")


# Files of an upload that were skipped (not an image, unreadable, ...), listed in the record.
SKIPPED_LISTED = 20


def _upload(
    ref: contract.DatasetRef, tmp: Path, store: Store, min_images: int
) -> tuple[kept.Manifest, dict[str, Path], list[list[str]]]:
    """The uploaded zip unpacked, checked, hashed and kept: its manifest, its local files and
    the files it skipped (with why)."""
    archive = tmp / "upload.zip"
    archive.write_bytes(fetch.dataset_bytes(ref))
    # Added to a kept dataset, one class (or a few photos of one) is enough: the merged folder
    # is checked as a whole when it is trained on.
    merging = ref.merge_last
    dataset = data.load_dataset(
        archive,
        extract_dir=tmp / "unpacked",
        min_images_per_class=1 if merging else min_images,
        min_classes=1 if merging else 2,
    )
    kept.keep(store, [(image.path, image.label) for image in dataset.images])
    manifest = kept.manifest_of((image.sha256, image.label) for image in dataset.images)
    local = {image.sha256: image.path for image in dataset.images}
    return manifest, local, [list(skip) for skip in dataset.skipped]


def prepare(
    ref: contract.DatasetRef,
    tmp: Path,
    settings: WorkerSettings,
    store: Store,
    min_images: int,
    active: dict[str, Any] | None,
) -> Prepared:
    """Keep what the request brings, merge it with the active version's (`active`: its record,
    None for version 0) where asked, and write the result as a training folder under `tmp`.

    Raises DatasetError, StoreError or NothingToMerge."""
    local: dict[str, Path] = {}
    skipped: list[list[str]] = []
    tmp.mkdir(parents=True, exist_ok=True)
    if ref.feedback:
        feedback.import_folder(settings.feedback_root, store)
        new, source = feedback.corrections(store), "feedback"
        if not new:
            raise data.DatasetError("no_images", folder="feedback")
    else:
        (new, local, skipped), source = _upload(ref, tmp, store, min_images), "upload"
    version, base_sha = _base(active) if ref.feedback or ref.merge_last else (None, None)
    if ref.merge_last and not ref.feedback and base_sha is None:
        raise NothingToMerge(version or ZERO_SHOT)
    base = kept.load(store, base_sha) if base_sha else []
    merged = kept.merge(base, new)
    classes = kept.classes(merged.manifest)
    record = {
        "name": "feedback" if ref.feedback else ref.name,
        "manifest": kept.save(store, merged.manifest),
        "photos": len(merged.manifest),
        "classes": len(classes),
        "sources": {"kept": merged.from_base, "upload": 0, "feedback": 0}
        | {source: merged.from_new},
        # What the reply names: the version built on and the classes it did not know.
        "base_version": version if base_sha else None,
        "new_classes": sorted(set(classes) - set(kept.classes(base))) if base_sha else [],
        # Training reads the folder below, which holds only the usable photos.
        "skipped": skipped[:SKIPPED_LISTED],
        "n_skipped": len(skipped),
    }
    return Prepared(kept.materialize(store, merged.manifest, tmp / "train", local), record)
