"""The bot against a misbehaving Bot API server: failing start-up calls, a poll that never waits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from telegram.ext import Application, ApplicationBuilder

from bot import backoff
from bot.app import build_app
from bot.polling import poll, run
from bot.settings import BotSettings
from fakegram.api import FakeTelegram, PlaygroundClient, serve_in_thread
from fakegram.playground import PLAYGROUND_TOKEN
from ops.redis_server import RedisServer

WINDOW = 3.0  # seconds each polling scenario runs


@pytest.fixture
def fake() -> Iterator[tuple[FakeTelegram, str]]:
    """An emulator of this test's own, so its faults touch no other test."""
    telegram = FakeTelegram(PLAYGROUND_TOKEN)
    with serve_in_thread(telegram.app()) as url:
        yield telegram, url


def _plain_app(url: str) -> Application:
    return ApplicationBuilder().token(PLAYGROUND_TOKEN).base_url(f"{url}/bot").build()


async def _poll_for(application: Application, seconds: float) -> None:
    """Poll for `seconds`; fail if polling stopped on its own meanwhile."""
    async with application:
        polling = asyncio.create_task(poll(application))
        await asyncio.sleep(seconds)
        assert not polling.done(), f"polling stopped: {polling.exception()!r}"
        polling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await polling


def test_early_empty_answers_are_followed_by_a_wait(fake: tuple[FakeTelegram, str]) -> None:
    """A server that ignores the long-poll timeout: about one getUpdates a second, not a spin."""
    telegram, url = fake
    telegram.ignore_poll_timeout = True
    asyncio.run(_poll_for(_plain_app(url), WINDOW))
    assert 1 <= telegram.calls["getUpdates"] <= WINDOW + 2


def test_polling_errors_back_off_and_never_stop_the_loop(fake: tuple[FakeTelegram, str]) -> None:
    """Conflicts (another poller) and 5xx answers: waits of 1, 2, 4 s ... and polling goes on."""
    telegram, url = fake
    telegram.faults["getUpdates"] = [409] * 50 + [500] * 50
    asyncio.run(_poll_for(_plain_app(url), WINDOW))
    assert 1 <= telegram.calls["getUpdates"] <= 3


def test_failing_start_up_calls_are_retried_and_the_bot_answers(
    fake: tuple[FakeTelegram, str],
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """getMe, setMyCommands and deleteWebhook answer HTTP 500 at first: the bot waits them out,
    says so in words, and then answers /start."""
    telegram, url = fake
    telegram.faults.update(getMe=[500, 500], setMyCommands=[500, 500], deleteWebhook=[500])
    monkeypatch.setattr(backoff, "FIRST_DELAY", 0.05)
    settings = BotSettings(
        _env_file=None,
        telegram_bot_token=SecretStr(PLAYGROUND_TOKEN),
        telegram_api_url=url,
        redis_url=redis_server.url,
    )
    application = build_app(settings)

    async def scenario() -> list[str]:
        bot = asyncio.create_task(run(application))
        with contextlib.closing(PlaygroundClient(url)) as user:
            await asyncio.to_thread(user.send, 301, text="/start", first_name="Ana")
            events = await asyncio.to_thread(
                user.wait_for, 301, lambda ev: any(e["type"] == "sent" for e in ev), 60
            )
        assert not bot.done(), f"the bot stopped: {bot.exception()!r}"
        bot.cancel()
        await bot
        return [e["message"]["text"] for e in events if e["type"] == "sent"]

    with caplog.at_level(logging.INFO, logger="bot"):
        texts = asyncio.run(scenario())
    assert texts[0].startswith("Hi Ana!")
    assert [c["command"] for c in telegram.commands] == ["start", "help", "breeds"]
    assert not any(telegram.faults.values())  # every fault was met and waited out
    said = caplog.text
    assert "Telegram did not answer getMe (Internal Server Error); trying again in" in said
    assert "Telegram did not answer setMyCommands (en)" in said
    assert "Telegram answered deleteWebhook at attempt 2" in said
