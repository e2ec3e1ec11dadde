"""What the bot, the worker and the model agree on: stdlib-only definitions that each imports."""
