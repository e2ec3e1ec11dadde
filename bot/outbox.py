"""Re-publish classify jobs whose reply task never ran: the gap in Redis' at-least-once delivery.

kombu's Redis transport pops a message (BRPOP) before it records it in the unacked hash; a worker
killed between the two loses that message, and nothing redelivers it (the reliability suite lost
1 photo in 200 that way). The bot writes each classify chain to the outbox before publishing it
(`contract.OUTBOX_DUE`); the reply task removes it. Every reply sender runs `sweep` every few
seconds: an entry older than the rescue age is published again, at most `max_attempts` times. A
re-run classify job is harmless: the reply is keyed and sent once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

import contract

log = logging.getLogger(__name__)
LOCK_KEY = "breedbot:outbox:lock"


def done(client: redis.Redis, outbox_id: str | None) -> None:
    """Forget an entry and its photo's bytes: its reply task has run."""
    if outbox_id:
        # No MULTI/EXEC: `sweep` skips (and cleans up) a due id whose job is already gone.
        client.pipeline(transaction=False).zrem(contract.OUTBOX_DUE, outbox_id).hdel(
            contract.OUTBOX_JOBS, outbox_id
        ).delete(contract.upload_key(outbox_id)).execute()


def sweep(
    client: redis.Redis,
    publish: Callable[[dict[str, Any]], None],
    rescue_after: float,
    max_attempts: int,
    now: float | None = None,
) -> int:
    """Publish again each entry unanswered for `rescue_after` s; returns how many were.

    Nothing is swept while photo jobs wait in the queue: after an outage every entry is old, but
    most are still queued, and re-publishing them would run each photo twice. A lost message is
    not in the queue, so it is re-published once the backlog has drained.
    """
    if client.llen(contract.QUEUE_INFER):
        return 0
    now = time.time() if now is None else now
    republished = 0
    for outbox_id in client.zrangebyscore(contract.OUTBOX_DUE, "-inf", now - rescue_after):
        raw = client.hget(contract.OUTBOX_JOBS, outbox_id)
        if raw is None:  # answered meanwhile
            client.zrem(contract.OUTBOX_DUE, outbox_id)
            continue
        entry = contract.OutboxEntry.from_json(raw)
        if entry.attempts >= max_attempts:
            log.error(
                "job %s unanswered after %d re-publications; giving up", outbox_id, max_attempts
            )
            done(client, outbox_id)
            continue
        again = contract.OutboxEntry(entry.signature, entry.attempts + 1)
        client.pipeline().hset(contract.OUTBOX_JOBS, outbox_id, again.to_json()).zadd(
            contract.OUTBOX_DUE, {outbox_id: now}
        ).execute()
        log.warning("job %s unanswered for %.0f s: publishing it again", outbox_id, rescue_after)
        publish(entry.signature)
        republished += 1
    return republished


def start_sweeper(
    client: redis.Redis,
    publish: Callable[[dict[str, Any]], None],
    rescue_after: float,
    max_attempts: int,
    interval: float = 5.0,
) -> threading.Thread:
    """Sweep every `interval` s in a daemon thread; one process at a time sweeps (a Redis lock)."""

    def loop() -> None:
        while True:
            time.sleep(interval)
            try:
                if client.set(LOCK_KEY, "1", nx=True, ex=max(1, round(interval))):
                    sweep(client, publish, rescue_after, max_attempts)
            except redis.RedisError as error:  # Redis restarting: try again next round
                log.warning("outbox sweep failed: %s", error)

    thread = threading.Thread(target=loop, name="outbox-sweeper", daemon=True)
    thread.start()
    return thread
