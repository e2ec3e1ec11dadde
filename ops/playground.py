"""`breedbot playground`: the real bot against the local emulator, plus a web chat page.

No Telegram token needed. Workers reach the emulator with `playground_env(url)`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from pydantic import SecretStr

from bot.app import build_app
from bot.polling import run
from bot.settings import BotSettings
from fakegram.api import FakeTelegram, serve_in_thread
from fakegram.playground import PLAYGROUND_ADMIN, PLAYGROUND_TOKEN, page_app, playground_env


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
