"""Flower for breedbot: a task-less client app, a broker URL Flower can read, /metrics behind login.

Flower is only a client of the broker. Its app includes no task module, so it loads neither a
model nor the bot. The other processes use a patched Redis transport (broker/transport.py), whose
URL reads `broker.transport:Transport://...`; Flower's Broker tab and queue API know only URL
schemes such as `redis`, so Flower's URL keeps its scheme. Flower also serves /metrics
(task names, worker host names) to anyone, even with basic auth on: here it asks for the same
credentials, unless PUBLIC_METRICS opens it.

`python -m broker.flower --address=0.0.0.0 --port=5555` (compose), or `breedbot flower`.
"""

from __future__ import annotations

import sys
from functools import partial
from typing import Any

from celery import Celery

from broker.config import client_config
from broker.settings import BrokerSettings


class FlowerSettings(BrokerSettings):
    """What Flower reads from the environment besides its own FLOWER_* options."""

    # Flower's /metrics without credentials, for a Prometheus on the same network that scrapes
    # without basic auth. Not FLOWER_*: Flower takes every such variable for one of its options.
    public_metrics: bool = False


def _config() -> dict:
    settings = FlowerSettings()
    config = client_config(settings.broker_url(), settings)
    # No `broker_transport`: the URL keeps its scheme, which Flower's Broker tab understands
    # (kombu resolves the scheme to the same patched transport, see broker/transport.py).
    return {**config, "broker_transport": None, "result_backend": config["broker_url"]}


app = Celery("breedbot", set_as_current=False)
app.add_defaults(_config)


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


# How often Flower looks for workers it has events from but has not inspected yet (seconds).
INSPECT_NEW_WORKERS_EVERY = 5.0


def _inspect_uninspected(flower: Any) -> None:
    """Ask each live worker Flower has no queues for yet for its stats and queues."""
    for name, worker in list(flower.events.state.workers.items()):
        if worker.alive and "active_queues" not in flower.inspector.workers.get(name, {}):
            flower.update_workers(workername=name)


def inspect_new_workers() -> None:
    """Make Flower inspect workers that come up after it, not only those up at its start."""
    from flower.app import Flower
    from tornado.ioloop import PeriodicCallback

    start = Flower.start

    # Flower inspects once, when it starts; a worker that starts a second later showed no
    # queues (Broker tab, /api/workers) until someone opened its page.
    def start_and_watch(self: Flower) -> None:
        every_ms = INSPECT_NEW_WORKERS_EVERY * 1000
        PeriodicCallback(partial(_inspect_uninspected, self), every_ms).start()
        start(self)

    Flower.start = start_and_watch


def run(argv: list[str]) -> None:
    """Run Flower in this process (Flower's own command line in `argv`)."""
    if not FlowerSettings().public_metrics:
        protect_metrics()
    inspect_new_workers()
    app.start(["flower", *argv])


if __name__ == "__main__":
    run(sys.argv[1:])
