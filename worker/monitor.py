"""Flower for breedbot, with a broker URL it can read queues from.

Flower is only a client of the broker. Workers use a patched Redis transport
(worker/transport.py), whose URL reads `worker.transport:Transport://...`; Flower's Broker tab
and queue API know only URL schemes such as `redis`, and answered 404 ("'redis' broker is not
supported").
"""

from __future__ import annotations

from celery import Celery


def run(app: Celery, argv: list[str]) -> None:
    """Run Flower for `app` in this process (Flower's own command line in `argv`)."""
    # Flower only reads: kombu's plain Redis transport, whose redis:// URL Flower understands.
    app.conf.broker_transport = None
    app.start(["flower", *argv])
