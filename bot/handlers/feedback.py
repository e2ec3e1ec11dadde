"""The ✅ / ❌ buttons under an answer: record the user's label; a worker files the photo."""

from __future__ import annotations

import json
import logging

from telegram import InlineKeyboardMarkup, Update

import contract
from bot.context import Context, redis_of
from bot.handlers.common import language_of
from bot.i18n import t
from bot.jobs import publish, task
from bot.keyboards import OTHER, RIGHT, WRONG, breeds_keyboard, feedback_keyboard, parse_feedback

log = logging.getLogger(__name__)


def _valid(choice: str, n_guesses: int) -> bool:
    """A choice the keyboards offer: right, wrong, other, or the index of a later guess."""
    return choice in {RIGHT, WRONG, OTHER} or (choice.isdecimal() and 0 < int(choice) < n_guesses)


async def on_button(update: Update, context: Context) -> None:
    """Handle one feedback button; the latest answer for a photo is the one that counts."""
    query = update.callback_query
    assert query is not None and query.data is not None
    language = language_of(update)
    try:
        photo_id, choice = parse_feedback(query.data)
    except ValueError:
        photo_id, choice = "", ""
    key = contract.photo_key(photo_id)
    redis = redis_of(context)
    stored, chat_id = await redis.hmget(key, "labels", "chat_id") if photo_id else (None, None)
    names: list[list[str]] = json.loads(stored) if stored else []  # [label, display name]
    chat = update.effective_chat
    if not _valid(choice, len(names)) or chat is None or chat_id != str(chat.id):
        # Forged (another chat's photo), malformed or expired: one answer for all, which tells
        # a forger nothing about which photo ids exist.
        log.warning("refused feedback %r from user %s", query.data, query.from_user.id)
        await query.answer(t(language, "feedback_gone"))
        return
    if choice == WRONG:
        markup = breeds_keyboard(photo_id, [display for _, display in names], language)
        await query.edit_message_reply_markup(InlineKeyboardMarkup.de_json(markup, context.bot))
        await query.answer(t(language, "which"))
        return
    if choice == OTHER:
        label, text = "", t(language, "thanks_other")
    else:
        label, display = names[0 if choice == RIGHT else int(choice)]
        text = t(language, "thanks", name=display)
    # The worker reads the label when it runs, so a later answer always wins.
    await redis.hset(key, "label", label)
    await publish(task(context, contract.FEEDBACK, contract.FeedbackRequest(photo_id).to_dict()))
    await query.answer(text)
    if choice != RIGHT:
        markup = feedback_keyboard(photo_id, language)
        await query.edit_message_reply_markup(InlineKeyboardMarkup.de_json(markup, context.bot))
