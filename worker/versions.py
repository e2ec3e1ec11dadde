"""A host's model versions: packed into the blob store when published, fetched back as folders.

MODELS_DIR/<N>/ is each host's cache of version N, the folder `load_classifier` reads. What only
that version has goes into the store as blobs (its layer, labels, metrics, the LiteRT head and,
where int8 serves, its calibrated int8 files); what every version of a backbone shares (the float
backbone and gate, the SavedModel) each host makes from its own BREEDBOT_HOME. A folder appears
under its number by one rename, so a half-fetched version is never loaded.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import contract
from model.hparams import BACKBONE_NAMES
from model.problems import Problem
from model.runtime import litert
from model.runtime.classifier import METRICS_FILE
from model.runtime.home import place
from store import blobs, datasets
from store.blobs import Store, StoreError
from store.registry import ZERO_SHOT, Published, Registry, sweep
from worker import feedback

log = logging.getLogger(__name__)

STAGING_DIR = ".staging"
# What the file registry (before Redis) kept in MODELS_DIR: a record per version, the pointer.
LEGACY_RECORD = "record.json"
LEGACY_POINTER = "active.json"
# Rebuilt on each host, never stored: the SavedModel (from the layer) and the training logs.
NOT_KEPT = ("saved_model/", "logs/", ".", LEGACY_RECORD)
# (named backbone, home) -> make its float LiteRT files (zero-shot folder) in that BREEDBOT_HOME.
ConvertFn = Callable[[str, Path], object]


class BadRecord(Problem, ValueError):
    """A version record this host refuses to act on (a bundle path or backbone it must not use)."""

    messages: ClassVar[dict[str, str]] = {"bad_record": "the version's record is unusable: {why}"}


def new_staging_dir(root: Path) -> Path:
    """A fresh path under root to write a version into (same filesystem as its final place)."""
    staging = Path(root) / STAGING_DIR
    staging.mkdir(parents=True, exist_ok=True)
    return staging / uuid.uuid4().hex


def _shared_files(metrics: dict[str, Any]) -> dict[str, str]:
    """The version's LiteRT files that come from BREEDBOT_HOME: {path in folder: home file name}."""
    shared = {
        f"{litert.VERSION_DIR}/{litert.part_file(litert.BACKBONE, litert.FLOAT)}": (
            litert.FEATURES_FILE
        ),
        f"{litert.VERSION_DIR}/{litert.part_file(litert.GATE, litert.FLOAT)}": litert.GATE_FILE,
    }
    listed = set(metrics.get("litert", {}).get(litert.FLOAT, {}).get("files", []))
    return {path: name for path, name in shared.items() if path in listed}


def _kept(rel: str, metrics: dict[str, Any]) -> bool:
    if rel.startswith(NOT_KEPT) or rel in _shared_files(metrics):
        return False
    report = metrics.get("litert", {})
    if rel in report.get(litert.INT8, {}).get("files", []) and report.get("served") != litert.INT8:
        # Only a head of its own: its int8 backbone and gate are ~5 MB that nothing serves.
        return rel.endswith(litert.part_file(litert.HEAD, litert.INT8))
    return True


def refusal(exc: StoreError | BadRecord) -> contract.Refused:
    """A missing, damaged or unreachable blob, or an unusable record, as a job's refusal."""
    return contract.Refused(f"{exc}; the active version is unchanged", exc.code, exc.params)


def pack(store: Store, folder: Path) -> dict[str, str]:
    """Store the files only this version has; returns its bundle {path in folder: SHA-256}."""
    metrics = json.loads((folder / METRICS_FILE).read_text("utf-8"))
    bundle = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if _kept(rel, metrics):
            bundle[rel] = blobs.put_blob(store, path.read_bytes())
    return bundle


def verify(record: dict[str, Any], store: Store) -> None:
    """Check every path of a version's bundle (BadRecord) and read every blob against its hash
    (StoreError), so a switch never points every host at a version none of them can load."""
    for rel, sha256 in dict(record.get("bundle", {})).items():
        _entry_parts(rel, sha256)
        data = blobs.get_blob(store, sha256)
        if rel == METRICS_FILE and _shared_files(metrics := _metrics(data)):
            _named_backbone(metrics)


def folder(reg: Registry, version: int, root: Path, home: Path, convert: ConvertFn) -> Path | None:
    """Version's folder in this host's cache (fetched if needed); None for version 0."""
    if version == ZERO_SHOT:
        return None
    return fetch(reg.record(version), reg.store, root, home, convert)


def _entry_parts(rel: object, sha256: object) -> list[str]:
    """A bundle entry's path parts, once it is a plain relative path of the store's key form (no
    "..", no hidden or empty part) naming a SHA-256; BadRecord otherwise, so a record written
    into Redis by someone else never names a file outside the version folder."""
    parts = rel.split("/") if isinstance(rel, str) else [""]
    if any(p in {"", ".", ".."} or p.startswith(".") or "\\" in p for p in parts):
        raise BadRecord("bad_record", why=f"bundle path {rel!r} is not a plain relative path")
    if not (isinstance(sha256, str) and re.fullmatch(r"[0-9a-f]{64}", sha256)):
        raise BadRecord("bad_record", why=f"bundle entry {rel!r} names no SHA-256")
    return parts


def _bundle_path(work: Path, parts: list[str]) -> Path:
    """Where a checked bundle entry goes: under `work`, or BadRecord."""
    path = work.joinpath(*parts)
    if not path.resolve().is_relative_to(work.resolve()):
        raise BadRecord("bad_record", why=f"bundle path {'/'.join(parts)!r} leaves its folder")
    return path


def _metrics(data: bytes) -> dict[str, Any]:
    """A bundle's metrics.json; BadRecord if it is not a JSON object."""
    try:
        metrics = json.loads(data)
    except ValueError:
        metrics = None
    if not isinstance(metrics, dict):
        raise BadRecord("bad_record", why="its metrics.json is not a JSON object")
    return metrics


def _named_backbone(metrics: dict[str, Any]) -> str:
    """The version's backbone, if it is one breedbot builds itself; BadRecord otherwise (a TF
    Hub URL or path, a CLI-only option: its graph would run whatever it holds)."""
    handle = (metrics.get("backbone") or {}).get("handle")
    if handle not in BACKBONE_NAMES:
        why = f"backbone {handle!r} is not one of {', '.join(BACKBONE_NAMES)}"
        raise BadRecord("bad_record", why=why)
    return handle


def _backbone_home(
    metrics: dict[str, Any], names: list[str], home: Path, convert: ConvertFn
) -> Path:
    """This host's folder holding a version's backbone files `names` (its float backbone and
    gate).

    The files this host made for the same export serve as they are. Otherwise (the export was
    made on another host, whose graph hashes differently) a named backbone's float files are
    converted once here, in the child that owns TensorFlow; any other handle is refused.
    """
    mine = litert.home_dir(home, str((metrics.get("backbone") or {}).get("identity", "")))
    if all((mine / name).is_file() for name in names):
        return mine
    handle = _named_backbone(metrics)
    if not litert.zero_shot_ready(home, handle):
        convert(handle, home)
    return litert.zero_shot_dir(home, handle)


def fetch(record: dict[str, Any], store: Store, root: Path, home: Path, convert: ConvertFn) -> Path:
    """Version `record`'s folder in this host's cache, fetched from the store if it is not there.

    A missing or damaged blob raises StoreError, a bundle path or backbone this host must not
    use BadRecord; either leaves nothing behind.
    """
    target = Path(root) / str(int(record["version"]))
    if target.is_dir():
        return target
    work = new_staging_dir(root)
    try:
        for rel, sha256 in dict(record["bundle"]).items():
            path = _bundle_path(work, _entry_parts(rel, sha256))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blobs.get_blob(store, sha256))
        metrics = _metrics((work / METRICS_FILE).read_bytes())
        shared = _shared_files(metrics)
        if shared:
            where = _backbone_home(metrics, list(shared.values()), home, convert)
            for rel, name in shared.items():
                place(where / name, work / rel)
        os.rename(work, target)
    except OSError:
        if not target.is_dir():  # another thread of this host fetched it first: use that
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def publish(
    reg: Registry,
    staged: Path,
    record: dict[str, Any],
    root: Path,
    **gate: Any,
) -> Published:
    """Store a staged retrain() folder as the next version, cache it here, then register it
    (through the accuracy gate: `gate` is Registry.publish's keywords)."""
    metrics = json.loads((staged / METRICS_FILE).read_text("utf-8"))
    version = reg.next_version()
    bundle = pack(reg.store, staged)
    # Cached before it is registered, so this host serves it the moment it is active. A folder
    # under a number just given out is a leftover (a version that never got registered).
    target = Path(root) / str(version)
    shutil.rmtree(target, ignore_errors=True)
    os.rename(staged, target)
    return reg.publish(version, {**record, "bundle": bundle}, metrics, **gate)


def in_use(reg: Registry) -> set[str]:
    """Every blob a kept version or a correction needs: bundles, manifests and their photos."""
    keep = {sha256 for sha256, _ in feedback.corrections(reg.store)}
    # The store's records too: one a crash left unregistered comes back with a rebuild.
    for record in {**reg.stored_records(), **reg.records()}.values():
        keep |= set(record.get("bundle", {}).values())
        manifest = (record.get("dataset") or {}).get("manifest")
        if manifest:
            keep |= datasets.blobs_of(reg.store, manifest)
    return keep


def prune(reg: Registry, root: Path, keep_versions: int) -> list[int]:
    """Keep the newest `keep_versions` (and the active and rollback ones): forget the rest, drop
    their cached folders here and every blob nothing kept refers to."""
    doomed = reg.prune(keep_versions)
    if doomed:
        swept = sweep(reg.store, in_use(reg))
        drop_pruned(root, set(doomed))
        log.info("pruned versions %s and %d blobs", doomed, len(swept))
    return doomed


def drop_pruned(root: Path, pruned: set[int]) -> None:
    """Remove this host's cached folders of pruned versions."""
    for version in pruned:
        shutil.rmtree(Path(root) / str(version), ignore_errors=True)


def _legacy(root: Path) -> tuple[dict[int, dict[str, Any]], dict[str, Any] | None]:
    records = {}
    for path in sorted(Path(root).iterdir()) if Path(root).is_dir() else []:
        if path.name.isdigit() and (path / LEGACY_RECORD).is_file():
            records[int(path.name)] = json.loads((path / LEGACY_RECORD).read_text("utf-8"))
    pointer_file = Path(root) / LEGACY_POINTER
    pointer = json.loads(pointer_file.read_text("utf-8")) if pointer_file.is_file() else None
    return records, pointer


def ensure_registry(reg: Registry, root: Path) -> None:
    """On a worker's start: rebuild an empty Redis from the store, and import the versions of a
    MODELS_DIR from before the registry lived in Redis (nothing is lost; their folders stay as
    this host's cache)."""
    reg.rebuild()
    if reg.records():
        return
    records, pointer = _legacy(root)
    if not records:
        return
    adopted = {}
    for version, record in records.items():
        folder = Path(root) / str(version)
        adopted[version] = {**record, "version": version, "bundle": pack(reg.store, folder)}
    if pointer is not None and int(pointer["version"]) not in {ZERO_SHOT, *adopted}:
        pointer = None
    reg.adopt(adopted, pointer)
    log.warning("imported %d versions from %s into the registry", len(adopted), root)
