"""A self-contained breedbot stack for tests and benches: the Bot API emulator in this process, a
real redis-server (AOF on, optionally password-protected) and real service subprocesses."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

import contract
from fakegram.api import FakeTelegram, PlaygroundClient, serve_in_thread
from fakegram.playground import page_app
from harness import REPO
from harness.services import READY_SECONDS, Service, start_service
from ops.redis_server import RedisServer, free_port
from store.blobs import open_store
from store.registry import Registry

TOKEN = "1000001:reliability-secret-token"
REDIS_PASSWORD = "reliability-redis-secret"
ADMIN = 777  # the simulated users' admin
QUEUES = ",".join(contract.WORKER_QUEUES)


@dataclass
class Stack:
    """Redis + emulator + service processes under `root`; start it with `running()`."""

    root: Path
    token: str = TOKEN
    redis_password: str | None = REDIS_PASSWORD
    loglevel: str = "INFO"  # of the Celery services; benches quieten them
    ready_seconds: float = READY_SECONDS  # how long a service may take to get ready
    env: dict[str, str] = field(default_factory=dict)  # every service's, set by running()
    redis_server: RedisServer | None = None
    fake: FakeTelegram | None = None
    url: str = ""  # the emulator's (and the playground page's) base URL
    services: list[Service] = field(default_factory=list)
    bot: Service | None = None
    replier: Service | None = None

    @property
    def models_root(self) -> Path:
        """The shared versions folder of this stack."""
        return Path(self.env["MODELS_DIR"])

    def redis_url(self, db: int = 0) -> str:
        """The broker URL of database `db`, password included."""
        assert self.redis_server is not None
        auth = f":{self.redis_password}@" if self.redis_password else ""
        return f"redis://{auth}127.0.0.1:{self.redis_server.port}/{db}"

    def start_redis(self) -> None:
        """Start (or restart, on the same port and AOF file) this stack's Redis."""
        port = self.redis_server.port if self.redis_server else 0
        self.redis_server = RedisServer(self.root / "redis", port=port)
        self.redis_server.start()
        if self.redis_password:
            # RedisServer has no password option; CONFIG SET is as good and survives in this run.
            client = redis.Redis(port=self.redis_server.port)
            client.config_set("requirepass", self.redis_password)
            client.close()
        self.env["REDIS_URL"] = self.redis_url()

    def stop_redis(self, crash: bool = False) -> None:
        """SIGTERM Redis (it flushes its AOF), or SIGKILL it with `crash`, and wait for it to
        exit; restart with start_redis."""
        assert self.redis_server is not None and self.redis_server.process is not None
        if crash:
            self.redis_server.kill()
        else:
            self.redis_server.stop()

    def registry(self) -> Registry:
        """The stack's model registry: its Redis, and the blob store its workers share."""
        store = open_store(self.env.get("STORE_URL") or str(Path(self.env["VAR_DIR"]) / "store"))
        return Registry(redis.Redis.from_url(self.redis_url(), socket_timeout=10), store)

    def redis(self) -> redis.Redis:
        """A client for this stack's Redis (text replies)."""
        return redis.Redis.from_url(self.redis_url(), decode_responses=True, socket_timeout=10)

    def start(
        self, name: str, argv: list[str], kind: str | None = None, url: str = "", **env: str
    ) -> Service:
        """Start `python ARGV` with the stack's environment plus `env`; ready when it returns."""
        log = self.root / "logs" / f"{name}-{len(self.services)}.log"
        service = start_service(name, argv, {**self.env, **env}, log, kind, url, self.ready_seconds)
        self.services.append(service)
        return service

    def start_worker(
        self, name: str = "w", queues: str = QUEUES, command: list[str] | None = None, **env: str
    ) -> Service:
        """A worker `name@%h` (`breedbot worker` on `queues`, or `command`) that answers pings."""
        argv = command or ["-m", "ops.cli", "worker", "-Q", queues, "-l", self.loglevel]
        return self.start(name, [*argv, "-n", f"{name}@%h"], "worker", **env)

    def start_replier(self, name: str = "replier", **env: str) -> Service:
        """The reply sender (`breedbot replier`), consuming once this returns."""
        argv = ["-m", "ops.cli", "replier", "-n", f"{name}@%h", "-l", self.loglevel]
        self.replier = self.start(name, argv, "replier", **env)
        return self.replier

    def start_bot(self, **env: str) -> Service:
        """The real bot (`python -m bot.app`) long polling the emulator, and a reply sender."""
        if self.replier is None or not self.replier.alive():
            self.start_replier(f"replier{len(self.services)}")
        self.bot = self.start("bot", ["-m", "bot.app"], "bot", **env)
        return self.bot

    def start_flower(self, command: list[str] | None = None, **env: str) -> Service:
        """`breedbot flower` (or `command`) on a free port of 127.0.0.1, its URL in `.url`,
        answering once this returns."""
        port = free_port()
        argv = [*(command or ["-m", "ops.cli", "flower"]), f"--port={port}"]
        return self.start("flower", argv, "flower", url=f"http://127.0.0.1:{port}", **env)

    def all_logs(self) -> str:
        """Every service log of this stack, concatenated (Redis's included)."""
        logs = [*sorted((self.root / "logs").glob("*.log")), self.root / "redis" / "redis.log"]
        return "\n".join(p.read_text(errors="replace") for p in logs if p.is_file())

    def client(self) -> PlaygroundClient:
        """The user's side of the emulator."""
        return PlaygroundClient(self.url)

    @contextlib.contextmanager
    def running(self, **env: str) -> Iterator[Stack]:
        """Emulator and Redis up for the block; every process started in it is stopped after."""
        var = self.root / "var"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "TELEGRAM_BOT_TOKEN": self.token,
            "VAR_DIR": str(var),
            "MODELS_DIR": str(var / "models"),
            "BOTTLENECK_DIR": str(var / "bottlenecks"),
            "ADMIN_IDS": str(ADMIN),
            # The per-user flood guard and Telegram's send limits are lifted, as a bench must
            # measure what the stack carries; tests of the limits set their own.
            "RATE_LIMIT_COUNT": "10000",
            "REPLY_RATE_PER_CHAT": "1000",
            "REPLY_RATE_OVERALL": "1000",
            "RELOAD_INTERVAL": "0.5",
            "WORKER_CONCURRENCY": "8",
            **env,
        }
        self.fake = FakeTelegram(self.token)
        with serve_in_thread(page_app(self.fake)) as url:
            self.url = url
            self.env["TELEGRAM_API_URL"] = url
            self.start_redis()
            try:
                yield self
            finally:
                for service in reversed(self.services):
                    service.stop()
                if self.redis_server is not None:
                    self.redis_server.stop()
