"""The Celery app: JSON only, late acks, one prefetch, routes by task name from the contract.

Importing this module is cheap (no TensorFlow): Flower, the CLI and `celery -A` load it too.
The model is loaded by the signal handlers below, inside the process that serves it.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals
from celery.concurrency import get_implementation

from worker import contract
from worker.settings import WorkerSettings, get_settings
from worker.transport import TRANSPORT

JSON_ONLY = ["json"]
# A task's result in its "succeeded" log line is cut to this many characters (Celery: 1024).
RESULT_LOG_CHARS = 160


TASK_MODULES = ["worker.tasks", "worker.replies"]


def _limits(soft: float, hard: float) -> dict[str, float]:
    return {"soft_time_limit": soft, "time_limit": hard}


def config(settings: WorkerSettings) -> dict[str, Any]:
    """The full Celery configuration for these settings."""
    url = settings.broker_url()
    visibility = settings.broker_visibility_timeout
    infer = _limits(settings.classify_soft_time_limit, settings.classify_time_limit)
    train = _limits(settings.retrain_soft_time_limit, settings.retrain_time_limit)
    control = _limits(settings.control_soft_time_limit, settings.control_time_limit)
    return {
        "broker_url": url,
        # kombu's Redis transport, fixed to survive a Redis restart (see worker/transport.py).
        "broker_transport": TRANSPORT if url.startswith("redis://") else None,
        "result_backend": url,
        "broker_connection_retry_on_startup": True,
        # JSON everywhere: a pickle message is refused before it is deserialised.
        "accept_content": JSON_ONLY,
        "result_accept_content": JSON_ONLY,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
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
        "task_routes": {name: {"queue": queue} for name, queue in contract.TASK_QUEUES.items()},
        "task_default_queue": contract.QUEUE_CONTROL,
        "task_time_limit": control["time_limit"],
        "task_soft_time_limit": control["soft_time_limit"],
        "task_annotations": {
            name: {
                **{contract.QUEUE_INFER: infer, contract.QUEUE_TRAIN: train}.get(queue, control),
                "resultrepr_maxsize": RESULT_LOG_CHARS,
            }
            for name, queue in contract.TASK_QUEUES.items()
        },
        # Retrain and control jobs show STARTED; classify opts out (worker/tasks.py).
        "task_track_started": True,
        # Events for Flower (the same as `celery worker -E`).
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        # Threads: one process holds one TensorFlow model shared by all jobs (see serving.py).
        "worker_pool": "threads",
        "worker_concurrency": settings.worker_concurrency,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
    }


def create_app(settings: WorkerSettings | None = None) -> Celery:
    """The app for `settings`, or (None) for the environment's, read on first use of its conf."""
    app = Celery("breedbot", include=TASK_MODULES)
    app.add_defaults(lambda: config(settings or get_settings()))
    return app


app = create_app()


@signals.after_setup_logger.connect
def _quiet_http_client(**_: Any) -> None:
    # httpx logs every request URL at INFO, and Bot API URLs carry the bot token.
    logging.getLogger("httpx").setLevel(logging.WARNING)


@signals.celeryd_after_setup.connect
def _load_before_consuming(instance: Any = None, **_: Any) -> None:
    # Runs once logging is set up and before the consumer starts. A prefork parent only forks
    # children (TensorFlow is not fork-safe): they load it in worker_process_init instead.
    if "prefork" not in get_implementation(instance.pool_cls).__module__:
        from worker import serving

        serving.holder().start()


@signals.worker_ready.connect
def _start_outbox_sweeper(**_: Any) -> None:
    from worker import outbox, replies

    settings = get_settings()
    outbox.start_sweeper(
        replies.redis_client(),
        lambda signature: app.signature(signature).apply_async(),
        settings.outbox_rescue_seconds,
        settings.outbox_max_attempts,
    )


@signals.worker_process_init.connect
def _load_after_fork(**_: Any) -> None:
    from worker import serving

    serving.holder().start()
