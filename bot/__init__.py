"""Everything Telegram: the PTB front end (handlers that queue jobs by name) and the reply sender
(reply tasks on the `reply` queue: texts, keyboards, charts, progress edits, feedback downloads).
It imports `contract` and `broker`, never `worker` or `model`, and no TensorFlow.
"""
