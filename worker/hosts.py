"""What each worker host serves, kept in Redis for `/models`, `breedbot models` and `breedbot
health`: one expiring key per host (contract.served_key), so a host that died drops out."""

from __future__ import annotations

import json
import logging

import redis

import contract

log = logging.getLogger(__name__)


def publish(client: redis.Redis, status: contract.HostStatus) -> None:
    """Say what this host serves, for the next SERVED_TTL_SECONDS."""
    text = json.dumps(status.to_dict())
    client.set(contract.served_key(status.host), text, ex=contract.SERVED_TTL_SECONDS)


def read_all(client: redis.Redis) -> list[contract.HostStatus]:
    """Every live host's status, by host name; a malformed one is skipped (logged)."""
    keys = sorted(client.scan_iter(match=f"{contract.SERVED_PREFIX}*", count=100))
    found = []
    for key, raw in zip(keys, client.mget(keys) if keys else [], strict=True):
        if raw is None:  # expired between the scan and the read
            continue
        try:
            found.append(contract.HostStatus.from_dict(json.loads(raw)))
        except (ValueError, TypeError):
            log.warning("skipping a malformed host status in Redis: %r", key)
    return sorted(found, key=lambda status: status.host)
