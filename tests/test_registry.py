"""model/registry.py: versions, the accuracy gate, the active pointer, rollback and pruning.

The folders here hold only metrics.json (what the registry reads); the worker tests publish real
retrain() output through the same functions.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from model import registry


def _staged(root: Path, accuracy: float) -> Path:
    folder = registry.new_staging_dir(root)
    folder.mkdir()
    metrics = {"test_accuracy": accuracy, "labels": ["a", "b"], "n_test": 10}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def _publish(root: Path, accuracy: float, **kwargs) -> registry.Published:
    return registry.publish(root, _staged(root, accuracy), {"created_by": 7}, **kwargs)


def test_empty_root_serves_zero_shot(tmp_path):
    assert registry.active_version(tmp_path) == 0
    [zero] = registry.list_versions(tmp_path)
    assert (zero.version, zero.path, zero.active) == (0, None, True)
    assert registry.version_dir(tmp_path, 0) is None


def test_publish_numbers_versions_and_writes_a_record(tmp_path):
    first = _publish(tmp_path, 0.9)
    second = _publish(tmp_path, 0.95)
    assert (first.version, second.version) == (1, 2)
    assert first.activated and second.activated
    record = json.loads((tmp_path / "2" / registry.RECORD_FILE).read_text())
    assert record["created_by"] == 7 and record["created_at"]
    assert record["metrics"]["test_accuracy"] == 0.95
    assert record["gate"]["passed"]
    assert registry.active_version(tmp_path) == 2
    assert not list((tmp_path / registry.STAGING_DIR).iterdir())


def test_gate_minimum_keeps_the_version_inactive(tmp_path):
    published = _publish(tmp_path, 0.6, min_accuracy=0.8)
    assert not published.activated
    assert "below the minimum" in published.reason
    assert registry.active_version(tmp_path) == 0
    assert [v.version for v in registry.list_versions(tmp_path)] == [0, 1]


def test_gate_compares_with_the_active_model_on_the_new_test_split(tmp_path):
    _publish(tmp_path, 0.9)
    seen = []

    def active_scores(version: int) -> float:
        seen.append(version)
        return 0.85

    worse = _publish(tmp_path, 0.8, evaluate_active=active_scores)
    assert seen == [1]
    assert not worse.activated and worse.active_accuracy == 0.85
    assert "active version 1" in worse.reason
    forced = _publish(tmp_path, 0.8, evaluate_active=active_scores, force=True)
    assert forced.activated and "forced" in forced.reason
    assert registry.active_version(tmp_path) == forced.version
    record = json.loads((tmp_path / str(forced.version) / registry.RECORD_FILE).read_text())
    assert record["gate"]["forced"] and not record["gate"]["passed"]


def test_promote_and_rollback(tmp_path):
    _publish(tmp_path, 0.9)
    _publish(tmp_path, 0.9)
    assert registry.promote(tmp_path, 1, by=5) == 2
    assert registry.active_version(tmp_path) == 1
    assert registry.rollback(tmp_path) == 2
    assert registry.rollback(tmp_path) == 1  # history: 0 -> 1 -> 2 -> 1 -> 2, back to 1
    registry.promote(tmp_path, 0)
    assert registry.active_version(tmp_path) == 0
    with pytest.raises(registry.RegistryError):
        registry.promote(tmp_path, 42)
    assert registry.active_version(tmp_path) == 0


def test_rollback_with_no_history_fails_cleanly(tmp_path):
    with pytest.raises(registry.RegistryError, match="roll back"):
        registry.rollback(tmp_path)


def test_pointer_swap_changes_its_stamp(tmp_path):
    _publish(tmp_path, 0.9)
    before = registry.pointer_path(tmp_path).stat()
    registry.promote(tmp_path, 0)
    after = registry.pointer_path(tmp_path).stat()
    assert (before.st_ino, before.st_mtime_ns) != (after.st_ino, after.st_mtime_ns)


def test_half_written_folders_are_never_listed(tmp_path):
    _publish(tmp_path, 0.9)
    (tmp_path / "2").mkdir()  # no record.json: a crash before the rename could never do this
    (tmp_path / "2" / "metrics.json").write_text("{}")
    _staged(tmp_path, 0.99)
    assert [v.version for v in registry.list_versions(tmp_path)] == [0, 1]
    with pytest.raises(registry.RegistryError):
        registry.promote(tmp_path, 2)


def test_prune_keeps_newest_active_and_rollback_target(tmp_path):
    for _ in range(5):
        _publish(tmp_path, 0.9)
    registry.promote(tmp_path, 1)  # active 1, rollback target 5
    removed = registry.prune(tmp_path, keep=2)
    assert removed == [2, 3]
    assert [v.version for v in registry.list_versions(tmp_path)] == [0, 1, 4, 5]
    assert registry.rollback(tmp_path) == 5
    assert _publish(tmp_path, 0.9).version == 6


def test_concurrent_publishes_get_distinct_versions(tmp_path):
    staged = [_staged(tmp_path, 0.9) for _ in range(8)]
    results: list[registry.Published] = []

    def publish(folder: Path) -> None:
        results.append(registry.publish(tmp_path, folder, {}))

    threads = [threading.Thread(target=publish, args=(folder,)) for folder in staged]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.version for r in results) == list(range(1, 9))
    assert registry.active_version(tmp_path) in range(1, 9)
