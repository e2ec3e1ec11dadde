"""Attacks through the chat on the real bot in webhook mode (with a real worker and reply
sender), and cross-site requests to the playground page: each refused or answered in words."""

from __future__ import annotations

import pytest

from harness import chat_attacks
from harness.stack import Stack


@pytest.mark.slow
@pytest.mark.reliability
def test_chat_attacks(stack: Stack) -> None:
    """Another group member's press and text, a button flood, a 4,096-character breed name,
    replies of 1,500 classes and a redirect error quoting the token: each held."""
    results = chat_attacks.chat_attacks(stack)
    failed = [n for n, s in results.items() if s["held"] != s["tried"] or not s.get("ok", True)]
    assert failed == [], {n: results[n] for n in failed}


@pytest.mark.reliability
def test_playground_refuses_cross_site_and_rebound_requests() -> None:
    """A cross-site form POST of /promote, a wrong or missing run token, a foreign Host: 403;
    the page's own request (same origin, this run's token) is accepted."""
    seen = chat_attacks.playground_requests()
    assert seen["held"] == seen["tried"] and seen["ok"], seen
