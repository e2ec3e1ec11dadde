"""Kept datasets: every photo once under its SHA-256, a dataset as a manifest blob.

A manifest is the sorted list of [photo_sha256, label] pairs a version was trained on, stored as
a JSON blob; its own SHA-256 names it. `materialize` turns one back into the folder-per-class
layout `model.data.load_dataset` reads (which judges files by content, so they need no suffix).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from store.blobs import Store, get_blob, put_blob

Manifest = list[list[str]]  # sorted [[photo_sha256, label], ...], one pair per photo


def check_label(label: str) -> str:
    """`label` if it can name a class folder; ValueError otherwise."""
    if not label or label.startswith(".") or "/" in label or "\\" in label or "\x00" in label:
        raise ValueError(f"refusing label {label!r} as a folder name")
    return label


def manifest_of(pairs: Iterable[tuple[str, str]]) -> Manifest:
    """(photo_sha256, label) pairs as a manifest; a photo listed twice keeps its last label."""
    by_photo = {sha: check_label(label) for sha, label in pairs}
    return [[sha, label] for sha, label in sorted(by_photo.items())]


def save(store: Store, manifest: Manifest) -> str:
    """Keep a manifest as a blob; its SHA-256 is returned."""
    return put_blob(store, json.dumps(manifest, separators=(",", ":")).encode())


def keep(store: Store, photos: Iterable[tuple[Path, str]]) -> str:
    """Store each (photo file, label) once under its content hash, then their manifest.

    Every label is checked before the first photo is stored, so a refusal leaves no blobs."""
    checked = [(path, check_label(label)) for path, label in photos]
    return save(
        store, manifest_of((put_blob(store, path.read_bytes()), lbl) for path, lbl in checked)
    )


def load(store: Store, sha256: str) -> Manifest:
    """The manifest kept under `sha256`; StoreError when it is missing or damaged."""
    return manifest_of((sha, label) for sha, label in json.loads(get_blob(store, sha256)))


def blobs_of(store: Store, sha256: str) -> set[str]:
    """The blobs a kept dataset holds on to: its manifest and every photo in it (for pruning)."""
    return {sha256, *(sha for sha, _ in load(store, sha256))}


@dataclass(frozen=True)
class Merged:
    """A merged manifest and how many of its photos came from each side."""

    manifest: Manifest
    from_base: int
    from_new: int


def merge(base: Manifest, new: Manifest) -> Merged:
    """`base` plus `new`; a photo in both takes its label from `new` and counts as new."""
    fresh = {sha for sha, _ in new}
    kept = [(sha, label) for sha, label in base if sha not in fresh]
    manifest = manifest_of([*kept, *((sha, label) for sha, label in new)])
    return Merged(manifest, len(kept), len(fresh))


def classes(manifest: Manifest) -> list[str]:
    """The labels a manifest uses, sorted."""
    return sorted({label for _, label in manifest})


def materialize(
    store: Store, manifest: Manifest, folder: Path, local: Mapping[str, Path] | None = None
) -> Path:
    """Write every photo to folder/<label>/<sha256>; returns folder.

    A photo in `local` (SHA-256 -> a file already on this disk) is copied from there, any other
    fetched from the store and checked against its hash."""
    local = local or {}
    for sha, label in manifest:
        target = Path(folder) / check_label(label) / sha
        target.parent.mkdir(parents=True, exist_ok=True)
        if sha in local:
            shutil.copyfile(local[sha], target)
        else:
            target.write_bytes(get_blob(store, sha))
    return Path(folder)
