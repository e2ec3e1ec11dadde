"""The full reliability suite (`make reliability`): every fault scenario of issue 5 at full size
on real processes (emulator, real bot, real workers, real Redis with AOF and a password), the
bad-input corpus, the security and fuzz tests, and the load bench. Prints JSON and rewrites the
results table in docs/RELIABILITY.md; exits 1 if any row fails.
Run: .venv/bin/python bench/reliability.py [--only worker bot redis failover training storage
bad security inputs load registry webhook chat]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import load_bench
from bench.common import REPO, machine, update_section
from harness import registry_attacks, scenarios
from harness.sentinel import SentinelGroup
from harness.stack import Stack

RELIABILITY_MD = REPO / "docs" / "RELIABILITY.md"
Row = dict[str, Any]


def _on_stack(scenario: Callable[[Stack], Any]) -> Any:
    with (
        tempfile.TemporaryDirectory(prefix="reliability-") as tmp,
        Stack(Path(tmp)).running() as stack,
    ):
        return scenario(stack)


def _row(scenario: str, done: str, expected: str, seen: str, passed: bool, raw: Any) -> Row:
    return {
        "scenario": scenario,
        "done": done,
        "expected": expected,
        "seen": seen,
        "passed": bool(passed),
        "raw": raw,
    }


def worker_killed() -> list[Row]:
    """1. 200 photos from 20 users, the worker SIGKILLed twice."""
    c = _on_stack(lambda s: scenarios.worker_killed(s, n_photos=200, users=20, kills=2))
    seen = (
        f"{c['answered']}/{c['sent']} answered, {c['answered_twice']} twice, "
        f"{c['stuck_jobs']} stuck, {c['errors']} error replies, {c['seconds']} s"
    )
    ok = c["answered"] == c["sent"] and not (c["answered_twice"] or c["stuck_jobs"] or c["errors"])
    return [
        _row(
            "1. Worker killed",
            "200 photos from 20 users; SIGKILL the worker at 2 random "
            "moments, a new one started each time",
            "all 200 answered, none twice, no stuck job",
            seen,
            ok,
            c,
        )
    ]


def bot_restarted() -> list[Row]:
    """2. The bot SIGKILLed and restarted with 50 photos and a retrain in flight."""
    c = _on_stack(lambda s: scenarios.bot_restarted(s, n_photos=50, users=10))
    seen = (
        f"{c['answered']}/{c['sent']} answered, {c['answered_twice']} twice; retrain final "
        f"message {c['retrain_final_messages']}x: {c['retrain_outcome']}"
    )
    ok = (
        c["answered"] == c["sent"]
        and not c["answered_twice"]
        and c["retrain_final_messages"] == 1
        and c["retrain_outcome"].startswith("✅")
    )
    return [
        _row(
            "2. Bot restarted",
            "SIGKILL and restart the bot while 50 photos (10 users) and a retrain are in flight",
            "all 50 and the retrain's final message delivered, each once",
            seen,
            ok,
            c,
        )
    ]


def redis_restarted() -> list[Row]:
    """3. Redis stopped and restarted (AOF on) mid-run."""
    c = _on_stack(lambda s: scenarios.redis_restarted(s, n_photos=100, users=10, down_seconds=5))
    phases = {p: c[p] for p in ("before", "while_down", "after")}
    seen = "; ".join(
        f"{p}: {v['answered']}/{v['sent']} replied ({v['errors']} 'please try "
        f"again'), {v['answered_twice']} twice"
        for p, v in phases.items()
    )
    seen += (
        f"; {c['stuck_jobs']} stuck; worker and bot alive: {c['worker_alive'] and c['bot_alive']}"
    )
    ok = (
        all(v["answered"] == v["sent"] and not v["answered_twice"] for v in phases.values())
        and c["after"]["errors"] == 0
        and not c["stuck_jobs"]
        and c["worker_alive"]
        and c["bot_alive"]
    )
    return [
        _row(
            "3. Redis restarted",
            "stop Redis (SIGTERM, AOF flushed) right after 50 photos, "
            "send 10 while it is down, restart it on the same port and AOF after 5 s, send "
            "50 more",
            "accepted jobs answered; photos sent while it was down get a quoted "
            "'please try again' (or an answer, once Redis is back within the bot's retries); "
            "later ones answered; both services reconnect by themselves; nothing hangs",
            seen,
            ok,
            c,
        )
    ]


def redis_failover() -> list[Row]:
    """3b. The Redis master SIGKILLed with 200 photos in flight; Sentinel promotes the replica."""
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        root = Path(tmp)
        with SentinelGroup(root / "sentinel") as group, Stack(root / "stack").running() as stack:
            c = scenarios.redis_failover(stack, group, n_photos=200, users=10)
    left = c["left"]
    seen = (
        f"{c['answered']}/{c['sent']} replied ({c['errors']} 'please try again'), "
        f"{c['missing']} lost, {c['answered_twice']} twice {c['twice_kinds']}; new master after "
        f"{c['failover_seconds']} s; left in Redis: {left}; alive: {c['alive']}"
    )
    ok = c["answered"] == c["sent"] and not any(left.values()) and all(c["alive"].values())
    return [
        _row(
            "3b. Redis failover",
            "master, replica and 3 Sentinels (sentinel:// URL, passwords on both); 200 photos "
            "from 10 users through the bot, reply sender and worker; SIGKILL the master a third "
            "of the way in",
            "every photo replied (answer, or 'please try again' while no master answers); "
            "none lost; nothing left queued; every process rides it out; duplicates counted",
            seen,
            ok,
            c,
        )
    ]


def killed_in_training() -> list[Row]:
    """4. The worker SIGKILLed during a retrain's training step."""
    c = _on_stack(lambda s: scenarios.killed_in_training(s, retrain_limit=60))
    seen = (
        f"killed in training: {c['killed_in_training']}; active v{c['active_before']} → "
        f"v{c['active_after_kill']} after the kill; listed {c['listed_after_kill']}; "
        f"half-written listed: {c['half_written_listed']}; re-run after "
        f"{c['seconds_kill_to_final']} s: {c['outcome']}; bottlenecks from cache on the re-run "
        f"{c['rerun_bottlenecks_from_cache']}/{c['bottlenecks_cached_at_kill']}"
    )
    ok = (
        c["killed_in_training"]
        and c["active_after_kill"] == c["active_before"]
        and not c["half_written_listed"]
        and c["final_messages"] == 1
        and c["outcome"].startswith("✅")
        and c["rerun_bottlenecks_from_cache"] == c["bottlenecks_cached_at_kill"] > 0
    )
    return [
        _row(
            "4. Worker killed in training",
            "retrain of csv-sample (60 photos, 2,000 steps, 5-fold CV) "
            "with RETRAIN_TIME_LIMIT=65 s and VISIBILITY_TIMEOUT=70 s; SIGKILL the worker "
            "once the status shows a training step; start another",
            "active model unchanged;"
            " no half-written version listed or loaded; the retrain re-run (or failed with a "
            "clear message); the re-run reuses the bottleneck cache",
            seen,
            ok,
            c,
        )
    ]


def storage() -> list[Row]:
    """5. Disk full and a read-only models folder while a version is written."""
    c = _on_stack(scenarios.storage_failures)
    rows = []
    for case, how in (
        ("disk_full", "RLIMIT_FSIZE 2 MB on the worker (writes past it fail as on a full disk)"),
        (
            "read_only",
            "models folder made immutable (chattr +i) before the new version is renamed in",
        ),
    ):
        v = c[case]
        if "skipped" in v:
            rows.append(_row(f"5. {case}", how, "clear error", v["skipped"], True, v))
            continue
        ok = "models folder" in v["reply"] and v["active_unchanged"] and v["worker_alive"]
        seen = (
            f"reply: {v['reply']!r}; active unchanged: {v['active_unchanged']}; listed "
            f"{v['listed']}; worker alive: {v['worker_alive']}"
        )
        rows.append(
            _row(
                f"5. {case.replace('_', ' ').capitalize()}",
                how,
                "a clear error, the active model unchanged",
                seen,
                ok,
                v,
            )
        )
    return rows


def bad_input() -> list[Row]:
    """Bad input: every image, zip and command of the corpus, in English and Portuguese."""
    cases = _on_stack(lambda s: scenarios.bad_input(s, full=True))
    rows = []
    for kind, title in (("image", "Bad images"), ("zip", "Bad zips"), ("command", "Bad commands")):
        mine = [c for c in cases if c["kind"] == kind]
        bad = [f"{c['case']} ({c['language']}): {c['seen']}" for c in mine if not c["ok"]]
        names = sorted({c["case"] for c in mine})
        rows.append(
            _row(
                title,
                f"{len(mine)} cases through the real bot: " + ", ".join(names),
                "each a clear reply in the user's language (readable images answered)",
                f"{len(mine) - len(bad)}/{len(mine)} as expected"
                + (f"; not: {bad}" if bad else ""),
                not bad,
                mine,
            )
        )
    rest = [c for c in cases if c["kind"] in ("model", "worker")]
    rows.append(
        _row(
            "Bad input: side effects",
            "after all the above",
            "worker alive; active model unchanged by refused input",
            "; ".join(f"{c['case']}: {c['seen']}" for c in rest),
            all(c["ok"] for c in rest),
            rest,
        )
    )
    return rows


def _pytest(path: str, title: str, what: str) -> Row:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", path, "-q", "-p", "no:cacheprovider", "-W", "ignore"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    tail = (done.stdout.strip().splitlines() or ["no output"])[-1]
    counts = dict((k, int(n)) for n, k in re.findall(r"(\d+) (passed|failed|error)", tail))
    seen = f"{tail.strip('= ')} ({time.monotonic() - started:.0f} s)"
    return _row(title, what, "all pass", seen, done.returncode == 0, counts)


def security() -> list[Row]:
    """Security and fuzz: the pytest modules, run whole."""
    return [
        _pytest(
            "tests/test_security.py",
            "Security",
            "tests/test_security.py: each admin command "
            "and option from a non-admin (en, pt-BR); forged and malformed callback data; "
            "pickle messages pushed into every queue; Flower UI/API without or with wrong "
            "credentials; token, Redis and Flower passwords grepped in every service log; "
            "hostile upload names",
        ),
        _pytest(
            "tests/test_fuzz.py",
            "Fuzz",
            "tests/test_fuzz.py: Hypothesis, 60 examples each, "
            "over decode_image, load_dataset (generated zips and folders), the /retrain caption "
            "parser and the callback-data parser",
        ),
    ]


# Issue 20's attacks on the inputs: (row, what was sent, the tests of tests/test_inputs_attacks.py).
INPUT_ATTACKS = (
    (
        "Costly images",
        "49 MP 16-bit grey, RGBA, palette+transparency PNGs and a lossless WebP, and the "
        "costliest files the 48 MiB decode budget accepts: decoded in-process (Pillow's block "
        "count, tracemalloc) and all at once through the real worker",
        (
            "test_costly_images_are_refused_or_decoded_within_the_budget",
            "test_a_heavy_decode_holds_no_batch",
            "test_the_worker_answers_or_refuses_costly_files_and_survives",
        ),
    ),
    (
        "Backlog in Redis",
        "a document queued with no worker, then photos past MAX_INFER_QUEUE (en, pt-BR)",
        ("test_a_queued_photo_is_kept_once_and_a_deep_queue_refuses_politely",),
    ),
    (
        "Feedback filling the store",
        "3 MB padded photos filed past FEEDBACK_PER_CHAT through a real worker",
        ("test_feedback_is_kept_small_and_a_chat_over_its_quota_is_refused",),
    ),
    (
        "Zip folder entries",
        "6 photos and 20,000 empty folders as a /retrain upload",
        ("test_zip_folder_entries_count_toward_max_files",),
    ),
    (
        "Hostile class names",
        "a/b, .., 300 characters and U+202E as labels.csv classes of a /retrain upload",
        ("test_hostile_class_names_are_refused_in_words_and_leave_no_blobs",),
    ),
    (
        "File modes",
        "a blob store write and the embedded redis-server's AOF",
        ("test_store_files_are_private", "test_the_embedded_redis_keeps_its_aof_private"),
    ),
)


def inputs() -> list[Row]:
    """Issue 20's input attacks: tests/test_inputs_attacks.py run once, a row per attack."""
    with tempfile.TemporaryDirectory(prefix="inputs-") as tmp:
        report = Path(tmp) / "report.xml"
        subprocess.run(
            [sys.executable, "-m", "pytest", "tests/test_inputs_attacks.py", "-q",
             "-p", "no:cacheprovider", "-W", "ignore", f"--junitxml={report}"],
            cwd=REPO, capture_output=True, text=True,
        )  # fmt: skip
        cases = ElementTree.parse(report).getroot().iter("testcase") if report.exists() else []
        held = {case.get("name"): not list(case) for case in cases}
    rows = []
    for title, what, tests in INPUT_ATTACKS:
        passed = [name for name in tests if held.get(name)]
        seen = f"{len(passed)}/{len(tests)} tests held" + (
            f"; not: {sorted(set(tests) - set(passed))}" if len(passed) < len(tests) else ""
        )
        expected = "each answered or refused in words; nothing kept beyond its bound; worker alive"
        rows.append(_row(title, what, expected, seen, len(passed) == len(tests), held))
    return rows


def load() -> list[Row]:
    """The load bench: 1,000 photos from 50 users."""
    r = load_bench.run()
    p = r["update_to_reply"]
    seen = (
        f"{r['photos']} photos, {r['throughput_photos_per_s']} photos/s, p50/p95/p99 "
        f"{p['p50_ms']}/{p['p95_ms']}/{p['p99_ms']} ms, {r['errors']} errors; RSS growth "
        f"worker {r['rss_growth_mb']['worker_mb']} MB, bot {r['rss_growth_mb']['bot_mb']} MB"
    )
    return [
        _row(
            "Load",
            "bench/load_bench.py: 1,000 photos from 50 users, closed loop",
            f"0 errors; RSS growth ≤ {load_bench.RSS_BOUND_MB} MB per service",
            seen,
            r["ok"],
            r,
        )
    ]


def forged_registry() -> list[Row]:
    """Issue 20 items 1 and 9: forged registry records and pointers, and queued jobs naming their
    own backbone, on one worker serving a retrained version."""
    rows = _on_stack(registry_attacks.registry_attacks)
    return [
        _row(
            f"Registry attack: {r['attack']}",
            f"tried {r['tried']}",
            "refused or won back; nothing written outside MODELS_DIR; worker serves on",
            f"held {r['held']}/{r['tried']}: {r['seen']}",
            r["held"] == r["tried"],
            r,
        )
        for r in rows
    ]


# --- Issue 20: the webhook, the chat and the playground page, attacked --------------------------

# Per attack: the row's title, what was done, and what must hold.
ATTACKS = {
    "no_secret_refused": (
        "Webhook without a secret",
        "start the bot with WEBHOOK_URL and no WEBHOOK_SECRET",
        "exits non-zero naming WEBHOOK_SECRET",
    ),
    "listen_loopback": (
        "Webhook listen address",
        "start the webhook bot with no WEBHOOK_LISTEN",
        "listens on 127.0.0.1 only (a reverse proxy in front)",
    ),
    "forged_admin_commands": (
        "Forged admin commands",
        "POST /promote, /rollback, /retrain, /stats, /models as the admin without the secret, "
        "with an empty, a wrong and a near-miss one",
        "each 403 before the body is read; nothing runs",
    ),
    "big_bodies": (
        "95 MB webhook bodies",
        "three 95 MB POSTs with a wrong secret, three with the right one",
        "each refused unread (403/413); bot RSS grows < 50 MB",
    ),
    "half_open_connections": (
        "Half-open connections",
        "1,100 connections to the webhook port that never send a request, then a real update",
        "the update is answered; the bot closes the excess; log grows < 100 KB",
    ),
    "future_update_id": (
        "Far-ahead update id",
        "a signed update 10,000,000 ids ahead of the last, then a real update with that id",
        "the forged one claims nothing; the real one is answered",
    ),
    "bot_alive": ("Webhook bot survives", "after all the above", "bot alive"),
    "other_member_press": (
        "Group: another member's press",
        "in a group, a member presses ❌ under another member's photo",
        "refused in words; the keyboard stays",
    ),
    "other_member_text": (
        "Group: another member's text",
        "that member types breed names while the sender's ❌ waits",
        "taken as plain text (the hint), not as the photo's breed",
    ),
    "sender_answers": (
        "Group: the sender answers",
        "the photo's sender presses ❌, then ✅",
        "both taken",
    ),
    "typed_4096_chars": (
        "4,096-character breed",
        "the sender types a 4,096-character breed name after ❌",
        "a worded 'I do not know a breed called …' (the name cut), not 'Sorry'",
    ),
    "button_flood": (
        "Button flood",
        "12 presses from one user with RATE_LIMIT_COUNT=5",
        "presses past the limit do no work; one polite answer",
    ),
    "long_replies": (
        "Replies over 4,096 characters",
        "the reply sender answers a retrain of 1,500 classes (en) and /breeds of them (pt-BR)",
        "each sent, cut to 4,096 with a worded note",
    ),
    "token_in_logs": (
        "Token in logged URLs",
        "the Bot API answers sendMessage with a redirect loop (aiohttp's error quotes the URL)",
        "the error is logged; no log holds the token",
    ),
    "playground": (
        "Playground CSRF and rebinding",
        "cross-site form POST of /promote, null origin, missing or wrong run token, "
        "cross-site fetch metadata, a foreign Host on the page and on /test/events",
        "each 403; the page's own request accepted",
    ),
}


def _attack_rows(results: dict[str, dict[str, Any]]) -> list[Row]:
    rows = []
    for name, seen in results.items():
        title, done, expected = ATTACKS[name]
        details = ", ".join(f"{k} {v}" for k, v in seen.items() if k not in ("tried", "held"))
        held = f"{seen['held']}/{seen['tried']} held" + (f"; {details}" if details else "")
        ok = seen["held"] == seen["tried"] and seen.get("ok", True)
        rows.append(_row(title, done, expected, held, ok, seen))
    return rows


def webhook() -> list[Row]:
    """The webhook bot SIGKILLed mid-update, then every attack on its port."""
    from harness import webhook_attacks

    c = _on_stack(lambda s: webhook_attacks.bot_killed_mid_update(s, n_photos=20, users=5))
    seen = (
        f"{c['answered']}/{c['sent']} answered, {c['answered_twice']} twice; "
        f"{c['confirmed_before_kill']} confirmed before the kill; "
        f"{c['posts_not_answered_200']} POSTs sent again"
    )
    ok = c["answered"] == c["sent"] and not c["answered_twice"] and not c["errors"]
    killed = _row(
        "Webhook bot killed",
        "SIGKILL the webhook bot while it handles 5 users' photos (downloads held), start "
        "another on the same port; 20 photos in all",
        "all 20 answered once: an update is answered 200 only once handled",
        seen,
        ok,
        c,
    )
    return [killed, *_attack_rows(_on_stack(webhook_attacks.attacks))]


def chat() -> list[Row]:
    """Group feedback, button floods, long texts, a token in a logged URL; the playground page."""
    from harness import chat_attacks

    results = _on_stack(chat_attacks.chat_attacks)
    return _attack_rows({**results, "playground": chat_attacks.playground_requests()})


SCENARIOS = {
    "worker": worker_killed,
    "bot": bot_restarted,
    "redis": redis_restarted,
    "failover": redis_failover,
    "training": killed_in_training,
    "storage": storage,
    "bad": bad_input,
    "security": security,
    "inputs": inputs,
    "load": load,
    "registry": forged_registry,
    "webhook": webhook,
    "chat": chat,
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(rows: list[Row], seconds: float) -> str:
    """The markdown results table."""
    lines = [
        f"Last full run: {time.strftime('%Y-%m-%d')}, {machine()}, {seconds / 60:.1f} min, "
        f"{sum(r['passed'] for r in rows)}/{len(rows)} rows pass.\n",
        "| scenario | what was done | expected | seen | ✓ |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['scenario']} | {_cell(r['done'])} | {_cell(r['expected'])} | "
        f"{_cell(r['seen'])} | {'✅' if r['passed'] else '❌'} |"
        for r in rows
    ]
    return "\n".join(lines)


def main() -> None:
    """Run the chosen scenarios (all by default), print JSON, update docs/RELIABILITY.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), default=list(SCENARIOS))
    args = parser.parse_args()
    started = time.monotonic()
    rows: list[Row] = []
    for name in args.only:
        print(f"[reliability] {name} …", file=sys.stderr, flush=True)
        rows += SCENARIOS[name]()
    print(json.dumps(rows, indent=2, ensure_ascii=False, default=str))
    if args.only == list(SCENARIOS):
        update_section("results", table(rows, time.monotonic() - started), RELIABILITY_MD)
    sys.exit(0 if all(r["passed"] for r in rows) else 1)


if __name__ == "__main__":
    main()
