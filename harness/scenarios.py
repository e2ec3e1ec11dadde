"""The reliability scenarios: each takes a running `Stack` and a size, does the fault, and returns
counts. The tests assert on them at a small size; `bench/reliability.py` runs them at full size
and writes the table.
"""

from __future__ import annotations

import json
import random
import re
import string
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bot.i18n import STRINGS
from harness.faults import COMMANDS, bad_images, bad_zips
from harness.sentinel import SentinelGroup
from harness.stack import ADMIN, Stack
from harness.user import (
    TRAINING,
    Sent,
    all_events,
    answers,
    csv_sample_zip,
    finals,
    pet_photos,
    send_document,
    send_photos,
    send_retrain,
    texts,
    wait_answered,
    wait_drained,
)
from harness.waiting import in_background, wait_until
from store.blobs import blob_key
from store.registry import STORE_RECORDS
from worker.versions import STAGING_DIR

# --- Scenarios ---------------------------------------------------------------------------------

# Fast redelivery of a killed worker's jobs: the visibility timeout must exceed the retrain hard
# limit (settings enforce it), so a deployment that wants this keeps retrains short.
FAST_REDELIVERY = {
    "RETRAIN_SOFT_TIME_LIMIT": "4",
    "RETRAIN_TIME_LIMIT": "5",
    "VISIBILITY_TIMEOUT": "8",
    "UNACKED_RESTORE_INTERVAL": "1",
}


def worker_killed(stack: Stack, n_photos: int, users: int, kills: int, seed: int = 5) -> dict:
    """Scenario 1: photos from many users while the worker is SIGKILLed `kills` times."""
    # Services are spawned from the main thread only: PR_SET_PDEATHSIG fires when the spawning
    # *thread* exits, so a worker started from a helper thread would get SIGTERM with it.
    worker = stack.start_worker("w1", **FAST_REDELIVERY)
    stack.start_bot()
    rng = random.Random(seed)
    started = time.monotonic()
    sending = in_background(lambda: send_photos(stack, pet_photos(n_photos), users, pace=0.1))
    window = n_photos * 0.1 / users
    for n in range(kills):
        time.sleep(rng.uniform(0.2, 0.8) * window / kills)
        worker.kill()
        worker = stack.start_worker(f"w{n + 2}", **FAST_REDELIVERY)
    sent = sending()
    counts = wait_answered(stack, sent, timeout=120 + n_photos)
    counts["stuck_jobs"] = wait_drained(stack, 60)
    counts["kills"] = kills
    counts["seconds"] = round(time.monotonic() - started, 1)
    return counts


# --- Retrains through the bot ------------------------------------------------------------------


def registry_state(stack: Stack) -> dict[str, Any]:
    """What the registry exposes: the active version, the listed ones, and listed versions whose
    record or files the store lacks (half written)."""
    reg = stack.registry()
    records = reg.records()
    half = [
        version
        for version, record in records.items()
        if not reg.store.exists(f"{STORE_RECORDS}{version}.json")
        or not all(reg.store.exists(blob_key(sha)) for sha in record.get("bundle", {}).values())
    ]
    listed = [info.version for info in reg.list_versions()]
    return {"active": reg.active_version(), "listed": listed, "half_written": half}


def bot_restarted(stack: Stack, n_photos: int, users: int) -> dict:
    """Scenario 2: SIGKILL and restart the bot while photos and a retrain are in flight."""
    stack.start_worker("w1")
    stack.start_bot()
    client = stack.client()
    try:
        send_retrain(client, csv_sample_zip(), "/retrain steps=200 flip=0 min_acc=0")
        wait_until(lambda: texts(stack.fake, ADMIN, ("sent",)), 30)
        sending = in_background(lambda: send_photos(stack, pet_photos(n_photos), users, 2000))
        time.sleep(0.5)
        assert stack.bot is not None
        stack.bot.kill()
        sent = sending()  # these updates wait in the emulator until the new bot polls
        stack.start_bot()
        counts = wait_answered(stack, sent, timeout=120 + n_photos)
        done = wait_until(lambda: finals(stack.fake), 240)
        time.sleep(2)
        counts["retrain_final_messages"] = len(finals(stack.fake))
        counts["retrain_outcome"] = done[0].splitlines()[0] if done else "none"
        counts["stuck_jobs"] = wait_drained(stack, 30)
    finally:
        client.close()
    return counts


def _accepted(stack: Stack, sent: list[Sent]) -> bool:
    """True once the bot queued every photo (it confirms an update once its job is published)."""
    assert stack.fake is not None
    handled = Counter(e["chat_id"] for e in list(stack.fake.events) if e["type"] == "confirmed")
    wanted = Counter(s.chat_id for s in sent)
    return all(handled[chat] >= n for chat, n in wanted.items())


def redis_restarted(stack: Stack, n_photos: int, users: int, down_seconds: float = 3.0) -> dict:
    """Scenario 3: restart Redis (AOF on) mid-run; every photo gets an answer or a "try again".

    Photos the bot queued before the stop are answered (the AOF keeps the queue); photos sent
    while Redis is down get one quoted "please try again" (the bot cannot queue them and says so
    at once rather than holding them); photos after the restart are answered as usual.
    """
    worker = stack.start_worker("w1", **FAST_REDELIVERY)
    bot = stack.start_bot()
    half = n_photos // 2
    before = send_photos(stack, pet_photos(half), users, 3000)
    wait_until(lambda: _accepted(stack, before), 60, interval=0.02)
    stack.stop_redis()
    during = send_photos(stack, pet_photos(users), users, 3100)
    time.sleep(down_seconds)
    stack.start_redis()
    after = send_photos(stack, pet_photos(n_photos - half), users, 3200)
    counts: dict[str, Any] = {}
    for name, group in (("before", before), ("while_down", during), ("after", after)):
        got = wait_answered(stack, group, timeout=120)
        counts[name] = {k: got[k] for k in ("sent", "answered", "answered_twice", "errors")}
    counts["stuck_jobs"] = wait_drained(stack, 60)
    counts["worker_alive"] = worker.alive()
    counts["bot_alive"] = bot.alive()
    return counts


def _left_on(group: SentinelGroup, timeout: float) -> dict[str, int]:
    """Once drained (or at timeout): messages still queued, and entries of the unacked hash with
    and without their entry in its index (only indexed ones are ever redelivered)."""
    client = group.client()

    def left() -> dict[str, int]:
        queued = sum(client.llen(q) for q in ("infer", "train", "control"))
        indexed = client.zcard("unacked_index")
        return {
            "queued": queued,
            "unacked_indexed": indexed,
            "unacked_unindexed": client.hlen("unacked") - indexed,
        }

    try:
        wait_until(lambda: not any(left().values()), timeout)
        return left()
    finally:
        client.close()


def _twice_kinds(stack: Stack, sent: list[Sent]) -> dict[str, int]:
    """Photos replied more than once: with the same answer again, or "try again" and an answer."""
    kinds: Counter[str] = Counter()
    for replies in answers(stack, sent).values():
        if len(replies) > 1:
            texts_ = [m.get("caption") or m.get("text") or "" for m in replies]
            errors = sum(t.startswith(("Sorry", "Desculpe")) for t in texts_)
            kinds["error_then_answer" if 0 < errors < len(texts_) else "same_reply"] += 1
    return dict(kinds)


def redis_failover(stack: Stack, group: SentinelGroup, n_photos: int, users: int) -> dict:
    """Photos flowing through the real bot, reply sender and worker, all on a Sentinel URL, while
    the Redis master is SIGKILLed (Sentinel promotes the replica); answered, lost, twice."""
    stack.env.update(group.env)
    with group.environment():  # this process pings the services through the Sentinels too
        worker = stack.start_worker("w1", **FAST_REDELIVERY)
        bot = stack.start_bot()
        pace = 0.25
        sending = in_background(lambda: send_photos(stack, pet_photos(n_photos), users, 5000, pace))
        time.sleep(n_photos * pace / users / 3)  # a third of the photos sent
        old = group.kill_master()
        failover_seconds = group.wait_failover(old)
        sent = sending()
        counts = wait_answered(stack, sent, timeout=120 + n_photos)
        counts["twice_kinds"] = _twice_kinds(stack, sent)
        counts["left"] = _left_on(group, 60)
    counts["failover_seconds"] = round(failover_seconds, 1)
    counts["alive"] = {s.name: s.alive() for s in (worker, bot, stack.replier) if s is not None}
    return counts


def killed_in_training(stack: Stack, retrain_limit: int = 60) -> dict:
    """Scenario 4: SIGKILL the worker during a retrain's training step, then start another."""
    limits = {
        "RETRAIN_SOFT_TIME_LIMIT": str(retrain_limit),
        "RETRAIN_TIME_LIMIT": str(retrain_limit + 5),
        "VISIBILITY_TIMEOUT": str(retrain_limit + 10),
        "UNACKED_RESTORE_INTERVAL": "1",
    }
    root = stack.models_root
    worker = stack.start_worker("w1", **limits)
    stack.start_bot()
    before = registry_state(stack)
    client = stack.client()
    try:
        # Long enough to be caught training: 5 folds and 3 L2 values train before the final fit.
        caption = "/retrain steps=2000 eval_every=100 flip=0 min_acc=0"
        send_retrain(client, csv_sample_zip(), caption)
        training = wait_until(
            lambda: [t for t in texts(stack.fake, ADMIN, ("edited",)) if TRAINING in t],
            240,
        )
        worker.kill()
        killed = time.monotonic()
        cached = len(list((Path(stack.env["BOTTLENECK_DIR"])).rglob("*.npy")))
        after_kill = registry_state(stack)
        stack.start_worker("w2", **limits)
        done = wait_until(lambda: finals(stack.fake), retrain_limit * 3 + 120)
        time.sleep(2)
        state = registry_state(stack)
    finally:
        client.close()
    reused = None
    if done and done[0].startswith("✅"):
        record = json.loads((root / str(max(state["listed"])) / "metrics.json").read_text())
        reused = record.get("bottlenecks", {}).get("cached")
    return {
        "killed_in_training": bool(training),
        "active_before": before["active"],
        "active_after_kill": after_kill["active"],
        "listed_after_kill": after_kill["listed"],
        "half_written_listed": after_kill["half_written"] + state["half_written"],
        "bottlenecks_cached_at_kill": cached,
        "final_messages": len(finals(stack.fake)),
        "outcome": done[0].splitlines()[0] if done else "none",
        "seconds_kill_to_final": round(time.monotonic() - killed, 1),
        "rerun_bottlenecks_from_cache": reused,
        "active_after": state["active"],
    }


def _immutable(path: Path, on: bool) -> bool:
    """chattr +i/-i (even root cannot write into an immutable folder); False if unsupported."""
    flag = "+i" if on else "-i"
    done = subprocess.run(["chattr", flag, str(path)], capture_output=True, check=False)
    return done.returncode == 0


def storage_failures(stack: Stack, file_limit_mb: int = 2) -> dict:
    """Scenario 5: disk full (RLIMIT_FSIZE) and a read-only models folder while a version is
    written; each retrain gets a clear failure and the active version stays."""
    root = stack.models_root
    results: dict[str, Any] = {}
    limit = str(file_limit_mb * 2**20)
    client = stack.client()
    try:
        # Disk full: no file of the worker may grow past the limit (the SavedModel does).
        argv = [
            "-c",
            f"import resource,runpy,sys; resource.setrlimit(resource.RLIMIT_FSIZE, "
            f"({limit}, {limit})); sys.argv = ['breedbot', 'worker', '-n', 'full@%h']; "
            "runpy.run_module('ops.cli', run_name='__main__')",
        ]
        worker = stack.start("full", argv, "worker")
        stack.start_bot()
        before = registry_state(stack)
        send_retrain(client, csv_sample_zip(), "/retrain steps=50 flip=0 min_acc=0")
        done = wait_until(lambda: finals(stack.fake), 300)
        results["disk_full"] = {
            "reply": done[0] if done else "none",
            "active_unchanged": registry_state(stack)["active"] == before["active"],
            "listed": registry_state(stack)["listed"],
            "worker_alive": worker.alive(),
        }
        worker.stop()
        worker = stack.start_worker("ro")
        (root / STAGING_DIR).mkdir(parents=True, exist_ok=True)
        if _immutable(root, True):
            try:
                seen = len(finals(stack.fake))
                send_retrain(client, csv_sample_zip(), "/retrain steps=50 flip=0 min_acc=0")
                done = wait_until(lambda: finals(stack.fake)[seen:], 300)
            finally:
                _immutable(root, False)
            results["read_only"] = {
                "reply": done[0] if done else "none",
                "active_unchanged": registry_state(stack)["active"] == before["active"],
                "listed": registry_state(stack)["listed"],
                "worker_alive": worker.alive(),
            }
        else:
            results["read_only"] = {"skipped": "chattr +i is not permitted here"}
    finally:
        client.close()
    return results


# --- Bad input ---------------------------------------------------------------------------------


TRAINED = ("✅", "⚠️")


def _prefix(language: str, key: str) -> str:
    from bot.i18n import pick_language, t

    return t(pick_language(language), key, reason="\0", problems="\0").split("\0")[0]


def _refusal(language: str, key: str, reply: str) -> bool:
    """Whether `reply` is the `key` refusal, its reason worded in the user's language.

    English reasons are the worker's own text; other languages must match one of the bot's
    wordings of a problem (bot/i18n.py PROBLEMS), values filled in.
    """
    from bot.i18n import PROBLEMS, pick_language

    prefix = _prefix(language, key)
    if not reply.startswith(prefix):
        return False
    chosen = pick_language(language)
    # English lists only the bot's own overrides: any other English reason is the worker's text.
    if chosen == "en" or chosen not in PROBLEMS:
        return len(reply) > len(prefix)
    templates = PROBLEMS[chosen]
    # The reply sender ends every refusal as a sentence (bot.i18n.sentence): a full stop added.
    return any(
        re.fullmatch(_pattern(tpl) + r"\.?", reply[len(prefix) :], re.S)
        for tpl in templates.values()
    )


def _pattern(template: str) -> str:
    """A regular expression matching `template` whatever values fill its fields."""
    parts = string.Formatter().parse(template)
    return "".join(
        re.escape(text) + (".+?" if field is not None else "") for text, field, _, _ in parts
    )


# The first character of every status a retrain shows before its final text, in any language.
PROGRESS_MARKS = tuple(
    {
        text[0]
        for strings in STRINGS.values()
        for key, text in strings.items()
        if key.startswith("progress_") or key == "retrain_queued"
    }
)


def _final_reply(stack: Stack, chat_id: int, message_id: int, timeout: float) -> str:
    """The bot's last word on a user's message: its latest message in the chat since then, or
    the final edit of a status message (the bot answers in-chat without always quoting)."""
    assert stack.fake is not None

    def last() -> str:
        events = all_events(stack.fake, chat_id)
        asked = next(
            e["seq"]
            for e in events
            if e["type"] == "user" and e["message"]["message_id"] == message_id
        )
        later = [
            e["message"] for e in events if e["seq"] > asked and e["type"] in ("sent", "edited")
        ]
        texts = [m.get("text") or m.get("caption") or "" for m in later]
        # "confus": the confusion matrix's caption in English and in Portuguese ("confusão").
        final = [t for t in texts if not t.startswith(PROGRESS_MARKS) and "confus" not in t]
        return final[-1] if final else ""

    return wait_until(last, timeout) or ""


def _row(kind: str, case: str, language: str, expected: str, seen: str, ok: bool) -> dict:
    return {
        "kind": kind,
        "case": case,
        "language": language,
        "expected": expected,
        "seen": seen.splitlines()[0] if seen else "no reply",
        "ok": ok,
    }


def bad_input(stack: Stack, full: bool, languages: tuple[str, ...] = ("en", "pt-br")) -> list[dict]:
    """Every bad image, zip and command through the real bot; one row per case and language.
    A refused input must leave the active version as it was; the worker must survive them all."""
    worker = stack.start_worker("w1")
    stack.start_bot()
    client = stack.client()
    rows = []

    def active() -> int:
        return stack.registry().active_version()

    try:
        start, user = active(), 5000
        for name, (data, answerable) in bad_images().items():
            for language in languages:
                user += 1
                sent = send_document(
                    client, user, data, "x.jpg", "image/jpeg", language_code=language
                )
                reply = _final_reply(stack, user, sent, 90)
                refused = reply.startswith(_prefix(language, "bad_image"))
                expected = "breed answer" if answerable else "clear refusal"
                rows.append(
                    _row(
                        "image",
                        name,
                        language,
                        expected,
                        reply,
                        bool(reply) and refused != answerable,
                    )
                )
        for name, (text, key) in COMMANDS.items():
            for language in languages:
                sent = client.send(ADMIN, text=text, user_id=ADMIN, language_code=language)
                reply = _final_reply(stack, ADMIN, sent["message"]["message_id"], 60)
                # Option problems are the bot's own; a failed job's reason comes from the worker.
                if key == "job_failed":
                    refused = _refusal(language, key, reply)
                else:
                    refused = reply.startswith(_prefix(language, key))
                rows.append(_row("command", name, language, "clear refusal", reply, refused))
        rows.append(
            _row(
                "model",
                "active model after images and commands",
                "",
                f"v{start}",
                f"v{active()}",
                active() == start,
            )
        )
        for i, (name, (data, trainable)) in enumerate(bad_zips(full).items()):
            language = languages[i % len(languages)]
            before = active()
            caption = "/retrain steps=20 flip=0 min_acc=1"
            reply = _final_reply(
                stack, ADMIN, send_retrain(client, data, caption, language_code=language), 300
            )
            refused = _refusal(language, "retrain_failed", reply)
            expected = "trains, or a clear refusal" if trainable else "clear refusal, model kept"
            rows.append(
                _row(
                    "zip",
                    name,
                    language,
                    expected,
                    reply,
                    # A zip that trains is answered ✅ (live) or ⚠️ (kept out by min_acc=1).
                    (refused and active() == before) or (trainable and reply.startswith(TRAINED)),
                )
            )
    finally:
        client.close()
    alive = worker.alive()
    rows.append(_row("worker", "worker survives", "", "alive", "alive" if alive else "dead", alive))
    return rows
