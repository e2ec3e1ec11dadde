"""The bot in webhook mode, attacked and killed: the real bot (`python -m bot.app` with
WEBHOOK_URL) receiving the emulator's webhook deliveries, and an attacker posting to its port.
Each scenario returns counts (tried, held) for tests/test_webhook.py and bench/reliability.py.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psutil

from fakegram.api import BOT_USER
from harness.services import Service
from harness.stack import ADMIN, Stack
from harness.user import all_events, pet_photos, send_photos, wait_answered
from harness.waiting import wait_until
from ops.redis_server import free_port

SECRET = "reliability-webhook-secret"
BIG_BODY_MB = 95  # what the issue sent: six of them took PTB's webhook from 89 to 682 MB
HALF_OPEN = 1100  # connections that never send a request (the count)
NOFILE = 256  # the attacked bot's open-file limit


def webhook_env(port: int, secret: str | None = SECRET) -> dict[str, str]:
    """The bot's settings for webhook mode on `port` of loopback (the emulator posts there)."""
    env = {"WEBHOOK_URL": f"http://127.0.0.1:{port}", "WEBHOOK_PORT": str(port)}
    return env | ({"WEBHOOK_SECRET": secret} if secret else {})


def start_webhook_bot(stack: Stack, port: int, nofile: int | None = None, **env: str) -> Service:
    """The real bot in webhook mode (plus `env`; at most `nofile` open files if given), once it
    listens and has set its webhook."""
    if nofile is None:
        bot = stack.start_bot(**webhook_env(port), **env)
    else:
        limit = f"resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile}, {nofile}))"
        run = "runpy.run_module('bot.app', run_name='__main__')"
        argv = ["-c", f"import resource, runpy; {limit}; {run}"]
        bot = stack.start("bot", argv, "bot", **webhook_env(port), **env)
    assert stack.fake is not None
    fake = stack.fake
    wait_until(lambda: fake.webhook and _listening(port), 60, "the webhook to listen")
    return bot


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def bot_killed_mid_update(stack: Stack, n_photos: int, users: int) -> dict[str, Any]:
    """SIGKILL the webhook bot while it handles photos (downloads held), start another on the
    same port: Telegram (the emulator) sends the unanswered updates again; each answered once."""
    port = free_port()
    stack.start_worker("w1")
    bot = start_webhook_bot(stack, port)
    client = stack.client()
    assert stack.fake is not None
    try:
        client.hold_downloads(True)
        sent = send_photos(stack, pet_photos(n_photos), users, 4000)
        in_flight = min(users, n_photos)
        wait_until(lambda: client.held_downloads() >= in_flight, 60, "the bot to be mid-update")
        confirmed = sum(e["type"] == "confirmed" for e in list(stack.fake.events))
        bot.kill()
        start_webhook_bot(stack, port)
        client.hold_downloads(False)
        counts = wait_answered(stack, sent, timeout=120 + n_photos)
    finally:
        client.close()
    counts["confirmed_before_kill"] = confirmed
    counts["in_flight_at_kill"] = in_flight
    counts["posts_not_answered_200"] = stack.fake.webhook_failures
    return counts


def _update(update_id: int, user: int, text: str) -> dict[str, Any]:
    """A Bot API update: `text` typed by `user` in their private chat."""
    entities = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id % 10**9,
            "date": int(time.time()),
            "chat": {"id": user, "type": "private", "first_name": "Mallory"},
            "from": {"id": user, "is_bot": False, "first_name": "Mallory", "language_code": "en"},
            "text": text,
            "entities": entities if text.startswith("/") else [],
        },
    }


def _status(url: str, update: dict[str, Any], secret: str | None) -> int:
    headers = {} if secret is None else {"X-Telegram-Bot-Api-Secret-Token": secret}
    return httpx.post(url, json=update, headers=headers, timeout=30).status_code


def _answered_once(stack: Stack, user: int, text: str) -> bool:
    """A real message through the emulator gets its one answer (the bot still serves)."""
    assert stack.fake is not None
    fake = stack.fake

    def sent() -> int:
        return sum(e["type"] == "sent" for e in all_events(fake, user))

    before = sent()
    client = stack.client()
    try:
        client.send(user, text=text)
    finally:
        client.close()
    wait_until(lambda: sent() > before, 30)
    time.sleep(1)  # a second answer would come right after the first
    return sent() == before + 1


def forged_commands(stack: Stack, url: str) -> dict[str, Any]:
    """Admin commands posted as the admin without the secret, or with a wrong or empty one."""
    commands = ("/promote 0", "/rollback", "/retrain steps=5", "/stats", "/models")
    secrets = (None, "", "wrong-secret", SECRET[:-1])
    next_id = int(time.time() * 1000) + 10
    statuses = [
        _status(url, _update(next_id + i, ADMIN, text), secret)
        for i, (text, secret) in enumerate((t, s) for t in commands for s in secrets)
    ]
    # The forged ones, had they been handled, would have answered in the admin's chat before
    # this real message (one chat's updates are handled in order).
    barrier = _answered_once(stack, ADMIN, "/start")
    assert stack.fake is not None
    admin_replies = sum(e["type"] == "sent" for e in all_events(stack.fake, ADMIN))
    return {
        "tried": len(statuses),
        "held": sum(s == 403 for s in statuses),
        "admin_chat_replies": admin_replies,
        "ok": barrier and admin_replies == 1 and set(statuses) == {403},
    }


def _chunks(mb: int) -> Iterator[bytes]:
    block = b"0" * 2**20
    for _ in range(mb):
        yield block


def big_bodies(bot: Service, url: str) -> dict[str, Any]:
    """95 MB bodies: three with a wrong secret, three with the right one (too big); each refused
    before it is read, and the bot's memory does not grow with them."""
    before = bot.rss_mb()
    refused = 0
    for secret in ("wrong-secret",) * 3 + (SECRET,) * 3:
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret, "Content-Type": "application/json"}
        headers["Content-Length"] = str(BIG_BODY_MB * 2**20)
        try:
            status = httpx.post(url, content=_chunks(BIG_BODY_MB), headers=headers, timeout=60)
            refused += status.status_code in (403, 413)
        except httpx.TransportError:  # the bot closed the connection instead of reading on
            refused += 1
    growth = round(bot.rss_mb() - before, 1)
    ok = refused == 6 and growth < 50
    return {"tried": 6, "held": refused, "rss_growth_mb": growth, "ok": ok}


def _log_bytes(bot: Service) -> int:
    return bot.log.stat().st_size


def _closed(sock: socket.socket) -> bool:
    """Whether the peer closed this connection (it sent nothing and never will)."""
    sock.settimeout(0)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


def half_open(stack: Stack, bot: Service, port: int) -> dict[str, Any]:
    """1,100 connections that never send a request: a real update is still answered, the bot
    closes most of them, and its log does not fill with "Too many open files"."""
    logged = _log_bytes(bot)
    sockets: list[socket.socket] = []
    try:
        for _ in range(HALF_OPEN):
            with contextlib.suppress(OSError):
                sockets.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        served = _answered_once(stack, 6100, "/start")
        closed = sum(_closed(sock) for sock in sockets)
    finally:
        for sock in sockets:
            sock.close()
    log_growth = _log_bytes(bot) - logged
    exhausted = bot.log_text().count("Too many open files")
    alive = bot.alive()
    return {
        "tried": 1,
        "held": int(served and alive and log_growth < 100_000),
        "connections": len(sockets),
        "closed_by_bot": closed,
        "log_growth_bytes": log_growth,
        "too_many_open_files": exhausted,
    }


def future_update_id(stack: Stack, url: str) -> dict[str, Any]:
    """A signed update whose id is far ahead of the last one (a leaked secret): it claims
    nothing, so the real update that later gets that id is still answered."""
    assert stack.fake is not None
    ahead = max(stack.fake.updates) + 10**7
    status = _status(url, _update(ahead, 6200, "/help"), SECRET)
    claimed = stack.redis().exists(f"breedbot:update:{BOT_USER['id']}:{ahead}")
    stack.fake.jump_update_ids(ahead)
    real = _answered_once(stack, 6201, "/start")
    return {
        "tried": 1,
        "held": int(status == 200 and not claimed and real),
        "claimed": bool(claimed),
        "ok": status == 200 and not claimed and real,
    }


def listens_on_loopback(bot: Service, port: int) -> dict[str, Any]:
    """Where the bot listens by default (no WEBHOOK_LISTEN): loopback only."""
    process = psutil.Process(bot.process.pid)
    found = [c.laddr.ip for c in process.net_connections("tcp") if c.laddr.port == port]
    listening = sorted(set(found))
    return {"tried": 1, "held": int(listening == ["127.0.0.1"]), "listening": listening}


def refuses_without_secret(stack: Stack) -> dict[str, Any]:
    """WEBHOOK_URL without WEBHOOK_SECRET: the bot exits non-zero, naming the setting."""
    env = {**stack.env, **webhook_env(free_port(), secret=None)}
    env.pop("WEBHOOK_SECRET", None)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bot.app"], env=env, capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:  # it served, unsigned
        return {"tried": 1, "held": 0, "exit": None}
    named = "WEBHOOK_SECRET" in done.stderr + done.stdout
    return {"tried": 1, "held": int(done.returncode != 0 and named), "exit": done.returncode}


def attacks(stack: Stack) -> dict[str, dict[str, Any]]:
    """Every attack on the webhook, on one bot (no worker: only the bot's own answers count).
    The bot may open only NOFILE files (pinned low, as on a small host): 1,100 connections
    would exhaust them, and asyncio would log "Too many open files" each second."""
    port = free_port()
    bot = start_webhook_bot(stack, port, nofile=NOFILE)
    url = f"http://127.0.0.1:{port}/telegram"
    return {
        "no_secret_refused": refuses_without_secret(stack),
        "listen_loopback": listens_on_loopback(bot, port),
        "forged_admin_commands": forged_commands(stack, url),
        "big_bodies": big_bodies(bot, url),
        "half_open_connections": half_open(stack, bot, port),
        "future_update_id": future_update_id(stack, url),
        "bot_alive": {"tried": 1, "held": int(bot.alive())},
    }
