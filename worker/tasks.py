"""Thin Celery tasks: payload dict -> contract dataclass -> one library call -> result dict.

Names and queues come from contract/; limits and routing from worker/celery_app.py. Nothing
here talks to Telegram: answers go back as results, and a reply task in the bot's image sends
them. A refusal (bad dataset, accuracy gate, no such version) fails its task with
`contract.Refused`, so Flower counts it as a failure with its reason; `throws` logs it in one
line, no traceback.
"""

from __future__ import annotations

from typing import Any

from celery import Task

import contract
from worker import control, exporting, feedback, retraining, serving
from worker.celery_app import app
from worker.settings import get_settings
from worker.storage import blob_store


# No STARTED state: nobody polls a classify result for it (the reply task gets the result, and
# Flower has the task-started event), and storing it costs two Redis round trips per photo. The
# bot's jobs ignore their result too (the chain carries it), but a failure is stored even then:
# the reply_failed errback reads it.
@app.task(name=contract.CLASSIFY, track_started=False, store_errors_even_if_ignored=True)
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
    # The chat's status message is edited at a pace Telegram's flood limits accept.
    chat = retraining.throttled(
        lambda p: app.send_task(contract.PROGRESS, args=[request.reply_to, p.to_dict()]), 3.0
    )

    def progress(p: contract.Progress) -> None:
        self.update_state(state=contract.PROGRESS_STATE, meta=p.to_dict())
        if request.reply_to and request.reply_to.get("status_message_id") is not None:
            chat(p)

    with retraining.exclusive():
        # TensorFlow takes seconds to load in the child: say so at once, not "queued".
        progress(contract.Progress("starting", 0, 1))
        return retraining.run_in_child(request, get_settings(), progress).to_dict()


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


@app.task(name=contract.BREEDS)
def breeds() -> dict[str, Any]:
    """The classes the served version knows, by display name."""
    served = serving.holder().current()
    names = sorted(served.classifier.display_names, key=str.casefold)
    return contract.Breeds(served.version, names).to_dict()


@app.task(name=contract.STORE_FEEDBACK, throws=(contract.Refused,))
def store_feedback(payload: dict[str, Any]) -> str | None:
    """File a corrected photo under its label; the last answer wins; a full quota refuses."""
    request = contract.StoreFeedback.from_dict(payload)
    settings = get_settings()
    feedback.import_folder(settings.feedback_root, blob_store(settings))
    return feedback.store(request, blob_store(settings), feedback.Quota.of(settings))


@app.task(
    name=contract.EXPORT,
    throws=(contract.Refused,),
    autoretry_for=(retraining.Busy,),
    max_retries=None,
    default_retry_delay=15,
)
def export(payload: dict[str, Any]) -> dict[str, Any]:
    """A version's portable .tflite, labels.txt and README.txt, for /export."""
    request = contract.ExportRequest.from_dict(payload)
    with retraining.exclusive():  # one TensorFlow child at a time on this worker
        return exporting.run_in_child(request, get_settings()).to_dict()
