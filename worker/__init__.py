"""The service: Celery app, thin tasks, per-process model serving, Redis and the local stack.

The bot imports only `worker.contract` from here (stdlib only), so this file imports nothing.
"""
