"""The worker's Celery app: the shared consumer config plus time limits per queue.

Importing this module is cheap (no TensorFlow): the CLI and `celery -A` load it too. The model
is loaded by the signal handlers below, inside the process that serves it.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals
from celery.concurrency import get_implementation

import contract
from broker.config import consumer_config
from worker.settings import WorkerSettings, get_settings

# A task's result in its "succeeded" log line is cut to this many characters (Celery: 1024).
RESULT_LOG_CHARS = 160
TASK_MODULES = ["worker.tasks"]


def _limits(soft: float, hard: float) -> dict[str, float]:
    return {"soft_time_limit": soft, "time_limit": hard}


def config(settings: WorkerSettings) -> dict[str, Any]:
    """The full Celery configuration for these settings."""
    infer = _limits(settings.classify_soft_time_limit, settings.classify_time_limit)
    train = _limits(settings.retrain_soft_time_limit, settings.retrain_time_limit)
    control = _limits(settings.control_soft_time_limit, settings.control_time_limit)
    return {
        # Threads: one process holds one model shared by all jobs (see serving.py).
        **consumer_config(settings, settings.worker_concurrency),
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
    }


def create_app(settings: WorkerSettings | None = None) -> Celery:
    """The app for `settings`, or (None) for the environment's, read on first use of its conf."""
    app = Celery("breedbot", include=TASK_MODULES)
    app.add_defaults(lambda: config(settings or get_settings()))
    return app


app = create_app()


@signals.celeryd_init.connect
def _name_node(sender: str | None = None, **_: Any) -> None:
    # Before the model loads: the status each host publishes goes under its Celery node name.
    from worker import serving

    if sender:
        serving.name_node(sender)


@signals.celeryd_after_setup.connect
def _load_before_consuming(instance: Any = None, **_: Any) -> None:
    # Runs once logging is set up and before the consumer starts. A prefork parent only forks
    # children (TensorFlow is not fork-safe): they load it in worker_process_init instead.
    if "prefork" not in get_implementation(instance.pool_cls).__module__:
        from worker import serving

        serving.holder().start()


@signals.worker_process_init.connect
def _load_after_fork(**_: Any) -> None:
    from worker import serving

    serving.holder().start()
