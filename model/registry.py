"""Versioned models in one shared folder, with an atomically swapped active pointer.

Layout of `root`: `<N>/` is a retrain() output folder plus `record.json` (who, when, data,
params, metrics); `active.json` names the active version and the ones active before it (for
rollback); `.staging/` holds folders still being written, which are never listed. Version 0 is
the zero-shot ImageNet model and has no folder. Every change happens under an advisory lock and
ends in an `os.replace`/`rename`, so readers on other hosts see the old state or the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from model.problems import Problem

ZERO_SHOT = 0
# Why a new version failed the accuracy gate (a front end may word these in other languages).
GATE_MESSAGES = {
    "below_minimum": "test accuracy {accuracy:.1%} is below the minimum {minimum:.1%}",
    "below_active": (
        "test accuracy {accuracy:.1%} is below the active version {version}'s "
        "{active_accuracy:.1%} on the same test split"
    ),
}
RECORD_FILE = "record.json"
POINTER_FILE = "active.json"
STAGING_DIR = ".staging"
LOCK_FILE = ".lock"
ZERO_SHOT_RECORD = {
    "version": ZERO_SHOT,
    "name": "zero-shot ImageNet (118 dog + 5 cat classes)",
    "created_by": None,
    "created_at": None,
}


class RegistryError(Problem, RuntimeError):
    """An impossible registry operation (unknown version, nothing to roll back to)."""

    messages: ClassVar[dict[str, str]] = {
        "no_such_version": "there is no model version {version}",
        "nothing_to_roll_back_to": "there is no earlier active version to roll back to",
    }


@dataclass(frozen=True)
class VersionInfo:
    """One listed version."""

    version: int
    path: Path | None  # None for the zero-shot model
    record: dict[str, Any]
    active: bool


@dataclass(frozen=True)
class Published:
    """What `publish` did with a new version."""

    version: int
    activated: bool
    reason: str
    active_accuracy: float | None  # the previously active model on the new test split
    record: dict[str, Any]  # as written to record.json
    # Why the gate failed, as a key of GATE_MESSAGES and its values (None: it passed).
    problem: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


def pointer_path(root: Path) -> Path:
    """The active pointer file; its mtime is the cheap "did anything change" check."""
    return Path(root) / POINTER_FILE


def version_dir(root: Path, version: int) -> Path | None:
    """The folder of a version (None for version 0); raises RegistryError when it is unknown."""
    if version == ZERO_SHOT:
        return None
    path = Path(root) / str(version)
    if not (path / RECORD_FILE).is_file():
        raise RegistryError("no_such_version", version=version)
    return path


def new_staging_dir(root: Path) -> Path:
    """A fresh path under root for retrain() to write into before `publish` (same filesystem)."""
    staging = Path(root) / STAGING_DIR
    staging.mkdir(parents=True, exist_ok=True)
    return staging / uuid.uuid4().hex


def _read_pointer(root: Path) -> dict[str, Any]:
    try:
        return json.loads(pointer_path(root).read_text("utf-8"))
    except FileNotFoundError:
        return {"version": ZERO_SHOT, "history": []}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=2, ensure_ascii=False)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    Path(root).mkdir(parents=True, exist_ok=True)
    with open(Path(root) / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def active_version(root: Path) -> int:
    """The version every worker should serve."""
    return int(_read_pointer(root)["version"])


def _stored_versions(root: Path) -> list[int]:
    if not Path(root).is_dir():
        return []
    return sorted(
        int(p.name)
        for p in Path(root).iterdir()
        if p.name.isdigit() and (p / RECORD_FILE).is_file()
    )


def list_versions(root: Path) -> list[VersionInfo]:
    """Version 0 and every complete stored version, oldest first."""
    active = active_version(root)
    infos = [VersionInfo(ZERO_SHOT, None, dict(ZERO_SHOT_RECORD), active == ZERO_SHOT)]
    for version in _stored_versions(root):
        path = Path(root) / str(version)
        record = json.loads((path / RECORD_FILE).read_text("utf-8"))
        infos.append(VersionInfo(version, path, record, version == active))
    return infos


def _set_active(root: Path, version: int, history: list[int], by: int | str | None) -> None:
    _write_json(
        pointer_path(root),
        {
            "version": version,
            "history": history[-50:],
            "changed_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "changed_by": by,
        },
    )


def promote(root: Path, version: int, by: int | str | None = None) -> int:
    """Make `version` active (no gate: an admin's explicit choice); returns the one it replaced."""
    with _locked(root):
        version_dir(root, version)
        pointer = _read_pointer(root)
        previous = int(pointer["version"])
        if previous != version:
            _set_active(root, version, [*pointer.get("history", []), previous], by)
        return previous


def rollback(root: Path, by: int | str | None = None) -> int:
    """Return to the version active before the current one; returns the new active version."""
    with _locked(root):
        pointer = _read_pointer(root)
        history = list(pointer.get("history", []))
        stored = set(_stored_versions(root)) | {ZERO_SHOT}
        while history:
            candidate = int(history.pop())
            if candidate in stored and candidate != pointer["version"]:
                _set_active(root, candidate, history, by)
                return candidate
        raise RegistryError("nothing_to_roll_back_to")


def publish(
    root: Path,
    staged: Path,
    record: dict[str, Any],
    *,
    min_accuracy: float = 0.0,
    force: bool = False,
    evaluate_active: Callable[[int], float] | None = None,
) -> Published:
    """Store a staged retrain() folder as the next version; activate it only if it passes the gate.

    The gate: its test accuracy reaches `min_accuracy`, and is not below the accuracy of the
    currently active version on the new version's own test split (`evaluate_active(active)`),
    unless `force`. A version that fails the gate is kept (an admin may still promote it).
    """
    metrics = json.loads((Path(staged) / "metrics.json").read_text("utf-8"))
    accuracy = float(metrics["test_accuracy"])
    current = active_version(root)
    active_accuracy = evaluate_active(current) if evaluate_active is not None else None
    problem: str | None = None
    params: dict[str, Any] = {}
    if accuracy < min_accuracy:
        problem, params = "below_minimum", {"accuracy": accuracy, "minimum": min_accuracy}
    elif active_accuracy is not None and accuracy < active_accuracy:
        problem = "below_active"
        params = {"accuracy": accuracy, "version": current, "active_accuracy": active_accuracy}
    reason = GATE_MESSAGES[problem].format(**params) if problem else ""
    passed = problem is None
    gate = {
        "min_accuracy": min_accuracy,
        "test_accuracy": accuracy,
        "active_version": current,
        "active_accuracy": active_accuracy,
        "passed": passed,
        "forced": force and not passed,
    }
    with _locked(root):
        version = max([ZERO_SHOT, *_stored_versions(root)]) + 1
        full = {
            **record,
            "version": version,
            "created_at": record.get("created_at")
            or datetime.now(UTC).isoformat(timespec="seconds"),
            "metrics": _summary(metrics),
            "gate": gate,
        }
        _write_json(Path(staged) / RECORD_FILE, full)
        # A rename either lands whole or fails: the folder is never listed half-written.
        os.rename(staged, Path(root) / str(version))
        activate = passed or force
        if activate:
            pointer = _read_pointer(root)
            history = [*pointer.get("history", []), int(pointer["version"])]
            _set_active(root, version, history, record.get("created_by"))
    if passed:
        reason = "passed the accuracy gate"
    elif force:
        reason = f"forced live although {reason}"
    return Published(version, activate, reason, active_accuracy, full, problem, params)


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "test_accuracy",
        "accuracy_source",
        "auto",
        "validation_accuracy",
        "n_test",
        "n_validation",
        "n_train",
        "labels",
        "per_class",
        "training_seconds",
        "backbone",
        "dataset_fingerprint",
    )
    summary = {k: metrics[k] for k in keys if k in metrics}
    if "cross_validation" in metrics:  # without its per-step losses
        cv = metrics["cross_validation"]
        summary["cross_validation"] = {k: cv[k] for k in ("k", "accuracy", "std", "l2") if k in cv}
    return summary


def prune(root: Path, keep: int) -> list[int]:
    """Delete all but the `keep` newest versions, never the active one or the rollback target."""
    with _locked(root):
        pointer = _read_pointer(root)
        protected = {int(pointer["version"]), *map(int, pointer.get("history", [])[-1:])}
        stored = _stored_versions(root)
        doomed = [v for v in stored[: max(len(stored) - keep, 0)] if v not in protected]
        for version in doomed:
            # Rename first so a crash mid-delete never leaves a half folder that looks listed.
            trash = Path(root) / STAGING_DIR / f"deleted-{version}-{uuid.uuid4().hex}"
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.rename(Path(root) / str(version), trash)
            shutil.rmtree(trash, ignore_errors=True)
        return doomed
