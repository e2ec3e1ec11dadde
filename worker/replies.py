"""The worker's side of Telegram: answer each job's chat exactly once, edit retrain progress,
and file feedback photos under their corrected label.

Any worker holding the token can run these, so an answer arrives even if the bot restarted while
the job ran. Each process shares one HTTP client and one Redis client; every reply claims its
idempotency key with SET NX first, so a redelivered or duplicated reply is not sent twice.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from bot import render
from bot.i18n import moment, percent, problem_text, t
from bot.keyboards import feedback_keyboard
from worker import contract, fetch, outbox, serving
from worker.celery_app import app
from worker.settings import get_settings

log = logging.getLogger(__name__)

# "sending" outlasts a send (a Bot API call times out after 30 s) and then expires, so that a
# worker dying mid-send does not swallow the reply; "sent" covers any redelivery.
SENDING_TTL = 45
SENT_TTL = 7 * 24 * 3600
ALBUM_TTL = 3600


class TelegramError(Exception):
    """The Bot API answered `ok: false`."""


class ReplyPending(Exception):
    """Another delivery holds the claim on this reply: retry until it is sent or has expired."""


# Retries 1, 2, 4, 5, 5 ... s apart outlast a claim left by a dead worker (15 retries: 67 s), so
# its redelivered reply is sent once the claim expires instead of being dropped. Countdowns stay
# short: a retry waits unacked in the worker, and must do so for less than the visibility timeout.
RETRY = {"retry_backoff": True, "retry_backoff_max": 5, "retry_jitter": False, "max_retries": 15}
# Ride out a Redis restart (seconds with AOF): a reply sent but not yet marked "sent" would
# otherwise keep a stale claim, and be sent again once it expired.
REDIS_RETRY = {
    "retry": Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=15),
    "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
}


@functools.cache
def _redis(url: str, pid: int) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=10, decode_responses=True, **REDIS_RETRY)


def redis_client() -> redis.Redis:
    """This process's Redis client (the broker's server)."""
    return _redis(get_settings().broker_url(), os.getpid())


def call(method: str, params: dict[str, Any], files: dict[str, Any] | None = None) -> Any:
    """Call a Bot API method with the worker's token; returns its `result`."""
    settings = get_settings()
    if settings.telegram_bot_token is None:
        raise TelegramError("TELEGRAM_BOT_TOKEN is not set on the worker")
    token = settings.telegram_bot_token.get_secret_value()
    url = f"{settings.telegram_api_url.rstrip('/')}/bot{token}/{method}"
    if files:
        # Multipart: nested objects travel as JSON strings, as the Bot API expects.
        form = {k: json.dumps(v) if isinstance(v, dict) else str(v) for k, v in params.items()}
        response = fetch.http_client().post(url, data=form, files=files)
    else:
        response = fetch.http_client().post(url, json=params)
    body = response.json()
    if not body.get("ok"):
        raise TelegramError(f"{method}: {body.get('description')}")
    return body["result"]


@contextlib.contextmanager
def once(key: str) -> Iterator[bool]:
    """Yield True for the first claimant of `key` (False after); a failure releases the claim."""
    client = redis_client()
    name = f"breedbot:reply:{key}"
    if not client.set(name, "sending", nx=True, ex=SENDING_TTL):
        if client.get(name) == "sending":
            raise ReplyPending(key)
        log.info("reply %s already sent; skipping", key)
        yield False
        return
    try:
        yield True
    except BaseException:
        client.delete(name)
        raise
    client.set(name, "sent", ex=SENT_TTL)


def _reply_params(reply_to: contract.ReplyTo) -> dict[str, Any]:
    params: dict[str, Any] = {"chat_id": reply_to.chat_id}
    if reply_to.message_id is not None:
        params["reply_parameters"] = {
            "message_id": reply_to.message_id,
            "allow_sending_without_reply": True,
        }
    return params


def send_text(reply_to: contract.ReplyTo, text: str, **extra: Any) -> Any:
    """Send `text` to the chat, as a reply to the user's message."""
    return call("sendMessage", {**_reply_params(reply_to), "text": text, **extra})


def send_picture(reply_to: contract.ReplyTo, png: bytes, caption: str, **extra: Any) -> Any:
    """Send a PNG with a caption to the chat, as a reply to the user's message."""
    params = {**_reply_params(reply_to), "caption": caption, **extra}
    return call("sendPhoto", params, files={"photo": ("chart.png", png, "image/png")})


def edit_status(reply_to: contract.ReplyTo, text: str) -> None:
    """Replace the text of the job's status message (an unchanged text is not an error)."""
    try:
        call(
            "editMessageText",
            {"chat_id": reply_to.chat_id, "message_id": reply_to.status_message_id, "text": text},
        )
    except TelegramError as error:
        if "not modified" not in str(error):
            raise


def report_progress(reply_to: dict[str, Any] | None, progress: contract.Progress) -> None:
    """Show a retrain's progress in its status message; best effort, never fails the job."""
    if not reply_to or reply_to.get("status_message_id") is None:
        return
    target = contract.ReplyTo.from_dict(reply_to)
    try:
        edit_status(target, render.progress_text(progress, target.language))
    except (TelegramError, httpx.HTTPError, ValueError) as error:
        log.warning("progress edit failed: %s", error)


def _answer_photo(
    result: contract.ClassifyResult, reply_to: contract.ReplyTo, photo_id: str | None, low: float
) -> None:
    text = render.classification_text(result, reply_to.language, low)
    if result.error or result.is_pet is False:
        send_text(reply_to, text)
        return
    markup = feedback_keyboard(photo_id, reply_to.language) if photo_id else None
    if photo_id:
        # The bot reads these when a feedback button is pressed, or a breed typed after ❌.
        names = [[g["label"], g["display_name"]] for g in result.top_k]
        record = {"labels": json.dumps(names), "version": result.model_version}
        redis_client().hset(contract.photo_key(photo_id), mapping=record)
        _remember_labels(result.model_version)
    extra = {"reply_markup": markup} if markup else {}
    send_picture(reply_to, render.top_k_chart(result), text, **extra)


def _remember_labels(version: int) -> None:
    """Keep the served model's [label, display name] pairs in Redis, once per version."""
    served = serving.holder().current()
    if served.version == version:
        pairs = list(zip(served.classifier.labels, served.classifier.display_names, strict=True))
        key = contract.labels_key(version)
        redis_client().set(key, json.dumps(pairs), nx=True, ex=contract.PHOTO_TTL_SECONDS)


def _album_results(
    result: dict[str, Any], reply_to: contract.ReplyTo, album: dict[str, int]
) -> list[contract.ClassifyResult] | None:
    """Store one album part; all parts (in order) once the last one has arrived."""
    client = redis_client()
    name = f"breedbot:album:{reply_to.key}"
    client.hset(name, str(album["index"]), json.dumps(result))
    client.expire(name, ALBUM_TTL)
    parts = client.hgetall(name)
    if len(parts) < album["size"]:
        return None
    return [
        contract.ClassifyResult.from_dict(json.loads(parts[str(i)])) for i in range(album["size"])
    ]


def _models_text(versions: list[dict[str, Any]], language: str) -> str:
    lines = [t(language, "models_header")]
    for item in map(contract.ModelVersion.from_dict, versions):
        accuracy = "–" if item.test_accuracy is None else percent(item.test_accuracy, language)
        created = (
            moment(datetime.fromisoformat(item.created_at), language)
            if item.created_at
            else t(language, "built_in")
        )
        mark = "▶" if item.active else "•"
        lines.append(
            t(
                language,
                "models_item",
                mark=mark,
                version=item.version,
                pct=accuracy,
                created=created,
            )
        )
    return "\n".join(lines)


def _switch_text(result: dict[str, Any], language: str) -> str:
    switch = contract.SwitchResult.from_dict(result)
    if switch.error:
        reason = problem_text(language, switch.problem, switch.params, switch.error)
        return t(language, "job_failed", reason=reason)
    return t(language, "promoted", version=switch.active_version)


def _stats_text(result: dict[str, Any], language: str) -> str:
    stats = contract.Stats.from_dict(result)
    latency = "–" if stats.avg_latency_ms is None else round(stats.avg_latency_ms)
    return t(
        language, "stats", jobs=stats.jobs_today, latency=latency, version=stats.active_version
    )


def _breeds_text(language: str) -> str:
    served = serving.holder().current()
    names = sorted(served.classifier.display_names, key=str.casefold)
    return t(language, "breeds", n=len(names), version=served.version, names=", ".join(names))


def _finish_retrain(result: dict[str, Any], reply_to: contract.ReplyTo) -> None:
    outcome = contract.RetrainResult.from_dict(result)
    text = render.retrain_text(outcome, reply_to.language)
    if reply_to.status_message_id is not None:
        edit_status(reply_to, text)
    else:
        send_text(reply_to, text)
    if outcome.version is None:
        return
    from model import registry  # pure Python; only needed here

    folder = registry.version_dir(get_settings().models_root, outcome.version)
    chart = folder / "confusion_matrix.png" if folder else None
    if chart and chart.is_file():
        caption = t(reply_to.language, "confusion_matrix", version=outcome.version)
        send_picture(reply_to, chart.read_bytes(), caption)


@app.task(
    name=contract.REPLY,
    autoretry_for=(httpx.TransportError, ReplyPending),
    **RETRY,
)
def reply(
    result: Any,
    *,
    reply_to: dict[str, Any],
    kind: str,
    photo_id: str | None = None,
    low_confidence: float = 0.5,
    album: dict[str, int] | None = None,
    outbox_id: str | None = None,
) -> None:
    """Send a finished job's answer to its chat, once per `reply_to["key"]`."""
    _reply(result, contract.ReplyTo.from_dict(reply_to), kind, photo_id, low_confidence, album)
    outbox.done(redis_client(), outbox_id)


def _reply(
    result: Any,
    target: contract.ReplyTo,
    kind: str,
    photo_id: str | None,
    low_confidence: float,
    album: dict[str, int] | None,
) -> None:
    language = target.language
    if kind == "classify" and album:
        results = _album_results(result, target, album)
        if results is None:
            return
        with once(target.key) as first:
            if first:
                send_text(target, render.album_text(results, language, low_confidence))
        return
    with once(target.key) as first:
        if not first:
            return
        if kind == "classify":
            _answer_photo(
                contract.ClassifyResult.from_dict(result), target, photo_id, low_confidence
            )
        elif kind == "retrain":
            _finish_retrain(result, target)
        elif kind == "models":
            send_text(target, _models_text(result, language))
        elif kind == "switch":
            send_text(target, _switch_text(result, language))
        elif kind == "stats":
            send_text(target, _stats_text(result, language))
        elif kind == "breeds":
            send_text(target, _breeds_text(language))
        else:
            raise ValueError(f"unknown reply kind {kind!r}")


@app.task(name=contract.REPLY_FAILED, autoretry_for=(ReplyPending,), **RETRY)
def reply_failed(
    task_id: str,
    *,
    reply_to: dict[str, Any],
    kind: str,
    outbox_id: str | None = None,
    **_: Any,
) -> None:
    """Errback: tell the chat its job failed (once), without internals."""
    _report_failure(task_id, contract.ReplyTo.from_dict(reply_to), kind)
    outbox.done(redis_client(), outbox_id)


def _report_failure(task_id: str, target: contract.ReplyTo, kind: str) -> None:
    failure = app.AsyncResult(task_id).result
    log.error("%s job %s failed: %r", kind, task_id, failure)
    reason = type(failure).__name__ if isinstance(failure, Exception) else "unknown error"
    with once(target.key) as first:
        if not first:
            return
        text = t(target.language, "job_failed", reason=reason)
        if kind == "retrain" and target.status_message_id is not None:
            edit_status(target, text)
        else:
            send_text(target, text)


def _feedback_files(root: Path, photo_id: str) -> list[Path]:
    return [p for p in root.glob(f"*/{photo_id}.*") if p.is_file()]


@app.task(name=contract.FEEDBACK, autoretry_for=(httpx.TransportError,), max_retries=5)
def store_feedback(payload: dict[str, Any]) -> str | None:
    """File the photo under the label its Redis record holds now; the last answer wins."""
    request = contract.FeedbackRequest.from_dict(payload)
    record = redis_client().hgetall(contract.photo_key(request.photo_id))
    if not record:
        return None
    root = get_settings().feedback_root
    label = record.get("label", "")
    if label and (label.startswith(".") or "/" in label or "\\" in label):
        raise ValueError(f"refusing label {label!r} as a folder name")
    data = fetch.download_telegram_file(record["file_id"], contract.MAX_IMAGE_BYTES, get_settings())
    for old in _feedback_files(root, request.photo_id):
        old.unlink()
    if not label:
        return None
    folder = root / label
    folder.mkdir(parents=True, exist_ok=True)
    # Write then rename: a retrain reading the folder never sees half a photo.
    target = folder / f"{request.photo_id}.jpg"
    partial = folder / f".{request.photo_id}.partial"
    partial.write_bytes(data)
    partial.replace(target)
    return str(target)
