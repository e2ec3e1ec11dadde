"""The playground: the emulator plus a web chat page, and the settings that point a bot at it."""

from __future__ import annotations

import asyncio
import functools
import hmac
import io
import ipaddress
import secrets
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit

import pillow_heif
from aiohttp import web
from PIL import Image, ImageDraw

from fakegram.api import FakeTelegram

# Re-exported: the emulator's side of the playground names them too.
from fakegram.env import PLAYGROUND_TOKEN as PLAYGROUND_TOKEN
from fakegram.env import playground_env as playground_env

PLAYGROUND_ADMIN = 2  # the page's "act as admin" user
TOKEN_HEADER = "X-Playground-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Pictures a browser shows as they are; any other photo (HEIC, say) is shown as a JPEG preview.
BROWSER_FORMATS = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "GIF": "image/gif",
    "WEBP": "image/webp",
}
PREVIEW_SIZE = 720  # px, the longer side: the page shows photos at most 240 px high
PREVIEW_PIXELS = 64 * 2**20  # a photo that decodes to more is not previewed (a bomb, say)


def local_host(host: str) -> bool:
    """Whether a Host header names this machine by address or as localhost: a DNS name could be
    an attacker's, rebound to 127.0.0.1 so that their page reads and posts here (DNS rebinding)."""
    name = urlsplit(f"//{host}").hostname or ""
    if name == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def guard(run_token: str) -> Any:
    """Middleware: refuse a foreign Host, and a browser's state-changing request that is
    cross-origin or lacks this run's token (a cross-site form could post /promote as the page's
    admin). Clients that are not browsers send no Origin: no page can make them post."""

    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        if not local_host(request.host):
            raise web.HTTPForbidden(text="Host not allowed: open the playground by 127.0.0.1")
        origin = request.headers.get("Origin")
        browser = origin is not None or "Sec-Fetch-Site" in request.headers
        if request.method not in SAFE_METHODS and browser:
            token = request.headers.get(TOKEN_HEADER, "")
            same = origin == f"{request.scheme}://{request.host}"
            if not (same and hmac.compare_digest(token.encode(), run_token.encode())):
                raise web.HTTPForbidden(text="cross-site request refused")
        return await handler(request)

    return check


def page_app(fake: FakeTelegram) -> web.Application:
    """The emulator plus the chat page at `/`, behind `guard` with a token made for this run."""
    run_token = secrets.token_urlsafe(24)
    html = files("fakegram").joinpath("static/playground.html").read_text("utf-8")
    html = html.replace("__ADMIN_ID__", str(PLAYGROUND_ADMIN)).replace("__RUN_TOKEN__", run_token)

    icon = favicon()

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    async def favicon_ico(request: web.Request) -> web.Response:
        return web.Response(body=icon, content_type="image/x-icon")

    async def preview_file(request: web.Request) -> web.Response:
        stored = fake.files.get(request.match_info["file_id"])
        if stored is None:
            raise web.HTTPNotFound()
        body, kind = await asyncio.to_thread(preview, stored.data)
        return web.Response(body=body, content_type=kind)

    app = fake.app()
    app.middlewares.append(guard(run_token))
    app.router.add_get("/", page)
    app.router.add_get("/favicon.ico", favicon_ico)
    app.router.add_get("/preview/{file_id}", preview_file)
    return app


def preview(data: bytes) -> tuple[bytes, str]:
    """A photo as the page's <img> can show it, and its content type: as sent when the browser
    reads its format, else a JPEG of it (HEIC, AVIF, TIFF); a placeholder when it cannot be read."""
    pillow_heif.register_heif_opener()
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format in BROWSER_FORMATS:
                return data, BROWSER_FORMATS[image.format]
            if image.width * image.height > PREVIEW_PIXELS:
                raise ValueError("too many pixels to preview")
            image.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, "JPEG", quality=85)
            return buffer.getvalue(), "image/jpeg"
    except (OSError, ValueError, Image.DecompressionBombError):
        return unreadable(), "image/png"


@functools.cache
def unreadable() -> bytes:
    """A grey card with a crossed picture: what the page shows for a photo it cannot read."""
    image = Image.new("RGB", (240, 160), (220, 224, 230))
    draw = ImageDraw.Draw(image)
    draw.rectangle((90, 50, 150, 110), outline=(120, 125, 132), width=4)
    draw.line((90, 50, 150, 110), fill=(120, 125, 132), width=4)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


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
