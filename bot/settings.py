"""The bot's settings (the PTB front end and its reply sender): one validated object built from
the environment (and `.env`)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from broker.settings import BrokerSettings


class BotSettings(BrokerSettings):
    """Everything the bot and the reply sender read from the environment."""

    # No usable default: without a token, run the playground instead.
    telegram_bot_token: SecretStr | None = None
    # API root: methods live at `<root>/bot<token>/<method>`, files at `<root>/file/bot<token>/`.
    telegram_api_url: str = "https://api.telegram.org"

    admin_ids: Annotated[frozenset[int], NoDecode] = frozenset()
    developer_chat_id: int | None = None

    # Per-user flood guard: at most `rate_limit_count` messages per `rate_limit_seconds`.
    rate_limit_count: int = Field(default=20, ge=1)
    rate_limit_seconds: float = Field(default=60.0, gt=0)
    # Below this top-1 probability the reply says "not sure".
    low_confidence: float = Field(default=0.5, ge=0, le=1)
    # How long the bot waits for the rest of an album after its first photo.
    album_wait_seconds: float = Field(default=1.0, gt=0, le=10)
    top_k: int = Field(default=5, ge=3, le=10)

    # The reply sender: threads sending answers to Telegram at once.
    replier_concurrency: int = Field(default=16, ge=1, le=256)
    # Telegram's limits, kept by every reply sender together (bot/limits.py): messages a second
    # to one chat (after a short burst) and overall.
    reply_rate_per_chat: float = Field(default=1.0, gt=0)
    reply_chat_burst: int = Field(default=3, ge=1)
    reply_rate_overall: float = Field(default=30.0, gt=0)
    # Groups (negative chat ids): Telegram allows about 20 messages a minute to one group.
    reply_group_per_minute: float = Field(default=20.0, gt=0)
    reply_group_burst: int = Field(default=3, ge=1)
    # A classify job unanswered this long is published again (bot/outbox.py), at most
    # OUTBOX_MAX_ATTEMPTS times: it rescues messages lost with a killed worker, and answers the
    # jobs of a killed worker long before the (retrain-sized) visibility timeout would.
    outbox_rescue_seconds: float = Field(default=60, gt=0)
    outbox_max_attempts: int = Field(default=3, ge=0)
    # New photos are refused (politely) while this many jobs wait in the infer queue: nothing
    # else caps the backlog Redis holds (about 15 s of a worker's 32 photos a second).
    max_infer_queue: int = Field(default=500, ge=1)

    # Webhook mode (deployments); unset = long polling. The bot listens on loopback: a reverse
    # proxy (TLS) in front of it is the deployment; WEBHOOK_LISTEN=0.0.0.0 opens it wider.
    webhook_url: str | None = None
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = Field(default=8443, ge=1, le=65535)
    # Required with WEBHOOK_URL: Telegram sends it in a header, so a POST without it is forged.
    # Telegram's rule: 1-256 characters of A-Z, a-z, 0-9, _ and -.
    webhook_secret: SecretStr | None = None
    # Telegram's max_connections: how many updates it sends to the bot at once.
    webhook_connections: int = Field(default=40, ge=1, le=100)

    # `breedbot playground` (and `make up` without a token) serves the emulator and page here.
    playground_port: int = Field(default=8081, ge=0, le=65535)

    @field_validator("admin_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        # "1, 2 3" as well as a JSON-ish list, so `.env` files stay readable.
        if isinstance(value, str):
            return frozenset(int(part) for part in value.replace(",", " ").split())
        return value

    @model_validator(mode="after")
    def _webhook_signed(self) -> BotSettings:
        # Without the secret anyone who can reach the port could post an admin's commands.
        if self.webhook_url and self.webhook_secret is None:
            raise ValueError(
                "WEBHOOK_URL is set but WEBHOOK_SECRET is not: set WEBHOOK_SECRET to 1-256 "
                "characters of A-Z, a-z, 0-9, _ and - (e.g. `openssl rand -hex 32`)"
            )
        secret = self.webhook_secret.get_secret_value() if self.webhook_secret else ""
        if self.webhook_secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
            raise ValueError("WEBHOOK_SECRET must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return self

    @property
    def base_url(self) -> str:
        """PTB's `base_url` (the token is appended)."""
        return f"{self.telegram_api_url.rstrip('/')}/bot"

    @property
    def base_file_url(self) -> str:
        """PTB's `base_file_url` (the token is appended)."""
        return f"{self.telegram_api_url.rstrip('/')}/file/bot"
