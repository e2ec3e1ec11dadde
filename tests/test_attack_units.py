"""Fast checks of the pieces behind issue 20's webhook, chat and playground fixes (the attacks
themselves run on real processes in test_webhook.py and test_chat_attacks.py)."""

from __future__ import annotations

import logging

import pytest
from pydantic import SecretStr, ValidationError

from bot.redact import HIDDEN, TokenFilter, scrub
from bot.render import CAPTION_LIMIT, MESSAGE_LIMIT, fit
from bot.settings import BotSettings
from fakegram.playground import local_host


def test_webhook_url_without_secret_is_refused_by_name() -> None:
    """WEBHOOK_URL alone fails validation, naming WEBHOOK_SECRET; a bad secret is refused."""
    with pytest.raises(ValidationError, match="WEBHOOK_SECRET"):
        BotSettings(webhook_url="https://bot.example.org")
    with pytest.raises(ValidationError, match="WEBHOOK_SECRET"):
        BotSettings(webhook_url="https://bot.example.org", webhook_secret="has space")
    signed = BotSettings(webhook_url="https://bot.example.org", webhook_secret="s3cret_-")
    assert signed.webhook_listen == "127.0.0.1"


@pytest.mark.parametrize("language", ["en", "pt-BR"])
def test_fit_cuts_at_a_line_end_and_says_how_much(language: str) -> None:
    """A line per class of 1,500 becomes at most 4,096 characters, ending with a worded note."""
    text = "\n".join(f"Breed_{i:04d}: 0/1 (0%)" for i in range(1500))
    fitted = fit(text, language)
    assert len(text) > 30_000 and len(fitted) <= MESSAGE_LIMIT
    body, note = fitted.rsplit("\n", 1)
    assert text.startswith(body) and text[len(body)] == "\n"  # whole lines kept
    digits = note.replace(".", "").replace(",", "")  # 30,231 (en) or 30.231 (pt-BR)
    assert note.startswith("✂️") and f"{len(text) - len(body)}" in digits
    assert fit("short", language) == "short"
    assert len(fit("x" * 5000, language, CAPTION_LIMIT)) <= CAPTION_LIMIT


def test_token_filter_hides_the_secret_in_message_args_and_traceback() -> None:
    """The part after the colon never reaches a handler's output."""
    token = "123:ABCsecret"
    handler = logging.StreamHandler()
    handler.addFilter(TokenFilter(token))
    try:
        raise ValueError("url='http://x/bot123:ABCsecret/getMe'")
    except ValueError as error:
        record = logging.LogRecord("t", logging.ERROR, "", 0, "failed %s", (error,), None)
        record.exc_info = (type(error), error, error.__traceback__)
    assert handler.filter(record)
    output = handler.format(record)
    assert "ABCsecret" not in output and HIDDEN in output
    assert scrub("bot123:ABCsecret", SecretStr(token)) == f"bot123:{HIDDEN}"


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1:8081", True),
        ("localhost:8081", True),
        ("[::1]:8081", True),
        ("192.168.1.5", True),
        ("evil.example:8081", False),
        ("127.0.0.1.nip.io", False),
        ("", False),
    ],
)
def test_playground_host_check(host: str, local: bool) -> None:
    """Addresses and localhost pass; any DNS name (a rebinding attacker's) does not."""
    assert local_host(host) is local
