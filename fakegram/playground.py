"""The playground: the emulator plus a web chat page, and the settings that point a bot at it."""

from __future__ import annotations

import io
from importlib.resources import files

from aiohttp import web
from PIL import Image, ImageDraw

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

    icon = favicon()

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    async def favicon_ico(request: web.Request) -> web.Response:
        return web.Response(body=icon, content_type="image/x-icon")

    app = fake.app()
    app.router.add_get("/", page)
    app.router.add_get("/favicon.ico", favicon_ico)
    return app


def favicon() -> bytes:
    """A paw print in the page's blue, as a 32 px ICO (drawn here: no binary in the repo)."""
    image = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    blue = (81, 125, 162, 255)
    draw.ellipse((8, 15, 24, 29), fill=blue)  # the pad
    for x, y in ((3, 9), (10, 3), (18, 3), (25, 9)):  # the toes
        draw.ellipse((x, y, x + 6, y + 8), fill=blue)
    buffer = io.BytesIO()
    image.save(buffer, "ICO", sizes=[(32, 32)])
    return buffer.getvalue()
