"""Model versions in Redis, the source of truth every host shares, mirrored into the blob store.

Redis holds the version counter, every version's record and the active pointer with its history.
A change happens under one Redis lock (the accuracy gate's check and the switch included), so two
hosts never number a version twice or switch on a stale comparison. Each record and the last
active pointer are also written to the store (`registry/`), from which `rebuild` restores an
empty Redis (FLUSHALL, a new volume). A version's files live in the store as blobs named in its
record's "bundle" ({path in the version folder: SHA-256}); hosts keep folders only as a cache.
Version 0 is the zero-shot ImageNet model: it has no record and no files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import redis

from model.problems import Problem
from store import blobs
from store.blobs import Store

log = logging.getLogger(__name__)

ZERO_SHOT = 0
ZERO_SHOT_RECORD = {
    "version": ZERO_SHOT,
    "name": "zero-shot ImageNet (118 dog + 5 cat classes)",
    "created_by": None,
    "created_at": None,
}
# Why a new version failed the accuracy gate (a front end may word these in other languages).
GATE_MESSAGES = {
    "below_minimum": "test accuracy {accuracy:.1%} is below the minimum {minimum:.1%}",
    "below_active": (
        "test accuracy {accuracy:.1%} is below the active version {version}'s "
        "{active_accuracy:.1%} on the same test split"
    ),
}
PREFIX = "breedbot:registry:"
COUNTER = PREFIX + "counter"
RECORDS = PREFIX + "records"  # hash: version -> record JSON
POINTER = PREFIX + "active"  # JSON: version, history, changed_at, changed_by
PRUNED = PREFIX + "pruned"  # set: versions pruned, whose cached folders hosts may delete
LOCK = PREFIX + "lock"
# A holder that dies mid-change frees the lock after this; a change takes well under a second.
LOCK_SECONDS = 30
STORE_RECORDS = "registry/versions/"
STORE_POINTER = "registry/active.json"
STORE_NUMBERS = "registry/numbers/"  # an empty key per number given out
HISTORY = 50
# Raise the counter to ARGV[1] unless it is already there (a Redis behind the store's marks).
_RAISE_COUNTER = """
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
"""
# A blob younger than this is never swept: a retrain on another host may be uploading it.
SWEEP_GRACE = timedelta(hours=1)
METRICS_KEYS = (
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


class RegistryError(Problem, RuntimeError):
    """An impossible registry operation (unknown version, nothing to roll back to)."""

    messages: ClassVar[dict[str, str]] = {
        "no_such_version": "there is no model version {version}",
        "nothing_to_roll_back_to": "there is no earlier active version to roll back to",
        "malformed_record": "model version {version}'s record in Redis is malformed",
    }


@dataclass(frozen=True)
class VersionInfo:
    """One listed version."""

    version: int
    record: dict[str, Any]
    active: bool


@dataclass(frozen=True)
class Published:
    """What `publish` did with a new version."""

    version: int
    activated: bool
    reason: str
    active_accuracy: float | None  # the previously active model on the new test split
    record: dict[str, Any]
    # Why the gate failed, as a key of GATE_MESSAGES and its values (None: it passed).
    problem: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


def metrics_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The part of a version's metrics.json its record keeps (no per-step losses)."""
    summary = {k: metrics[k] for k in METRICS_KEYS if k in metrics}
    if "cross_validation" in metrics:
        cv = metrics["cross_validation"]
        summary["cross_validation"] = {k: cv[k] for k in ("k", "accuracy", "std", "l2") if k in cv}
    return summary


def _parsed(raw: bytes | str | None, version: int | None = None) -> dict[str, Any] | None:
    """A record or pointer read back: a dict whose "version" is a whole number (`version`, for a
    record); None if it is not (written by something else, or cut short)."""
    try:
        value = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    if not isinstance(value, dict) or type(value.get("version")) is not int:
        return None
    return value if version is None or value["version"] == version else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _moved(pointer: dict[str, Any], version: int, by: int | str | None) -> dict[str, Any]:
    """The pointer after a switch to `version`, the old one pushed onto its history."""
    history = [*pointer.get("history", []), int(pointer["version"])][-HISTORY:]
    return {"version": version, "history": history, "changed_at": _now(), "changed_by": by}


def _gate(
    accuracy: float, min_accuracy: float, current: int, active_accuracy: float | None
) -> tuple[str | None, dict[str, Any]]:
    if accuracy < min_accuracy:
        return "below_minimum", {"accuracy": accuracy, "minimum": min_accuracy}
    if active_accuracy is not None and accuracy < active_accuracy:
        params = {"accuracy": accuracy, "version": current, "active_accuracy": active_accuracy}
        return "below_active", params
    return None, {}


class Registry:
    """The shared registry: a Redis client and the blob store it mirrors into."""

    def __init__(self, client: redis.Redis, store: Store) -> None:
        self.client = client
        self.store = store

    # Reading.
    def pointer(self) -> dict[str, Any]:
        """The active pointer: version, history (oldest first), changed_at, changed_by.

        A pointer lost alone (evicted, deleted) or malformed, while the registry is there, is
        won back from the store's copy: never a silent switch to version 0.
        """
        raw = self.client.get(POINTER)
        pointer = _parsed(raw)
        if pointer is not None:
            return pointer
        if raw is None and self.is_empty():
            return {"version": ZERO_SHOT, "history": []}
        return self._restored_pointer()

    def _restored_pointer(self) -> dict[str, Any]:
        """The store's copy of the pointer, put back into Redis (version 0 if it has none).

        No lock (the lock holders read the pointer): the store's copy is written before Redis,
        so it is never older than what any writer is about to set."""
        try:
            pointer = _parsed(self.store.get(STORE_POINTER))
        except blobs.StoreError:
            pointer = None
        known = pointer is not None and (
            pointer["version"] == ZERO_SHOT or self.client.hexists(RECORDS, pointer["version"])
        )
        if not known:
            pointer = {"version": ZERO_SHOT, "history": []}
        self.client.set(POINTER, json.dumps(pointer))
        log.warning("active pointer lost from Redis: version %s restored", pointer["version"])
        return pointer

    def active_version(self) -> int:
        """The version every worker should serve."""
        return int(self.pointer()["version"])

    def records(self) -> dict[int, dict[str, Any]]:
        """Every published version's record, by version; a malformed one is skipped (logged)."""
        records = {}
        for key, raw in self.client.hgetall(RECORDS).items():
            version = int(key) if key.isdigit() else None
            record = _parsed(raw, version) if version is not None else None
            if record is None:
                log.warning("skipping a malformed registry record in Redis: %r", key)
            else:
                records[record["version"]] = record
        return records

    def stored_records(self) -> dict[int, dict[str, Any]]:
        """The records the store keeps (what a rebuild would restore), by version; a malformed
        one is skipped (logged)."""
        records = {}
        for entry in self.store.list(STORE_RECORDS):
            record = _parsed(self.store.get(entry.key))
            if record is None:
                log.warning("skipping a malformed registry record in the store: %s", entry.key)
            else:
                records[record["version"]] = record
        return records

    def record(self, version: int) -> dict[str, Any]:
        """One version's record; RegistryError if there is none, or it is malformed."""
        if version == ZERO_SHOT:
            return dict(ZERO_SHOT_RECORD)
        raw = self.client.hget(RECORDS, version)
        if raw is None:
            raise RegistryError("no_such_version", version=version)
        record = _parsed(raw, version)
        if record is None:
            raise RegistryError("malformed_record", version=version)
        return record

    def list_versions(self) -> list[VersionInfo]:
        """Version 0 and every published version, oldest first."""
        active = self.active_version()
        records = {ZERO_SHOT: dict(ZERO_SHOT_RECORD), **self.records()}
        return [VersionInfo(v, records[v], v == active) for v in sorted(records)]

    def is_empty(self) -> bool:
        """True when Redis has no registry at all (a first start, or a Redis that lost it)."""
        return not self.client.exists(COUNTER)

    # Changing.
    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self.client.lock(LOCK, timeout=LOCK_SECONDS, blocking_timeout=LOCK_SECONDS * 2):
            yield

    def _commit(
        self, record: dict[str, Any] | None = None, pointer: dict[str, Any] | None = None
    ) -> None:
        """Write a record and/or the pointer: the store's copies first, then Redis in one
        transaction, so a process killed at any point leaves Redis as it was or fully changed."""
        record_text = json.dumps(record, ensure_ascii=False) if record is not None else None
        pointer_text = json.dumps(pointer) if pointer is not None else None
        if record_text is not None:
            self.store.put(f"{STORE_RECORDS}{record['version']}.json", record_text.encode())
        if pointer_text is not None:
            self.store.put(STORE_POINTER, pointer_text.encode())
        with self.client.pipeline(transaction=True) as pipe:
            if record_text is not None:
                pipe.hset(RECORDS, record["version"], record_text)
            if pointer_text is not None:
                pipe.set(POINTER, pointer_text)
            pipe.execute()

    def _numbers_given(self) -> list[int]:
        """The version numbers marked in the store as given out."""
        return [int(e.key.rsplit("/", 1)[-1]) for e in self.store.list(STORE_NUMBERS)]

    def next_version(self) -> int:
        """A new version number, never given out twice (even to a retrain that later fails).

        Each number is also marked in the store, and each new one is checked against those
        marks: a Redis with an older counter (an older copy, or one that ran while another Redis
        served the same store) goes on after the highest number the store has seen."""
        if self.is_empty():  # INCR would start a new count over an emptied Redis
            self.rebuild()
        while True:
            version = int(self.client.incr(COUNTER))
            highest = max(self._numbers_given(), default=ZERO_SHOT)
            if version > highest:
                break
            log.warning("version %s was given out before; counting on after %s", version, highest)
            self.client.eval(_RAISE_COUNTER, 1, COUNTER, highest)
        self.store.put(f"{STORE_NUMBERS}{version}", b"")
        return version

    def publish(
        self,
        version: int,
        record: dict[str, Any],
        metrics: dict[str, Any],
        *,
        min_accuracy: float = 0.0,
        force: bool = False,
        evaluate_active: Callable[[int], float] | None = None,
    ) -> Published:
        """Register `version` (its blobs already stored); activate it if it passes the gate.

        The gate: its test accuracy reaches `min_accuracy` and is not below the active version's
        on the new version's own test split (`evaluate_active(active)`), unless `force`. The
        comparison runs outside the lock; if another version went live meanwhile, it runs again
        against that one. A version that fails the gate is kept (an admin may still promote it).
        """
        accuracy = float(metrics["test_accuracy"])
        while True:
            current = self.active_version()
            active_accuracy = evaluate_active(current) if evaluate_active is not None else None
            problem, params = _gate(accuracy, min_accuracy, current, active_accuracy)
            passed = problem is None
            full = {
                **record,
                "version": version,
                "created_at": record.get("created_at") or _now(),
                "metrics": metrics_summary(metrics),
                "gate": {
                    "min_accuracy": min_accuracy,
                    "test_accuracy": accuracy,
                    "active_version": current,
                    "active_accuracy": active_accuracy,
                    "passed": passed,
                    "forced": force and not passed,
                },
            }
            with self._locked():
                pointer = self.pointer()
                if int(pointer["version"]) != current:
                    continue  # compared with a version that is no longer active
                moved = passed or force
                by = record.get("created_by")
                self._commit(full, _moved(pointer, version, by) if moved else None)
            break
        if passed:
            reason = "passed the accuracy gate"
        else:
            reason = GATE_MESSAGES[problem].format(**params)
            reason = f"forced live although {reason}" if force else reason
        return Published(version, passed or force, reason, active_accuracy, full, problem, params)

    def promote(self, version: int, by: int | str | None = None) -> int:
        """Make `version` active (no gate: an admin's choice); returns the one it replaced."""
        with self._locked():
            self.record(version)
            pointer = self.pointer()
            previous = int(pointer["version"])
            if previous != version:
                self._commit(pointer=_moved(pointer, version, by))
            return previous

    def rollback(
        self, by: int | str | None = None, check: Callable[[int], None] = lambda _: None
    ) -> int:
        """Return to the version active before the current one; returns the new active version.

        `check(target)` runs before the switch: what it raises leaves the pointer as it was."""
        with self._locked():
            pointer = self.pointer()
            history = list(pointer.get("history", []))
            known = {ZERO_SHOT, *self.records()}
            while history:
                candidate = int(history.pop())
                if candidate in known and candidate != pointer["version"]:
                    check(candidate)
                    back = {"version": candidate, "history": history}
                    self._commit(pointer={**back, "changed_at": _now(), "changed_by": by})
                    return candidate
            raise RegistryError("nothing_to_roll_back_to")

    def prune(self, keep: int) -> list[int]:
        """Forget all but the `keep` newest versions, never the active one or the rollback target.

        Their blobs go in `sweep`, once no kept version references them.
        """
        with self._locked():
            pointer = self.pointer()
            protected = {int(pointer["version"]), *map(int, pointer.get("history", [])[-1:])}
            stored = sorted(self.records())
            doomed = [v for v in stored[: max(len(stored) - keep, 0)] if v not in protected]
            for version in doomed:
                # The store's copy first: a rebuild must never bring back a version whose
                # blobs the sweep that follows may delete.
                self.store.delete(f"{STORE_RECORDS}{version}.json")
                self.client.hdel(RECORDS, version)
                self.client.sadd(PRUNED, version)
            # Of the numbers given out, a rebuild needs only the highest.
            for number in sorted(self._numbers_given())[:-1]:
                self.store.delete(f"{STORE_NUMBERS}{number}")
            return doomed

    def pruned(self) -> set[int]:
        """Versions pruned so far (a host drops their cached folders)."""
        return {int(v) for v in self.client.smembers(PRUNED)}

    def rebuild(self) -> bool:
        """Restore an empty Redis from the store's records and pointer; False if not needed."""
        with self._locked():
            if not self.is_empty():
                return False
            records = self.stored_records()
            if records:
                texts = {v: json.dumps(r, ensure_ascii=False) for v, r in records.items()}
                self.client.hset(RECORDS, mapping=texts)
            try:
                pointer = _parsed(self.store.get(STORE_POINTER))
            except blobs.StoreError:
                pointer = None
            if pointer and (pointer["version"] in records or pointer["version"] == ZERO_SHOT):
                self.client.set(POINTER, json.dumps(pointer))
            # Numbers stay unique: counted on from the highest ever given out.
            self.client.set(COUNTER, max([ZERO_SHOT, *records, *self._numbers_given()]))
            if records:
                log.warning(
                    "registry rebuilt from %s: %d versions, active %s",
                    self.store.url,
                    len(records),
                    self.active_version(),
                )
            return True

    def adopt(self, records: dict[int, dict[str, Any]], pointer: dict[str, Any] | None) -> None:
        """Take over versions made before the registry lived in Redis (see worker.versions)."""
        with self._locked():
            for _, record in sorted(records.items()):
                self._commit(record)
            if pointer is not None:
                self._commit(pointer=pointer)
            highest = max(records, default=ZERO_SHOT)
            if highest > int(self.client.get(COUNTER) or 0):
                self.client.set(COUNTER, highest)


def sweep(store: Store, keep: set[str], now: datetime | None = None) -> list[str]:
    """Delete every blob not in `keep` and older than SWEEP_GRACE; returns their hashes."""
    cutoff = (now or datetime.now(UTC)) - SWEEP_GRACE
    doomed = [e.key for e in blobs.blob_hashes(store) if e.key not in keep and e.modified < cutoff]
    for sha256 in doomed:
        store.delete(blobs.blob_key(sha256))
    return doomed
