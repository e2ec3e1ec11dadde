"""The one error handler: log with traceback, tell the developer chat, answer the user briefly."""

from __future__ import annotations

import html
import logging
import traceback

from telegram import Update
from telegram.constants import ParseMode
from telegram.ext import ApplicationHandlerStop

from bot.context import Context, settings_of
from bot.handlers.common import language_of
from bot.i18n import t
from bot.redact import scrub

log = logging.getLogger(__name__)
MAX_TRACE_CHARS = 3500


async def on_error(update: object, context: Context) -> None:
    """Handle any exception raised by a handler."""
    error = context.error
    log.error("error while handling an update", exc_info=error)
    settings = settings_of(context)
    developer_chat = settings.developer_chat_id
    if developer_chat is not None and error is not None:
        trace = "".join(traceback.format_exception(error))
        trace = scrub(trace, settings.telegram_bot_token)[-MAX_TRACE_CHARS:]
        await context.bot.send_message(
            developer_chat, f"<pre>{html.escape(trace)}</pre>", parse_mode=ParseMode.HTML
        )
    if isinstance(update, Update) and update.effective_message is not None:
        # Quoted, so the user sees which message to send again (e.g. while Redis restarts).
        await update.effective_message.reply_text(t(language_of(update), "error"), do_quote=True)
        # One failure, one answer: without this the update goes on to the next handler group
        # (a guard failing on a Redis outage would be followed by the photo handler failing too).
        raise ApplicationHandlerStop
