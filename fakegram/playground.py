"""The playground: the emulator plus a web chat page, and the settings that point a bot at it."""

from __future__ import annotations

from importlib.resources import files

from aiohttp import web

from fakegram.api import FakeTelegram

PLAYGROUND_TOKEN = "1000001:playground-token"
PLAYGROUND_ADMIN = 2  # the page's "act as admin" user


def playground_env(url: str) -> dict[str, str]:
    """Environment for workers (and the bot) to talk to the emulator at `url`."""
    return {"TELEGRAM_BOT_TOKEN": PLAYGROUND_TOKEN, "TELEGRAM_API_URL": url}


def page_app(fake: FakeTelegram) -> web.Application:
    """The emulator plus the chat page at `/`."""
    html = files("fakegram").joinpath("static/playground.html").read_text("utf-8")
    html = html.replace("__ADMIN_ID__", str(PLAYGROUND_ADMIN))

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    app = fake.app()
    app.router.add_get("/", page)
    return app
