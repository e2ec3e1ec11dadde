"""`breedbot playground`: the real bot against the local emulator, plus a web chat page.

No Telegram token needed. Workers reach the emulator with `playground_env(url)`.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
from importlib.resources import files

from aiohttp import web
from PIL import Image, ImageDraw
from pydantic import SecretStr

from bot.app import build_app
from bot.fake_api import FakeTelegram, serve_in_thread
from bot.polling import run
from bot.settings import BotSettings

PLAYGROUND_TOKEN = "1000001:playground-token"
PLAYGROUND_ADMIN = 2  # the page's "act as admin" user


def playground_env(url: str) -> dict[str, str]:
    """Environment for workers (and the bot) to talk to the emulator at `url`."""
    return {"TELEGRAM_BOT_TOKEN": PLAYGROUND_TOKEN, "TELEGRAM_API_URL": url}


def page_app(fake: FakeTelegram) -> web.Application:
    """The emulator plus the chat page at `/`."""
    html = files("bot").joinpath("static/playground.html").read_text("utf-8")
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


def main(argv: list[str] | None = None) -> None:
    """Serve the emulator and page on 127.0.0.1, print the URL, run the bot until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="breedbot playground", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="default PLAYGROUND_PORT (8081)")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s", level=logging.INFO)
    for noisy in ("httpx", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = BotSettings()
    port = settings.playground_port if args.port is None else args.port
    with serve_in_thread(page_app(FakeTelegram(PLAYGROUND_TOKEN)), args.host, port) as url:
        playground = settings.model_copy(
            update={
                "telegram_bot_token": SecretStr(PLAYGROUND_TOKEN),
                "telegram_api_url": url,
                "admin_ids": settings.admin_ids | {PLAYGROUND_ADMIN},
                "webhook_url": None,
            }
        )
        workers_need = " ".join(f"{k}={v}" for k, v in playground_env(url).items())
        print(f"breedbot playground: open {url}/ (workers need {workers_need})", flush=True)
        asyncio.run(run(build_app(playground)))


if __name__ == "__main__":
    main()
