"""worker/datasets.prepare: uploads kept, merged with the active version's dataset, feedback."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

import contract
from harness.user import breeds_zip
from model import data
from ops.redis_server import RedisServer
from store import datasets as kept
from store.blobs import LocalStore
from store.registry import Registry
from worker import datasets, feedback, tf_jobs
from worker.settings import WorkerSettings


def _ref(zip_bytes: bytes, merge: bool = False) -> contract.DatasetRef:
    return contract.DatasetRef(contract.encode_bytes(zip_bytes), "pets.zip", merge_last=merge)


@pytest.fixture
def datasets_root(datasets: Path) -> Path:
    """The shared photos (the name `datasets` is the module under test here)."""
    return datasets


@pytest.fixture
def settings(tmp_path: Path) -> WorkerSettings:
    return WorkerSettings(_env_file=None, var_dir=tmp_path / "var")


@pytest.fixture
def store(settings: WorkerSettings) -> LocalStore:
    return LocalStore(Path(settings.store_location))


def test_upload_then_merge_with_a_new_class(
    tmp_path: Path, settings: WorkerSettings, store: LocalStore
) -> None:
    upload = _ref(breeds_zip({"pug": 4, "Bengal": 4}))
    first = datasets.prepare(upload, tmp_path / "a", settings, store, 3, None)
    assert first.record["sources"] == {"kept": 0, "upload": 8, "feedback": 0}
    assert first.record["photos"] == 8 and first.record["classes"] == 2
    assert first.record["base_version"] is None
    assert data.load_dataset(first.folder).classes == ["Bengal", "pug"]

    # One class alone is enough to add; one pug photo is sent again (counted as the upload's).
    zip_b = _ref(breeds_zip({"Sphynx": 3, "pug": 1}), merge=True)
    active = {"version": 1, "dataset": first.record}
    merged = datasets.prepare(zip_b, tmp_path / "b", settings, store, 3, active)
    assert merged.record["sources"] == {"kept": 7, "upload": 4, "feedback": 0}
    assert merged.record["base_version"] == 1 and merged.record["new_classes"] == ["Sphynx"]
    loaded = data.load_dataset(merged.folder)
    assert loaded.classes == ["Bengal", "Sphynx", "pug"] and len(loaded.images) == 11
    assert kept.load(store, merged.record["manifest"]) == sorted(
        [im.sha256, im.label] for im in loaded.images
    )


def test_merge_without_a_kept_dataset_is_refused(
    tmp_path: Path, settings: WorkerSettings, store: LocalStore
) -> None:
    ref = _ref(breeds_zip({"Sphynx": 3}), merge=True)
    for record, version in ((None, 0), ({"version": 2, "dataset": {"name": "old.zip"}}, 2)):
        with pytest.raises(datasets.NothingToMerge) as refused:
            datasets.prepare(ref, tmp_path / str(version), settings, store, 3, record)
        assert refused.value.version == version


def test_feedback_adds_the_corrections_to_the_kept_dataset(
    tmp_path: Path, datasets_root: Path, settings: WorkerSettings, store: LocalStore
) -> None:
    ref = contract.DatasetRef(name="feedback", feedback=True)
    with pytest.raises(data.DatasetError):  # no corrections yet
        datasets.prepare(ref, tmp_path / "0", settings, store, 3, None)
    upload = _ref(breeds_zip({"pug": 3, "Bengal": 3}))
    first = datasets.prepare(upload, tmp_path / "a", settings, store, 3, None)
    photo = sorted((datasets_root / "pets-dev" / "samoyed").glob("*.jpg"))[0].read_bytes()
    answer = contract.StoreFeedback("abc123", "samoyed", contract.encode_bytes(photo))
    feedback.store(answer, store)
    active = {"version": 4, "dataset": first.record}
    merged = datasets.prepare(ref, tmp_path / "b", settings, store, 3, active)
    assert merged.record["sources"] == {"kept": 6, "upload": 0, "feedback": 1}
    assert merged.record["new_classes"] == ["samoyed"] and merged.record["name"] == "feedback"


@pytest.mark.slow
def test_a_merged_retrain_computes_only_the_new_photos_bottlenecks(
    tmp_path: Path, breedbot_home: Path, reg: Registry, registry_server: RedisServer
) -> None:
    """tf_jobs.run on zip A, then merge zip B, with an empty cache: B's photos are computed,
    every kept photo of A comes from the cache (each photo counts once per view)."""
    settings = WorkerSettings(
        _env_file=None,
        var_dir=tmp_path / "var",
        redis_url=registry_server.url,  # `reg`'s Redis, flushed for this test
        breedbot_home=breedbot_home,
        bottleneck_dir=tmp_path / "bottlenecks",
        retrain_architecture="efficientnet_lite0",
    )
    params = {"how_many_training_steps": 20, "flip_left_right": False}

    def run(zip_bytes: bytes, merge: bool) -> dict[str, Any]:
        ref = _ref(zip_bytes, merge).to_dict()
        request = contract.RetrainRequest(ref, params, force=True)
        result = tf_jobs.run(request, settings, lambda _: None)
        folder = settings.models_root / str(result.version)
        return {**result.metrics, **json.loads((folder / "metrics.json").read_text())}

    first = run(breeds_zip({"pug": 5, "Bengal": 5}), merge=False)
    assert first["bottlenecks"] == {"computed": 10, "cached": 0}
    merged = run(breeds_zip({"Sphynx": 5}), merge=True)
    assert merged["bottlenecks"] == {"computed": 5, "cached": 10}
    assert merged["dataset"]["sources"] == {"kept": 10, "upload": 5, "feedback": 0}
    assert len(merged["labels"]) == 3


def test_an_uploads_skipped_files_are_listed_in_the_record(
    tmp_path: Path, settings: WorkerSettings, store: LocalStore
) -> None:
    """Training reads only the usable photos, so what the upload skipped is named here."""
    buffer = io.BytesIO(breeds_zip({"pug": 3, "Bengal": 3}))
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr("pug/notes.jpg", b"not a photo at all")
    prepared = datasets.prepare(_ref(buffer.getvalue()), tmp_path, settings, store, 3, None)
    assert prepared.record["photos"] == 6 and prepared.record["n_skipped"] == 1
    [(name, reason)] = prepared.record["skipped"]
    assert name == "pug/notes.jpg" and reason
