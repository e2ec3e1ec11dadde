"""Redis is the model registry's database: its AOF keeps every acknowledged write across a clean
restart and across a crash (SIGKILL), on the real redis-server `make up` and the harness run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.stack import Stack


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack of our own (its Redis is restarted here, so not the session's)."""
    with Stack(tmp_path).running() as running:
        yield running


def write_state(stack: Stack, n: int) -> dict[str, object]:
    """Registry-shaped data (a counter, a hash of records, a pointer history); what was written."""
    client = stack.redis()
    try:
        for version in range(1, n + 1):
            client.incr("t:counter")
            client.hset("t:records", str(version), f'{{"version": {version}}}')
            client.rpush("t:history", str(version))
        client.set("t:active", str(n))
    finally:
        client.close()
    return read_state(stack)


def read_state(stack: Stack) -> dict[str, object]:
    client = stack.redis()
    try:
        return {
            "counter": client.get("t:counter"),
            "records": client.hgetall("t:records"),
            "history": client.lrange("t:history", 0, -1),
            "active": client.get("t:active"),
        }
    finally:
        client.close()


@pytest.mark.parametrize("crash", [False, True], ids=["sigterm", "sigkill"])
def test_redis_keeps_every_write_across_a_restart(stack: Stack, crash: bool) -> None:
    """Writes acknowledged before Redis stops (cleanly, or killed without a chance to flush)
    are all there when it starts again on the same data dir; then more writes land on top."""
    written = write_state(stack, 50)
    assert written["active"] == "50" and len(written["records"]) == 50  # type: ignore[arg-type]
    stack.stop_redis(crash=crash)
    stack.start_redis()
    # RDB snapshots are off (`--save ""`): what comes back came from the AOF.
    assert read_state(stack) == written
    again = write_state(stack, 60)
    stack.stop_redis(crash=crash)
    stack.start_redis()
    assert read_state(stack) == again
    assert again["counter"] == "110"
