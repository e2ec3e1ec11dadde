"""Calls to Telegram that must outlast a network blip: retried with growing waits, logged in words.

A Bot API server that answers 5xx for a moment, a proxy restarting, a rate limit: none of these
may stop the bot. A refused token or a malformed request is no blip, and is raised at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from telegram.error import BadRequest, Conflict, NetworkError, RetryAfter, TelegramError

log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_DELAY = 1.0  # seconds before the first retry; doubled each time
MAX_DELAY = 30.0


def delays() -> Iterator[float]:
    """Waits between attempts: 1, 2, 4 ... seconds, never more than MAX_DELAY."""
    delay = FIRST_DELAY
    while True:
        yield delay
        delay = min(2 * delay, MAX_DELAY)


def transient(error: BaseException) -> bool:
    """True for failures worth waiting out: the network, 5xx answers, rate limits, a conflict."""
    if isinstance(error, BadRequest):  # a NetworkError subclass, but the request itself is wrong
        return False
    return isinstance(error, NetworkError | RetryAfter | Conflict)


def wait_after(error: TelegramError, delay: float) -> float:
    """How long to wait after `error`: what a rate limit asks for, else the next backoff step."""
    if isinstance(error, RetryAfter):
        return max(error.retry_after.total_seconds(), delay)
    return delay


async def patiently(
    what: str, call: Callable[[], Awaitable[T]], attempts: int | None = None
) -> T | None:
    """`call()`, retried after transient failures until it succeeds (or `attempts` are used up:
    then a warning and None). Other errors are raised at once."""
    waits = delays()
    attempt = 1
    while True:
        try:
            result = await call()
        except TelegramError as error:
            if not transient(error):
                raise
            if attempts is not None and attempt >= attempts:
                log.warning(
                    "Telegram did not answer %s after %d attempts (%s); going on without it",
                    what,
                    attempt,
                    error,
                )
                return None
            delay = wait_after(error, next(waits))
            log.warning(
                "Telegram did not answer %s (%s); trying again in %.0f s (attempt %d)",
                what,
                error,
                delay,
                attempt + 1,
            )
            await asyncio.sleep(delay)
            attempt += 1
            continue
        if attempt > 1:
            log.info("Telegram answered %s at attempt %d", what, attempt)
        return result
