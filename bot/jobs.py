"""Queue jobs by name through a broker-only Celery client; workers send the answers."""

from __future__ import annotations

import asyncio
from typing import Any

from celery import Celery
from celery.canvas import Signature

from bot.context import Context
from worker import contract


def make_celery(broker_url: str) -> Celery:
    """A Celery client that only publishes: JSON, routes by task name, no result backend.

    No backend on purpose: the bot never reads results (workers send the replies), and a Redis
    backend would subscribe to every task's result channel from the event loop's threads.
    """
    return Celery(
        "breedbot-bot",
        broker=broker_url,
        set_as_current=False,
        config_source={
            "task_serializer": "json",
            "accept_content": ["json"],
            "result_serializer": "json",
            "task_routes": {name: {"queue": q} for name, q in contract.TASK_QUEUES.items()},
            "broker_connection_retry_on_startup": True,
        },
    )


def task(context: Context, name: str, *args: Any, **kwargs: Any) -> Signature:
    """A signature of task `name` (by name, never imported)."""
    assert context.bot_data.celery is not None
    return context.bot_data.celery.signature(name, args=list(args), kwargs=kwargs)


async def submit(
    context: Context, job: Signature, reply_to: contract.ReplyTo, kind: str, **extra: Any
) -> None:
    """Queue `job | reply`, so a worker answers the chat even if this bot restarts meanwhile."""
    reply_kwargs = {"reply_to": reply_to.to_dict(), "kind": kind, **extra}
    job.link_error(task(context, contract.REPLY_FAILED, **reply_kwargs))
    await publish(job | task(context, contract.REPLY, **reply_kwargs))


async def publish(signature: Signature) -> None:
    """Send a signature from a thread: publishing is a short blocking socket write."""
    await asyncio.to_thread(signature.apply_async)
