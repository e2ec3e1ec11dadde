"""The reply sender's Bot API client: plain HTTP calls with the bot's token, one client per process.

The PTB front end runs an event loop; reply tasks run in Celery's threads, so they call the Bot
API synchronously through httpx, which PTB itself is built on.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import httpx

import contract
from bot import render
from bot.settings import BotSettings


class TelegramError(Exception):
    """The Bot API answered `ok: false`."""


class Refused(TelegramError):
    """A 4xx answer about the chat or the request: sending it again would only fail again."""


class Forbidden(Refused):
    """Telegram answered 403: the user blocked the bot, or the bot left the group."""


class BadRequest(Refused):
    """Telegram answered 400 (and no new chat to follow): the reason is in the message."""


class ChatMigrated(TelegramError):
    """The group became a supergroup (400 with `migrate_to_chat_id`): send to `new_chat_id`."""

    def __init__(self, method: str, new_chat_id: int) -> None:
        super().__init__(f"{method}: the group moved to chat {new_chat_id}")
        self.new_chat_id = new_chat_id


class RetryAfter(TelegramError):
    """Telegram answered 429: nothing more to this chat for `seconds`."""

    def __init__(self, method: str, seconds: float) -> None:
        super().__init__(f"{method}: flood control, retry after {seconds} s")
        self.seconds = seconds


class DownloadError(Exception):
    """A file could not be downloaded (too large, gone, or the network failed)."""


@functools.cache
def _client(pid: int) -> httpx.Client:
    # The pid key gives a forked child its own pool: sockets must not cross a fork.
    return httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0), follow_redirects=True)


def http_client() -> httpx.Client:
    """This process's one HTTP client for the Bot API."""
    return _client(os.getpid())


@functools.cache
def settings() -> BotSettings:
    """The reply sender's settings, validated once."""
    return BotSettings()


def _token() -> str:
    token = settings().telegram_bot_token
    if token is None:
        raise TelegramError("TELEGRAM_BOT_TOKEN is not set for the reply sender")
    return token.get_secret_value()


def call(method: str, params: dict[str, Any], files: dict[str, Any] | None = None) -> Any:
    """Call a Bot API method; returns its `result`."""
    url = f"{settings().base_url}{_token()}/{method}"
    if files:
        # Multipart: nested objects travel as JSON strings, as the Bot API expects.
        form = {k: json.dumps(v) if isinstance(v, dict) else str(v) for k, v in params.items()}
        response = http_client().post(url, data=form, files=files)
    else:
        response = http_client().post(url, json=params)
    body = response.json()
    if not body.get("ok"):
        raise _error(method, body)
    return body["result"]


def _error(method: str, body: dict[str, Any]) -> TelegramError:
    """The exception for a Bot API error answer, by its code and `parameters`."""
    parameters = body.get("parameters") or {}
    if parameters.get("retry_after") is not None:
        return RetryAfter(method, float(parameters["retry_after"]))
    if parameters.get("migrate_to_chat_id") is not None:
        return ChatMigrated(method, int(parameters["migrate_to_chat_id"]))
    kind = {403: Forbidden, 400: BadRequest}.get(body.get("error_code"), TelegramError)
    return kind(f"{method}: {body.get('description')}")


def _reply_params(reply_to: contract.ReplyTo) -> dict[str, Any]:
    params: dict[str, Any] = {"chat_id": reply_to.chat_id}
    if reply_to.message_id is not None:
        params["reply_parameters"] = {
            "message_id": reply_to.message_id,
            "allow_sending_without_reply": True,
        }
    return params


def send_text(reply_to: contract.ReplyTo, text: str, **extra: Any) -> Any:
    """Send `text` to the chat, as a reply to the user's message."""
    text = render.fit(text, reply_to.language)
    return call("sendMessage", {**_reply_params(reply_to), "text": text, **extra})


def send_picture(
    reply_to: contract.ReplyTo, png: bytes, caption: str, *, jpeg: bool = False, **extra: Any
) -> Any:
    """Send a PNG (or a JPEG) with a caption to the chat, as a reply to the user's message."""
    caption = render.fit(caption, reply_to.language, render.CAPTION_LIMIT)
    params = {**_reply_params(reply_to), "caption": caption, **extra}
    upload = ("photo.jpg", png, "image/jpeg") if jpeg else ("chart.png", png, "image/png")
    return call("sendPhoto", params, files={"photo": upload})


def send_document(
    reply_to: contract.ReplyTo, name: str, data: bytes, caption: str | None = None
) -> Any:
    """Send a file as a document, as a reply to the user's message."""
    caption = render.fit(caption, reply_to.language, render.CAPTION_LIMIT) if caption else None
    params = {**_reply_params(reply_to), **({"caption": caption} if caption else {})}
    files = {"document": (name, data, "application/octet-stream")}
    return call("sendDocument", params, files=files)


def edit_status(reply_to: contract.ReplyTo, text: str) -> None:
    """Replace the text of the job's status message (an unchanged text is not an error)."""
    text = render.fit(text, reply_to.language)
    try:
        call(
            "editMessageText",
            {"chat_id": reply_to.chat_id, "message_id": reply_to.status_message_id, "text": text},
        )
    except TelegramError as error:
        if "not modified" not in str(error):
            raise


def download(file_id: str, cap: int) -> bytes:
    """Fetch an upload by file id (getFile, then the file URL), refusing more than `cap` bytes."""
    root = f"{settings().telegram_api_url.rstrip('/')}"
    client = http_client()
    try:
        info = call("getFile", {"file_id": file_id})
        if info.get("file_size", 0) > cap:
            raise DownloadError(f"the file is over {cap // 2**20} MB")
        chunks, size = [], 0
        with client.stream("GET", f"{root}/file/bot{_token()}/{info['file_path']}") as response:
            response.raise_for_status()
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > cap:
                    raise DownloadError(f"the file is over {cap // 2**20} MB")
                chunks.append(chunk)
    except (httpx.HTTPError, TelegramError, ValueError, KeyError) as exc:
        # The token is part of the URL: never echo the exception text, which may contain it.
        raise DownloadError(f"downloading the file failed ({type(exc).__name__})") from None
    return b"".join(chunks)
