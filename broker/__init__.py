"""Celery plumbing every breedbot process shares: broker settings, base configs, the transport.

It imports `contract` and Celery, never `bot`, `worker` or `model`: the bot, its reply sender,
the worker and Flower all build their apps from here.
"""
