"""/start, /help and /breeds, plus the command list registered with Telegram."""

from __future__ import annotations

from telegram import BotCommand, Update

import contract
from bot.context import Context, settings_of
from bot.handlers.common import language_of, reply_to
from bot.i18n import t
from bot.jobs import submit, task

PUBLIC_COMMANDS = ("start", "help", "breeds")


def bot_commands(language: str) -> list[BotCommand]:
    """The public commands with their descriptions in `language`, for `set_my_commands`."""
    return [BotCommand(name, t(language, f"cmd_{name}")) for name in PUBLIC_COMMANDS]


async def start(update: Update, context: Context) -> None:
    """Greet the user."""
    assert update.effective_message is not None and update.effective_user is not None
    name = update.effective_user.first_name
    await update.effective_message.reply_text(t(language_of(update), "start", name=name))


async def help_command(update: Update, context: Context) -> None:
    """How to use the bot; admins also see their commands."""
    assert update.effective_message is not None and update.effective_user is not None
    language = language_of(update)
    text = t(language, "help")
    if update.effective_user.id in settings_of(context).admin_ids:
        text += t(language, "help_admin")
    await update.effective_message.reply_text(text)


async def breeds(update: Update, context: Context) -> None:
    """The breeds the active model knows: a worker (which holds the model) names them."""
    message = update.effective_message
    assert message is not None
    target = reply_to(message, language_of(update), "breeds")
    await submit(context, task(context, contract.BREEDS), target, contract.ReplyKind.BREEDS)


async def hint(update: Update, context: Context) -> None:
    """Plain text: a short pointer to photos and /help, instead of silence."""
    assert update.effective_message is not None
    await update.effective_message.reply_text(t(language_of(update), "hint"))


async def unknown_command(update: Update, context: Context) -> None:
    """A command nobody handles: name it and point to /help."""
    message = update.effective_message
    assert message is not None and message.text is not None
    command = message.text.split(maxsplit=1)[0].split("@", 1)[0]
    await message.reply_text(t(language_of(update), "unknown_command", command=command))
