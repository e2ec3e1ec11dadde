"""Bring a job's input bytes to the worker: inline base64 (capped) or a Telegram file id.

The bot and the worker share no disk, so an upload travels either inside the message (photos,
and datasets from `breedbot retrain --via-queue`) or as a Telegram file id that the worker
downloads itself through the Bot API with its own token (datasets sent to the bot).
"""

from __future__ import annotations

import binascii
import functools
import os

import httpx

import contract
from worker.settings import WorkerSettings


class InputError(Exception):
    """Input that cannot be used; `code` is machine-readable, the message says why."""

    def __init__(self, code: str, message: str, **params: object) -> None:
        super().__init__(message)
        self.code = code
        self.params = params  # the message's values, for wording it in other languages


def _too_large(cap: int) -> InputError:
    limit = cap // 2**20
    return InputError("too_large", f"the upload is over the {limit} MB limit", limit_mb=limit)


def decode_inline(text: str, cap: int) -> bytes:
    """Base64 payload text to bytes, refusing anything over `cap` bytes."""
    if len(text) > (cap + 2) // 3 * 4:
        raise _too_large(cap)
    try:
        return contract.decode_bytes(text)
    except (binascii.Error, ValueError) as exc:
        raise InputError("bad_payload", f"the inline bytes are not valid base64: {exc}") from exc


@functools.cache
def _client(pid: int) -> httpx.Client:
    # The pid key gives a forked child its own pool: sockets must not cross a fork.
    return httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0), follow_redirects=True)


def http_client() -> httpx.Client:
    """This process's one HTTP client for the Bot API (downloads here, replies in replies.py)."""
    return _client(os.getpid())


def download_telegram_file(file_id: str, cap: int, settings: WorkerSettings) -> bytes:
    """Fetch an upload by file id through the Bot API (getFile, then the file URL)."""
    if settings.telegram_bot_token is None:
        raise InputError("no_token", "TELEGRAM_BOT_TOKEN is not set on the worker")
    token = settings.telegram_bot_token.get_secret_value()
    root = settings.telegram_api_url.rstrip("/")
    client = http_client()
    try:
        reply = client.get(f"{root}/bot{token}/getFile", params={"file_id": file_id}).json()
        if not reply.get("ok"):
            raise InputError("fetch_failed", f"getFile failed: {reply.get('description')}")
        info = reply["result"]
        if info.get("file_size", 0) > cap:
            raise _too_large(cap)
        chunks, size = [], 0
        with client.stream("GET", f"{root}/file/bot{token}/{info['file_path']}") as response:
            response.raise_for_status()
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > cap:
                    raise _too_large(cap)
                chunks.append(chunk)
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        # The token is part of the URL: never echo the exception text, which may contain it.
        failure = f"downloading the file failed ({type(exc).__name__})"
        raise InputError("fetch_failed", failure) from None
    return b"".join(chunks)


def _input_bytes(
    inline: str | None, file_id: str | None, cap: int, settings: WorkerSettings
) -> bytes:
    if inline is not None:
        return decode_inline(inline, cap)
    if file_id:
        return download_telegram_file(file_id, cap, settings)
    raise InputError("bad_payload", "the request has neither inline bytes nor a file id")


def image_bytes(request: contract.ClassifyRequest, settings: WorkerSettings) -> bytes:
    """The photo of a classify request."""
    return _input_bytes(request.image_b64, request.file_id, contract.MAX_IMAGE_BYTES, settings)


def dataset_bytes(ref: contract.DatasetRef, settings: WorkerSettings) -> bytes:
    """The zip of a retrain request."""
    return _input_bytes(ref.zip_b64, ref.file_id, contract.MAX_INLINE_DATASET_BYTES, settings)
