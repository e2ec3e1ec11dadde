"""The one way every breedbot process makes a Redis client: `redis://`, `rediss://` (TLS) and
`sentinel://` URLs, with the same timeouts and retries everywhere.

A Sentinel URL uses kombu's syntax, one `sentinel://` per Sentinel joined by `;`
(`sentinel://:password@host1:26379/0;sentinel://host2:26379;sentinel://host3:26379`); the
password and database of the first one are the master's. The master's name and the Sentinels' own
password are settings (REDIS_MASTER_NAME, REDIS_SENTINEL_PASSWORD in broker/settings.py).
A `rediss://` URL checks the server's certificate unless its query says otherwise
(`?ssl_cert_reqs=none`), and may name `ssl_ca_certs`, `ssl_certfile` and `ssl_keyfile`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.sentinel
from redis.backoff import ExponentialBackoff

from broker.settings import SentinelSettings

SENTINEL_SCHEME = "sentinel"
SENTINEL_SEPARATOR = ";"
# Long enough for a server busy writing its AOF; short enough that a dead one is noticed.
SOCKET_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
# A connection idle this long is PINGed before use: a failover or restart closed it meanwhile.
HEALTH_CHECK_SECONDS = 30
# Each retry reconnects (through the Sentinels: to the new master); 0.05 s doubling to 2 s apart.
DEFAULT_RETRIES = 6
BACKOFF = {"base": 0.05, "cap": 2.0}
RETRIED = [redis.ConnectionError, redis.TimeoutError]


@dataclass(frozen=True)
class SentinelUrl:
    """A parsed `sentinel://` URL: the Sentinels' addresses and the master's database/password."""

    sentinels: list[tuple[str, int]]
    db: int
    password: str | None
    username: str | None


def is_sentinel(url: str) -> bool:
    """True for a `sentinel://` URL (kombu's syntax)."""
    return url.startswith(f"{SENTINEL_SCHEME}://")


def parse_sentinel_url(url: str) -> SentinelUrl:
    """The Sentinels of `sentinel://h1:p1/db;sentinel://h2:p2`; db and password from the first."""
    parts = [urlsplit(chunk.strip()) for chunk in url.split(SENTINEL_SEPARATOR) if chunk.strip()]
    if not parts or any(p.scheme != SENTINEL_SCHEME for p in parts):
        raise ValueError(f"not a sentinel:// URL (one per Sentinel, joined by ';'): {url!r}")
    first = parts[0]
    db = first.path.strip("/")
    return SentinelUrl(
        sentinels=[(p.hostname or "127.0.0.1", p.port or 26379) for p in parts],
        db=int(db) if db else 0,
        password=unquote(first.password) if first.password else None,
        username=unquote(first.username) if first.username else None,
    )


def _common(retries: int, asynchronous: bool, opts: dict[str, Any]) -> dict[str, Any]:
    retry_class = redis.asyncio.retry.Retry if asynchronous else redis.retry.Retry
    return {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "health_check_interval": HEALTH_CHECK_SECONDS,
        "retry": retry_class(ExponentialBackoff(**BACKOFF), retries),
        "retry_on_error": RETRIED,
        **opts,
    }


def _master(
    url: str, sentinel: SentinelSettings | None, asynchronous: bool, kwargs: dict[str, Any]
) -> Any:
    parsed = parse_sentinel_url(url)
    # A process's settings carry these; a caller with only a URL reads them from the environment.
    options = sentinel or SentinelSettings()
    module = redis.asyncio.sentinel if asynchronous else redis.sentinel
    sentinel_kwargs = {
        "socket_timeout": kwargs["socket_connect_timeout"],
        "socket_connect_timeout": kwargs["socket_connect_timeout"],
        "password": options.sentinel_password,
    }
    manager = module.Sentinel(parsed.sentinels, sentinel_kwargs=sentinel_kwargs)
    return manager.master_for(
        options.redis_master_name,
        db=parsed.db,
        password=parsed.password,
        username=parsed.username,
        **kwargs,
    )


def redis_client(
    url: str,
    *,
    sentinel: SentinelSettings | None = None,
    retries: int = DEFAULT_RETRIES,
    **opts: Any,
) -> redis.Redis:
    """A client of `url` (redis://, rediss://, unix:// or sentinel://); `opts` go to redis-py.

    Commands that meet a closed connection or a timeout are retried `retries` times, backing
    off to 2 s: a client rides out a Redis restart or a Sentinel failover of a few seconds.
    """
    kwargs = _common(retries, False, opts)
    if is_sentinel(url):
        return _master(url, sentinel, False, kwargs)
    return redis.Redis.from_url(url, **kwargs)


def async_redis_client(
    url: str,
    *,
    sentinel: SentinelSettings | None = None,
    retries: int = DEFAULT_RETRIES,
    **opts: Any,
) -> redis.asyncio.Redis:
    """The asyncio twin of `redis_client` (the bot's front end), configured the same way."""
    kwargs = _common(retries, True, opts)
    if is_sentinel(url):
        return _master(url, sentinel, True, kwargs)
    return redis.asyncio.Redis.from_url(url, **kwargs)
