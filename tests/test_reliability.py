"""The reliability suite in its reduced form (CI): each fault scenario of `make reliability` at a
small size, on its own stack of real processes. The full sizes run in bench/reliability.py."""

from __future__ import annotations

import pytest

from bot.i18n import t
from harness import scenarios
from harness.registry_attacks import registry_attacks
from harness.stack import Stack

pytestmark = [pytest.mark.slow, pytest.mark.reliability]


def test_worker_sigkilled_mid_run(stack: Stack) -> None:
    """40 photos from 5 users, the worker SIGKILLed once: all answered once, nothing stuck."""
    counts = scenarios.worker_killed(stack, n_photos=40, users=5, kills=1)
    assert counts["answered"] == counts["sent"] == 40, counts
    assert counts["answered_twice"] == counts["errors"] == counts["stuck_jobs"] == 0, counts


def test_bot_restarted_with_photos_and_retrain_in_flight(stack: Stack) -> None:
    """The bot SIGKILLed and restarted while 10 photos and a retrain are in flight."""
    counts = scenarios.bot_restarted(stack, n_photos=10, users=5)
    assert counts["answered"] == counts["sent"] == 10, counts
    assert counts["answered_twice"] == counts["errors"] == counts["stuck_jobs"] == 0, counts
    assert counts["retrain_final_messages"] == 1, counts
    assert counts["retrain_outcome"].startswith("✅ Model v1 trained"), counts


def test_redis_restarted_mid_run(stack: Stack) -> None:
    """Redis stopped and restarted (AOF): accepted jobs are answered, photos sent while it was
    down get "please try again" (or an answer), later ones are answered; both services reconnect
    by themselves."""
    counts = scenarios.redis_restarted(stack, n_photos=10, users=2)
    for phase in ("before", "while_down", "after"):
        assert counts[phase]["answered"] == counts[phase]["sent"], counts
        assert counts[phase]["answered_twice"] == 0, counts
    # While Redis is down the bot says "please try again" (the first photos at least; one that
    # it reaches Redis again for, within its retry budget, is simply answered).
    assert counts["while_down"]["errors"] >= 1, counts
    assert counts["after"]["errors"] == 0, counts
    assert counts["stuck_jobs"] == 0 and counts["worker_alive"] and counts["bot_alive"], counts


def test_worker_killed_in_training_step(stack: Stack) -> None:
    """SIGKILL during training: nothing half-written listed, active model unchanged until the
    redelivered retrain finishes, and that re-run takes every bottleneck from the cache."""
    seen = scenarios.killed_in_training(stack, retrain_limit=30)
    assert seen["killed_in_training"], seen
    assert seen["active_after_kill"] == seen["active_before"] == 0, seen
    assert seen["listed_after_kill"] == [0] and seen["half_written_listed"] == [], seen
    assert seen["final_messages"] == 1, seen
    assert seen["outcome"].startswith("✅ Model v1 trained"), seen
    assert seen["rerun_bottlenecks_from_cache"] == seen["bottlenecks_cached_at_kill"] > 0, seen


def test_disk_full_and_read_only_models_folder(stack: Stack) -> None:
    """Writing a version fails: a clear reply naming the models folder; active model unchanged."""
    results = scenarios.storage_failures(stack)
    failed = t("en", "retrain_failed", reason="")
    for case, seen in results.items():
        if "skipped" in seen:
            continue
        assert seen["reply"].startswith(failed) and "models folder" in seen["reply"], (case, seen)
        assert seen["active_unchanged"] and seen["listed"] == [0], (case, seen)
        assert seen["worker_alive"], (case, seen)


def test_bad_images_zips_and_commands(stack: Stack) -> None:
    """Each bad image, zip and command gets a clear reply in the user's language (en, pt-BR);
    readable oddities are answered; the worker survives and the active model stays."""
    rows = scenarios.bad_input(stack, full=False)
    assert [row for row in rows if not row["ok"]] == []
    assert {row["kind"] for row in rows} == {"image", "zip", "command", "model", "worker"}


def test_forged_registry_records_pointers_and_queued_backbones(stack: Stack) -> None:
    """Issue 20 items 1 and 9 through the real interfaces: records and pointers written into
    Redis by someone else, retrain jobs pushed into the queue naming their own backbone. Each is
    refused or won back, nothing is written outside MODELS_DIR, the worker keeps serving
    (`harness/registry_attacks.py`; the "registry" rows of `make reliability`)."""
    rows = registry_attacks(stack)
    assert len(rows) == 6
    assert [row for row in rows if row["held"] != row["tried"]] == [], rows
