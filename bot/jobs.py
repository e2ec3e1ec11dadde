"""Queue jobs by name through a broker-only Celery client; the reply sender answers."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from typing import Any

from celery import Celery
from celery.canvas import Signature

import contract
from bot import limits
from bot.context import Context, redis_of, settings_of
from broker.config import client_config


def make_celery(broker_url: str) -> Celery:
    """A Celery client that only publishes: JSON, routes by task name, no result backend.

    No backend on purpose: the bot never reads results (reply tasks send the answers), and a
    Redis backend would subscribe to every task's result channel from the event loop's threads.
    """
    return Celery("breedbot-bot", set_as_current=False, config_source=client_config(broker_url))


def task(context: Context, name: str, *args: Any, **kwargs: Any) -> Signature:
    """A signature of task `name` (by name, never imported)."""
    assert context.bot_data.celery is not None
    return context.bot_data.celery.signature(name, args=list(args), kwargs=kwargs)


async def submit(
    context: Context,
    job: Signature,
    reply_to: contract.ReplyTo,
    kind: contract.ReplyKind,
    **extra: Any,
) -> None:
    """Queue `job | reply`, so the chat is answered even if this bot restarts meanwhile.

    Idempotent kinds (classify) are also written to the outbox first, so that a message lost
    between Redis and a killed worker is published again (see `contract.OUTBOX_DUE`). Their
    photo is kept once, under its own key: inline, the queue and the outbox each held a copy
    (53 MiB of Redis for one 20 MB document).
    """
    outbox_id = secrets.token_hex(8) if kind in contract.OUTBOX_KINDS else None
    photo = _keep_bytes_apart(job, outbox_id) if outbox_id is not None else None
    reply_kwargs = {"reply_to": reply_to.to_dict(), "kind": kind, "outbox_id": outbox_id, **extra}
    job.link_error(task(context, contract.REPLY_FAILED, **reply_kwargs))
    chain = job | task(context, contract.REPLY, **reply_kwargs)
    async with redis_of(context).pipeline(transaction=True) as pipe:
        # A user who writes has unblocked the bot (if they ever blocked it): answer them again.
        pipe.delete(limits.BLOCKED_KEY.format(reply_to.chat_id))
        if outbox_id is not None:
            entry = contract.OutboxEntry(signature=chain).to_json()
            if photo is not None:
                key = contract.upload_key(outbox_id)
                pipe.set(key, photo, ex=contract.UPLOAD_TTL_SECONDS)
            pipe.hset(contract.OUTBOX_JOBS, outbox_id, entry)
            pipe.zadd(contract.OUTBOX_DUE, {outbox_id: time.time()})
        await pipe.execute()
    await publish(chain)


def _keep_bytes_apart(job: Signature, outbox_id: str) -> bytes | None:
    """Swap a classify request's inline bytes for the key they will be kept under; the bytes."""
    request = contract.ClassifyRequest.from_dict(job.args[0])
    if request.image_b64 is None:
        return None
    keyed = dataclasses.replace(request, image_b64=None, image_key=contract.upload_key(outbox_id))
    job.args = (keyed.to_dict(), *job.args[1:])
    return contract.decode_bytes(request.image_b64)


async def queue_full(context: Context) -> bool:
    """True when more photos wait in the infer queue than the bot's setting allows."""
    depth = await redis_of(context).llen(contract.QUEUE_INFER)
    return depth >= settings_of(context).max_infer_queue


async def publish(signature: Signature) -> None:
    """Send a signature from a thread: publishing is a short blocking socket write."""
    await asyncio.to_thread(signature.apply_async)
