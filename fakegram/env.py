"""What points a bot and its reply sender at the playground's emulator: plain values, no imports,
so the `make up` runner that passes them on stays small."""

from __future__ import annotations

PLAYGROUND_TOKEN = "1000001:playground-token"


def playground_env(url: str) -> dict[str, str]:
    """Environment for workers (and the bot) to talk to the emulator at `url`."""
    return {"TELEGRAM_BOT_TOKEN": PLAYGROUND_TOKEN, "TELEGRAM_API_URL": url}
