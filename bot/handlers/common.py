"""Small helpers shared by the handler families."""

from __future__ import annotations

from telegram import Message, Update

import contract
from bot.i18n import pick_language


def language_of(update: Update) -> str:
    """The reply language for the user behind `update`."""
    user = update.effective_user
    return pick_language(user.language_code if user else None)


def reply_to(
    message: Message, language: str, kind: str, status_message_id: int | None = None
) -> contract.ReplyTo:
    """Where a job's answer goes, keyed by kind, chat and message so it is sent once."""
    return contract.ReplyTo(
        chat_id=message.chat_id,
        message_id=message.message_id,
        user_id=message.from_user.id if message.from_user else None,
        language=language,
        status_message_id=status_message_id,
        key=f"{kind}:{message.chat_id}:{message.message_id}",
    )
