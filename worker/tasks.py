"""Thin Celery tasks: payload dict -> contract dataclass -> one library call -> result dict.

Names and queues come from worker/contract.py; limits and routing from worker/celery_app.py.
A refusal (bad dataset, accuracy gate, no such version) fails its task with `contract.Refused`,
so Flower counts it as a failure with its reason; `throws` logs it in one line, no traceback.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from celery import Task

from worker import contract, control, replies, retraining, serving
from worker.celery_app import app
from worker.settings import get_settings


# No STARTED state: nobody polls a classify result for it (the worker replies to the chat, and
# Flower has the task-started event), and storing it costs two Redis round trips per photo.
@app.task(name=contract.CLASSIFY, track_started=False)
def classify(payload: dict[str, Any]) -> dict[str, Any]:
    """Classify one photo with the active model version."""
    request = contract.ClassifyRequest.from_dict(payload)
    return serving.classify(request, get_settings()).to_dict()


@app.task(
    name=contract.RETRAIN,
    bind=True,
    autoretry_for=(retraining.Busy,),
    throws=(contract.Refused,),
    max_retries=None,
    default_retry_delay=15,
)
def retrain(self: Task, payload: dict[str, Any]) -> dict[str, Any]:
    """Retrain on an uploaded dataset, reporting PROGRESS, and publish through the gate."""
    request = contract.RetrainRequest.from_dict(payload)
    # Telegram edits at a pace its flood limits accept; the result backend more often.
    telegram = retraining.throttled(partial(replies.report_progress, request.reply_to), 3.0)

    def progress(p: contract.Progress) -> None:
        self.update_state(state=contract.PROGRESS_STATE, meta=p.to_dict())
        telegram(p)

    with retraining.exclusive():
        return retraining.run(request, get_settings(), progress).to_dict()


@app.task(name=contract.LIST_MODELS)
def list_models() -> list[dict[str, Any]]:
    """All model versions, oldest first."""
    return [version.to_dict() for version in control.list_models(get_settings())]


@app.task(name=contract.PROMOTE, throws=(contract.Refused,))
def promote(payload: dict[str, Any]) -> dict[str, Any]:
    """Make a version active."""
    request = contract.PromoteRequest.from_dict(payload)
    return control.promote(request, get_settings()).to_dict()


@app.task(name=contract.ROLLBACK, throws=(contract.Refused,))
def rollback(payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return to the previously active version."""
    request = contract.RollbackRequest.from_dict(payload or {})
    return control.rollback(request, get_settings()).to_dict()


@app.task(name=contract.STATS)
def stats() -> dict[str, Any]:
    """Today's job count, mean latency and the active version."""
    return control.today(get_settings()).to_dict()
