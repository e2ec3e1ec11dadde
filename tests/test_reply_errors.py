"""Telegram's error answers to the reply sender, from the emulator's fault injection: a user who
blocked the bot (403), a group upgraded to a supergroup (400 with migrate_to_chat_id), any other
400, and the group pace. A real reply sender process on its own Redis database."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
import redis
from celery import Celery

import contract
from bot import botapi, limits
from fakegram.api import PlaygroundClient
from harness.stack import Stack
from harness.waiting import wait_until
from ops.redis_server import RedisServer
from worker.celery_app import create_app
from worker.settings import WorkerSettings

if TYPE_CHECKING:
    from harness.services import Service

DB = 11  # workers use 0, redelivery tests 5 to 7, send limits 8, test_replies 9
GROUP_PACE = limits.Limits(per_chat=1.0, chat_burst=3, overall=1000.0, per_group=1 / 3)


@pytest.fixture(scope="module")
def errors_url(redis_server: RedisServer) -> str:
    """A Redis database of this module's own: no other test's reply sender takes its replies."""
    return redis_server.url.rsplit("/", 1)[0] + f"/{DB}"


@pytest.fixture(scope="module")
def store(errors_url: str) -> Iterator[redis.Redis]:
    """A client of that database (emptied first)."""
    client = redis.Redis.from_url(errors_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="module")
def sender(
    spawn_replier: Callable[..., Service], errors_url: str, store: redis.Redis
) -> Iterator[Service]:
    """The reply sender; groups at 30 a minute with no burst, so their pace shows in seconds.
    Stopped after the module, so that no later bot takes it for the session's sender."""
    env = {"REPLY_GROUP_PER_MINUTE": "30", "REPLY_GROUP_BURST": "1"}
    service = spawn_replier("errors", REDIS_URL=errors_url, **env)
    yield service
    service.stop()


@pytest.fixture(scope="module")
def clients(errors_url: str, emulator_url: str) -> Iterator[tuple[Celery, PlaygroundClient]]:
    """A client publishing reply tasks to that database, and the users' side of the emulator
    with its fault injection."""
    app = create_app(WorkerSettings(redis_url=errors_url))
    with contextlib.closing(PlaygroundClient(emulator_url)) as user:
        yield app, user
    app.close()


def _reply(app: Celery, store: redis.Redis, chat_id: int, key: str) -> str:
    """Queue a reply with its outbox entry, as a photo job's chain has; returns the entry's id."""
    outbox_id = f"outbox-{key}"
    signature = {"task": contract.CLASSIFY, "args": [], "kwargs": {}}
    store.hset(contract.OUTBOX_JOBS, outbox_id, contract.OutboxEntry(signature).to_json())
    store.zadd(contract.OUTBOX_DUE, {outbox_id: time.time()})
    stats = contract.Stats(active_version=0, jobs_today=1, avg_latency_ms=None).to_dict()
    target = contract.ReplyTo(chat_id=chat_id, key=key).to_dict()
    kwargs = {"reply_to": target, "kind": "stats", "outbox_id": outbox_id}
    app.send_task(contract.REPLY, args=[stats], kwargs=kwargs)
    return outbox_id


def _done(store: redis.Redis, outbox_id: str) -> None:
    """Wait until the reply task is done with its job: the outbox will not run it again."""
    wait_until(lambda: not store.hexists(contract.OUTBOX_JOBS, outbox_id), 60, what=outbox_id)


def _kinds(chat: PlaygroundClient, chat_id: int) -> list[str]:
    return [e["type"] for e in chat.events(chat_id)]


def _sent_times(events: list[dict[str, Any]]) -> list[float]:
    return [e["at"] for e in events if e["type"] == "sent"]


def test_error_answers_become_typed_errors() -> None:
    """403, 400 with migrate_to_chat_id, another 400 and 429, as botapi raises them."""

    def error(code: int, **parameters: Any) -> botapi.TelegramError:
        body = {"ok": False, "error_code": code, "description": f"error {code}"}
        return botapi._error("sendMessage", {**body, "parameters": parameters})

    assert isinstance(error(403), botapi.Forbidden)
    moved = error(400, migrate_to_chat_id=-1001)
    assert isinstance(moved, botapi.ChatMigrated) and moved.new_chat_id == -1001
    assert isinstance(error(400), botapi.BadRequest) and "error 400" in str(error(400))
    assert isinstance(error(429, retry_after=3), botapi.RetryAfter)
    assert type(error(502)) is botapi.TelegramError


def test_groups_get_the_group_pace_and_a_blocked_chat_no_slot(redis_server: RedisServer) -> None:
    """A group (negative id) at 20 a minute: a burst of 3, then one slot every 3 s, while a
    private chat gets one a second; a chat marked blocked raises Blocked and takes no slot."""
    client = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + f"/{DB + 1}")
    client.flushdb()
    start = time.time()
    group = [
        time.time() + limits.take(client, -5, f"g{i}", GROUP_PACE)[0] - start for i in range(5)
    ]
    private = [
        time.time() + limits.take(client, 5, f"p{i}", GROUP_PACE)[0] - start for i in range(5)
    ]
    assert group == pytest.approx([0, 0, 0, 3, 6], abs=0.05)
    assert private == pytest.approx([0, 0, 0, 1, 2], abs=0.05)
    limits.block_chat(client, 6, 60)
    with pytest.raises(limits.Blocked):
        limits.wait_turn(client, 6, "to-a-blocker", GROUP_PACE)
    assert not client.exists(limits.CHAT_KEY.format(6), limits.SLOT_KEY.format("to-a-blocker"))
    assert 0 < client.ttl(limits.BLOCKED_KEY.format(6)) <= 60
    client.close()


@pytest.mark.slow
def test_a_user_who_blocked_the_bot_is_asked_once(
    sender: Service, clients: tuple[Celery, PlaygroundClient], store: redis.Redis
) -> None:
    """403: the reply is dropped and its job leaves the outbox (no re-run of the photo job); the
    next reply to that chat is dropped without a call to Telegram."""
    app, chat = clients
    user = 62_001
    chat.block(user)
    _done(store, _reply(app, store, user, "to-a-blocker-1"))
    assert store.exists(limits.BLOCKED_KEY.format(user))
    _done(store, _reply(app, store, user, "to-a-blocker-2"))
    assert _kinds(chat, user) == ["refused"]  # one call, the first; nothing was sent


@pytest.mark.slow
def test_an_upgraded_group_is_answered_in_its_supergroup(
    sender: Service, clients: tuple[Celery, PlaygroundClient], store: redis.Redis
) -> None:
    """400 with migrate_to_chat_id: the reply goes to the supergroup, once, and the job is done."""
    app, chat = clients
    group, supergroup = -62_002, -1_000_062_002
    chat.upgrade_group(group, supergroup)
    _done(store, _reply(app, store, group, "to-an-old-group"))
    [answer] = [e for e in chat.events(supergroup) if e["type"] == "sent"]
    assert answer["message"]["chat"]["id"] == supergroup
    assert _kinds(chat, group) == ["refused"]


@pytest.mark.slow
def test_another_bad_request_fails_once_with_its_reason_logged(
    sender: Service, clients: tuple[Celery, PlaygroundClient], store: redis.Redis
) -> None:
    """Any other 400 fails the reply once, its reason in the log, and the job leaves the
    outbox; once Telegram accepts again, the next reply goes out, and only that one."""
    app, chat = clients
    user, reason = 62_003, "Bad Request: message is too long"
    chat.refuse(user, 400, reason, times=1)
    _done(store, _reply(app, store, user, "too-long"))
    wait_until(lambda: reason in sender.log_text(), 30, what="the reason in the sender's log")
    _reply(app, store, user, "short")
    chat.wait_for(user, lambda events: bool(_sent_times(events)), timeout=60)
    time.sleep(1)  # nothing more may come: the refused reply is not tried again
    assert _kinds(chat, user) == ["refused", "sent"]


@pytest.mark.slow
def test_a_group_is_paced_at_the_group_rate(
    sender: Service, clients: tuple[Celery, PlaygroundClient], store: redis.Redis
) -> None:
    """Four replies to a group at 30 a minute, no burst: the last goes out 6 s or more after
    they were queued (at the private pace it would be under 2 s); each is sent once."""
    app, chat = clients
    group = -62_004
    queued = time.time()
    for i in range(4):
        _reply(app, store, group, f"to-a-group-{i}")
    times = _sent_times(chat.wait_for(group, lambda ev: len(_sent_times(ev)) >= 4, timeout=60))
    time.sleep(1)
    assert len(_sent_times(chat.events(group))) == 4
    assert times[-1] - queued >= 6.0 - 0.1


@pytest.mark.slow
def test_a_user_who_writes_again_is_answered_again(session_stack: Stack) -> None:
    """The real front end forgets a block as soon as the user writes (only a user who unblocked
    the bot can), so the answer to that message is not dropped."""
    url = session_stack.redis_url(DB + 2)  # no worker there: the /breeds job just waits
    client = redis.Redis.from_url(url)
    user = 62_005
    limits.block_chat(client, user)
    bot = session_stack.start("bot-unblock", ["-m", "bot.app"], "bot", REDIS_URL=url)
    try:
        with contextlib.closing(session_stack.client()) as chat:
            chat.send(user, text="/breeds", user_id=user)
            blocked = limits.BLOCKED_KEY.format(user)
            wait_until(lambda: not client.exists(blocked), 60, what="the block to be forgotten")
            # The job is published after the outbox write that forgets the block: wait for it.
            wait_until(lambda: client.llen(contract.QUEUE_CONTROL) == 1, 30, what="the job queued")
    finally:
        bot.kill()
        client.close()
