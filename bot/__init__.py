"""The Telegram front end: python-telegram-bot handlers that queue jobs by name (no TensorFlow)."""
