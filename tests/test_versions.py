"""worker/versions.py: a version folder packed into the blob store and fetched back on another
host, a publish cut off at every store write, and the import of a MODELS_DIR from before the
registry lived in Redis. Real redis-server and store folder; the version folders are small
stand-ins with the files the packing rules look at."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from model.runtime import litert
from store import blobs, registry
from store.blobs import LocalStore
from store.registry import Registry
from worker import versions

IDENTITY = "efficientnet_lite0-v1-0123456789abcdef"


def _version_folder(folder: Path, served: str = litert.FLOAT, accuracy: float = 0.9) -> Path:
    """The files of a retrain() output that decide what is packed (their bytes differ with
    `accuracy`, as two retrains' files do)."""
    files = {
        f"{litert.VERSION_DIR}/{litert.part_file(part, p)}": f"{part}-{p}-{accuracy}".encode()
        for part in (litert.BACKBONE, litert.HEAD, litert.GATE)
        for p in litert.PRECISIONS
    }
    files |= {
        "retrained_labels.txt": b"pug\nsphynx\n",
        "head.npz": f"layer {accuracy}".encode(),
        "confusion_matrix.png": f"png {accuracy}".encode(),
        "saved_model/saved_model.pb": b"graph",
        "logs/train/events": b"events",
    }
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    listed = {
        p: {"files": [r for r in files if r.startswith("litert/") and r.endswith(f"_{p}.tflite")]}
        for p in litert.PRECISIONS
    }
    metrics = {
        "test_accuracy": accuracy,
        "labels": ["pug", "sphynx"],
        "backbone": {"handle": "efficientnet_lite0", "identity": IDENTITY},
        "litert": {"served": served, **listed},
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def _home(path: Path) -> Path:
    where = litert.home_dir(path, IDENTITY)
    where.mkdir(parents=True)
    (where / litert.FEATURES_FILE).write_bytes(b"float backbone of this host")
    (where / litert.GATE_FILE).write_bytes(b"float gate of this host")
    return path


def _no_conversion(handle: str, home: Path) -> None:
    raise AssertionError(f"{handle} should not need converting into {home}")


@pytest.mark.parametrize("served", litert.PRECISIONS)
def test_a_version_fetched_on_another_host_has_its_files_and_that_hosts_backbone(
    tmp_path: Path, served: str
) -> None:
    store = LocalStore(tmp_path / "store")
    bundle = versions.pack(store, _version_folder(tmp_path / "a" / "7", served))
    assert not [k for k in bundle if k.startswith(("saved_model/", "logs/"))]
    assert "litert/backbone_float.tflite" not in bundle and "head.npz" in bundle
    assert ("litert/backbone_int8.tflite" in bundle) == (served == litert.INT8)
    home = _home(tmp_path / "b-home")
    folder = versions.fetch(
        {"version": 7, "bundle": bundle}, store, tmp_path / "b", home, _no_conversion
    )
    assert folder == tmp_path / "b" / "7"
    for rel in bundle:
        assert (folder / rel).read_bytes() == (tmp_path / "a" / "7" / rel).read_bytes()
    backbone = folder / "litert" / "backbone_float.tflite"
    assert backbone.read_bytes() == b"float backbone of this host"
    assert not list((tmp_path / "b" / versions.STAGING_DIR).iterdir())


def _zero_shot_home(home: Path, backbone: str) -> None:
    """What `model.litert.prepare_zero_shot` leaves: a named backbone's float files, index last."""
    where = litert.zero_shot_dir(home, backbone)
    where.mkdir(parents=True)
    (where / litert.FEATURES_FILE).write_bytes(b"this host's own export")
    (where / litert.GATE_FILE).write_bytes(b"this host's own gate")
    (where / litert.ZERO_SHOT_FILE).write_text("{}")


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "efficientnet_lite2"])
def test_a_host_whose_export_differs_converts_the_named_backbone_once(
    tmp_path: Path, backbone: str
) -> None:
    # The trainer's export of a backbone hashes differently from this host's (its graph's
    # function names depend on what its process traced first): the identity never matches here.
    store = LocalStore(tmp_path / "store")
    folder = _version_folder(tmp_path / "a" / "3")
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["backbone"] = {"handle": backbone, "identity": f"{backbone}-v1-trainers0export"}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    bundle = versions.pack(store, folder)
    converted = []

    def convert(handle: str, home: Path) -> None:
        converted.append(handle)
        _zero_shot_home(home, handle)

    record = {"version": 3, "bundle": bundle}
    home = _home(tmp_path / "b-home")  # lite0 of another identity: not this version's
    fetched = versions.fetch(record, store, tmp_path / "b", home, convert)
    shutil.rmtree(fetched)  # fetched again, the conversion is reused
    versions.fetch(record, store, tmp_path / "b", home, convert)
    assert converted == [backbone]
    backbone_file = fetched / "litert" / "backbone_float.tflite"
    assert backbone_file.read_bytes() == b"this host's own export"


@pytest.mark.parametrize(
    "handle", ["https://tfhub.dev/evil/1", "/tmp/a-saved-model", "../efficientnet_lite0", None]
)
def test_a_record_naming_another_backbone_is_refused_and_nothing_is_converted(
    tmp_path: Path, handle: str | None
) -> None:
    store = LocalStore(tmp_path / "store")
    folder = _version_folder(tmp_path / "a" / "4")
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["backbone"] = {"handle": handle, "identity": "elsewhere"}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    record = {"version": 4, "bundle": versions.pack(store, folder)}
    for check in (
        lambda: versions.verify(record, store),  # what promote and rollback run first
        lambda: versions.fetch(record, store, tmp_path / "b", tmp_path / "home", _no_conversion),
    ):
        with pytest.raises(versions.BadRecord, match="backbone"):
            check()
    assert not (tmp_path / "b" / "4").exists()
    assert not list((tmp_path / "b" / versions.STAGING_DIR).iterdir())


@pytest.mark.parametrize(
    "rel",
    ["../../escaped", "/abs/escaped", "a/../../escaped", "litert/../../escaped", ".hidden", ""],
)
def test_a_bundle_path_outside_the_version_folder_is_refused(tmp_path: Path, rel: str) -> None:
    store = LocalStore(tmp_path / "store")
    bundle = versions.pack(store, _version_folder(tmp_path / "a" / "6"))
    record = {"version": 6, "bundle": {**bundle, rel: bundle["head.npz"]}}
    root = tmp_path / "deep" / "models"
    for check in (
        lambda: versions.verify(record, store),
        lambda: versions.fetch(record, store, root, _home(tmp_path / "h"), _no_conversion),
    ):
        with pytest.raises(versions.BadRecord, match="bundle path"):
            check()
    assert not (root / "6").exists()
    written = [p for p in tmp_path.rglob("escaped*")] + [p for p in tmp_path.rglob(".hidden")]
    assert written == []


@pytest.mark.parametrize("fault", ["damaged", "missing"])
def test_a_bad_blob_fails_the_fetch_and_leaves_nothing(tmp_path: Path, fault: str) -> None:
    store = LocalStore(tmp_path / "store")
    bundle = versions.pack(store, _version_folder(tmp_path / "a" / "5"))
    key = blobs.blob_key(bundle["head.npz"])
    if fault == "damaged":
        store.put(key, b"bit rot")
    else:
        store.delete(key)
    record = {"version": 5, "bundle": bundle}
    home = _home(tmp_path / "h")
    for check in (
        lambda: versions.verify(record, store),
        lambda: versions.fetch(record, store, tmp_path / "b", home, _no_conversion),
    ):
        with pytest.raises(blobs.StoreError) as error:
            check()
        assert error.value.code == f"store_{fault}" and error.value.key == key
    assert not (tmp_path / "b" / "5").exists()
    refusal = versions.refusal(error.value)
    assert refusal.problem == f"store_{fault}" and "unchanged" in refusal.message


class _DiesAfter:
    """A store whose process "dies" (raises) at its n-th write."""

    def __init__(self, store: LocalStore, n: int) -> None:
        self.inner, self.n, self.url = store, n, store.url

    def put(self, key: str, data: bytes) -> None:
        self.n -= 1
        if self.n < 0:
            raise SystemExit("killed mid-publish")
        self.inner.put(key, data)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def test_a_publish_cut_off_at_any_write_leaves_no_half_version(
    reg: Registry, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    versions.publish(reg, _version_folder(versions.new_staging_dir(root)), {}, root)
    writes = 0
    while True:
        dying = Registry(reg.client, _DiesAfter(reg.store, writes))
        staged = _version_folder(versions.new_staging_dir(root), accuracy=0.95 - writes / 1e3)
        try:
            versions.publish(dying, staged, {}, root)
        except SystemExit:
            # Cut off: still one version listed and active, whatever was written before.
            assert sorted(reg.records()) == [1] and reg.active_version() == 1, writes
            writes += 1
            continue
        break
    # It got through once it could write everything: its number skips the ones cut off.
    assert sorted(reg.records()) == [1, writes + 2] and reg.active_version() == writes + 2
    # Every write was a cut point: its number's mark, each new blob of its bundle, then its
    # record and the pointer.
    bundles = [set(reg.record(v)["bundle"].values()) for v in (1, writes + 2)]
    assert writes == 1 + len(bundles[1] - bundles[0]) + 2 > 5


def test_an_old_models_dir_is_imported_once_and_nothing_is_lost(
    reg: Registry, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    for version in (1, 2):
        _version_folder(root / str(version))
        record = {"version": version, "created_by": 7, "gate": {"passed": True}}
        (root / str(version) / versions.LEGACY_RECORD).write_text(json.dumps(record))
    (root / versions.LEGACY_POINTER).write_text(json.dumps({"version": 1, "history": [0, 2]}))
    versions.ensure_registry(reg, root)
    assert sorted(reg.records()) == [1, 2] and reg.active_version() == 1
    assert reg.record(2)["created_by"] == 7
    assert "record.json" not in reg.record(2)["bundle"]
    versions.verify(reg.record(2), reg.store)
    assert reg.rollback() == 2
    versions.ensure_registry(reg, root)  # a second start imports nothing again
    assert reg.active_version() == 2 and reg.next_version() == 3
    assert (root / "1" / "retrained_labels.txt").is_file()  # the folders stay as this cache


def test_retention_prunes_old_bundles_but_never_a_blob_still_referenced(
    reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "SWEEP_GRACE", timedelta(0))  # no retrain uploads meanwhile
    root = tmp_path / "models"
    photo = blobs.put_blob(reg.store, b"a corrected photo")
    reg.store.put("feedback/p1.json", json.dumps({"label": "pug", "sha256": photo}).encode())
    manifest = blobs.put_blob(reg.store, json.dumps([[photo, "pug"]]).encode())
    for n in range(4):
        staged = _version_folder(versions.new_staging_dir(root), accuracy=0.9 + n / 100)
        dataset = {"name": "pets", "manifest": manifest if n == 3 else None}
        versions.publish(reg, staged, {"dataset": dataset}, root)
    gone = {sha for v in (1, 2) for sha in reg.record(v)["bundle"].values()}
    assert versions.prune(reg, root, keep_versions=1) == [1, 2]  # 3 stays: the rollback target
    kept = {sha for v in (3, 4) for sha in reg.record(v)["bundle"].values()}
    for version in (3, 4):
        versions.verify(reg.record(version), reg.store)
    stored = {entry.key for entry in blobs.blob_hashes(reg.store)}
    assert kept | {photo, manifest} <= stored
    assert not (gone - kept) & stored  # what only the pruned versions had is swept
    assert sorted(p.name for p in root.iterdir() if p.name.isdigit()) == ["3", "4"]
