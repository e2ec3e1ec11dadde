"""Webhook mode: an aiohttp server that answers Telegram only once an update has been handled.

PTB's own webhook server answered 200 before handling, so a bot killed mid-update lost it (the
promise "confirmed only once handled" held for polling only); it read a body of any size before
looking at the secret (six 95 MB bodies took the bot from 89 to 682 MB); and nothing capped its
connections (1,100 half-open ones starved real updates and wrote 57 MB of "Too many open files"
tracebacks in 15 s). Here the secret header is checked before the body is read, the body is
capped, a connection idle for IDLE_SECONDS is closed, past OPEN_CONNECTIONS the oldest idle one
makes way, and 200 comes after `process_update`: Telegram sends an unanswered update again.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import resource
import weakref
from typing import Any

from aiohttp import web
from telegram import Update
from telegram.ext import Application

from bot import backoff
from bot.handlers import guards

log = logging.getLogger(__name__)
PATH = "/telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_BODY_BYTES = 1 << 20  # an update is a few KB: files travel as ids
BODY_SECONDS = 10.0  # to send the body once its headers came
IDLE_SECONDS = 10.0  # a connection with no request in flight this long is closed
# Open connections at most: Telegram opens up to WEBHOOK_CONNECTIONS (100 at most). asyncio
# accepts up to BACKLOG sockets in one go before any is closed, so the cap leaves room for a burst
# within the process's file descriptors (`_connection_cap`).
OPEN_CONNECTIONS = 256
BACKLOG = 64
# asyncio logs each accept() that fails for lack of descriptors, with a traceback, up to BACKLOG
# times per burst (the 57 MB of "Too many open files"): one line a minute is enough.
ACCEPT_ERRORS_LOGGED_EVERY = 60.0
REFUSALS_LOGGED_EVERY = 1000  # a flood of forged posts is one log line per this many


class CappedServer(web.Server):
    """aiohttp's low-level server holding at most `limit` connections: past it the oldest one
    with no request in flight is closed (Telegram's new connection sends its update at once, a
    half-open one never does), or the new one if every connection is busy."""

    def __init__(self, handler: Any, limit: int, busy: set[object], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.limit = limit
        self.busy = busy  # transports whose request is being handled

    def connection_made(self, handler: web.RequestHandler, transport: Any) -> None:
        """Count the connection in, and close one if that makes too many."""
        super().connection_made(handler, transport)
        if len(self._connections) <= self.limit:
            return
        open_ = [t for t in self._connections.values() if not t.is_closing()]
        idle = next((t for t in open_ if t not in self.busy and t is not transport), transport)
        idle.close()


def _connection_cap() -> int:
    """OPEN_CONNECTIONS, or fewer where the process may open few files: half of what is left
    after room for accept bursts (the sockets they close are freed an event-loop turn later)."""
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return max(1, min(OPEN_CONNECTIONS, (files - 3 * BACKLOG) // 2))


def _quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log running out of descriptors in accept() once a minute, without a traceback; every
    other loop error as before."""
    last = [-ACCEPT_ERRORS_LOGGED_EVERY]

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if not str(context.get("message", "")).startswith("socket.accept() out of"):
            loop.default_exception_handler(context)
        elif loop.time() - last[0] >= ACCEPT_ERRORS_LOGGED_EVERY:
            last[0] = loop.time()
            log.error("webhook: out of file descriptors (%s)", context.get("exception"))

    loop.set_exception_handler(handle)


def _closing(status: int) -> web.Response:
    # Close rather than read on: a refused body is never read.
    response = web.Response(status=status)
    response.force_close()
    return response


class Receiver:
    """The request handler: one update per POST, handled before it is answered."""

    def __init__(self, application: Application, secret: str) -> None:
        self.application = application
        self.secret = secret.encode()
        self.busy: set[object] = set()
        self.refused = 0
        # One update at a time per chat, in arrival order (asyncio locks are fair).
        self.chats: weakref.WeakValueDictionary[object, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Check path, method, secret and size, then handle the update and answer 200."""
        if request.path != PATH:
            return _closing(404)
        if request.method != "POST":
            return _closing(405)
        if not hmac.compare_digest(request.headers.get(SECRET_HEADER, "").encode(), self.secret):
            if self.refused % REFUSALS_LOGGED_EVERY == 0:
                log.warning("refused a webhook POST without the secret (from %s)", request.remote)
            self.refused += 1
            return _closing(403)
        if request.content_length is None:
            return _closing(411)
        if request.content_length > MAX_BODY_BYTES:
            return _closing(413)
        transport = request.transport
        self.busy.add(transport)
        try:
            return await self._update(request)
        finally:
            self.busy.discard(transport)

    async def _update(self, request: web.BaseRequest) -> web.StreamResponse:
        async with asyncio.timeout(BODY_SECONDS):
            body = await request.read()
        try:
            update = Update.de_json(json.loads(body), self.application.bot)
        except (ValueError, TypeError, KeyError):
            update = None
        if update is None:
            return _closing(400)
        chat = update.effective_chat
        key = chat.id if chat else ("update", update.update_id)
        async with self.chats.setdefault(key, asyncio.Lock()):
            await self._process(update)
        return web.Response(text="ok")

    async def _process(self, update: Update) -> None:
        application = self.application
        trusted = await guards.trusted_id(application, update.update_id)
        try:
            await application.process_update(update)
        finally:
            application.bot_data.untrusted.discard(update.update_id)
        if trusted:
            await guards.mark_handled(application, [update])


async def receive(application: Application) -> None:
    """Serve the webhook, register it with Telegram, and wait until cancelled."""
    settings = application.bot_data.settings
    assert settings is not None and settings.webhook_url and settings.webhook_secret
    secret = settings.webhook_secret.get_secret_value()
    receiver = Receiver(application, secret)
    _quiet_accept_errors(asyncio.get_running_loop())
    server = CappedServer(
        receiver.handle,
        _connection_cap(),
        receiver.busy,
        keepalive_timeout=IDLE_SECONDS,
        access_log=None,
    )
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    try:
        listen, port = settings.webhook_listen, settings.webhook_port
        await web.TCPSite(runner, listen, port, backlog=BACKLOG).start()
        url = f"{settings.webhook_url.rstrip('/')}{PATH}"
        register = functools.partial(
            application.bot.set_webhook,
            url,
            secret_token=secret,
            allowed_updates=Update.ALL_TYPES,
            max_connections=settings.webhook_connections,
        )
        await backoff.patiently("setWebhook", register)
        log.info("webhook: listening on %s:%d for %s", listen, port, url)
        await asyncio.Event().wait()  # until cancelled (SIGINT, SIGTERM)
    finally:
        await runner.cleanup()
