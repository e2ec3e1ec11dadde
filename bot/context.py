"""What handlers find on the Application: typed `bot_data` with the settings and clients."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from redis.asyncio import Redis
from telegram.ext import CallbackContext, ExtBot

from bot.settings import BotSettings


@dataclass
class BotData:
    """Resources shared by all handlers; the clients are created in `post_init`."""

    settings: BotSettings | None = None
    celery: Celery | None = None
    redis: Redis | None = None
    # Marks the updates this process claimed, so a restarted bot can tell them from its own.
    instance: str = field(default_factory=lambda: secrets.token_hex(8))
    # Webhook updates being handled whose ids were too far ahead to claim (guards.trusted_id).
    untrusted: set[int] = field(default_factory=set)


Context = CallbackContext[ExtBot[None], dict[str, Any], dict[str, Any], BotData]


def settings_of(context: Context) -> BotSettings:
    """The bot's settings (set by `build_app`)."""
    assert context.bot_data.settings is not None
    return context.bot_data.settings


def redis_of(context: Context) -> Redis:
    """The shared asyncio Redis client (set in `post_init`)."""
    assert context.bot_data.redis is not None
    return context.bot_data.redis
