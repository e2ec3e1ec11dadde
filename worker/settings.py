"""The worker's settings: one validated object built from the environment (and `.env`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from broker.settings import BrokerSettings


class WorkerSettings(BrokerSettings):
    """Everything the worker, Flower and the stack runner read from the environment.

    No Telegram token: the worker computes and returns results; the bot's image talks to Telegram.
    """

    # Shared by every worker (a volume in compose); defaults to var_dir/models.
    models_dir: Path | None = None
    # Before the blob store: corrections filed a folder per class; imported once, then unused.
    feedback_dir: Path | None = None
    # Blobs (version bundles, kept datasets, feedback photos): a folder (the single-host default,
    # var_dir/store) or s3://bucket/prefix, shared by every host.
    store_url: str | None = None
    # Backbones and bottleneck cache (same as the model CLI); None lets model/ pick its default.
    breedbot_home: Path | None = None
    bottleneck_dir: Path | None = None  # None: under breedbot_home

    # Pool: threads, so a classify can run beside a retrain in one process holding one model.
    worker_concurrency: int = Field(default=32, ge=2, le=256)
    batch_max_size: int = Field(default=32, ge=1, le=256)
    # No wait for stragglers: jobs that arrive while a batch runs make the next one anyway, and a
    # lone photo should not wait (bot_bench, idle: 1-user p50 43-48 -> 41 ms, 50 users 28-33 ->
    # 33-35 photos/s).
    batch_wait_ms: float = Field(default=0.0, ge=0, le=1000)
    # Decodes over the light limit (model.runtime.images.LIGHT_DECODE_BYTES, a 4 MP RGBA PNG) at
    # once per process: each holds up to 2 x 48 MiB, so a flood of costly files stays bounded.
    heavy_decodes: int = Field(default=1, ge=1, le=32)
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

    # Feedback photos kept in the blob store, each re-encoded to at most FEEDBACK_SIDE px: at most
    # FEEDBACK_PER_CHAT per chat (a user, or a group) and FEEDBACK_TOTAL in all.
    feedback_side: int = Field(default=512, ge=64, le=2048)
    feedback_per_chat: int = Field(default=500, ge=1)
    feedback_total: int = Field(default=50_000, ge=1)

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
        if self.flower_basic_auth and ":" not in self.flower_basic_auth.get_secret_value():
            raise ValueError("FLOWER_BASIC_AUTH must look like user:password")
        return self

    @property
    def models_root(self) -> Path:
        """The shared versions folder."""
        return self.models_dir or self.var_dir / "models"

    @property
    def store_location(self) -> str:
        """The blob store's URL (a folder under var_dir unless STORE_URL says otherwise)."""
        return self.store_url or str(self.var_dir / "store")

    @property
    def feedback_root(self) -> Path:
        """The feedback dataset folder."""
        return self.feedback_dir or self.var_dir / "feedback"


@lru_cache(maxsize=1)
def get_settings() -> WorkerSettings:
    """The process-wide settings, validated once."""
    return WorkerSettings()
