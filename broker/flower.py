"""Flower's Celery app: a client with no task module, so Flower loads neither a model nor the bot.

Run it as `celery -A broker.flower flower` (compose) or `breedbot flower` (basic auth added).
"""

from __future__ import annotations

from celery import Celery

from broker.config import client_config
from broker.settings import BrokerSettings


def _config() -> dict:
    url = BrokerSettings().broker_url()
    return {**client_config(url), "result_backend": url}


app = Celery("breedbot", set_as_current=False)
app.add_defaults(_config)
