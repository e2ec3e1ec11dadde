"""Daily classify counters in Redis, shared by every worker (for the bot's /stats)."""

from __future__ import annotations

import functools
import os
from datetime import UTC, datetime

import redis

from broker.redis_client import redis_client

KEY_PREFIX = "breedbot:stats:"
KEEP_SECONDS = 8 * 24 * 3600


@functools.cache
def _client(url: str, pid: int) -> redis.Redis:
    # One connection pool per process and URL; the pid key gives a forked child its own.
    return redis_client(url, socket_timeout=5)


def client(url: str) -> redis.Redis:
    """This process's client of the broker's Redis."""
    return _client(url, os.getpid())


def _key(now: datetime | None = None) -> str:
    return KEY_PREFIX + (now or datetime.now(UTC)).strftime("%Y-%m-%d")


def record_classify(url: str, latency_ms: float, failed: bool) -> None:
    """Count one answered classify job and its worker-side latency."""
    key = _key()
    pipe = client(url).pipeline(transaction=False)  # counters: no MULTI/EXEC needed
    pipe.hincrby(key, "jobs", 1)
    pipe.hincrbyfloat(key, "latency_ms", latency_ms)
    if failed:
        pipe.hincrby(key, "errors", 1)
    pipe.expire(key, KEEP_SECONDS)
    pipe.execute()


def today(url: str) -> tuple[int, float | None, int]:
    """(jobs, mean latency in ms or None, errors) for the current UTC day."""
    raw = client(url).hgetall(_key())
    jobs = int(raw.get(b"jobs", 0))
    latency = float(raw.get(b"latency_ms", 0.0))
    return jobs, (latency / jobs if jobs else None), int(raw.get(b"errors", 0))
