"""The reply sender's Celery app: consumes the `reply` queue in the bot's image (no TensorFlow).

It is the only Celery process holding the Telegram token. A worker's job chains into a reply
task here, so an accepted photo is answered once even if the PTB front end restarted meanwhile.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals

from bot import botapi, redact
from broker.config import consumer_config

TASK_MODULES = ["bot.replies"]


def create_app() -> Celery:
    """The reply sender's app, configured from the environment on first use."""
    app = Celery("breedbot-replier", include=TASK_MODULES)
    app.add_defaults(
        lambda: consumer_config(botapi.settings(), botapi.settings().replier_concurrency)
    )
    return app


app = create_app()


@signals.after_setup_logger.connect
def _quiet_http_client(logger: logging.Logger, **_: Any) -> None:
    # httpx logs every request URL at INFO, and Bot API URLs carry the bot token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    redact.install(botapi.settings().telegram_bot_token, logger.handlers)


@signals.after_setup_task_logger.connect
def _hide_token_in_tasks(logger: logging.Logger, **_: Any) -> None:
    redact.install(botapi.settings().telegram_bot_token, logger.handlers)


@signals.worker_ready.connect
def _start_outbox_sweeper(**_: Any) -> None:
    from bot import outbox, replies

    settings = botapi.settings()
    outbox.start_sweeper(
        replies.redis_client(),
        lambda signature: app.signature(signature).apply_async(),
        settings.outbox_rescue_seconds,
        settings.outbox_max_attempts,
    )
