"""Wire the bot: `build_app(settings)` registers every handler in order; `main()` runs it."""

from __future__ import annotations

import asyncio
import functools
import logging
import sys

from pydantic import ValidationError
from telegram import Update
from telegram.error import InvalidToken
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot.aiohttp_request import AiohttpRequest
from bot.backoff import patiently
from bot.context import BotData
from bot.errors import on_error
from bot.handlers import admin, commands, feedback, guards, photos
from bot.jobs import make_celery
from bot.polling import run
from bot.redact import install as hide_token
from bot.settings import BotSettings
from bot.webhook import receive
from broker.redis_client import async_redis_client

SET_COMMANDS_TRIES = 4
RETRAIN_CAPTION = filters.CaptionRegex(r"^/retrain(@\w+)?(\s|$)")
ZIP = filters.Document.ZIP | filters.Document.FileExtension("zip")


async def _start(application: Application) -> None:
    data: BotData = application.bot_data
    assert data.settings is not None
    url = data.settings.broker_url()
    data.celery = make_celery(url)
    # Retries reconnect pooled connections that a Redis restart closed, instead of failing the
    # first updates after it; while Redis is down they give up within about a second.
    data.redis = async_redis_client(url, sentinel=data.settings, decode_responses=True, retries=4)
    # The command menu is a convenience: after a few failed attempts the bot starts without it.
    for language, code in (("en", None), ("pt-BR", "pt")):
        menu = commands.bot_commands(language)
        set_menu = functools.partial(application.bot.set_my_commands, menu, language_code=code)
        await patiently(f"setMyCommands ({language})", set_menu, SET_COMMANDS_TRIES)


async def _stop(application: Application) -> None:
    data: BotData = application.bot_data
    if data.redis is not None:
        await data.redis.aclose()
    if data.celery is not None:
        data.celery.close()


def build_app(settings: BotSettings) -> Application:
    """The PTB application for these settings, every handler registered in this visible order."""
    if settings.telegram_bot_token is None:
        raise ValueError(
            "TELEGRAM_BOT_TOKEN is not set: get one from @BotFather, "
            "or try the bot without Telegram with `breedbot playground`"
        )
    application = (
        ApplicationBuilder()
        .token(settings.telegram_bot_token.get_secret_value())
        .base_url(settings.base_url)
        .base_file_url(settings.base_file_url)
        # aiohttp instead of PTB's httpx: a third of the CPU per call (bot/aiohttp_request.py).
        .request(AiohttpRequest())
        .get_updates_request(AiohttpRequest(connections=1))
        .context_types(ContextTypes(bot_data=BotData))
        .rate_limiter(AIORateLimiter(max_retries=3))
        .post_init(_start)
        .post_shutdown(_stop)
        .build()
    )
    application.bot_data.settings = settings
    admins = filters.User(user_id=settings.admin_ids)

    # Edge guards, before anything else: duplicates first, then the per-user flood guard.
    application.add_handler(TypeHandler(Update, guards.drop_duplicates), group=-2)
    application.add_handler(TypeHandler(Update, guards.rate_limit), group=-1)

    # Admin commands; everyone else gets a refusal (and the attempt is logged).
    application.add_handler(CommandHandler("retrain", admin.retrain, filters=admins))
    application.add_handler(MessageHandler(RETRAIN_CAPTION & admins, admin.retrain))
    application.add_handler(CommandHandler("models", admin.models, filters=admins))
    application.add_handler(CommandHandler("promote", admin.promote, filters=admins))
    application.add_handler(CommandHandler("rollback", admin.rollback, filters=admins))
    application.add_handler(CommandHandler("stats", admin.stats, filters=admins))
    application.add_handler(CommandHandler("export", admin.export, filters=admins))
    application.add_handler(CommandHandler(admin.ADMIN_COMMANDS, admin.refuse))
    application.add_handler(MessageHandler(RETRAIN_CAPTION, admin.refuse))

    # Everyone.
    application.add_handler(CommandHandler("start", commands.start))
    application.add_handler(CommandHandler("help", commands.help_command))
    application.add_handler(CommandHandler("breeds", commands.breeds))
    application.add_handler(MessageHandler(filters.PHOTO | filters.Document.IMAGE, photos.on_image))
    application.add_handler(MessageHandler(ZIP, admin.zip_alone))
    application.add_handler(MessageHandler(filters.Document.ALL, photos.not_an_image))
    application.add_handler(CallbackQueryHandler(feedback.on_button, pattern=r"^fb:"))
    # Last: anything else gets a pointer to /help rather than silence.
    application.add_handler(MessageHandler(filters.COMMAND, commands.unknown_command))
    application.add_handler(MessageHandler(filters.TEXT, feedback.on_text))
    # After whichever handler answered: a photo, a file or a command ends a wait for a typed breed.
    moves_on = filters.PHOTO | filters.Document.ALL | filters.COMMAND
    application.add_handler(MessageHandler(moves_on, feedback.stop_typing), group=1)

    application.add_error_handler(on_error)
    return application


def main() -> None:
    """Run the bot: long polling, or a webhook with WEBHOOK_URL (each update confirmed to
    Telegram once handled, either way)."""
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s", level=logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    log = logging.getLogger(__name__)
    try:
        settings = BotSettings()
    except ValidationError as error:
        # A bad deploy stops here, in words (e.g. WEBHOOK_URL without WEBHOOK_SECRET); the
        # values are left out, as they may hold a password (REDIS_URL).
        problems = error.errors(include_url=False, include_input=False)
        log.error("bad settings: %s", "; ".join(str(p["msg"]) for p in problems))
        sys.exit(2)
    for secret in (settings.telegram_bot_token, settings.webhook_secret):
        hide_token(secret, logging.getLogger().handlers)
    application = build_app(settings)
    try:
        asyncio.run(run(application, receive) if settings.webhook_url else run(application))
    except InvalidToken:
        log.error("Telegram refused TELEGRAM_BOT_TOKEN: check it with @BotFather (/mybots)")
        sys.exit(1)


if __name__ == "__main__":
    main()
