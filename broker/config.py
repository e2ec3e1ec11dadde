"""Celery configurations: a publishing client's, and what every consumer adds to it."""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import quote

import contract
from broker.redis_client import SENTINEL_SEPARATOR, is_sentinel, parse_sentinel_url
from broker.settings import BrokerSettings, SentinelSettings
from broker.transport import patch_schemes, transport_for

JSON_ONLY = ["json"]


def sentinel_url(url: str) -> str:
    """A sentinel:// URL with the first part's credentials and database in every part.

    kombu moves to the next part of the list on a connection error and then reads the master's
    password and database from that part alone.
    """
    parsed = parse_sentinel_url(url)
    user = quote(parsed.username or "", safe="")
    password = quote(parsed.password or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    return SENTINEL_SEPARATOR.join(
        f"sentinel://{auth}{host}:{port}/{parsed.db}" for host, port in parsed.sentinels
    )


def redis_options(url: str, sentinel: SentinelSettings | None = None) -> dict[str, Any]:
    """What a Sentinel or TLS URL needs besides itself: Celery's transport and SSL options.

    Sentinel: the master's name and the Sentinels' password (REDIS_MASTER_NAME,
    REDIS_SENTINEL_PASSWORD). TLS (rediss://): the server's certificate is checked unless the
    URL's query says otherwise (`?ssl_cert_reqs=none`, or `ssl_ca_certs=...` for a private CA).
    """
    if is_sentinel(url):
        options = sentinel or SentinelSettings()
        transport = {
            "master_name": options.redis_master_name,
            "sentinel_kwargs": {"password": options.sentinel_password},
        }
        return {
            "broker_url": sentinel_url(url),
            "broker_transport_options": transport,
            "result_backend_transport_options": transport,
        }
    if url.startswith("rediss://"):
        # Defaults only: ssl_* parameters in the URL's query win (kombu and Celery read them).
        required = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
        return {"broker_use_ssl": required, "redis_backend_use_ssl": required}
    return {}


def client_config(url: str, sentinel: SentinelSettings | None = None) -> dict[str, Any]:
    """A client that publishes by task name: JSON only, routes from the contract, no backend."""
    patch_schemes()
    return {
        "broker_url": url,
        # kombu's Redis transport, fixed to survive a Redis restart (see broker/transport.py),
        # for redis://, rediss:// and sentinel:// alike.
        "broker_transport": transport_for(url),
        **redis_options(url, sentinel),
        "broker_connection_retry_on_startup": True,
        # A publish that meets a lost connection reconnects and tries again for about 5 s
        # (Celery: 3 tries in 0.6 s), enough for a Sentinel failover or a quick Redis restart.
        "task_publish_retry_policy": {
            "max_retries": 6,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
        # JSON everywhere: a pickle message is refused before it is deserialised.
        "accept_content": JSON_ONLY,
        "result_accept_content": JSON_ONLY,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "task_routes": {name: {"queue": queue} for name, queue in contract.TASK_QUEUES.items()},
        "task_default_queue": contract.QUEUE_CONTROL,
    }


def consumer_config(settings: BrokerSettings, concurrency: int) -> dict[str, Any]:
    """A threads-pool worker with at-least-once delivery, results in Redis and events on."""
    url = settings.broker_url()
    visibility = settings.broker_visibility_timeout
    client = client_config(url, settings)
    return {
        **client,
        "result_backend": client["broker_url"],
        # A result written while Redis restarts or fails over is retried, not lost with its task.
        "result_backend_always_retry": True,
        "result_backend_max_retries": 20,
        # At-least-once delivery: ack after the task ran, requeue if its worker died, and hold
        # only one unstarted message per pool slot.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # A redelivered job that already succeeded is not run (answered) twice.
        "worker_deduplicate_successful_tasks": True,
        "broker_transport_options": {
            **client.get("broker_transport_options", {}),
            "visibility_timeout": visibility,
            "unacked_restore_interval": settings.unacked_restore_interval,
        },
        "result_backend_transport_options": {
            **client.get("result_backend_transport_options", {}),
            "visibility_timeout": visibility,
        },
        "result_expires": 24 * 3600,
        # Events for Flower (the same as `celery worker -E`).
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_pool": "threads",
        "worker_concurrency": concurrency,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
    }
