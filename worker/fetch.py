"""A job's input bytes: inline base64 in the message, under a cap.

The bot and the worker share no disk, and the worker holds no Telegram token: the bot's image
downloads each upload and sends its bytes inside the message.
"""

from __future__ import annotations

import binascii

import redis

import contract


class InputError(Exception):
    """Input that cannot be used; `code` is machine-readable, the message says why."""

    def __init__(self, code: str, message: str, **params: object) -> None:
        super().__init__(message)
        self.code = code
        self.params = params  # the message's values, for wording it in other languages


def decode_inline(text: str | None, cap: int) -> bytes:
    """Base64 payload text to bytes, refusing anything missing or over `cap` bytes."""
    if text is None:
        raise InputError("bad_payload", "the request carries no inline bytes")
    if len(text) > (cap + 2) // 3 * 4:
        limit = cap // 2**20
        raise InputError("too_large", f"the upload is over the {limit} MB limit", limit_mb=limit)
    try:
        return contract.decode_bytes(text)
    except (binascii.Error, ValueError) as exc:
        raise InputError("bad_payload", f"the inline bytes are not valid base64: {exc}") from exc


def image_bytes(request: contract.ClassifyRequest, client: redis.Redis) -> bytes:
    """The photo of a classify request: inline, or kept under its key in the broker's Redis."""
    if request.image_key is None:
        return decode_inline(request.image_b64, contract.MAX_IMAGE_BYTES)
    if not request.image_key.startswith(contract.upload_key("")):
        raise InputError("bad_payload", "the request names a key that holds no upload")
    data = client.get(request.image_key)
    if data is None:
        raise InputError("expired", "the photo is no longer kept; send it again")
    if len(data) > contract.MAX_IMAGE_BYTES:
        limit = contract.MAX_IMAGE_BYTES // 2**20
        raise InputError("too_large", f"the upload is over the {limit} MB limit", limit_mb=limit)
    return data


def dataset_bytes(ref: contract.DatasetRef) -> bytes:
    """The zip of a retrain request."""
    return decode_inline(ref.zip_b64, contract.MAX_INLINE_DATASET_BYTES)
