"""A bare Celery app for bench/queue_floor.py: #3's delivery settings, a classify doing nothing.

`python -m bench.bare_celery [-n NAME]` runs its worker on REDIS_URL (threads pool, 32 threads,
the infer queue); BARE_EVENTS=1 turns task events on, as `-E` does for breedbot's worker.
"""

from __future__ import annotations

import base64
import os
import sys
from typing import Any

from celery import Celery

import contract


def make_app(url: str, events: bool = False) -> Celery:
    """Celery on the Redis at `url`: JSON only, late acks, prefetch 1, results stored."""
    app = Celery("bare", broker=url, backend=url, set_as_current=False)
    app.conf.update(
        accept_content=["json"],
        result_accept_content=["json"],
        task_serializer="json",
        result_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_send_task_events=events,
        task_send_sent_event=events,
        task_default_queue=contract.QUEUE_INFER,
        worker_pool="threads",
        worker_concurrency=32,
    )

    @app.task(name=contract.CLASSIFY)
    def classify(payload: dict[str, Any]) -> dict[str, Any]:
        # The photo still crosses JSON and base64, as in the real task; no model runs.
        return {"bytes": len(base64.b64decode(payload["image_b64"]))}

    return app


if __name__ == "__main__":
    make_app(os.environ["REDIS_URL"], os.environ.get("BARE_EVENTS") == "1").worker_main(
        ["worker", "-l", "WARNING", *sys.argv[1:]]
    )
