"""The compute service: Celery app, thin tasks, per-process model serving and retraining.

It imports `contract` and `model`, never `bot`. This file imports nothing.
"""
