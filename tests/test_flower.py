"""Flower lists workers that start after it, with their queues, without anyone opening a page."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from harness.services import Service
from harness.stack import Stack
from harness.waiting import wait_until

AUTH = ("admin", "s3cret")

pytestmark = pytest.mark.slow


def test_a_worker_started_after_flower_shows_its_queues(
    session_stack: Stack, spawn_worker: Callable[..., Service]
) -> None:
    flower = session_stack.start_flower(FLOWER_BASIC_AUTH=":".join(AUTH))
    try:
        late = spawn_worker("late", queues="control")
        try:

            def queues() -> set[str]:
                # No ?refresh=true: that would make Flower inspect now, which no person does.
                reply = httpx.get(f"{flower.url}/api/workers", auth=AUTH, timeout=10)
                listed = reply.json() if reply.status_code == 200 else {}
                active = (listed.get(late.hostname) or {}).get("active_queues") or []
                return {queue["name"] for queue in active}

            wait_until(lambda: "control" in queues(), 60, "Flower to list the late worker's queue")
            page = httpx.get(f"{flower.url}/broker", auth=AUTH, timeout=10)
            assert page.status_code == 200 and ">control<" in page.text
        finally:
            late.stop()
    finally:
        flower.stop()
