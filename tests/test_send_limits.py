"""Telegram's send limits in the reply sender: per chat, overall, across processes, and 429s."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
import redis
from celery import Celery

import contract
from bot import limits
from fakegram.api import PlaygroundClient
from ops.redis_server import RedisServer
from worker.celery_app import create_app
from worker.settings import WorkerSettings

if TYPE_CHECKING:
    from harness.services import Service

FAST = limits.Limits(per_chat=4.0, chat_burst=2, overall=1000.0)


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A flushed client on the session's Redis."""
    connection = redis.Redis.from_url(redis_server.url, decode_responses=True)
    connection.flushdb()
    yield connection
    connection.close()


def test_a_chat_gets_its_burst_then_one_slot_per_interval(client: redis.Redis) -> None:
    """Burst 2 at 4/s: two replies now, the next ones 0.25 s apart; another chat is not held."""

    def slot(chat_id: int, key: str) -> float:  # the reserved send time, seconds from `start`
        return time.time() + limits.take(client, chat_id, key, FAST)[0] - start

    start = time.time()
    slots = [slot(1, f"r{i}") for i in range(5)]
    assert slots == pytest.approx([0, 0, 0.25, 0.5, 0.75], abs=0.05)
    # Not held by chat 1's limit; the overall one may space it by one slot (1 ms) from chat 1's
    # last reply, when that was reserved less than a slot ago (it was a race in this test).
    chat_wait, global_wait = limits.take(client, 2, "other", FAST)
    assert chat_wait == 0 and 0 <= global_wait <= 1 / FAST.overall
    # Asked again (a deferred or redelivered reply), a reply keeps its slot: no new one is taken.
    assert slot(1, "r4") == pytest.approx(slots[4], abs=0.01)
    assert slot(1, "r5") == pytest.approx(1.0, abs=0.05)


def test_the_overall_limit_spaces_replies_to_different_chats(client: redis.Redis) -> None:
    """At 10/s overall, the second reply (another chat) waits about 0.1 s; nothing is taken."""
    slow = limits.Limits(per_chat=1.0, chat_burst=1, overall=10.0)
    assert limits.take(client, 1, "a", slow) == (0, 0)
    chat_wait, global_wait = limits.take(client, 2, "b", slow)
    assert chat_wait == 0 and global_wait == pytest.approx(0.1, abs=0.02)
    started = time.monotonic()
    limits.wait_turn(client, 2, "b", slow)
    assert time.monotonic() - started == pytest.approx(0.1, abs=0.08)


def test_a_far_turn_defers_and_a_429_holds_the_chat(client: redis.Redis) -> None:
    """A turn past the inline wait raises Deferred; after a 429, new replies queue past it."""
    one = limits.Limits(per_chat=1.0, chat_burst=1, overall=1000.0)
    limits.wait_turn(client, 7, "first", one)
    with pytest.raises(limits.Deferred) as deferred:
        limits.wait_turn(client, 7, "second", one)
    assert deferred.value.seconds == pytest.approx(1.0, abs=0.05)
    limits.hold_chat(client, 8, 5)
    assert limits.take(client, 8, "after-429", one)[0] == pytest.approx(5.0, abs=0.05)


@pytest.fixture(scope="module")
def limited_url(redis_server: RedisServer) -> str:
    """A Redis database of this module's own: no other test's reply sender takes its replies."""
    return redis_server.url.rsplit("/", 1)[0] + "/8"


@pytest.fixture(scope="module")
def repliers(spawn_replier: Callable[..., Service], limited_url: str) -> list[Service]:
    """Two reply senders on one Redis: the limits hold for both together."""
    env = {"REPLY_RATE_PER_CHAT": "2", "REPLY_CHAT_BURST": "2", "REPLY_RATE_OVERALL": "30"}
    return [spawn_replier(f"limited{i}", REDIS_URL=limited_url, **env) for i in range(2)]


@pytest.fixture(scope="module")
def sender(limited_url: str) -> Iterator[Celery]:
    """A client publishing reply tasks to that database."""
    app = create_app(WorkerSettings(redis_url=limited_url))
    yield app
    app.close()


@pytest.fixture(scope="module")
def chat(emulator_url: str) -> Iterator[PlaygroundClient]:
    """The user's side of the emulator."""
    with contextlib.closing(PlaygroundClient(emulator_url)) as user:
        yield user


def _reply(sender: Celery, chat_id: int, key: str) -> None:
    stats = contract.Stats(active_version=0, jobs_today=1, avg_latency_ms=None).to_dict()
    target = contract.ReplyTo(chat_id=chat_id, key=key).to_dict()
    sender.send_task(contract.REPLY, args=[stats], kwargs={"reply_to": target, "kind": "stats"})


def _sent_times(events: list[dict[str, Any]]) -> list[float]:
    return [e["at"] for e in events if e["type"] == "sent"]


@pytest.mark.slow
def test_a_flooding_chat_is_paced_and_never_delays_another(
    repliers: list[Service], sender: Celery, chat: PlaygroundClient
) -> None:
    """Ten replies to one chat go out 2 a second (after a burst of 2); another chat's reply,
    queued behind them, arrives at once; each is sent exactly once."""
    flood, calm, warm = 61_001, 61_002, 61_000
    for i in range(4):  # both senders warm (first connections), so sends follow their slots
        _reply(sender, warm + i * 10, f"warm-{i}")
    for i in range(4):
        chat.wait_for(warm + i * 10, lambda ev: bool(_sent_times(ev)), timeout=60)
    for i in range(10):
        _reply(sender, flood, f"flood-{i}")
    queued = time.time()
    _reply(sender, calm, "calm")
    calm_at = _sent_times(chat.wait_for(calm, lambda ev: bool(_sent_times(ev)), timeout=60))
    assert calm_at[0] - queued < 2.0
    times = _sent_times(chat.wait_for(flood, lambda ev: len(_sent_times(ev)) >= 10, timeout=60))
    time.sleep(1)  # nothing more may come: each reply once
    assert len(_sent_times(chat.events(flood))) == 10 and len(calm_at) == 1
    # 2/s for both senders together: never more than the burst plus 2 in any second (a send may
    # lag its slot on a loaded machine, so single gaps vary), 4 s from the first to the last.
    assert max(sum(t <= start + 1.0 for t in times[i:]) for i, start in enumerate(times)) <= 4
    assert times[-1] - times[0] == pytest.approx(4.0, abs=1.0)


@pytest.mark.slow
def test_retry_after_is_honoured(
    repliers: list[Service], sender: Celery, chat: PlaygroundClient
) -> None:
    """Telegram answers 429 with retry_after=2: the reply comes once, 2 s later, not lost."""
    user = 61_003
    chat.flood(user, times=1, retry_after=2)
    _reply(sender, user, "after-flood")
    events = chat.wait_for(user, lambda ev: bool(_sent_times(ev)), timeout=60)
    refused = [e["at"] for e in events if e["type"] == "flood"]
    assert len(refused) == 1
    assert _sent_times(events)[0] - refused[0] >= 2.0
    time.sleep(1)
    assert len(_sent_times(chat.events(user))) == 1
