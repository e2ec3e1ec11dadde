"""Queue jobs by name through a broker-only Celery client; the reply sender answers."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from celery import Celery
from celery.canvas import Signature

import contract
from bot import limits
from bot.context import Context, redis_of
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
    between Redis and a killed worker is published again (see `contract.OUTBOX_DUE`).
    """
    outbox_id = secrets.token_hex(8) if kind in contract.OUTBOX_KINDS else None
    reply_kwargs = {"reply_to": reply_to.to_dict(), "kind": kind, "outbox_id": outbox_id, **extra}
    job.link_error(task(context, contract.REPLY_FAILED, **reply_kwargs))
    chain = job | task(context, contract.REPLY, **reply_kwargs)
    async with redis_of(context).pipeline(transaction=True) as pipe:
        # A user who writes has unblocked the bot (if they ever blocked it): answer them again.
        pipe.delete(limits.BLOCKED_KEY.format(reply_to.chat_id))
        if outbox_id is not None:
            entry = contract.OutboxEntry(signature=chain).to_json()
            pipe.hset(contract.OUTBOX_JOBS, outbox_id, entry)
            pipe.zadd(contract.OUTBOX_DUE, {outbox_id: time.time()})
        await pipe.execute()
    await publish(chain)


async def publish(signature: Signature) -> None:
    """Send a signature from a thread: publishing is a short blocking socket write."""
    await asyncio.to_thread(signature.apply_async)
