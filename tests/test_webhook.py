"""The bot in webhook mode, as deployments run it: the real bot process receiving the emulator's
webhook deliveries (Telegram's retry on anything but 200 included), killed and attacked."""

from __future__ import annotations

import pytest

from harness import webhook_attacks
from harness.stack import Stack

pytestmark = [pytest.mark.slow, pytest.mark.reliability]


def test_webhook_bot_sigkilled_mid_update_loses_nothing(stack: Stack) -> None:
    """SIGKILL the webhook bot while it handles 6 photos of 3 users: Telegram gets no 200 for
    them, sends them again to the restarted bot, and each is answered once."""
    counts = webhook_attacks.bot_killed_mid_update(stack, n_photos=6, users=3)
    assert counts["answered"] == counts["sent"] == 6, counts
    assert counts["answered_twice"] == counts["errors"] == 0, counts
    # The updates in flight at the kill were not confirmed to Telegram before it.
    assert counts["confirmed_before_kill"] == 0, counts
    assert counts["posts_not_answered_200"] >= counts["in_flight_at_kill"], counts


def test_webhook_attacks(stack: Stack) -> None:
    """Unsigned admin commands, 95 MB bodies, 1,100 half-open connections, a far-ahead update
    id, the default listen address and a webhook without a secret: each held."""
    results = webhook_attacks.attacks(stack)
    failed = [n for n, s in results.items() if s["held"] != s["tried"] or not s.get("ok", True)]
    assert failed == [], {n: results[n] for n in failed}
