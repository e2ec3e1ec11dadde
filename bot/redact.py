"""Keep the bot token out of the logs: Bot API URLs carry it, and aiohttp's redirect and URL
errors quote the URL (a redirect loop on getUpdates wrote it into var/log/bot.log)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pydantic import SecretStr

HIDDEN = "<token>"


class TokenFilter(logging.Filter):
    """A handler filter that writes `<token>` for the token's secret part in every record,
    its message, arguments and traceback alike."""

    def __init__(self, token: str) -> None:
        super().__init__()
        # The part after the colon is the secret; the bot id before it is public (and a URL
        # may quote the colon as %3A).
        self.secret = token.split(":", 1)[-1]

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record without the secret; never drops it."""
        message = record.getMessage()
        if self.secret in message:
            record.msg, record.args = message.replace(self.secret, HIDDEN), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text and self.secret in record.exc_text:
            record.exc_text = record.exc_text.replace(self.secret, HIDDEN)
        if record.stack_info and self.secret in record.stack_info:
            record.stack_info = record.stack_info.replace(self.secret, HIDDEN)
        return True


def scrub(text: str, token: SecretStr | None) -> str:
    """`text` with the token's secret part hidden (a traceback sent to the developer chat)."""
    if token is None or not token.get_secret_value():
        return text
    return text.replace(token.get_secret_value().split(":", 1)[-1], HIDDEN)


def install(token: SecretStr | None, handlers: Iterable[logging.Handler]) -> None:
    """Put a `TokenFilter` for `token` (or another secret) on each handler, once; nothing
    without one."""
    if token is None or not token.get_secret_value():
        return
    hider = TokenFilter(token.get_secret_value())
    for handler in handlers:
        present = [f for f in handler.filters if isinstance(f, TokenFilter)]
        if all(f.secret != hider.secret for f in present):
            handler.addFilter(hider)
