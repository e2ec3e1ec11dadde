"""What each worker host serves, kept in Redis for `/models`, `breedbot models` and `breedbot
health`: one expiring key per host (contract.served_key), so a host that died drops out, and a
sorted set naming the hosts (no scan over every key of the database)."""

from __future__ import annotations

import json
import logging
import time

import redis

import contract

log = logging.getLogger(__name__)
TTL = contract.SERVED_TTL_SECONDS


def publish(client: redis.Redis, status: contract.HostStatus) -> None:
    """Say what this host serves, for the next SERVED_TTL_SECONDS."""
    now = time.time()
    with client.pipeline(transaction=False) as pipe:
        pipe.set(contract.served_key(status.host), json.dumps(status.to_dict()), ex=TTL)
        pipe.zadd(contract.SERVED_HOSTS, {status.host: now})
        pipe.zremrangebyscore(contract.SERVED_HOSTS, "-inf", now - TTL)  # hosts that died
        pipe.execute()


def read_all(client: redis.Redis) -> list[contract.HostStatus]:
    """Every live host's status, by host name; a malformed one is skipped (logged)."""
    names = sorted(client.zrange(contract.SERVED_HOSTS, 0, -1))
    keys = [contract.served_key(n.decode() if isinstance(n, bytes) else n) for n in names]
    found = []
    for key, raw in zip(keys, client.mget(keys) if keys else [], strict=True):
        if raw is None:  # expired: the host stopped saying it
            continue
        try:
            found.append(contract.HostStatus.from_dict(json.loads(raw)))
        except (ValueError, TypeError):
            log.warning("skipping a malformed host status in Redis: %r", key)
    return sorted(found, key=lambda status: status.host)
