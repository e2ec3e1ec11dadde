"""Attacks on the registry through the real interfaces (issue 20, items 1 and 9): records and
pointers written straight into Redis, a queued retrain naming a backbone of its own. Each attack
returns a row: what was tried, whether it held, and what was seen. The worker is real; the only
access the attacker has is Redis (and, for the bytes a forged record names, the blob store,
which a forged `store_feedback` job fills).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import Celery

import contract
from harness.services import answered_versions
from harness.stack import Stack
from harness.user import csv_sample_zip
from harness.waiting import wait_until
from store import blobs, registry
from worker import hosts
from worker.celery_app import create_app
from worker.settings import WorkerSettings

SWITCH_SECONDS = 30
ANSWERS = 8
# Pinned: the backbone is beside the point of these attacks (the multi-host test runs `auto`).
STEPS = {"how_many_training_steps": 30, "flip_left_right": False}
BACKBONE = {"tfhub_module": "efficientnet_lite0"}


def _row(attack: str, tried: int, held: int, seen: str) -> dict[str, Any]:
    return {"attack": attack, "tried": tried, "held": held, "seen": seen}


class _Target:
    """A stack with one worker serving a retrained version 1, and a client app."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.worker = stack.start_worker("target")
        settings = WorkerSettings(redis_url=stack.redis_url(), var_dir=stack.root / "client")
        self.app: Celery = create_app(settings)
        dataset = contract.DatasetRef(contract.encode_bytes(csv_sample_zip()), "csv-sample.zip")
        request = contract.RetrainRequest(dataset.to_dict(), STEPS | BACKBONE, min_accuracy=0.0)
        self.app.send_task(contract.RETRAIN, args=[request.to_dict()]).get(timeout=900)
        self.good = stack.registry().active_version()
        self.number = 900  # forged versions: each its own number (a failed one waits a retry)
        self.wait_serving(self.good)

    def wait_serving(self, version: int) -> bool:
        """Until every answer comes from `version` (False after SWITCH_SECONDS)."""
        check = lambda: set(answered_versions(self.app, ANSWERS)) == {version}  # noqa: E731
        return bool(wait_until(check, SWITCH_SECONDS))

    def status(self) -> contract.HostStatus | None:
        """What the worker last said it serves."""
        found = hosts.read_all(self.stack.registry().client)
        return found[0] if found else None

    def health(self) -> subprocess.CompletedProcess[str]:
        """`breedbot health`, as an admin or a probe runs it."""
        argv = [sys.executable, "-m", "ops.cli", "health"]
        return subprocess.run(argv, env=self.stack.env, capture_output=True, text=True, timeout=60)

    def promote_refused(self, version: int) -> bool:
        """True if an admin's promote of `version` is refused as an unusable record."""
        request = contract.PromoteRequest(version).to_dict()
        try:
            self.app.send_task(contract.PROMOTE, args=[request]).get(timeout=60)
        except contract.Refused as refused:
            return refused.problem == "bad_record"
        return False

    def forged(self, bundle: dict[str, str], metrics: dict[str, Any]) -> tuple[bool, str]:
        """Write a record with `bundle` (plus a metrics.json of `metrics`): promote must refuse
        it; then point at it, as an attacker with Redis access would: the worker must keep
        serving and fail its health check saying why. (held, what it said). Put back after."""
        reg = self.stack.registry()
        self.number += 1
        version = self.number
        metrics_sha = blobs.put_blob(reg.store, json.dumps(metrics).encode())
        record = {"version": version, "bundle": {"metrics.json": metrics_sha, **bundle}}
        before = reg.client.get(registry.POINTER)
        reg.client.hset(registry.RECORDS, version, json.dumps(record))
        refused = self.promote_refused(version)
        reg.client.set(registry.POINTER, json.dumps({"version": version, "history": [self.good]}))
        try:
            said = wait_until(
                lambda: (s := self.status()) and s.active == version and s.error, SWITCH_SECONDS
            )
            kept = set(answered_versions(self.app, ANSWERS)) == {self.good}
            failing = self.health()
        finally:
            reg.client.set(registry.POINTER, before)
            reg.client.hdel(registry.RECORDS, version)
        back = self.wait_serving(self.good)
        healthy = wait_until(lambda: self.health().returncode == 0, SWITCH_SECONDS)
        checks = {
            "promote refused": refused,
            "kept serving": kept,
            "health said why": failing.returncode == 1 and "UNHEALTHY" in failing.stdout,
            "back": back,
            "healthy again": healthy,
            "alive": self.worker.alive(),
        }
        failed = [name for name, ok in checks.items() if not ok]
        return bool(said) and not failed, f"{said or 'nothing said'}; failed: {failed}"

    def close(self) -> None:
        """Close the client app."""
        self.app.close()


def _written(tag: str, root: Path) -> list[Path]:
    """Files named after `tag` anywhere under the stack's `root`, or in /tmp (not recursive:
    the absolute attack writes /tmp/<tag>/)."""
    return [*root.rglob(f"*{tag}*"), *Path("/tmp").glob(f"*{tag}*")]


def _bundle_paths(target: _Target) -> dict[str, Any]:
    """Forged records whose bundle names ../ and absolute paths: refused, nothing written."""
    tag = uuid.uuid4().hex
    reg = target.stack.registry()
    payload = blobs.put_blob(reg.store, f"#!/bin/sh\necho {tag}\n".encode())
    held, seen = 0, []
    for prefix in ("../../../", f"/tmp/{tag}/", "litert/../../"):
        ok, said = target.forged({f"{prefix}{tag}.sh": payload}, {"backbone": {}})
        written = _written(tag, target.stack.root)
        held += ok and not written and "bundle path" in said
        seen.append(f"{prefix!r}: " + (f"WROTE {written}" if written else "refused"))
        seen[-1] += "" if ok else f" ({said})"
    return _row("forged record: bundle path outside the version folder", 3, held, "; ".join(seen))


def _backbone_handles(target: _Target) -> dict[str, Any]:
    """Forged records whose metrics.json names a backbone of the attacker's: never loaded."""
    reg = target.stack.registry()
    head = blobs.put_blob(reg.store, b"head")
    held, seen = 0, []
    for handle in ("https://tfhub.dev/attacker/model/1", f"/tmp/{uuid.uuid4().hex}-saved-model"):
        listed = {"files": ["litert/backbone_float.tflite", "litert/head_float.tflite"]}
        metrics = {"backbone": {"handle": handle, "identity": "x"}, "litert": {"float": listed}}
        ok, said = target.forged({"litert/head_float.tflite": head}, metrics)
        converted = f"converting backbone {handle}" in target.worker.log_text()
        held += ok and not converted and "is not one of" in said
        seen.append(f"{handle}: " + ("CONVERTED" if converted else "never converted"))
        seen[-1] += "" if ok else f" ({said})"
    return _row("forged record: metrics.json backbone handle", 2, held, "; ".join(seen))


def _queued_handles(target: _Target) -> dict[str, Any]:
    """Retrain jobs pushed into the queue naming a TF Hub handle or a path: refused."""
    held, seen = 0, []
    for handle in ("https://tfhub.dev/attacker/model/1", "/tmp/attacker-saved-model"):
        dataset = contract.DatasetRef(contract.encode_bytes(csv_sample_zip()), "csv-sample.zip")
        request = contract.RetrainRequest(dataset.to_dict(), {**STEPS, "tfhub_module": handle})
        try:
            target.app.send_task(contract.RETRAIN, args=[request.to_dict()]).get(timeout=300)
            seen.append(f"{handle}: TRAINED")
        except contract.Refused as refused:
            held += refused.problem == "option_backbone" and target.worker.alive()
            seen.append(f"{handle}: refused ({refused.problem})")
    return _row("queued retrain naming its own backbone", 2, held, "; ".join(seen))


def _pointer_lost(target: _Target) -> dict[str, Any]:
    """The active pointer deleted alone (eviction, DEL): the store's copy wins it back."""
    reg = target.stack.registry()
    before = reg.pointer()
    reg.client.delete(registry.POINTER)
    time.sleep(2)  # several of the worker's polls
    answers = set(answered_versions(target.app, ANSWERS))
    restored = json.loads(reg.client.get(registry.POINTER) or "null")
    held = answers == {target.good} and restored == before
    return _row("active pointer deleted alone", 1, int(held), f"answers from {sorted(answers)}")


def _malformed_record(target: _Target) -> dict[str, Any]:
    """A malformed record beside the good ones: /models lists the rest, a worker still starts."""
    reg = target.stack.registry()
    reg.client.hset(registry.RECORDS, 77, b"{half a record")
    try:
        listed = target.app.send_task(contract.LIST_MODELS).get(timeout=60)
        versions = [contract.ModelVersion.from_dict(v).version for v in listed]
        target.worker.stop()
        target.worker = target.stack.start_worker("restarted")
        started = target.wait_serving(target.good)
    finally:
        reg.client.hdel(registry.RECORDS, 77)
    held = versions == [0, target.good] and started
    return _row("malformed record in Redis", 1, int(held), f"/models listed {versions}")


ATTACKS: tuple[Callable[[_Target], dict[str, Any]], ...] = (
    _bundle_paths,
    _backbone_handles,
    _queued_handles,
    _pointer_lost,
    _malformed_record,
)


def registry_attacks(stack: Stack) -> list[dict[str, Any]]:
    """Every attack above on one worker serving a retrained version; one row each."""
    target = _Target(stack)
    try:
        rows = [attack(target) for attack in ATTACKS]
    finally:
        target.close()
    alive = target.worker.alive()
    survived = _row("worker survives every attack", 1, int(alive), "alive" if alive else "dead")
    return [*rows, survived]
