"""Telegram's send limits, shared through Redis by every reply sender.

Telegram asks bots for about one message a second per chat and about 30 a second overall, and
answers 429 with `retry_after` past that. Each reply first takes its turn here, in one Lua call:

- per chat, a reservation (GCRA, with a small burst): the reply's slot is stored under its
  idempotency key, so a reply deferred until its slot, or redelivered, keeps it; a chat that
  floods queues its replies one a second behind each other, and claims no global budget for
  them until each is due, so it never delays other chats;
- overall, a plain take-or-wait (GCRA): a reply whose chat slot is due takes the next global
  slot, or learns how long until one is free.

The reply task sleeps for short waits and is deferred (a Celery retry with a countdown, which
holds no thread) for long ones. A 429 pushes the chat's next slot past its `retry_after`.

Groups (negative chat ids) get Telegram's group pace, about 20 messages a minute, instead of the
private chat's one a second. A chat whose user blocked the bot (403) is remembered for a day, so
its later replies are dropped here without a call; the front end forgets it as soon as that user
writes again (bot/jobs.py), which they can only do once they have unblocked the bot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

CHAT_KEY = "breedbot:rate:chat:{}"  # the chat's theoretical arrival time (ms)
SLOT_KEY = "breedbot:rate:slot:{}"  # one reply's reserved send time (ms), by its reply key
GLOBAL_KEY = "breedbot:rate:global"  # the bot's theoretical arrival time (ms)
BLOCKED_KEY = "breedbot:rate:blocked:{}"  # set while the chat's user has blocked the bot
BLOCKED_TTL = 24 * 3600
SLOT_TTL_MS = 15 * 60 * 1000  # a reservation outlives any deferral of its reply
# Waits up to this long are slept in the task's thread; longer ones defer the task.
INLINE_WAIT_S = 0.25

# KEYS: chat, slot, global, blocked. ARGV: now, chat interval, chat burst, global interval, global
# burst, slot ttl (all ms or counts). Returns {ms until the chat slot, ms until a global slot};
# {0, 0} means the reply may go now and both slots were taken; {-1, 0} that the chat is blocked.
_TAKE = """
if redis.call('EXISTS', KEYS[4]) == 1 then return {-1, 0} end
local now = tonumber(ARGV[1])
local slot = tonumber(redis.call('GET', KEYS[2]) or '-1')
if slot < 0 then
  local interval = tonumber(ARGV[2])
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  slot = math.max(now, tat - interval * (tonumber(ARGV[3]) - 1))
  tat = math.max(tat, slot) + interval
  redis.call('SET', KEYS[1], tat, 'PX', math.ceil(tat - now) + 1000)
  redis.call('SET', KEYS[2], slot, 'PX', math.ceil(slot - now) + tonumber(ARGV[6]))
end
if slot > now then return {math.ceil(slot - now), 0} end
local interval = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[3]) or '0')
local allowed = tat - interval * (tonumber(ARGV[5]) - 1)
if now < allowed then return {0, math.ceil(allowed - now)} end
tat = math.max(tat, now) + interval
redis.call('SET', KEYS[3], tat, 'PX', math.ceil(tat - now) + 1000)
return {0, 0}
"""

# KEYS: chat. ARGV: the time (ms) before which nothing more goes to the chat.
_HOLD = """
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local until_ms = tonumber(ARGV[1])
if until_ms > tat then
  redis.call('SET', KEYS[1], until_ms, 'PX', math.ceil(until_ms - tonumber(ARGV[2])) + 1000)
end
return 0
"""


@dataclass(frozen=True)
class Limits:
    """Messages per second per private chat and per group (each with a burst), and overall."""

    per_chat: float = 1.0
    chat_burst: int = 3
    overall: float = 30.0
    overall_burst: int = 1
    per_group: float = 20 / 60
    group_burst: int = 3

    def chat_pace(self, chat_id: int) -> tuple[float, int]:
        """Messages a second and burst for `chat_id`: groups' ids are negative."""
        if chat_id < 0:
            return self.per_group, self.group_burst
        return self.per_chat, self.chat_burst


class Blocked(Exception):
    """The chat's user blocked the bot (a 403 not long ago): send nothing to it."""


class Deferred(Exception):
    """This reply's turn is `seconds` away: run it again then (its slot stays reserved)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"deferred {seconds:.2f} s by the send limits")
        self.seconds = seconds


def _ms() -> float:
    return time.time() * 1000


def take(client: redis.Redis, chat_id: int, reply_key: str, limits: Limits) -> tuple[float, float]:
    """Seconds until this reply's chat slot and until a global slot; (0, 0): both taken.

    Raises `Blocked` for a chat whose user blocked the bot.
    """
    script = client.register_script(_TAKE)
    rate, burst = limits.chat_pace(chat_id)
    chat_ms, global_ms = script(
        keys=[
            CHAT_KEY.format(chat_id),
            SLOT_KEY.format(reply_key),
            GLOBAL_KEY,
            BLOCKED_KEY.format(chat_id),
        ],
        args=[
            _ms(),
            1000 / rate,
            burst,
            1000 / limits.overall,
            limits.overall_burst,
            SLOT_TTL_MS,
        ],
    )
    if int(chat_ms) < 0:
        raise Blocked(f"chat {chat_id} blocked the bot")
    return int(chat_ms) / 1000, int(global_ms) / 1000


def wait_turn(client: redis.Redis, chat_id: int, reply_key: str, limits: Limits) -> None:
    """Return when this reply may be sent; raise `Deferred` when its chat's turn is far off,
    `Blocked` when its user blocked the bot."""
    while True:
        chat_wait, global_wait = take(client, chat_id, reply_key, limits)
        if chat_wait > INLINE_WAIT_S:
            raise Deferred(chat_wait)
        if not chat_wait and not global_wait:
            return
        time.sleep(chat_wait or global_wait)


def hold_chat(client: redis.Redis, chat_id: int, seconds: float) -> None:
    """Send nothing more to `chat_id` for `seconds` (Telegram answered 429 with retry_after)."""
    now = _ms()
    client.register_script(_HOLD)(keys=[CHAT_KEY.format(chat_id)], args=[now + seconds * 1000, now])


def block_chat(client: redis.Redis, chat_id: int, seconds: float = BLOCKED_TTL) -> None:
    """Send nothing more to `chat_id` for `seconds` (Telegram answered 403: the bot is blocked)."""
    client.set(BLOCKED_KEY.format(chat_id), 1, ex=max(1, round(seconds)))
