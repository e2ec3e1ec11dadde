"""Kept datasets (store/datasets.py) on a local store with real photos."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from model import data
from store import datasets as kept
from store.blobs import LocalStore, StoreError, blob_hashes, blob_key


def _photos(root: Path, breed: str, n: int) -> list[tuple[Path, str]]:
    return [(path, breed) for path in sorted((root / "pets-dev" / breed).glob("*.jpg"))[:n]]


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_keep_stores_each_photo_once_and_load_returns_the_sorted_manifest(
    store: LocalStore, datasets: Path
) -> None:
    photos = _photos(datasets, "pug", 3) + _photos(datasets, "Bengal", 3)
    sha = _keep_twice(store, photos)
    manifest = kept.load(store, sha)
    assert manifest == sorted(manifest) and len(manifest) == 6
    assert {label for _, label in manifest} == {"pug", "Bengal"}
    assert {e.key for e in blob_hashes(store)} == {s for s, _ in manifest} | {sha}
    assert kept.blobs_of(store, sha) == {s for s, _ in manifest} | {sha}


def _keep_twice(store: LocalStore, photos: list[tuple[Path, str]]) -> str:
    """Keeping the same photos twice gives the same manifest and writes nothing new."""
    first = kept.keep(store, photos)
    before = {e.key: e.modified for e in blob_hashes(store)}
    assert kept.keep(store, list(reversed(photos))) == first
    assert {e.key: e.modified for e in blob_hashes(store)} == before
    return first


def test_load_of_a_missing_or_damaged_manifest_raises_store_error(
    store: LocalStore, datasets: Path
) -> None:
    with pytest.raises(StoreError) as missing:
        kept.load(store, "ab" * 32)
    assert missing.value.code == "store_missing"
    sha = kept.keep(store, _photos(datasets, "pug", 2))
    store.put(blob_key(sha), b"[]")
    with pytest.raises(StoreError) as damaged:
        kept.load(store, sha)
    assert damaged.value.code == "store_damaged"


def test_merge_new_label_wins_and_counts_each_side() -> None:
    base = kept.manifest_of([("a" * 64, "pug"), ("b" * 64, "pug"), ("c" * 64, "Bengal")])
    new = kept.manifest_of([("c" * 64, "Sphynx"), ("d" * 64, "Sphynx")])
    merged = kept.merge(base, new)
    assert merged.manifest == [["a" * 64, "pug"], ["b" * 64, "pug"],
                               ["c" * 64, "Sphynx"], ["d" * 64, "Sphynx"]]  # fmt: skip
    assert (merged.from_base, merged.from_new) == (2, 2)
    assert kept.classes(merged.manifest) == ["Sphynx", "pug"]


@pytest.mark.parametrize("label", ["", ".hidden", "a/b", "..", "a\\b"])
def test_labels_that_cannot_be_folders_are_refused(label: str) -> None:
    with pytest.raises(ValueError, match="folder name"):
        kept.manifest_of([("a" * 64, label)])


def test_materialize_gives_the_folder_layout_model_data_reads(
    store: LocalStore, datasets: Path, tmp_path: Path
) -> None:
    """JPEG and PNG alike come back under their class; load_dataset sees the same content."""
    png = tmp_path / "one.png"
    buffer = io.BytesIO()
    Image.open(_photos(datasets, "Bengal", 1)[0][0]).save(buffer, "PNG")
    png.write_bytes(buffer.getvalue())
    photos = _photos(datasets, "pug", 3) + _photos(datasets, "Bengal", 2) + [(png, "Bengal")]
    manifest = kept.load(store, kept.keep(store, photos))
    folder = kept.materialize(store, manifest, tmp_path / "train")
    loaded = data.load_dataset(folder)
    assert sorted([im.sha256, im.label] for im in loaded.images) == manifest
    assert loaded.classes == ["Bengal", "pug"] and not loaded.skipped
    originals = {data.sha256_file(path) for path, _ in _photos(datasets, "pug", 3)}
    assert {im.sha256 for im in loaded.images if im.label == "pug"} == originals


def test_materialize_stops_at_a_damaged_photo(
    store: LocalStore, datasets: Path, tmp_path: Path
) -> None:
    manifest = kept.load(store, kept.keep(store, _photos(datasets, "pug", 2)))
    store.put(blob_key(manifest[0][0]), b"not the photo")
    with pytest.raises(StoreError) as damaged:
        kept.materialize(store, manifest, tmp_path / "train")
    assert damaged.value.code == "store_damaged"
