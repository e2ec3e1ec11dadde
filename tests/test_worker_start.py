"""A worker whose start fails (Redis unreachable, a malformed registry record) still follows the
active version once the fault is gone: Celery swallows an exception in the model holder's start,
so the holder's watcher must start regardless and retry it (issue 20, item 7)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.services import Service, served_version
from harness.stack import QUEUES, Stack
from harness.waiting import wait_until
from store.registry import POINTER, RECORDS

pytestmark = pytest.mark.slow


@pytest.fixture
def stack(tmp_path: Path, breedbot_home: Path) -> Iterator[Stack]:
    """A fresh stack (emulator, Redis) per test; services stop after."""
    with Stack(tmp_path).running(BREEDBOT_HOME=str(breedbot_home)) as running:
        yield running


def _spawn_worker(stack: Stack) -> Service:
    """`breedbot worker`, not waited for: it may not answer pings until the fault is gone."""
    argv = ["-m", "ops.cli", "worker", "-Q", QUEUES, "-l", "INFO", "-n", "w@%h"]
    return stack.start("w", argv)


def _follows_the_pointer(stack: Stack, worker: Service) -> None:
    """The worker serves the active version (0) with no job asked of it, and its watcher moves
    with the pointer: a version that does not exist is tried (and the old one kept)."""
    wait_until(lambda: served_version(worker) == 0, 120, "the worker to serve version 0")
    client = stack.redis()
    try:
        client.set(POINTER, json.dumps({"version": 99, "history": [0]}))
    finally:
        client.close()
    wait_until(
        lambda: "could not load model version 99" in worker.log_text(),
        60,
        "the watcher to follow the pointer to version 99",
    )
    assert worker.alive() and served_version(worker) == 0


def test_a_worker_started_while_redis_is_down_follows_the_active_version(stack: Stack) -> None:
    stack.stop_redis()
    worker = _spawn_worker(stack)
    # The consumer tries the broker only after the model holder's start (which failed) returned.
    wait_until(lambda: "Cannot connect to" in worker.log_text(), 120, "the worker to try Redis")
    stack.start_redis()
    _follows_the_pointer(stack, worker)


def test_a_worker_started_on_a_malformed_record_follows_once_it_is_removed(stack: Stack) -> None:
    client = stack.redis()
    try:
        client.hset(RECORDS, "3", "{not json")
        worker = _spawn_worker(stack)
        # The consumer starts after the model holder's start returned (or failed, swallowed).
        wait_until(lambda: " ready." in worker.log_text(), 120, "the worker to consume")
        client.hdel(RECORDS, "3")
    finally:
        client.close()
    _follows_the_pointer(stack, worker)
