"""A local Telegram Bot API emulator and the playground chat page: a development tool.

The bot never imports it: the real PTB client talks to it through `base_url`, as to Telegram.
"""
