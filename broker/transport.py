"""kombu's Redis transport with one fix and two savings: losing Redis no longer takes the worker
down; one client per channel, and no transactions around the unacked bookkeeping (below).

When the broker connection drops (a Redis restart), Celery closes the channel. kombu's channel
then tries to put the messages it delivered back on their queues, and later to ack the tasks
that were still running, through a connection that is gone: `AttributeError: 'NoneType' object
has no attribute 'hostname'` (or `'client'`), which Celery treats as unrecoverable, so the
worker exits and every queued job waits (seen in tests/test_reliability.py::
test_redis_restarted_mid_run). Those messages are still in Redis' unacked hash; any worker's
`restore_visible` puts them back once the visibility timeout has passed (photo jobs come back
sooner through bot/outbox.py), which is what this transport leaves them to.

The same fix serves `redis://`, `rediss://` (TLS: the same transport with an SSL connection) and
`sentinel://` (kombu's Sentinel channel, which asks the Sentinels for the master on every
connect): `TRANSPORTS` maps each scheme to its patched class.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import kombu.transport
from kombu.transport import redis

log = logging.getLogger(__name__)
TRANSPORT = "broker.transport:Transport"
SENTINEL_TRANSPORT = "broker.transport:SentinelTransport"
TRANSPORTS = {"redis": TRANSPORT, "rediss": TRANSPORT, "sentinel": SENTINEL_TRANSPORT}


class QoS(redis.QoS):
    """Redis QoS that leaves delivered messages in Redis once their connection is gone."""

    def _connection_lost(self) -> bool:
        transport = self.channel.connection
        return transport is None or transport.client is None

    @contextlib.contextmanager
    def pipe_or_acquire(self, pipe: Any = None, client: Any = None) -> Iterator[Any]:
        """`pipe`, or a pipeline without MULTI/EXEC for recording a delivery or an ack.

        Each message is recorded in the unacked index and hash when delivered and removed from
        both when acked: two pipelines per task, each wrapped in a transaction, whose MULTI,
        EXEC and QUEUED replies were most of a Celery process's Redis work. Nothing needs them
        atomic: the commands still go in one write and run in order, and `restore_visible` only
        takes entries older than the visibility timeout, never one being written or removed.
        """
        if pipe:
            yield pipe
            return
        with self.channel.conn_or_acquire(client) as acquired:
            yield acquired.pipeline(transaction=False)

    def restore_unacked(self, client: object = None) -> None:
        """Put delivered messages back on their queues, unless the broker connection is lost."""
        if client is None and self._connection_lost():
            log.warning(
                "broker connection lost: %d delivered messages wait in Redis' unacked hash "
                "and are redelivered after the visibility timeout",
                len(self._delivered),
            )
            self._delivered.clear()
            return
        super().restore_unacked(client)

    def ack(self, delivery_tag: str) -> None:
        """Acknowledge, unless the message came over a connection that is gone.

        A task still running when the connection dropped finishes later; its message is in
        Redis' unacked hash and is delivered again (a classify or reply re-run answers nothing
        twice: replies are keyed).
        """
        if self._connection_lost():
            log.warning("not acking %s: its broker connection was lost", delivery_tag)
            return
        super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """Reject, unless the message came over a connection that is gone (as for `ack`)."""
        if self._connection_lost():
            log.warning("not rejecting %s: its broker connection was lost", delivery_tag)
            return
        super().reject(delivery_tag, requeue=requeue)


class Channel(redis.Channel):
    """A Redis channel using the QoS above, storing message bodies as they are."""

    QoS = QoS
    # kombu base64-encodes every body by default, on top of the JSON (and of the photo's own
    # base64): a third more bytes through Redis, encoded and decoded once per message. Our bodies
    # are JSON text; a consumer reads each message's own `body_encoding`, so old ones still work.
    body_encoding = None
    _shared_client: Any = None

    @contextlib.contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """`client`, or one shared client of this channel's pool (kombu builds a new one each time).

        Building a redis-py client fills its response-callback tables: a third of what a worker
        thread spent acking a message and publishing its events. A client is thread-safe (each
        command takes a connection from the pool), and a new pool (after a fork or a lost
        connection) gets a new one.
        """
        if client:
            yield client
            return
        shared = self._shared_client
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._shared_client = self._create_client()
        yield shared


class Transport(redis.Transport):
    """The Redis transport using the channel above (`broker_transport` for redis:// URLs)."""

    Channel = Channel


class SentinelChannel(Channel, redis.SentinelChannel):
    """kombu's Sentinel channel (master found through the Sentinels) with the fixes above."""


class SentinelTransport(Transport, redis.SentinelTransport):
    """The Sentinel transport using the channel above (`broker_transport` for sentinel:// URLs)."""

    default_port = redis.SentinelTransport.default_port
    Channel = SentinelChannel


def transport_for(url: str) -> str | None:
    """The patched transport for `url`'s scheme (redis, rediss, sentinel), else None (kombu's)."""
    return TRANSPORTS.get(url.split("://", 1)[0])


def patch_schemes() -> None:
    """Make kombu resolve redis, rediss and sentinel to the patched transports, idempotently.

    `broker_transport` names the transport for the first URL only: on a connection error kombu
    moves to the next URL of a `;` list (`Connection.switch`), and takes its transport from that
    URL's scheme. A Sentinel URL lists every Sentinel, so a failover would otherwise end on kombu's
    unpatched transport, which takes the worker down at the next lost connection.
    """
    for scheme, path in TRANSPORTS.items():
        if kombu.transport.TRANSPORT_ALIASES.get(scheme) != path:
            kombu.transport.TRANSPORT_ALIASES[scheme] = path
            kombu.transport._transport_cache.pop(scheme, None)
