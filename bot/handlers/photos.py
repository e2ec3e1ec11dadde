"""Photos, image files and albums: download, queue `classify | reply`, return at once."""

from __future__ import annotations

import asyncio
import logging
import secrets

from redis.exceptions import RedisError
from telegram import Message, Update
from telegram.constants import ChatAction
from telegram.error import TelegramError

import contract
from bot.context import Context, redis_of, settings_of
from bot.handlers.common import language_of, reply_to
from bot.i18n import t
from bot.jobs import queue_full, submit, task

log = logging.getLogger(__name__)
# "typing…" is shown only for an answer still unsent this long after the photo was queued: most
# are answered well within it, and a chat action per photo cost a Bot API call (a share of the
# bot's 30 messages a second, and a fifth of its CPU per photo).
TYPING_AFTER_SECONDS = 1.0


def _image_file(message: Message) -> tuple[str, int | None]:
    if message.photo:
        largest = message.photo[-1]
        return largest.file_id, largest.file_size
    assert message.document is not None
    return message.document.file_id, message.document.file_size


async def on_image(update: Update, context: Context) -> None:
    """A photo or an image file: answer it, or gather it with the rest of its album."""
    message = update.effective_message
    assert message is not None
    language = language_of(update)
    _, size = _image_file(message)
    if size and size > contract.MAX_IMAGE_BYTES:
        await message.reply_text(t(language, "too_big", size=round(size / 2**20, 1)))
        return
    if await queue_full(context):
        await message.reply_text(t(language, "busy"))
        return
    group = message.media_group_id
    if group is None:
        await _classify(context, [message], language)
        return
    assert context.chat_data is not None
    albums: dict[str, list[Message]] = context.chat_data.setdefault("albums", {})
    if group not in albums:
        # Telegram sends an album as separate updates; answer once the rest has arrived.
        albums[group] = []
        asyncio.get_running_loop().call_later(
            settings_of(context).album_wait_seconds,
            lambda: context.application.create_task(
                _classify(context, sorted(albums.pop(group), key=lambda m: m.id), language)
            ),
        )
    albums[group].append(message)


async def not_an_image(update: Update, context: Context) -> None:
    """A file that is neither an image nor a retrain upload."""
    assert update.effective_message is not None
    await update.effective_message.reply_text(t(language_of(update), "not_image"))


async def _remember(context: Context, message: Message) -> str:
    """Record the photo for feedback buttons; returns its id (our name for it, never the user's)."""
    photo_id = secrets.token_hex(6)
    file_id, _ = _image_file(message)
    key = contract.photo_key(photo_id)
    async with redis_of(context).pipeline(transaction=False) as pipe:  # one round trip
        # The sender: in a group, only they may answer the feedback buttons.
        sender = {"user_id": message.from_user.id} if message.from_user else {}
        pipe.hset(key, mapping={"file_id": file_id, "chat_id": message.chat_id, **sender})
        pipe.expire(key, contract.PHOTO_TTL_SECONDS)
        await pipe.execute()
    return photo_id


async def _request(context: Context, message: Message) -> dict:
    file_id, _ = _image_file(message)
    data = await (await context.bot.get_file(file_id)).download_as_bytearray()
    request = contract.ClassifyRequest(
        image_b64=contract.encode_bytes(bytes(data)), top_k=settings_of(context).top_k
    )
    return request.to_dict()


async def _classify(context: Context, messages: list[Message], language: str) -> None:
    """Queue one photo, or each photo of an album with one reply listing them all."""
    first = messages[0]
    target = reply_to(first, language, "album" if len(messages) > 1 else "photo")
    low = settings_of(context).low_confidence
    for index, message in enumerate(messages):
        # The reply task gets the result through the chain and nothing reads it from the result
        # backend (a failure is still stored, for the errback): storing it cost the worker a SET
        # and a PUBLISH per photo.
        job = task(context, contract.CLASSIFY, await _request(context, message))
        job.set(ignore_result=True)
        if len(messages) == 1:
            photo_id = await _remember(context, message)
            await submit(
                context,
                job,
                target,
                contract.ReplyKind.CLASSIFY,
                photo_id=photo_id,
                low_confidence=low,
            )
        else:
            # Each photo of an album is remembered too: its line gets its own ✅ / ❌.
            album = {"index": index, "size": len(messages)}
            photo_id = await _remember(context, message)
            await submit(
                context, job, target, contract.ReplyKind.CLASSIFY, album=album,
                low_confidence=low, photo_id=photo_id,
            )  # fmt: skip
    asyncio.get_running_loop().call_later(
        TYPING_AFTER_SECONDS,
        lambda: context.application.create_task(_typing_if_slow(context, target)),
    )


async def _typing_if_slow(context: Context, target: contract.ReplyTo) -> None:
    """Show "typing…" while the answer is still unclaimed by the reply sender (best effort)."""
    try:
        if not await redis_of(context).exists(contract.reply_key(target.key)):
            await context.bot.send_chat_action(target.chat_id, ChatAction.TYPING)
    except (RedisError, TelegramError) as error:
        log.info("no typing action for chat %s: %s", target.chat_id, error)
