"""Celery configurations: a publishing client's, and what every consumer adds to it."""

from __future__ import annotations

from typing import Any

import contract
from broker.settings import BrokerSettings
from broker.transport import TRANSPORT

JSON_ONLY = ["json"]


def client_config(url: str) -> dict[str, Any]:
    """A client that publishes by task name: JSON only, routes from the contract, no backend."""
    return {
        "broker_url": url,
        # kombu's Redis transport, fixed to survive a Redis restart (see broker/transport.py).
        "broker_transport": TRANSPORT if url.startswith("redis://") else None,
        "broker_connection_retry_on_startup": True,
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
    return {
        **client_config(url),
        "result_backend": url,
        # At-least-once delivery: ack after the task ran, requeue if its worker died, and hold
        # only one unstarted message per pool slot.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # A redelivered job that already succeeded is not run (answered) twice.
        "worker_deduplicate_successful_tasks": True,
        "broker_transport_options": {
            "visibility_timeout": visibility,
            "unacked_restore_interval": settings.unacked_restore_interval,
        },
        "result_backend_transport_options": {"visibility_timeout": visibility},
        "result_expires": 24 * 3600,
        # Events for Flower (the same as `celery worker -E`).
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_pool": "threads",
        "worker_concurrency": concurrency,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
    }
