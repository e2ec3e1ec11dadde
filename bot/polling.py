"""Long polling that confirms an update to Telegram only after the bot has handled it.

PTB's Updater asks for the next batch, which confirms the last one to Telegram, while that batch
still waits in the application's queue: a bot killed then loses those updates (the reliability
suite lost 28 of 50 photos that way). Here the offset moves past a batch only once every update in
it has been handled, so a restarted bot is sent the rest again; `guards.drop_duplicates` skips the
ones that were finished, and the worker's reply key keeps any re-queued job to one answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable

from telegram import Update
from telegram.error import InvalidToken, TelegramError
from telegram.ext import Application

from bot import backoff
from bot.handlers import guards

log = logging.getLogger(__name__)
POLL_TIMEOUT = 10  # seconds Telegram holds a getUpdates call open when there is nothing new
# An empty answer that came back well before `timeout` means the server (a proxy, a local Bot API
# server) does not hold the call open: wait this long before the next one, instead of spinning.
EARLY_EMPTY_WAIT = 1.0


async def poll(application: Application, timeout: int = POLL_TIMEOUT) -> None:
    """Fetch, handle and only then confirm batches of updates, until cancelled."""
    offset = 0
    waits = backoff.delays()
    this = asyncio.current_task()
    assert this is not None
    while True:
        # Python 3.11's asyncio.wait_for (redis-py sends with it) drops a cancel that lands just
        # as its call completes; the request stays counted on the task, so Ctrl-C still ends here.
        if this.cancelling():
            raise asyncio.CancelledError
        asked = time.monotonic()
        try:
            updates = await application.bot.get_updates(
                offset=offset, timeout=timeout, allowed_updates=Update.ALL_TYPES
            )
        except InvalidToken:
            raise
        except TelegramError as error:  # the network, a 5xx, a rate limit, another poller
            delay = backoff.wait_after(error, next(waits))
            log.warning("getUpdates failed (%s); trying again in %.0f s", error, delay)
            await asyncio.sleep(delay)
            continue
        waits = backoff.delays()
        if not updates:
            if time.monotonic() - asked < timeout / 2:
                await asyncio.sleep(EARLY_EMPTY_WAIT)
            continue
        await handle_batch(application, updates)
        await guards.mark_handled(application, updates)
        offset = updates[-1].update_id + 1


async def handle_batch(application: Application, updates: tuple[Update, ...]) -> None:
    """Handle a batch: each chat's updates in order, different chats concurrently."""
    await asyncio.gather(*(_in_order(application, chat) for chat in _by_chat(updates)))


def _by_chat(updates: tuple[Update, ...]) -> list[list[Update]]:
    """Group a batch by chat, keeping Telegram's order within each chat."""
    chats: dict[object, list[Update]] = {}
    for update in updates:
        chat = update.effective_chat
        key = ("chat", chat.id) if chat else ("update", update.update_id)
        chats.setdefault(key, []).append(update)
    return list(chats.values())


async def _in_order(application: Application, updates: list[Update]) -> None:
    # One after another, so a chat's "/start" then "/help" are answered in that order.
    for update in updates:
        await application.process_update(update)


async def _long_poll(application: Application) -> None:
    # Telegram refuses getUpdates while a webhook is set (a previous webhook deployment).
    await backoff.patiently("deleteWebhook", application.bot.delete_webhook)
    await poll(application)


Receive = Callable[[Application], Awaitable[None]]


async def run(application: Application, receive: Receive = _long_poll) -> None:
    """Start the application, receive updates (long polling, or `receive`) until SIGINT or
    SIGTERM, then stop and shut down cleanly."""
    loop = asyncio.get_running_loop()
    polling = asyncio.current_task()
    assert polling is not None
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, polling.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await _serve(application, receive)


async def _serve(application: Application, receive: Receive) -> None:
    # getMe (inside initialize) and deleteWebhook are retried: a blip at start must not stop us.
    await backoff.patiently("getMe", application.bot.initialize)
    async with application:  # initialize() (done above) ... shutdown()
        # run_polling would call these two hooks; this loop replaces it, so it calls them.
        if application.post_init:
            await application.post_init(application)
        await application.start()
        try:
            await receive(application)
        finally:
            await application.stop()
            if application.post_shutdown:
                await application.post_shutdown(application)
