"""Edge guards run before every handler: drop duplicate updates, throttle floods."""

from __future__ import annotations

import logging
import time
from collections import deque

from telegram import Update
from telegram.ext import ApplicationHandlerStop

from bot.context import Context, redis_of, settings_of
from bot.i18n import pick_language, t

log = logging.getLogger(__name__)
SEEN_TTL = 7 * 24 * 3600


async def drop_duplicates(update: Update, context: Context) -> None:
    """Stop an update whose id was already handled (Telegram may deliver one twice)."""
    key = f"breedbot:update:{context.bot.id}:{update.update_id}"
    if not await redis_of(context).set(key, 1, nx=True, ex=SEEN_TTL):
        log.info("dropping duplicate update %s", update.update_id)
        raise ApplicationHandlerStop


async def rate_limit(update: Update, context: Context) -> None:
    """Stop a user's messages beyond the configured rate, answering politely once per window."""
    if update.effective_message is None or update.callback_query or update.effective_user is None:
        return
    settings = settings_of(context)
    now = time.monotonic()
    assert context.user_data is not None
    recent: deque[float] = context.user_data.setdefault("recent", deque())
    while recent and now - recent[0] > settings.rate_limit_seconds:
        recent.popleft()
    if len(recent) < settings.rate_limit_count:
        recent.append(now)
        context.user_data.pop("warned", None)
        return
    if not context.user_data.get("warned"):
        context.user_data["warned"] = True
        language = pick_language(update.effective_user.language_code)
        await update.effective_message.reply_text(
            t(
                language,
                "rate_limited",
                count=settings.rate_limit_count,
                seconds=round(settings.rate_limit_seconds),
            )
        )
    log.info("rate limited user %s", update.effective_user.id)
    raise ApplicationHandlerStop
