"""store/registry.py on a real redis-server and a local blob store: numbering, the accuracy gate,
the active pointer, rollback, pruning and sweeping, and rebuilding an emptied Redis.

The worker tests publish real retrain() output through the same registry (worker/versions.py).
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest

from store import blobs, registry
from store.registry import Registry


def _publish(reg: Registry, accuracy: float, **kwargs) -> registry.Published:
    metrics = {"test_accuracy": accuracy, "labels": ["a", "b"], "n_test": 10, "history": [1]}
    bundle = {"labels.txt": blobs.put_blob(reg.store, b"a\nb\n")}
    return reg.publish(reg.next_version(), {"created_by": 7, "bundle": bundle}, metrics, **kwargs)


def test_empty_registry_serves_zero_shot(reg):
    assert reg.active_version() == 0
    [zero] = reg.list_versions()
    assert (zero.version, zero.active) == (0, True)
    assert reg.record(0)["name"].startswith("zero-shot")


def test_publish_numbers_versions_and_mirrors_records_into_the_store(reg):
    first = _publish(reg, 0.9)
    second = _publish(reg, 0.95)
    assert (first.version, second.version) == (1, 2)
    assert first.activated and second.activated
    record = reg.record(2)
    assert record["created_by"] == 7 and record["created_at"]
    assert record["metrics"]["test_accuracy"] == 0.95 and "history" not in record["metrics"]
    assert record["gate"]["passed"]
    assert json.loads(reg.store.get("registry/versions/2.json")) == record
    assert json.loads(reg.store.get(registry.STORE_POINTER))["version"] == 2
    assert reg.active_version() == 2


def test_gate_minimum_keeps_the_version_inactive(reg):
    published = _publish(reg, 0.6, min_accuracy=0.8)
    assert not published.activated
    assert "below the minimum" in published.reason
    assert reg.active_version() == 0
    assert [v.version for v in reg.list_versions()] == [0, 1]


def test_gate_compares_with_the_active_model_on_the_new_test_split(reg):
    _publish(reg, 0.9)
    seen = []

    def active_scores(version: int) -> float:
        seen.append(version)
        return 0.85

    worse = _publish(reg, 0.8, evaluate_active=active_scores)
    assert seen == [1]
    assert not worse.activated and worse.active_accuracy == 0.85
    assert "active version 1" in worse.reason
    forced = _publish(reg, 0.8, evaluate_active=active_scores, force=True)
    assert forced.activated and "forced" in forced.reason
    assert reg.active_version() == forced.version
    gate = reg.record(forced.version)["gate"]
    assert gate["forced"] and not gate["passed"]


def test_gate_compares_again_when_another_version_went_live_meanwhile(reg):
    _publish(reg, 0.9)
    seen = []

    def meanwhile(version: int) -> float:
        seen.append(version)
        if len(seen) == 1:  # another host's better version goes live during the comparison
            _publish(reg, 0.99)
            return 0.5
        return 0.99

    late = _publish(reg, 0.95, evaluate_active=meanwhile)  # version 2; the other one is 3
    assert seen == [1, 3]
    assert not late.activated and late.params["version"] == 3
    assert reg.active_version() == 3


def test_promote_and_rollback(reg):
    _publish(reg, 0.9)
    _publish(reg, 0.9)
    assert reg.promote(1, by=5) == 2
    assert reg.active_version() == 1
    assert reg.rollback() == 2
    assert reg.rollback() == 1  # history: 0 -> 1 -> 2 -> 1 -> 2, back to 1
    reg.promote(0)
    assert reg.active_version() == 0
    with pytest.raises(registry.RegistryError):
        reg.promote(42)
    assert reg.active_version() == 0


def test_rollback_with_no_history_fails_cleanly(reg):
    with pytest.raises(registry.RegistryError, match="roll back"):
        reg.rollback()


def test_a_number_given_out_but_never_published_is_not_listed(reg):
    _publish(reg, 0.9)
    reg.next_version()  # a retrain that died before registering
    assert [v.version for v in reg.list_versions()] == [0, 1]
    with pytest.raises(registry.RegistryError):
        reg.promote(2)
    assert _publish(reg, 0.9).version == 3


def test_prune_keeps_newest_active_and_rollback_target(reg):
    for _ in range(5):
        _publish(reg, 0.9)
    reg.promote(1)  # active 1, rollback target 5
    removed = reg.prune(keep=2)
    assert removed == [2, 3]
    assert reg.pruned() == {2, 3}
    assert [v.version for v in reg.list_versions()] == [0, 1, 4, 5]
    assert not reg.store.exists("registry/versions/2.json")
    assert reg.rollback() == 5
    assert _publish(reg, 0.9).version == 6


def test_sweep_deletes_only_old_unreferenced_blobs(reg):
    kept = blobs.put_blob(reg.store, b"kept")
    orphan = blobs.put_blob(reg.store, b"orphan")
    assert registry.sweep(reg.store, {kept}) == []  # both younger than the grace period
    later = datetime.now(UTC) + registry.SWEEP_GRACE + timedelta(minutes=1)
    assert registry.sweep(reg.store, {kept}, now=later) == [orphan]
    assert blobs.get_blob(reg.store, kept) == b"kept"
    with pytest.raises(blobs.StoreError) as missing:
        blobs.get_blob(reg.store, orphan)
    assert missing.value.code == "store_missing"


def test_concurrent_publishes_get_distinct_versions(reg):
    results: list[registry.Published] = []

    def publish() -> None:
        results.append(_publish(reg, 0.9))

    threads = [threading.Thread(target=publish) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.version for r in results) == list(range(1, 9))
    assert reg.active_version() in range(1, 9)
    assert reg.pointer()["history"][0] == 0


def test_an_emptied_redis_is_rebuilt_from_the_store(reg):
    for _ in range(3):
        _publish(reg, 0.9)
    reg.promote(2)
    before = (reg.records(), reg.pointer())
    reg.client.flushall()
    assert reg.is_empty() and reg.active_version() == 0
    assert reg.rebuild()
    assert (reg.records(), reg.pointer()) == before
    assert not reg.rebuild()  # a second call finds it there
    assert _publish(reg, 0.9).version == 4  # numbers stay unique


def test_a_number_asked_of_an_emptied_redis_rebuilds_it_first(reg):
    _publish(reg, 0.9)
    reg.client.flushall()
    assert reg.next_version() == 2
    assert sorted(reg.records()) == [1] and reg.active_version() == 1


def test_a_rebuilt_counter_goes_on_after_a_number_a_retrain_still_holds(reg):
    _publish(reg, 0.9)
    in_flight = reg.next_version()  # a retrain still training when Redis is lost
    reg.client.flushall()
    reg.rebuild()
    assert sorted(reg.records()) == [1]
    assert reg.next_version() == in_flight + 1


def test_adopt_takes_over_older_versions(reg):
    records = {1: {"version": 1, "bundle": {}}, 3: {"version": 3, "bundle": {}}}
    reg.adopt(records, {"version": 3, "history": [0, 1]})
    assert sorted(reg.records()) == [1, 3] and reg.active_version() == 3
    assert reg.rollback() == 1
    assert _publish(reg, 0.9).version == 4


def test_a_redis_with_an_older_counter_never_gives_a_number_out_twice(reg):
    # Redis A counts to 2; an empty Redis B on the same store is rebuilt and gives out 3; back
    # on Redis A (its counter still 2), the next number must not be 3 again.
    _publish(reg, 0.9)
    _publish(reg, 0.9)
    old_counter = reg.client.get(registry.COUNTER)
    reg.client.flushall()
    assert _publish(reg, 0.9).version == 3
    reg.client.set(registry.COUNTER, old_counter)
    assert _publish(reg, 0.9).version == 4
    assert json.loads(reg.store.get("registry/versions/3.json"))["version"] == 3


def test_a_counter_behind_pruned_marks_still_counts_on_after_the_highest(reg):
    for _ in range(4):
        _publish(reg, 0.9)
    reg.prune(keep=1)  # drops every number mark but the highest (4)
    reg.client.set(registry.COUNTER, 1)
    assert reg.next_version() == 5


def test_a_lost_pointer_is_won_back_from_the_store(reg):
    for _ in range(3):
        _publish(reg, 0.9)
    reg.promote(2)
    before = reg.pointer()
    reg.client.delete(registry.POINTER)  # evicted or deleted alone
    assert reg.active_version() == 2
    assert reg.pointer() == before and json.loads(reg.client.get(registry.POINTER)) == before
    reg.client.set(registry.POINTER, b"{not json")
    assert reg.active_version() == 2
    assert reg.rollback() == 3


def test_a_lost_pointer_with_no_copy_in_the_store_is_version_0_once(reg):
    _publish(reg, 0.6, min_accuracy=0.8)  # registered, never active: no pointer anywhere
    reg.client.delete(registry.POINTER)
    assert reg.active_version() == 0
    assert json.loads(reg.client.get(registry.POINTER))["version"] == 0  # not read again


@pytest.mark.parametrize(
    ("field", "raw"),
    [(b"2", b"{half a record"), (b"2", b'{"version": 7}'), (b"x", b"{}"), (b"2", b"[]")],
)
def test_a_malformed_record_is_skipped_with_a_log_line(reg, caplog, field, raw):
    _publish(reg, 0.9)
    _publish(reg, 0.9)
    reg.client.hset(registry.RECORDS, field, raw)
    assert [v.version for v in reg.list_versions()] == [0, 1, *([] if field == b"2" else [2])]
    assert "malformed registry record" in caplog.text
    if field == b"2":
        with pytest.raises(registry.RegistryError) as error:
            reg.record(2)
        assert error.value.code == "malformed_record"
    assert reg.prune(keep=1) == []  # 1 is the rollback target; the malformed one is not read
    reg.client.flushall()  # the store's copies are whole: a rebuild brings every one back
    assert reg.rebuild() and sorted(reg.records()) == [1, 2]


def test_rollback_checks_its_target_before_it_switches(reg):
    _publish(reg, 0.9)
    _publish(reg, 0.9)

    def broken(version: int) -> None:
        raise blobs.StoreError("missing", f"blob of version {version}")

    with pytest.raises(blobs.StoreError):
        reg.rollback(check=broken)
    assert reg.active_version() == 2 and reg.pointer()["history"] == [0, 1]
    assert reg.rollback(check=lambda version: None) == 1
