"""Reply tasks: answer each job's chat exactly once, edit retrain progress, fetch feedback photos.

They run in the reply sender (`breedbot replier`, the bot's image), so an answer arrives even if
the PTB front end restarted while the job ran. Each process shares one HTTP client and one Redis
client; every reply claims its idempotency key with SET NX first, so a redelivered or duplicated
reply is not sent twice, then waits its turn under Telegram's send limits (bot/limits.py).

Telegram's refusals are final: a user who blocked the bot (403) or a request Telegram rejects
(400) gets no second try, and the job leaves the outbox, so the photo job is not run again for an
answer that cannot be delivered. A group that became a supergroup (400 with
`migrate_to_chat_id`) is answered in the supergroup.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import redis
from celery import Task

import contract
from bot import botapi, limits, outbox, render
from bot.confusion_chart import confusion_chart
from bot.i18n import moment, percent, problem_text, sentence, t
from bot.keyboards import album_keyboard, feedback_keyboard
from bot.reply_app import app
from broker.redis_client import redis_client as new_redis_client

log = logging.getLogger(__name__)

# "sending" outlasts a send (a Bot API call times out after 30 s) and then expires, so that a
# worker dying mid-send does not swallow the reply; "sent" covers any redelivery.
SENDING_TTL = 45
SENT_TTL = 7 * 24 * 3600
ALBUM_TTL = 3600


class ReplyPending(Exception):
    """Another delivery holds the claim on this reply: retry until it is sent or has expired."""


# Retries 1, 2, 4, 5, 5 ... s apart outlast a claim left by a dead worker (15 retries: 67 s), so
# its redelivered reply is sent once the claim expires instead of being dropped. Countdowns stay
# short: a retry waits unacked in the worker, and must do so for less than the visibility timeout.
RETRY = {"retry_backoff": True, "retry_backoff_max": 5, "retry_jitter": False, "max_retries": 15}
# Ride out a Redis restart or failover (seconds; 15 retries back off over about 20 s): a reply
# sent but not yet marked "sent" would otherwise keep a stale claim, and be sent again later.
REDIS_RETRIES = 15


@functools.cache
def _redis(url: str, pid: int) -> redis.Redis:
    return new_redis_client(url, decode_responses=True, retries=REDIS_RETRIES)


def redis_client() -> redis.Redis:
    """This process's Redis client (the broker's server)."""
    return _redis(botapi.settings().broker_url(), os.getpid())


@contextlib.contextmanager
def once(key: str) -> Iterator[bool]:
    """Yield True for the first claimant of `key` (False after); a failure releases the claim."""
    client = redis_client()
    name = contract.reply_key(key)
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


def _limits() -> limits.Limits:
    settings = botapi.settings()
    return limits.Limits(
        per_chat=settings.reply_rate_per_chat,
        chat_burst=settings.reply_chat_burst,
        overall=settings.reply_rate_overall,
        per_group=settings.reply_group_per_minute / 60,
        group_burst=settings.reply_group_burst,
    )


def _wait_turn(target: contract.ReplyTo) -> None:
    """Wait for this reply's turn under Telegram's limits (`limits.Deferred` when far off)."""
    limits.wait_turn(redis_client(), target.chat_id, target.key, _limits())


@contextlib.contextmanager
def _telegram_answers(
    task: Task, target: contract.ReplyTo, outbox_id: str | None
) -> Iterator[None]:
    """Act on the send limits and on Telegram's error answers to the reply task's sends.

    Deferred by the limits or told to wait (429): run again then. A deferred task waits in the
    broker with a countdown, holding no thread, and keeps its reserved slot; its claim was
    released on the way out of `once()`, so it is sent then. Blocked (403, now or recently):
    dropped, and the chat is left alone for a while. Any other 400: failed once, its reason
    logged. Neither is sent again: both leave the outbox (the caller clears a dropped one).
    """
    try:
        yield
    except limits.Deferred as error:
        raise task.retry(countdown=error.seconds, exc=error) from None
    except botapi.RetryAfter as error:
        log.warning("chat %s: %s", target.chat_id, error)
        limits.hold_chat(redis_client(), target.chat_id, error.seconds)
        raise task.retry(countdown=error.seconds, exc=error) from None
    except (botapi.Forbidden, limits.Blocked) as error:
        log.info("chat %s blocked the bot (%s): reply dropped", target.chat_id, error)
        if isinstance(error, botapi.Forbidden):
            limits.block_chat(redis_client(), target.chat_id)
    except botapi.BadRequest as error:
        log.error("chat %s: Telegram refused the reply, not sent again: %s", target.chat_id, error)
        outbox.done(redis_client(), outbox_id)
        raise


def _following(target: contract.ReplyTo, send: Callable[[contract.ReplyTo], None]) -> None:
    """Send to the chat or, if the group became a supergroup, to the supergroup instead."""
    try:
        send(target)
    except botapi.ChatMigrated as moved:
        log.info("chat %s is now chat %s: replying there", target.chat_id, moved.new_chat_id)
        # The user's message and the status message stay behind in the old chat.
        send(
            dataclasses.replace(
                target, chat_id=moved.new_chat_id, message_id=None, status_message_id=None
            )
        )


@app.task(name=contract.PROGRESS, ignore_result=True)
def progress(reply_to: dict[str, Any], update: dict[str, Any]) -> None:
    """Show a retrain's progress in its status message; best effort, never retried."""
    target = contract.ReplyTo.from_dict(reply_to)
    text = render.progress_text(contract.Progress.from_dict(update), target.language)
    try:
        botapi.edit_status(target, text)
    except (botapi.TelegramError, httpx.HTTPError, ValueError) as error:
        log.warning("progress edit failed: %s", error)


def _answer_photo(
    result: contract.ClassifyResult, reply_to: contract.ReplyTo, photo_id: str | None, low: float
) -> None:
    text = render.classification_text(result, reply_to.language, low)
    if result.error or result.is_pet is False:
        botapi.send_text(reply_to, text)
        return
    markup = feedback_keyboard(photo_id, reply_to.language) if photo_id else None
    if photo_id:
        _record_guesses(result, photo_id)
    extra = {"reply_markup": markup} if markup else {}
    botapi.send_picture(reply_to, render.top_k_chart(result, reply_to.language), text, **extra)


def _correctable(result: contract.ClassifyResult) -> bool:
    """An answer naming a breed, which ✅ / ❌ can confirm or correct."""
    return not result.error and result.is_pet is not False and bool(result.top_k)


def _record_guesses(result: contract.ClassifyResult, photo_id: str) -> None:
    """What the bot reads when a feedback button is pressed, or a breed typed after ❌."""
    names = [[g["label"], g["display_name"]] for g in result.top_k]
    record = {"labels": json.dumps(names), "version": result.model_version}
    redis_client().hset(contract.photo_key(photo_id), mapping=record)


def _album_results(
    result: dict[str, Any], reply_to: contract.ReplyTo, album: dict[str, int], photo_id: str | None
) -> list[tuple[contract.ClassifyResult, str | None]] | None:
    """Store one album part; all parts (in order, with their photo ids) once the last arrived."""
    answer = contract.ClassifyResult.from_dict(result)
    if photo_id and _correctable(answer):
        _record_guesses(answer, photo_id)
    client = redis_client()
    name = f"breedbot:album:{reply_to.key}"
    part = {"result": result, "photo_id": photo_id}
    client.hset(name, str(album["index"]), json.dumps(part))
    client.expire(name, ALBUM_TTL)
    parts = client.hgetall(name)
    if len(parts) < album["size"]:
        return None
    stored = [json.loads(parts[str(i)]) for i in range(album["size"])]
    return [(contract.ClassifyResult.from_dict(p["result"]), p["photo_id"]) for p in stored]


def _models_text(versions: list[dict[str, Any]], language: str) -> str:
    lines = [t(language, "models_header")]
    for item in map(contract.ModelVersion.from_dict, versions):
        accuracy = (
            "–" if item.test_accuracy is None else percent(item.test_accuracy, language, digits=1)
        )
        created = (
            moment(datetime.fromisoformat(item.created_at), language)
            if item.created_at
            else t(language, "built_in")
        )
        mark = "▶" if item.active else "•"
        lines.append(
            t(
                language,
                "models_item_cv" if item.accuracy_source == "cross_validation" else "models_item",
                mark=mark,
                version=item.version,
                pct=accuracy,
                created=created,
            )
        )
        lines += [_host_text(contract.HostStatus.from_dict(host), language) for host in item.hosts]
    return "\n".join(lines)


def _host_text(host: contract.HostStatus, language: str) -> str:
    """One worker host under the version it serves, and why it cannot load the active one."""
    since = moment(datetime.fromisoformat(host.since), language)
    line = t(language, "models_host", host=host.host, engine=host.engine, since=since)
    return line if host.healthy else t(language, "models_host_failing", line=line, why=host.error)


def _switch_text(result: dict[str, Any], language: str) -> str:
    switch = contract.SwitchResult.from_dict(result)
    return t(language, "promoted", version=switch.active_version)


def _stats_text(result: dict[str, Any], language: str) -> str:
    stats = contract.Stats.from_dict(result)
    latency = "–" if stats.avg_latency_ms is None else round(stats.avg_latency_ms)
    return t(
        language, "stats", jobs=stats.jobs_today, latency=latency, version=stats.active_version
    )


def _breeds_text(result: dict[str, Any], language: str) -> str:
    known = contract.Breeds.from_dict(result)
    names = ", ".join(known.names)
    return t(language, "breeds", n=len(known.names), version=known.version, names=names)


def _finish_retrain(result: dict[str, Any], reply_to: contract.ReplyTo) -> None:
    outcome = contract.RetrainResult.from_dict(result)
    text = render.retrain_text(outcome, reply_to.language)
    if reply_to.status_message_id is not None:
        botapi.edit_status(reply_to, text)
    else:
        botapi.send_text(reply_to, text)
    if outcome.confusion_matrix:
        png = confusion_chart(outcome, reply_to.language)
        caption = t(reply_to.language, "confusion_matrix", version=outcome.version)
        botapi.send_picture(reply_to, png, caption)
    if outcome.mistakes_jpeg_b64:
        sheet = contract.decode_bytes(outcome.mistakes_jpeg_b64)
        caption = t(reply_to.language, "mistakes_sheet", version=outcome.version)
        botapi.send_picture(reply_to, sheet, caption, jpeg=True)


def _send_export(result: dict[str, Any], reply_to: contract.ReplyTo) -> None:
    """The export's files as documents (README.txt last, captioned), then any too big to send."""
    export = contract.ExportResult.from_dict(result)
    language = reply_to.language
    names = sorted(export.documents, key=lambda name: name == "README.txt")
    for name in names:
        caption = t(language, "export_sent", version=export.version) if name == names[-1] else None
        botapi.send_document(reply_to, name, contract.decode_bytes(export.documents[name]), caption)
    for name, size in export.too_big.items():
        text = t(language, "export_too_big", name=name, size=size / 1e6, version=export.version)
        botapi.send_text(reply_to, text)


# No result is stored for reply tasks: nothing reads it (a redelivered reply is stopped by its
# key), and storing it cost a Redis round trip per answer.
@app.task(
    bind=True,
    ignore_result=True,
    name=contract.REPLY,
    autoretry_for=(httpx.TransportError, ReplyPending),
    **RETRY,
)
def reply(
    self: Task,
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
    target = contract.ReplyTo.from_dict(reply_to)
    with _telegram_answers(self, target, outbox_id):
        _following(target, lambda to: _reply(result, to, kind, photo_id, low_confidence, album))
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
    if kind == contract.ReplyKind.CLASSIFY and album:
        results = _album_results(result, target, album, photo_id)
        if results is None:
            return
        with once(target.key) as first:
            if first:
                _wait_turn(target)
                text = render.album_text([r for r, _ in results], language, low_confidence)
                # One ✅ / ❌ pair per photo that has a breed answer to correct.
                ids = {i: p for i, (r, p) in enumerate(results, 1) if p and _correctable(r)}
                extra = {"reply_markup": album_keyboard(ids, language)} if ids else {}
                botapi.send_text(target, text, **extra)
        return
    with once(target.key) as first:
        if not first:
            return
        _wait_turn(target)
        if kind == contract.ReplyKind.CLASSIFY:
            _answer_photo(
                contract.ClassifyResult.from_dict(result), target, photo_id, low_confidence
            )
        elif kind == contract.ReplyKind.RETRAIN:
            _finish_retrain(result, target)
        elif kind == contract.ReplyKind.MODELS:
            botapi.send_text(target, _models_text(result, language))
        elif kind == contract.ReplyKind.SWITCH:
            botapi.send_text(target, _switch_text(result, language))
        elif kind == contract.ReplyKind.STATS:
            botapi.send_text(target, _stats_text(result, language))
        elif kind == contract.ReplyKind.BREEDS:
            botapi.send_text(target, _breeds_text(result, language))
        elif kind == contract.ReplyKind.EXPORT:
            _send_export(result, target)
        else:
            raise ValueError(f"unknown reply kind {kind!r}")


@app.task(
    bind=True,
    ignore_result=True,
    name=contract.REPLY_FAILED,
    autoretry_for=(ReplyPending,),
    **RETRY,
)
def reply_failed(
    self: Task,
    task_id: str,
    *,
    reply_to: dict[str, Any],
    kind: str,
    outbox_id: str | None = None,
    **_: Any,
) -> None:
    """Errback: tell the chat its job failed (once), without internals."""
    target = contract.ReplyTo.from_dict(reply_to)
    with _telegram_answers(self, target, outbox_id):
        _following(target, lambda to: _report_failure(task_id, to, kind))
    outbox.done(redis_client(), outbox_id)


def _report_failure(task_id: str, target: contract.ReplyTo, kind: str) -> None:
    failure = app.AsyncResult(task_id).result
    report = contract.gate_report(failure) if isinstance(failure, contract.Refused) else None
    if report is not None and kind == contract.ReplyKind.RETRAIN:
        # Trained, but the gate kept it out: the full report, not a bare failure line.
        with once(target.key) as first:
            if first:
                _wait_turn(target)
                _finish_retrain(report.to_dict(), target)
        return
    if isinstance(failure, contract.Refused):
        # The user's own problem, worded in their language from its code and values.
        reason = problem_text(target.language, failure.problem, failure.params, failure.message)
    else:
        log.error("%s job %s failed: %r", kind, task_id, failure)
        reason = type(failure).__name__ if isinstance(failure, Exception) else "unknown error"
    with once(target.key) as first:
        if not first:
            return
        _wait_turn(target)
        key = "retrain_failed" if kind == contract.ReplyKind.RETRAIN else "job_failed"
        text = sentence(t(target.language, key, reason=reason))
        if kind == contract.ReplyKind.RETRAIN and target.status_message_id is not None:
            botapi.edit_status(target, text)
        else:
            botapi.send_text(target, text)


@app.task(name=contract.FEEDBACK, autoretry_for=(httpx.TransportError,), max_retries=5)
def fetch_feedback(payload: dict[str, Any]) -> None:
    """Download the photo and have a worker file it under the label its record holds now."""
    request = contract.FeedbackRequest.from_dict(payload)
    record = redis_client().hgetall(contract.photo_key(request.photo_id))
    if not record:
        return
    label = record.get("label", "")
    data = botapi.download(record["file_id"], contract.MAX_IMAGE_BYTES) if label else None
    owner = int(record["chat_id"]) if record.get("chat_id") else None
    store = contract.StoreFeedback(
        request.photo_id, label, contract.encode_bytes(data) if data is not None else None, owner
    )
    # A refusal (a full quota) is told to the chat, once per answer.
    target = contract.ReplyTo(owner or 0, language=request.language, key=f"fb:{request.photo_id}")
    refused = app.signature(
        contract.REPLY_FAILED, kwargs={"reply_to": target.to_dict(), "kind": "feedback"}
    )
    app.send_task(contract.STORE_FEEDBACK, args=[store.to_dict()], link_error=refused)
