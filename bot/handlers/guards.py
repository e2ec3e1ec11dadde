"""Edge guards run before every handler: drop duplicate updates, throttle floods."""

from __future__ import annotations

import logging
import time
from collections import deque

from redis.exceptions import RedisError
from telegram import Update
from telegram.ext import Application, ApplicationHandlerStop

from bot.context import Context, redis_of, settings_of
from bot.i18n import pick_language, t

log = logging.getLogger(__name__)
SEEN_TTL = 7 * 24 * 3600
HANDLED = "done"
# Telegram numbers a bot's updates one after another (randomly again only after a week without
# any, when the last-seen mark has expired too). A webhook update further ahead than this is not
# trusted to claim its id for a week: a forged one would drop the real update with that id.
UPDATE_ID_WINDOW = 100_000
# Moves the last-seen id up (never down) unless `id` is too far ahead of it; 1 when trusted.
_TRUST = """
local last = tonumber(redis.call('GET', KEYS[1]))
local id = tonumber(ARGV[1])
if last and id > last + tonumber(ARGV[2]) then return 0 end
if last == nil or id > last then last = id end
redis.call('SET', KEYS[1], last, 'EX', ARGV[3])
return 1
"""


def _seen_key(bot_id: int, update_id: int) -> str:
    return f"breedbot:update:{bot_id}:{update_id}"


async def trusted_id(application: Application, update_id: int) -> bool:
    """Whether a webhook update's id is near the last one seen (and note it); an untrusted one
    is handled but claims nothing, so it cannot stand in for a real update to come."""
    redis = application.bot_data.redis
    last = f"breedbot:update:{application.bot.id}:last"
    try:
        if await redis.eval(_TRUST, 1, last, update_id, UPDATE_ID_WINDOW, SEEN_TTL):
            return True
    except RedisError as error:
        # Handled as in polling: the duplicate guard fails too, and the user is asked to send
        # the message again (bot/errors.py).
        log.warning("could not check update id %s: %s", update_id, error)
        return True
    log.warning("update id %s is far ahead of the last one seen: not claimed", update_id)
    application.bot_data.untrusted.add(update_id)
    return False


async def drop_duplicates(update: Update, context: Context) -> None:
    """Stop an update that was handled already, or is being handled by this process.

    An update claimed by another bot process but never marked handled was cut short by that
    process's death (only one process polls a token): it is handled again.
    """
    if update.update_id in context.bot_data.untrusted:
        return
    redis = redis_of(context)
    key = _seen_key(context.bot.id, update.update_id)
    instance = context.bot_data.instance
    if await redis.set(key, instance, nx=True, ex=SEEN_TTL):
        return
    owner = await redis.get(key)
    if owner in (HANDLED, instance):
        log.info("dropping duplicate update %s", update.update_id)
        raise ApplicationHandlerStop
    log.info("update %s was cut short by a previous bot process; handling it", update.update_id)
    await redis.set(key, instance, ex=SEEN_TTL)


async def mark_handled(application: Application, updates: list[Update]) -> None:
    """Record that these updates were handled, so a redelivery after a restart is dropped."""
    redis = application.bot_data.redis
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for update in updates:
                pipe.set(_seen_key(application.bot.id, update.update_id), HANDLED, ex=SEEN_TTL)
            await pipe.execute()
    except RedisError as error:
        # Best effort: within this process the claims already stop duplicates.
        log.warning("could not mark %d updates handled: %s", len(updates), error)


async def rate_limit(update: Update, context: Context) -> None:
    """Stop a user's messages and button presses beyond the configured rate, answering politely
    once per window (a press cost Redis lookups and an edit, so presses count too)."""
    query = update.callback_query
    if (update.effective_message is None and query is None) or update.effective_user is None:
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
        text = t(
            language,
            "rate_limited",
            count=settings.rate_limit_count,
            seconds=round(settings.rate_limit_seconds),
        )
        if query is not None:
            await query.answer(text, show_alert=True)
        else:
            assert update.effective_message is not None
            await update.effective_message.reply_text(text)
    log.info("rate limited user %s", update.effective_user.id)
    raise ApplicationHandlerStop
