"""The ✅ / ❌ buttons under an answer, and a typed breed after ❌: record the user's label once;
a worker files the photo under it."""

from __future__ import annotations

import difflib
import json
import logging
import time

from telegram import InlineKeyboardMarkup, Update
from telegram.constants import ChatType

import contract
from bot.context import Context, redis_of
from bot.handlers import commands
from bot.handlers.common import language_of
from bot.i18n import t
from bot.jobs import publish, task
from bot.keyboards import (
    OTHER,
    RIGHT,
    SKIP,
    WRONG,
    breeds_keyboard,
    parse_feedback,
    without_photo,
)

log = logging.getLogger(__name__)
# user_data: (chat id, photo_id, answer message id, since, the answer's other rows) waiting for
# this user's typed breed (the other rows: an album's other photos, kept when this one is done).
# Per user, not per chat: in a group, another member's text is not taken as this photo's breed.
# It ends with the answer, the user's next photo, file or command, or after TYPING_SECONDS.
TYPING = "typing_breed"
TYPING_SECONDS = 300
MATCH_CUTOFF = 0.75  # difflib ratio a typed name needs to count as a breed
ECHO_CHARS = 64  # of an unknown typed breed quoted back (a 4,096-character one would not fit)


def folder_label(label: str) -> str:
    """The one folder name of a class, whichever model named it: the zero-shot model's ImageNet
    names have spaces ("Egyptian Mau"), a retrained model's labels are folder names
    ("Egyptian_Mau"); both are filed as the latter, so a feedback retrain sees one class."""
    return "_".join(label.split())


def _valid(choice: str, n_guesses: int) -> bool:
    """A choice the keyboards offer: right, wrong, other, skip, or the index of a later guess."""
    fixed = {RIGHT, WRONG, OTHER, SKIP}
    return choice in fixed or (choice.isdecimal() and 0 < int(choice) < n_guesses)


async def on_button(update: Update, context: Context) -> None:
    """Handle one feedback button; a photo takes one answer, then its keyboard goes away."""
    query = update.callback_query
    assert query is not None and query.data is not None and context.user_data is not None
    language = language_of(update)
    try:
        photo_id, choice = parse_feedback(query.data)
    except ValueError:
        photo_id, choice = "", ""
    key = contract.photo_key(photo_id)
    redis = redis_of(context)
    stored, chat_id, answered, sender = (
        await redis.hmget(key, "labels", "chat_id", "label", "user_id")
        if photo_id
        else (None, None, None, None)
    )
    names: list[list[str]] = json.loads(stored) if stored else []  # [label, display name]
    chat = update.effective_chat
    if not _valid(choice, len(names)) or chat is None or chat_id != str(chat.id):
        # Forged (another chat's photo), malformed or expired: one answer for all, which tells
        # a forger nothing about which photo ids exist.
        log.warning("refused feedback %r from user %s", query.data, query.from_user.id)
        await query.answer(t(language, "feedback_gone"))
        return
    if chat.type != ChatType.PRIVATE and sender not in (None, str(query.from_user.id)):
        # In a group, the photo's answer is its sender's to correct, nobody else's.
        await query.answer(t(language, "feedback_not_yours"))
        return
    if answered is not None:  # a keyboard still shown elsewhere, or a replayed press
        await query.answer(t(language, "feedback_done"))
        return
    assert query.message is not None
    shown = query.message.reply_markup
    rest = without_photo(shown.to_dict() if shown else None, photo_id)
    waiting = (chat.id, photo_id, query.message.message_id, time.time(), rest)
    if choice == WRONG:
        markup = breeds_keyboard(photo_id, [display for _, display in names], language)
        markup["inline_keyboard"] += rest  # an album's other photos keep their buttons
        await query.edit_message_reply_markup(InlineKeyboardMarkup.de_json(markup, context.bot))
        context.user_data[TYPING] = waiting
        await query.answer(t(language, "which"))
        return
    if choice == OTHER:  # a breed not among the buttons: its name is typed next
        context.user_data[TYPING] = waiting
        await query.answer(t(language, "type_breed"))
        return
    if choice == SKIP:
        label, text = "", t(language, "thanks_other")
    else:
        label, display = names[0 if choice == RIGHT else int(choice)]
        text = t(language, "thanks", name=display)
    await _file(context, photo_id, label, language)
    context.user_data.pop(TYPING, None)
    await query.answer(text)
    await query.edit_message_reply_markup(_remaining(rest, context))  # one photo, one answer


def _remaining(rest: list[list[dict]], context: Context) -> InlineKeyboardMarkup | None:
    """The keyboard once a photo has its answer: its album's other photos' rows, or none."""
    return InlineKeyboardMarkup.de_json({"inline_keyboard": rest}, context.bot) if rest else None


async def stop_typing(update: Update, context: Context) -> None:
    """The user moved on (a photo, a file, a command): their next text is not a breed name."""
    if context.user_data is not None:
        context.user_data.pop(TYPING, None)


async def _file(context: Context, photo_id: str, label: str, language: str) -> None:
    """Record the answer and let a worker file the photo ("" files it nowhere)."""
    await redis_of(context).hset(contract.photo_key(photo_id), "label", folder_label(label))
    request = contract.FeedbackRequest(photo_id, language)
    await publish(task(context, contract.FEEDBACK, request.to_dict()))


def match_breed(typed: str, known: list[list[str]]) -> list[str] | None:
    """The [label, display name] a typed breed names: exact (any case, spaces or underscores),
    else the closest by difflib; None when nothing is close enough."""
    wanted = " ".join(typed.replace("_", " ").split()).casefold()
    by_name: dict[str, list[str]] = {}
    for pair in known:
        for name in pair:
            by_name.setdefault(" ".join(name.replace("_", " ").split()).casefold(), pair)
    if wanted in by_name:
        return by_name[wanted]
    close = difflib.get_close_matches(wanted, list(by_name), n=1, cutoff=MATCH_CUTOFF)
    return by_name[close[0]] if close else None


async def on_text(update: Update, context: Context) -> None:
    """Text after ❌: the breed, matched against the model's labels; any other text: a hint."""
    message = update.effective_message
    assert message is not None and message.text is not None and context.user_data is not None
    pending = context.user_data.get(TYPING)
    stale = pending is not None and time.time() - pending[3] > TYPING_SECONDS
    if pending is None or pending[0] != message.chat_id or stale:
        context.user_data.pop(TYPING, None)
        await commands.hint(update, context)
        return
    _, photo_id, answer_id, _, rest = pending
    language = language_of(update)
    redis = redis_of(context)
    version, answered = await redis.hmget(contract.photo_key(photo_id), "version", "label")
    stored = await redis.get(contract.labels_key(int(version))) if version else None
    if answered is not None or stored is None:
        context.user_data.pop(TYPING, None)
        await commands.hint(update, context)
        return
    found = match_breed(message.text, json.loads(stored))
    if found is None:
        typed = message.text.strip()
        if len(typed) > ECHO_CHARS:
            typed = typed[: ECHO_CHARS - 1] + "…"
        await message.reply_text(t(language, "breed_unknown", typed=typed))
        return
    label, display = found
    await _file(context, photo_id, label, language)
    context.user_data.pop(TYPING, None)
    await message.reply_text(t(language, "thanks", name=display))
    await context.bot.edit_message_reply_markup(
        message.chat_id, answer_id, reply_markup=_remaining(rest, context)
    )
