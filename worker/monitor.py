"""Flower for breedbot: a broker URL it can read queues from, and /metrics behind its login.

Flower is only a client of the broker. Workers use a patched Redis transport
(worker/transport.py), whose URL reads `worker.transport:Transport://...`; Flower's Broker tab
and queue API know only URL schemes such as `redis`, and answered 404 ("'redis' broker is not
supported"). Flower also serves /metrics (task names, worker host names) to anyone, even with
basic auth on: here it asks for the same credentials, unless PUBLIC_METRICS opens it.
"""

from __future__ import annotations

from celery import Celery


def _authenticated_metrics() -> type:
    from flower.views import monitor
    from tornado import web

    class Metrics(monitor.Metrics):
        """Flower's Prometheus endpoint, for clients with Flower's credentials only."""

        @web.authenticated
        async def get(self) -> None:
            await super().get()

    return Metrics


def protect_metrics() -> None:
    """Make Flower's /metrics ask for its basic auth (or login), as its other pages do."""
    from flower import urls
    from flower.views import monitor

    # Flower builds its routes from this list when its app starts.
    for index, entry in enumerate(urls.handlers):
        if isinstance(entry, tuple) and entry[1] is monitor.Metrics:
            urls.handlers[index] = (entry[0], _authenticated_metrics(), *entry[2:])


def run(app: Celery, argv: list[str], public_metrics: bool = False) -> None:
    """Run Flower for `app` in this process (Flower's own command line in `argv`)."""
    # Flower only reads: kombu's plain Redis transport, whose redis:// URL Flower understands.
    app.conf.broker_transport = None
    if not public_metrics:
        protect_metrics()
    app.start(["flower", *argv])
