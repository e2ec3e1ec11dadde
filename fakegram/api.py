"""A small local Telegram Bot API emulator (aiohttp) that the real PTB client and workers talk to.

It serves the Bot API methods the bot uses at `/bot<token>/<method>` and files at
`/file/bot<token>/<path>`, plus `/test/...` endpoints that play the user's side: send a message,
photo, file or album, press an inline button, redeliver an update, and long-poll what the bot did.
The playground page, the end-to-end tests and the bench all drive it through those endpoints.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import aiohttp
import httpx
from aiohttp import web
from PIL import Image, UnidentifiedImageError

MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024  # Telegram's getFile cap for bots
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
MAX_TEXT = 4096  # Telegram's limits on a message's text and a caption
MAX_CAPTION = 1024
BOT_USER = {
    "id": 999000,
    "is_bot": True,
    "first_name": "Breedbot",
    "username": "breedbot_playground_bot",
    "can_join_groups": False,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}
# Telegram's wording of the error answers the fault modes give.
FAULTS = {
    409: "Conflict: terminated by other getUpdates request; make sure that only one bot instance "
    "is running",
    500: "Internal Server Error",
}
# Webhook delivery, as Telegram does it: an update is sent again until the bot answers 200.
WEBHOOK_RETRY_SECONDS = 0.5
WEBHOOK_TIMEOUT = 60.0
BLOCKED = "Forbidden: bot was blocked by the user"
MIGRATED = "Bad Request: group chat was upgraded to a supergroup chat"
# Form fields that carry JSON objects (PTB posts everything else as plain strings).
JSON_FIELDS = {
    "reply_markup",
    "reply_parameters",
    "commands",
    "allowed_updates",
    "media",
    "entities",
    "caption_entities",
    "link_preview_options",
    "scope",
}


class ApiError(Exception):
    """A Bot API error answer (`ok: false`)."""

    def __init__(
        self, code: int, description: str, parameters: dict[str, Any] | None = None
    ) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters  # ResponseParameters, e.g. {"retry_after": 3}


@dataclass
class ChatFault:
    """The error answer the bot's sends to one chat get, `times` more times (0: until cleared)."""

    code: int
    description: str
    parameters: dict[str, Any] | None = None
    times: int = 0


@dataclass
class StoredFile:
    """An uploaded file, as getFile and the file download URL serve it."""

    file_id: str
    unique_id: str
    path: str
    data: bytes

    def info(self) -> dict[str, Any]:
        """The Bot API `File` object."""
        return {
            "file_id": self.file_id,
            "file_unique_id": self.unique_id,
            "file_size": len(self.data),
            "file_path": self.path,
        }


def _image_size(data: bytes) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError):
        return 0, 0


def _reply_target(params: dict[str, Any]) -> int | None:
    reply = params.get("reply_parameters")
    if isinstance(reply, dict) and "message_id" in reply:
        return int(reply["message_id"])
    if "reply_to_message_id" in params:
        return int(params["reply_to_message_id"])
    return None


class FakeTelegram:
    """The emulator's state: updates, messages, files and an event log per chat."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token  # None accepts any token
        self.pending: list[dict[str, Any]] = []
        self.updates: dict[int, dict[str, Any]] = {}
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        # The same events by chat, and files by path: waiters and downloads look up their own
        # instead of scanning everything (the bench's emulator must not slow down as it fills).
        self.chat_events: dict[int, list[dict[str, Any]]] = {}
        self.files: dict[str, StoredFile] = {}
        self.paths: dict[str, StoredFile] = {}
        self.commands: list[dict[str, Any]] = []
        # Webhook mode (setWebhook): pending updates are POSTed to `webhook` instead of polled.
        self.webhook: str = ""
        self.webhook_secret = ""
        self.webhook_connections = 40
        self.webhook_failures = 0  # POSTs the bot did not answer 200 (each is sent again)
        self._delivering: asyncio.Task[None] | None = None
        # Like Telegram's, ids never repeat, not even across runs: they start at the clock's
        # milliseconds. The bot and the workers remember handled updates and sent replies in
        # Redis, which outlives a restarted playground.
        first = int(time.time() * 1000)
        self._ids = itertools.count(first)
        self._update_ids = itertools.count(first)
        self._changed: asyncio.Condition | None = None
        # While set, file downloads wait (a stalled file server); tests kill a bot mid-handler.
        self.hold_downloads = False
        self.held_downloads = 0
        # Faults for tests: per method, the HTTP codes of its next answers (then it works again),
        # and a getUpdates that answers at once, ignoring `timeout`, as some proxies do.
        self.faults: dict[str, list[int]] = {}
        self.ignore_poll_timeout = False
        self.redirect_methods: set[str] = set()  # answered by a redirect loop (a bad proxy)
        self.calls: Counter[str] = Counter()
        # Flood control on demand: chat id -> [answers left, retry_after]; the bot's next sends
        # to that chat are answered 429, as Telegram does when a bot sends too fast.
        self.flood: dict[int, list[int]] = {}
        # Refusals on demand: chat id -> ChatFault; the bot's sends to that chat get its answer
        # (403 for a user who blocked the bot, 400 with migrate_to_chat_id for an upgraded group).
        self.chat_faults: dict[int, ChatFault] = {}
        self._methods: dict[str, Callable[[dict[str, Any]], Any]] = {
            "getMe": lambda p: BOT_USER,
            "logOut": lambda p: True,
            "close": lambda p: True,
            "deleteWebhook": self._delete_webhook,
            "setWebhook": self._set_webhook,
            "getWebhookInfo": lambda p: {"url": self.webhook, "pending_update_count": 0},
            "setMyCommands": self._set_commands,
            "getMyCommands": lambda p: self.commands,
            "deleteMyCommands": self._delete_commands,
            "sendChatAction": self._chat_action,
            "sendMessage": self._send_message,
            "sendPhoto": lambda p: self._send_media(p, "photo"),
            "sendDocument": lambda p: self._send_media(p, "document"),
            "editMessageText": lambda p: self._edit(p, "text"),
            "editMessageCaption": lambda p: self._edit(p, "caption"),
            "editMessageReplyMarkup": lambda p: self._edit(p, None),
            "answerCallbackQuery": self._answer_callback,
            "getFile": self._get_file,
        }

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def changed(self) -> asyncio.Condition:
        """Notified whenever an update or an event is added (created on the server's loop)."""
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    def _event(self, kind: str, chat_id: int, **fields: Any) -> None:
        event = {
            "seq": len(self.events) + 1,
            "type": kind,
            "chat_id": chat_id,
            "at": time.time(),
            **fields,
        }
        self.events.append(event)
        self.chat_events.setdefault(chat_id, []).append(event)

    def _check_token(self, token: str) -> None:
        if self.token is not None and token != self.token:
            raise ApiError(401, "Unauthorized")

    def _store_file(self, data: bytes, folder: str, suffix: str) -> StoredFile:
        n = next(self._ids)
        stored = StoredFile(f"file-{n}", f"u{n}", f"{folder}/file_{n}{suffix}", data)
        self.files[stored.file_id] = stored
        self.paths[stored.path] = stored
        return stored

    def _file_param(self, value: Any, folder: str, suffix: str) -> StoredFile:
        if isinstance(value, web.FileField):
            return self._store_file(value.file.read(), folder, suffix)
        if isinstance(value, str) and value in self.files:
            return self.files[value]
        raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")

    def _message(self, chat_id: int, sender: dict[str, Any], **fields: Any) -> dict[str, Any]:
        message = {
            "message_id": next(self._ids),
            "date": int(time.time()),
            # Telegram's group ids are negative; any other chat is a user's private one here.
            "chat": {
                "id": chat_id,
                "type": "group" if chat_id < 0 else "private",
                "first_name": sender["first_name"],
            },
            "from": sender,
            **{k: v for k, v in fields.items() if v is not None},
        }
        self.messages[chat_id, message["message_id"]] = message
        return message

    def _bot_message(self, params: dict[str, Any], **fields: Any) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        target = _reply_target(params)
        if target is not None and (chat_id, target) in self.messages:
            fields["reply_to_message"] = self._quoted(chat_id, target)
        if params.get("reply_markup"):
            fields["reply_markup"] = params["reply_markup"]
        message = self._message(chat_id, BOT_USER, **fields)
        self._event("sent", chat_id, message=self._public(message))
        return message

    def _quoted(self, chat_id: int, message_id: int) -> dict[str, Any]:
        message = self.messages[chat_id, message_id]
        return {k: v for k, v in message.items() if k != "reply_to_message"}

    def _public(self, message: dict[str, Any]) -> dict[str, Any]:
        # What the page and the tests see: the message plus URLs of its pictures.
        shown = dict(message)
        if "photo" in message:
            shown["photo_url"] = f"/test/file/{message['photo'][-1]['file_id']}"
        return shown

    # -- Bot API methods --------------------------------------------------------------------

    def _delete_webhook(self, params: dict[str, Any]) -> bool:
        if str(params.get("drop_pending_updates", "")).lower() == "true":
            self.pending.clear()
        self.webhook = ""
        if self._delivering is not None:
            self._delivering.cancel()
            self._delivering = None
        return True

    def _set_webhook(self, params: dict[str, Any]) -> bool:
        self._delete_webhook({})
        self.webhook = str(params["url"])
        self.webhook_secret = str(params.get("secret_token") or "")
        self.webhook_connections = int(params.get("max_connections") or 40)
        self._delivering = asyncio.get_running_loop().create_task(self._deliver())
        return True

    async def _deliver(self) -> None:
        """Webhook mode: POST pending updates to the bot, up to `webhook_connections` at once and
        one per chat at a time (in order), each until the bot answers 200."""
        in_flight: dict[int, int] = {}  # update id -> chat id

        def ready() -> list[dict[str, Any]]:
            busy = set(in_flight.values())
            waiting = [u for u in self.pending if u["update_id"] not in in_flight]
            return [u for u in waiting if _chat_of(u) not in busy]

        posts: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession() as session:
            try:
                while True:
                    async with self.changed:
                        await self.changed.wait_for(
                            lambda: ready() and len(in_flight) < self.webhook_connections
                        )
                    for update in ready()[: self.webhook_connections - len(in_flight)]:
                        if _chat_of(update) in in_flight.values():
                            continue  # two of one chat in this round: the later one waits
                        in_flight[update["update_id"]] = _chat_of(update)
                        post = asyncio.create_task(self._post(session, update, in_flight))
                        posts.add(post)
                        post.add_done_callback(posts.discard)
            finally:
                # A new setWebhook (a restarted bot) delivers them afresh.
                for post in list(posts):
                    post.cancel()
                await asyncio.gather(*posts, return_exceptions=True)

    async def _post(
        self, session: aiohttp.ClientSession, update: dict[str, Any], in_flight: dict[int, int]
    ) -> None:
        headers = {"X-Telegram-Bot-Api-Secret-Token": self.webhook_secret}
        timeout = aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT)
        try:
            while self.webhook:
                try:
                    async with session.post(
                        self.webhook, json=update, headers=headers, timeout=timeout
                    ) as response:
                        if response.status == 200:
                            with suppress(ValueError):  # unless deleteWebhook dropped it
                                self.pending.remove(update)
                            self._confirm([update])
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass  # killed, restarting, or not listening yet: Telegram tries again too
                self.webhook_failures += 1
                await asyncio.sleep(WEBHOOK_RETRY_SECONDS)
        finally:
            in_flight.pop(update["update_id"], None)
            with suppress(RuntimeError):  # the loop is shutting down
                await self._notify()

    def _confirm(self, updates: list[dict[str, Any]]) -> None:
        # Telegram forgets an update once the bot asks past it or answers its POST: the bot
        # handled it (for ours, queued its job). Tests wait for this before killing a process.
        for update in updates:
            self._event("confirmed", _chat_of(update), update_id=update["update_id"])

    def _set_commands(self, params: dict[str, Any]) -> bool:
        self.commands = list(params.get("commands") or [])
        return True

    def _delete_commands(self, params: dict[str, Any]) -> bool:
        self.commands = []
        return True

    def _chat_action(self, params: dict[str, Any]) -> bool:
        self._event("action", int(params["chat_id"]), action=params.get("action"))
        return True

    def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        text = params.get("text") or ""
        if not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if len(text) > MAX_TEXT:
            raise ApiError(400, "Bad Request: message is too long")
        return self._bot_message(params, text=text)

    def _send_media(self, params: dict[str, Any], kind: str) -> dict[str, Any]:
        if len(params.get("caption") or "") > MAX_CAPTION:
            raise ApiError(400, "Bad Request: message caption is too long")
        if kind == "photo":
            stored = self._file_param(params.get("photo"), "photos", ".jpg")
            width, height = _image_size(stored.data)
            media: Any = [self._photo_size(stored, width, height)]
        else:
            stored = self._file_param(params.get("document"), "documents", "")
            media = {
                "file_id": stored.file_id,
                "file_unique_id": stored.unique_id,
                "file_size": len(stored.data),
            }
        return self._bot_message(params, caption=params.get("caption"), **{kind: media})

    @staticmethod
    def _photo_size(stored: StoredFile, width: int, height: int) -> dict[str, Any]:
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.unique_id,
            "width": width,
            "height": height,
            "file_size": len(stored.data),
        }

    def _edit(self, params: dict[str, Any], field: str | None) -> dict[str, Any]:
        chat_id, message_id = int(params["chat_id"]), int(params["message_id"])
        message = self.messages.get((chat_id, message_id))
        if message is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        if field == "text" and "text" not in message:
            raise ApiError(400, "Bad Request: there is no text in the message to edit")
        if len(params.get(field or "") or "") > (MAX_TEXT if field == "text" else MAX_CAPTION):
            raise ApiError(400, f"Bad Request: message {field} is too long")
        changed = dict(message)
        if field is not None:
            changed[field] = params.get(field) or ""
        # As on Telegram, an edit without reply_markup removes the inline keyboard.
        changed.pop("reply_markup", None)
        if params.get("reply_markup"):
            changed["reply_markup"] = params["reply_markup"]
        if changed == message:
            raise ApiError(
                400,
                "Bad Request: message is not modified: specified new message content and reply "
                "markup are exactly the same as a current content and reply markup of the message",
            )
        changed["edit_date"] = int(time.time())
        self.messages[chat_id, message_id] = changed
        self._event("edited", chat_id, message=self._public(changed))
        return changed

    def _answer_callback(self, params: dict[str, Any]) -> bool:
        query_id = str(params["callback_query_id"])
        chat_id = int(query_id.split(":")[0])
        self._event("answer", chat_id, callback_query_id=query_id, text=params.get("text"))
        return True

    def _get_file(self, params: dict[str, Any]) -> dict[str, Any]:
        stored = self.files.get(str(params.get("file_id")))
        if stored is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        if len(stored.data) > MAX_DOWNLOAD_BYTES:
            raise ApiError(400, "Bad Request: file is too big")
        return stored.info()

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        if self.webhook:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use "
                "deleteWebhook to delete the webhook first",
            )
        offset = int(params.get("offset") or 0)
        if offset > 0:
            confirmed = [u for u in self.pending if u["update_id"] < offset]
            self.pending = [u for u in self.pending if u["update_id"] >= offset]
            self._confirm(confirmed)
            if confirmed:
                await self._notify()
        limit = int(params.get("limit") or 100)
        timeout = 0 if self.ignore_poll_timeout else float(params.get("timeout") or 0)
        async with self.changed:
            with suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait_for(lambda: self.pending), timeout)
        return self.pending[:limit]

    # -- the user's side --------------------------------------------------------------------

    async def _add_update(self, update: dict[str, Any]) -> dict[str, Any]:
        update["update_id"] = next(self._update_ids)
        self.updates[update["update_id"]] = update
        self.pending.append(update)
        await self._notify()
        return update

    async def user_message(self, form: dict[str, Any]) -> dict[str, Any]:
        """A user sends text, a photo or a file (the `file` field), as an update for the bot."""
        user_id = int(form.get("user_id") or 1)
        chat_id = int(form.get("chat_id") or user_id)
        sender = {
            "id": user_id,
            "is_bot": False,
            "first_name": form.get("first_name") or "Tester",
            "language_code": form.get("language_code") or "en",
        }
        fields: dict[str, Any] = {"media_group_id": form.get("media_group_id") or None}
        upload = form.get("file")
        if isinstance(upload, web.FileField):
            data = upload.file.read()
            kind = form.get("kind") or "photo"
            if kind == "photo":
                stored = self._store_file(data, "photos", ".jpg")
                fields["photo"] = [self._photo_size(stored, *_image_size(data))]
            else:
                stored = self._store_file(data, "documents", "")
                fields["document"] = {
                    "file_id": stored.file_id,
                    "file_unique_id": stored.unique_id,
                    "file_name": form.get("filename") or upload.filename,
                    "mime_type": form.get("mime_type") or upload.content_type,
                    "file_size": len(data),
                }
            text_field = "caption"
        else:
            text_field = "text"
        text = form.get("text") or form.get("caption") or ""
        if text:
            fields[text_field] = text
            if text.startswith("/"):
                length = len(text.split()[0])
                fields[f"{text_field}_entities" if text_field == "caption" else "entities"] = [
                    {"type": "bot_command", "offset": 0, "length": length}
                ]
        target = form.get("reply_to_message_id")
        if target and (chat_id, int(target)) in self.messages:
            fields["reply_to_message"] = self._quoted(chat_id, int(target))
        message = self._message(chat_id, sender, **fields)
        self._event("user", chat_id, message=self._public(message))
        update = await self._add_update({"message": message})
        return {"update_id": update["update_id"], "message": message}

    async def press(self, form: dict[str, Any]) -> dict[str, Any]:
        """A user presses an inline button under a bot message."""
        chat_id, message_id = int(form["chat_id"]), int(form["message_id"])
        user_id = int(form.get("user_id") or chat_id)
        query_id = f"{chat_id}:{next(self._ids)}"
        query = {
            "id": query_id,
            "from": {
                "id": user_id,
                "is_bot": False,
                "first_name": form.get("first_name") or "Tester",
                "language_code": form.get("language_code") or "en",
            },
            "chat_instance": str(chat_id),
            "message": self.messages[chat_id, message_id],
            "data": form["data"],
        }
        self._event(
            "press", chat_id, data=form["data"], message_id=message_id, callback_query_id=query_id
        )
        update = await self._add_update({"callback_query": query})
        return {"update_id": update["update_id"], "callback_query_id": query_id}

    def jump_update_ids(self, first: int) -> None:
        """Number the next updates from `first`, as Telegram does after a week without any."""
        self._update_ids = itertools.count(first)

    async def redeliver(self, update_id: int) -> None:
        """Deliver an already delivered update again, as Telegram may."""
        self.pending.append(self.updates[update_id])
        await self._notify()

    async def wait_events(
        self, chat_id: int, after: int, timeout: float, kinds: frozenset[str] = frozenset()
    ) -> list[dict[str, Any]]:
        """Events of a chat after `after` (only of `kinds`, if given), waiting up to `timeout` s
        for the first one."""

        def fresh() -> list[dict[str, Any]]:
            events = self.chat_events.get(chat_id, [])
            if not events or events[-1]["seq"] <= after:
                return []
            return [e for e in events if e["seq"] > after and (not kinds or e["type"] in kinds)]

        async with self.changed:
            with suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait_for(fresh), timeout)
        return fresh()

    # -- HTTP -------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        try:
            self._check_token(request.match_info["token"])
            method = request.match_info["method"]
            self.calls[method] += 1
            if method in self.redirect_methods:
                raise web.HTTPFound(request.url)
            if self.faults.get(method):
                code = self.faults[method].pop(0)
                raise ApiError(code, FAULTS.get(code, HTTPStatus(code).phrase))
            params = await _read_params(request)
            self._check_chat_fault(method, params)
            self._check_flood(method, params)
            if method == "getUpdates":
                result: Any = await self._get_updates(params)
            elif method in self._methods:
                result = self._methods[method](params)
                await self._notify()
            else:
                raise ApiError(404, "Not Found: method not found")
        except ApiError as error:
            body = {"ok": False, "error_code": error.code, "description": error.description}
            if error.parameters:
                body["parameters"] = error.parameters
            return web.json_response(body, status=error.code)
        return web.json_response({"ok": True, "result": result})

    def _check_chat_fault(self, method: str, params: dict[str, Any]) -> None:
        chat_id = _sent_to(method, params)
        fault = self.chat_faults.get(chat_id) if chat_id is not None else None
        if fault is None:
            return
        if fault.times:
            fault.times -= 1
            if not fault.times:
                del self.chat_faults[chat_id]
        self._event("refused", chat_id, method=method, code=fault.code)
        raise ApiError(fault.code, fault.description, fault.parameters)

    def _check_flood(self, method: str, params: dict[str, Any]) -> None:
        chat_id = params.get("chat_id")
        left = self.flood.get(int(chat_id)) if chat_id is not None else None
        if not left or _sent_to(method, params) is None:
            return
        left[0] -= 1
        if left[0] <= 0:
            del self.flood[int(chat_id)]
        self._event("flood", int(chat_id), method=method, retry_after=left[1])
        description = f"Too Many Requests: retry after {left[1]}"
        raise ApiError(429, description, {"retry_after": left[1]})

    async def _download(self, request: web.Request) -> web.Response:
        try:
            self._check_token(request.match_info["token"])
        except ApiError:
            raise web.HTTPUnauthorized() from None
        path = request.match_info["path"]
        if self.hold_downloads:
            self.held_downloads += 1
            async with self.changed:
                await self.changed.wait_for(lambda: not self.hold_downloads)
        stored = self.paths.get(path)
        if stored is None or len(stored.data) > MAX_DOWNLOAD_BYTES:
            raise web.HTTPNotFound()
        return web.Response(body=stored.data)

    async def _test_message(self, request: web.Request) -> web.Response:
        return web.json_response(await self.user_message(await _read_params(request)))

    async def _test_callback(self, request: web.Request) -> web.Response:
        return web.json_response(await self.press(await _read_params(request)))

    async def _test_redeliver(self, request: web.Request) -> web.Response:
        await self.redeliver(int((await _read_params(request))["update_id"]))
        return web.json_response({"ok": True})

    async def _test_events(self, request: web.Request) -> web.Response:
        query = request.query
        kinds = frozenset(filter(None, query.get("types", "").split(",")))
        events = await self.wait_events(
            int(query["chat_id"]), int(query.get("after", 0)), float(query.get("timeout", 0)), kinds
        )
        return web.json_response({"events": events, "last": len(self.events)})

    async def _test_file(self, request: web.Request) -> web.Response:
        stored = self.files.get(request.match_info["file_id"])
        if stored is None:
            raise web.HTTPNotFound()
        return web.Response(body=stored.data, content_type="image/png")

    async def _test_downloads(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            self.hold_downloads = (await _read_params(request))["hold"] in (True, "1", "true")
            await self._notify()
        return web.json_response({"hold": self.hold_downloads, "held": self.held_downloads})

    async def _test_flood(self, request: web.Request) -> web.Response:
        params = await _read_params(request)
        self.flood[int(params["chat_id"])] = [int(params["times"]), int(params["retry_after"])]
        return web.json_response({"ok": True})

    async def _test_chat_fault(self, request: web.Request) -> web.Response:
        params = await _read_params(request)
        chat_id = int(params.pop("chat_id"))
        if params.get("code"):
            self.chat_faults[chat_id] = ChatFault(**params)
        else:
            self.chat_faults.pop(chat_id, None)
        return web.json_response({"ok": True})

    async def _test_commands(self, request: web.Request) -> web.Response:
        return web.json_response({"commands": self.commands})

    def app(self) -> web.Application:
        """The aiohttp application serving the Bot API and the `/test` endpoints."""
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES)
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        app.router.add_post("/test/message", self._test_message)
        app.router.add_post("/test/callback", self._test_callback)
        app.router.add_post("/test/redeliver", self._test_redeliver)
        app.router.add_get("/test/events", self._test_events)
        app.router.add_get("/test/file/{file_id}", self._test_file)
        app.router.add_get("/test/commands", self._test_commands)
        app.router.add_route("*", "/test/downloads", self._test_downloads)
        app.router.add_post("/test/flood", self._test_flood)
        app.router.add_post("/test/chat_fault", self._test_chat_fault)
        return app


def _chat_of(update: dict[str, Any]) -> int:
    message = update.get("message") or update["callback_query"]["message"]
    return int(message["chat"]["id"])


def _sent_to(method: str, params: dict[str, Any]) -> int | None:
    """The chat a send or an edit goes to (None for any other call)."""
    chat_id = params.get("chat_id")
    if chat_id is None or not method.startswith(("send", "edit")) or method == "sendChatAction":
        return None
    return int(chat_id)


async def _read_params(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        return await request.json()
    form = dict(request.query)
    if request.method == "POST":
        form.update(await request.post())
    return {
        key: json.loads(value) if key in JSON_FIELDS and isinstance(value, str) else value
        for key, value in form.items()
    }


async def _shut_down(runner: web.AppRunner) -> None:
    await runner.cleanup()
    # Long polls still waiting would otherwise be collected later, outside their loop.
    pending = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


@contextmanager
def serve_in_thread(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `app` on its own event loop in a daemon thread; yields its base URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, host, port)
    loop.run_until_complete(site.start())
    bound_host, bound_port = runner.addresses[0][:2]
    thread = threading.Thread(target=loop.run_forever, name="fake-telegram", daemon=True)
    thread.start()
    try:
        yield f"http://{bound_host}:{bound_port}"
    finally:
        # Clean up on the running loop, so pending long polls are cancelled, not destroyed.
        asyncio.run_coroutine_threadsafe(_shut_down(runner), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


class PlaygroundClient:
    """The user's side over HTTP (sync): what the tests and the bench use."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=60)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self.http.close()

    def send(self, chat_id: int, *, file: bytes | None = None, **form: Any) -> dict[str, Any]:
        """Send a message as user `chat_id`: text, or a file (`kind="photo"` or `"document"`)."""
        data = {"chat_id": str(chat_id), **{k: str(v) for k, v in form.items()}}
        files = {"file": (form.get("filename", "photo.jpg"), file)} if file is not None else None
        response = self.http.post("/test/message", data=data, files=files)
        response.raise_for_status()
        return response.json()

    def press(self, chat_id: int, message_id: int, data: str, **form: Any) -> dict[str, Any]:
        """Press the inline button with callback `data` under message `message_id`."""
        body = {"chat_id": chat_id, "message_id": message_id, "data": data, **form}
        response = self.http.post("/test/callback", json=body)
        response.raise_for_status()
        return response.json()

    def redeliver(self, update_id: int) -> None:
        """Deliver update `update_id` to the bot once more."""
        self.http.post("/test/redeliver", json={"update_id": update_id}).raise_for_status()

    def hold_downloads(self, hold: bool) -> None:
        """Stall file downloads until released (a slow file server)."""
        self.http.post("/test/downloads", json={"hold": hold}).raise_for_status()

    def flood(self, chat_id: int, times: int, retry_after: int) -> None:
        """Answer the bot's next `times` sends to the chat with 429 and `retry_after` seconds."""
        body = {"chat_id": chat_id, "times": times, "retry_after": retry_after}
        self.http.post("/test/flood", json=body).raise_for_status()

    def refuse(
        self,
        chat_id: int,
        code: int,
        description: str,
        times: int = 0,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        """Answer the bot's sends to the chat with error `code`, `times` times (0: until
        cleared by `code=0`)."""
        body = {"chat_id": chat_id, "code": code, "description": description, "times": times}
        if parameters:
            body["parameters"] = parameters
        self.http.post("/test/chat_fault", json=body).raise_for_status()

    def block(self, chat_id: int) -> None:
        """The user blocks the bot: its sends get 403, as Telegram answers them."""
        self.refuse(chat_id, 403, BLOCKED)

    def upgrade_group(self, chat_id: int, supergroup_id: int) -> None:
        """The group becomes a supergroup: sends to its old id get 400 with the new one."""
        self.refuse(chat_id, 400, MIGRATED, parameters={"migrate_to_chat_id": supergroup_id})

    def held_downloads(self) -> int:
        """How many downloads waited on a hold so far."""
        response = self.http.get("/test/downloads")
        response.raise_for_status()
        return response.json()["held"]

    def events(
        self, chat_id: int, after: int = 0, timeout: float = 0, types: tuple[str, ...] = ()
    ) -> list[dict[str, Any]]:
        """The chat's events after sequence number `after` (only of `types`, if given;
        long-polls up to `timeout` s)."""
        query = {"chat_id": chat_id, "after": after, "timeout": timeout, "types": ",".join(types)}
        response = self.http.get("/test/events", params=query, timeout=timeout + 30)
        response.raise_for_status()
        return response.json()["events"]

    def wait_for(
        self,
        chat_id: int,
        done: Callable[[list[dict[str, Any]]], bool],
        timeout: float = 120,
        after: int = 0,
        types: tuple[str, ...] = (),
    ) -> list[dict[str, Any]]:
        """Long-poll the chat's events after `after` (only of `types`, if given) until
        `done(events)`; fail after `timeout`."""
        deadline = time.monotonic() + timeout
        seen: list[dict[str, Any]] = []
        cursor = after
        while not done(seen):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"chat {chat_id}: condition not met; events: {seen}")
            fresh = self.events(chat_id, cursor, timeout=min(left, 10), types=types)
            if fresh:
                seen += fresh
                cursor = fresh[-1]["seq"]
        return seen

    def file(self, file_id: str) -> bytes:
        """Bytes of a file the bot or a user sent."""
        response = self.http.get(f"/test/file/{file_id}")
        response.raise_for_status()
        return response.content
