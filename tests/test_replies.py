"""The reply sender's logic without TensorFlow or a model: exactly-once claims, album gathering,
reply texts, the outbox. A real redis-server and the in-process Bot API emulator (fakegram) from
the harness; the reply tasks run in this process, as a replier's thread would run them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import redis

import contract
from bot import botapi, outbox, render, replies
from bot.confusion_chart import confusion_chart
from bot.i18n import moment, percent, problem_text, t
from fakegram.api import FakeTelegram, PlaygroundClient
from harness.stack import Stack
from harness.user import all_events

DB = 9  # the session Redis's workers use database 0 (and tests of redelivery 5 to 7)


@pytest.fixture
def fake(session_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTelegram]:
    """The reply sender's settings on the session's Redis (an emptied database) and emulator."""
    monkeypatch.setenv("REDIS_URL", session_stack.redis_url(DB))
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", session_stack.token)
    monkeypatch.setenv("TELEGRAM_API_URL", session_stack.url)
    botapi.settings.cache_clear()
    replies.redis_client().flushdb()
    assert session_stack.fake is not None
    yield session_stack.fake
    botapi.settings.cache_clear()


@pytest.fixture
def user(session_stack: Stack) -> Iterator[PlaygroundClient]:
    """The users' side of the emulator."""
    client = session_stack.client()
    yield client
    client.close()


def _guesses(*pairs: tuple[str, float]) -> list[dict[str, Any]]:
    return [contract.Guess(n.lower(), n, p).to_dict() for n, p in pairs]


PUG = contract.ClassifyResult(
    model_version=3,
    top_k=_guesses(("Pug", 0.91), ("Beagle", 0.05), ("Boxer", 0.02)),
    is_pet=True,
    pet_probability=0.99,
    imagenet_label="pug",
    imagenet_probability=0.8,
)
DAISY = contract.ClassifyResult(
    model_version=4,
    top_k=_guesses(("Pug", 0.3)),
    is_pet=False,
    pet_probability=0.01,
    imagenet_label="daisy",
    imagenet_probability=0.7,
)
TRUNCATED = contract.ClassifyResult(3, [], None, 0.0, "", 0.0, error="truncated")


def _target(user: PlaygroundClient, chat_id: int, **fields: Any) -> contract.ReplyTo:
    """A user's message to answer, and where its answer goes."""
    sent = user.send(chat_id, text="a photo, say", language_code=fields.get("language", "en"))
    message_id = sent["message"]["message_id"]
    return contract.ReplyTo(chat_id, message_id, key=f"photo:{chat_id}:{message_id}", **fields)


def _bot_events(fake: FakeTelegram, chat_id: int) -> list[dict[str, Any]]:
    return [e for e in all_events(fake, chat_id) if e["type"] in ("sent", "edited")]


# --- Reply texts -------------------------------------------------------------------------------


def _pct(probability: float, language: str = "en") -> str:
    return percent(probability, language)


def test_classification_texts() -> None:
    """A breed with the next two guesses, "not sure" below the threshold, no pet, a bad image;
    the wording is bot/i18n.py's, what fills it in is asserted here."""
    assert render.classification_text(PUG, "en", 0.5).splitlines() == [
        t("en", "result", name="Pug", pct=_pct(0.91)),
        t("en", "next_guesses", guesses=f"Beagle ({_pct(0.05)}), Boxer ({_pct(0.02)})"),
        t("en", "model_version", version=3),
    ]
    br = "pt-BR"
    assert render.classification_text(PUG, br, 0.95).splitlines() == [
        t(br, "not_sure", name="Pug", pct=_pct(0.91, br)),
        t(br, "next_guesses", guesses=f"Beagle ({_pct(0.05, br)}), Boxer ({_pct(0.02, br)})"),
        t(br, "model_version", version=3),
    ]
    assert render.classification_text(DAISY, "en", 0.5).splitlines() == [
        t("en", "no_pet", label="daisy", pct=_pct(0.7)),
        t("en", "model_version", version=4),
    ]
    assert render.classification_text(TRUNCATED, "en", 0.5).splitlines() == [
        t("en", "bad_image", reason=t("en", "error_codes.truncated")),
        t("en", "model_version", version=3),
    ]


def test_album_text_numbers_each_photo_and_names_every_version() -> None:
    lines = render.album_text([PUG, DAISY, TRUNCATED], "en", 0.5).splitlines()
    assert lines == [
        t("en", "album", n=3),
        *(
            t("en", "album_item", i=i, text=render.headline(r, "en", 0.5))
            for i, r in enumerate([PUG, DAISY, TRUNCATED], start=1)
        ),
        t("en", "model_version", version="3/4"),
    ]
    assert [render.headline(r, "en", 0.5) for r in (PUG, DAISY)] == [
        t("en", "result", name="Pug", pct=_pct(0.91)),
        t("en", "no_pet", label="daisy", pct=_pct(0.7)),
    ]


def test_retrain_and_progress_texts() -> None:
    """Live with its weakest classes; not live with the reason in the user's language; the
    cross-validated accuracy and the backbone auto chose; a running retrain's status line."""
    worst = [["pug", 0.5, 4], ["boxer", 0.75, 8]]
    live = contract.RetrainResult(5, True, 0.9, metrics={"n_test": 12, "worst_classes": worst})
    assert render.retrain_text(live, "en").splitlines() == [
        t("en", "retrain_done", version=5, pct=percent(0.9, "en", digits=1), n=12),
        t("en", "worst_classes"),
        t("en", "worst_class", name="pug", right=2, n=4, pct=_pct(0.5)),
        t("en", "worst_class", name="boxer", right=6, n=8, pct=_pct(0.75)),
        t("en", "retrain_live"),
    ]
    english = "test accuracy 60.0% is below the minimum 80.0%"
    params = {"accuracy": 0.6, "minimum": 0.8}
    kept = contract.RetrainResult(6, False, 0.6, reason=english, problem="below_minimum",
                                  params=params)  # fmt: skip
    assert render.retrain_text(kept, "en").splitlines()[-1] == t(
        "en", "retrain_not_live", reason=english
    )
    worded = problem_text("pt-BR", "below_minimum", params, english)
    assert worded != english  # the Portuguese wording, its values filled in
    assert render.retrain_text(kept, "pt-BR").splitlines()[-1] == t(
        "pt-BR", "retrain_not_live", reason=worded
    )
    cross_validated = contract.RetrainResult(
        8,
        True,
        0.9,
        metrics={
            "accuracy_source": "cross_validation",
            "cross_validation": {"k": 5, "accuracy": 0.9, "std": 0.03},
            "n_train": 60,
            "auto": {
                "chosen": "efficientnet_lite1",
                "candidates": {
                    "efficientnet_lite0": {"cv_accuracy": 0.85},
                    "efficientnet_lite1": {"cv_accuracy": 0.9},
                },
            },
        },
    )
    scores = "efficientnet_lite0 85.0%, efficientnet_lite1 90.0%"
    assert render.retrain_text(cross_validated, "en").splitlines() == [
        t("en", "retrain_done_cv", version=8, n=60, k=5, pct="90.0%", spread="3.0%"),
        t("en", "backbone_auto", chosen="efficientnet_lite1", scores=scores),
        t("en", "retrain_live"),
    ]
    step = contract.Progress("training", 300, 500, validation_accuracy=0.91)
    assert render.progress_text(step, "en") == (
        t("en", "progress_training", done=300, total=500)
        + " · "
        + t("en", "validation", pct=_pct(0.91))
    )
    saving = contract.Progress("saving", 0, 1)
    assert render.progress_text(saving, "en") == t("en", "progress_saving")


# --- Exactly-once claims -----------------------------------------------------------------------


def test_once_claims_a_key_for_the_first_sender_only(fake: FakeTelegram) -> None:
    """First claim sends; a claim held by a running send is retried later; once sent, skipped."""
    with replies.once("k1") as first:
        assert first
        with pytest.raises(replies.ReplyPending), replies.once("k1"):
            pass
    with replies.once("k1") as again:
        assert not again
    ttl = replies.redis_client().ttl("breedbot:reply:k1")
    assert replies.SENDING_TTL < ttl <= replies.SENT_TTL


def test_once_releases_the_claim_when_the_send_fails(fake: FakeTelegram) -> None:
    with pytest.raises(ConnectionError), replies.once("k2") as first:
        assert first
        raise ConnectionError("the Bot API went away")
    with replies.once("k2") as retried:
        assert retried


def test_once_under_concurrent_deliveries(fake: FakeTelegram) -> None:
    """Eight deliveries of one reply at once: one sends, the others find the claim held."""
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def deliver() -> None:
        start.wait()
        try:
            with replies.once("k3") as first:
                outcomes.append("sent" if first else "skipped")
                time.sleep(0.3)  # the send, while the others try
        except replies.ReplyPending:
            outcomes.append("pending")

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["pending"] * 7 + ["sent"]


# --- Replies through the Bot API emulator ------------------------------------------------------


def test_photo_answer_is_sent_once_with_chart_and_buttons(
    fake: FakeTelegram, user: PlaygroundClient
) -> None:
    """The chart with the answer as caption and ✅/❌; the labels kept for feedback; a
    redelivered reply task sends nothing more."""
    target = _target(user, 9101)
    for _ in range(2):
        replies.reply(PUG.to_dict(), reply_to=target.to_dict(), kind="classify", photo_id="p1")
    sent = _bot_events(fake, 9101)
    assert [e["type"] for e in sent] == ["sent"]
    message = sent[0]["message"]
    assert message["reply_to_message"]["message_id"] == target.message_id
    assert message["caption"] == render.classification_text(PUG, "en", 0.5)
    assert user.file(message["photo"][-1]["file_id"]).startswith(b"\x89PNG")
    buttons = [b["callback_data"] for b in message["reply_markup"]["inline_keyboard"][0]]
    assert buttons == ["fb:p1:ok", "fb:p1:no"]
    labels = replies.redis_client().hget(contract.photo_key("p1"), "labels")
    assert json.loads(labels) == [["pug", "Pug"], ["beagle", "Beagle"], ["boxer", "Boxer"]]


def test_no_pet_and_bad_image_are_plain_texts(fake: FakeTelegram, user: PlaygroundClient) -> None:
    for chat_id, result in ((9102, DAISY), (9103, TRUNCATED)):
        target = _target(user, chat_id)
        replies.reply(result.to_dict(), reply_to=target.to_dict(), kind="classify", photo_id="x")
        [event] = _bot_events(fake, chat_id)
        assert event["message"]["text"] == render.classification_text(result, "en", 0.5)
        assert "reply_markup" not in event["message"] and "photo" not in event["message"]


def test_album_parts_gather_into_one_reply(fake: FakeTelegram, user: PlaygroundClient) -> None:
    """Parts arrive out of order, one of them twice: one text once the last part is in, in
    album order."""
    target = _target(user, 9104, language="pt-BR")
    parts = [PUG, DAISY, TRUNCATED]
    album_key = f"breedbot:album:{target.key}"
    for index in (2, 0, 2):
        album = {"index": index, "size": 3}
        assert replies._album_results(parts[index].to_dict(), target, album, None) is None
    assert 0 < replies.redis_client().ttl(album_key) <= replies.ALBUM_TTL
    assert _bot_events(fake, 9104) == []
    for index in (1, 1):  # the last part, and its redelivery
        replies.reply(
            parts[index].to_dict(),
            reply_to=target.to_dict(),
            kind="classify",
            album={"index": index, "size": 3},
        )
    [event] = _bot_events(fake, 9104)
    assert event["message"]["text"] == render.album_text(parts, "pt-BR", 0.5)
    gathered = replies._album_results(DAISY.to_dict(), target, {"index": 1, "size": 3}, None)
    assert gathered == [(part, None) for part in parts]  # no photo ids: no buttons


def test_retrain_result_edits_the_status_message(
    fake: FakeTelegram, user: PlaygroundClient
) -> None:
    """The final text replaces the progress in the status message; the confusion matrix follows
    as a picture; a redelivery changes nothing."""
    target = _target(user, 9105)
    status = botapi.send_text(target, t("en", "retrain_queued"))
    target = contract.ReplyTo(
        9105, target.message_id, status_message_id=status["message_id"], key="retrain:9105"
    )
    replies.progress(target.to_dict(), contract.Progress("training", 10, 60).to_dict())
    matrix = [[9, 1], [1, 9]]
    result = contract.RetrainResult(
        7, True, 0.9, confusion_matrix=matrix, class_names=["Pug", "Bengal"]
    )
    png = confusion_chart(result, "en")  # drawn by the reply sender, in the chat's language
    for _ in range(2):
        replies.reply(result.to_dict(), reply_to=target.to_dict(), kind="retrain")
    events = _bot_events(fake, 9105)
    assert [e["type"] for e in events] == ["sent", "edited", "edited", "sent"]
    assert events[1]["message"]["text"] == "🏋️ Training step 10/60"
    assert events[2]["message"]["message_id"] == status["message_id"]
    assert events[2]["message"]["text"] == render.retrain_text(result, "en")
    assert events[3]["message"]["caption"] == t("en", "confusion_matrix", version=7)
    assert user.file(events[3]["message"]["photo"][-1]["file_id"]) == png


def test_control_replies(fake: FakeTelegram, user: PlaygroundClient) -> None:
    """/models, /promote, /stats and /breeds answers (one chat each: the send limits would
    space four replies to one chat out), each rendered from the worker's result."""
    created = "2026-12-01T20:31:40+00:00"
    why = "cannot load version 1: BadRecord: bundle path '../x' is not a plain relative path"
    failing = contract.HostStatus("b@x", 0, "litert-float", created, 1, why)
    serving = contract.HostStatus("a@x", 1, "litert-int8", created, 1)
    versions = [
        contract.ModelVersion(0, False, hosts=[failing.to_dict()]),
        contract.ModelVersion(1, True, created, test_accuracy=0.875, hosts=[serving.to_dict()]),
    ]
    results = {
        "models": [version.to_dict() for version in versions],
        "switch": contract.SwitchResult(1, 0).to_dict(),
        "stats": contract.Stats(1, 12, 84.4).to_dict(),
        "breeds": contract.Breeds(1, ["Beagle", "Pug"]).to_dict(),
    }
    texts = []
    for chat_id, (kind, result) in enumerate(results.items(), start=9110):
        target = _target(user, chat_id)
        replies.reply(result, reply_to=target.to_dict(), kind=kind)
        texts += [e["message"]["text"] for e in _bot_events(fake, chat_id)]
    when = moment(datetime.fromisoformat(created), "en")
    assert texts == [
        "\n".join(
            [
                t("en", "models_header"),
                t("en", "models_item", mark="•", version=0, pct="–", created=t("en", "built_in")),
                t("en", "models_host", host="b@x", engine="litert-float", since=when),
                f"    ⚠ cannot serve the active version: {why}",
                t("en", "models_item", mark="▶", version=1, pct="87.5%", created=when),
                t("en", "models_host", host="a@x", engine="litert-int8", since=when),
            ]
        ),
        t("en", "promoted", version=1),
        t("en", "stats", jobs=12, latency=84, version=1),
        t("en", "breeds", n=2, version=1, names="Beagle, Pug"),
    ]


def test_unknown_kind_fails_and_keeps_the_key_free(
    fake: FakeTelegram, user: PlaygroundClient
) -> None:
    target = _target(user, 9107)
    with pytest.raises(ValueError, match="unknown reply kind"):
        replies.reply({}, reply_to=target.to_dict(), kind="telepathy")
    assert replies.redis_client().get(f"breedbot:reply:{target.key}") is None
    assert _bot_events(fake, 9107) == []


def test_a_refused_job_is_told_once_in_the_users_language(
    fake: FakeTelegram, user: PlaygroundClient
) -> None:
    """The failure errback words a refusal from its problem code and values."""
    target = _target(user, 9108, language="pt-BR")
    task_id = "failed-promote-9108"
    refused = contract.Refused("there is no model version 99", "no_such_version", {"version": 99})
    replies.app.backend.mark_as_failure(task_id, refused)
    for _ in range(2):
        replies.reply_failed(task_id, reply_to=target.to_dict(), kind="switch")
    [event] = _bot_events(fake, 9108)
    assert event["message"]["text"] == (
        "Desculpe, não consegui fazer isso: não existe a versão 99 do modelo (/models lista as "
        "versões)."
    )
    # In English too: worded for the person who typed the number, and ending as a sentence.
    target = _target(user, 9133)
    replies.reply_failed(task_id, reply_to=target.to_dict(), kind="switch")
    [event] = _bot_events(fake, 9133)
    assert event["message"]["text"] == (
        "Sorry, I could not do that: there is no model version 99 (/models lists them)."
    )


def test_a_retrain_the_gate_kept_out_is_reported_not_celebrated(
    fake: FakeTelegram, user: PlaygroundClient
) -> None:
    """The job failed (the gate), yet the chat gets the version's report: opened with ⚠️, not ✅,
    the accuracy written as the gate writes it, and "cross-validated" where it was."""
    cv = {"k": 5, "accuracy": 0.987, "std": 0.021}
    metrics = {"accuracy_source": "cross_validation", "cross_validation": cv, "n_train": 57}
    params = {"accuracy": 0.987, "minimum": 0.99}
    kept = contract.RetrainResult(4, False, 0.987, metrics, "test accuracy 98.7% is below the "
                                  "minimum 99.0%", "below_minimum", params)  # fmt: skip
    report = {**params, contract.GATE_REPORT: kept.to_dict()}
    texts = {}
    for chat_id, language in ((9130, "en"), (9131, "pt-BR")):
        task_id = f"gate-refused-{chat_id}"
        refused = contract.Refused(
            f"version 4 did not go live: {kept.reason}", kept.problem, report
        )
        replies.app.backend.mark_as_failure(task_id, refused)
        target = _target(user, chat_id, language=language)
        replies.reply_failed(task_id, reply_to=target.to_dict(), kind="retrain")
        [event] = _bot_events(fake, chat_id)
        texts[language] = event["message"]["text"]
    assert texts["en"].splitlines() == [
        "⚠️ Model v4 trained on all 57 photos but not live: 5-fold cross-validated accuracy "
        "98.7% ± 2.1%.",
        "It did not go live: the cross-validated accuracy 98.7% is below the minimum 99.0%",
    ]
    assert texts["pt-BR"].startswith("⚠️ Modelo v4") and "98,7%" in texts["pt-BR"]
    assert "validação cruzada 98,7% está abaixo do mínimo 99,0%" in texts["pt-BR"]
    # /models names a cross-validated accuracy so, too.
    target = _target(user, 9132)
    listed = contract.ModelVersion(4, False, test_accuracy=0.987,
                                   accuracy_source="cross_validation")  # fmt: skip
    replies.reply([listed.to_dict()], reply_to=target.to_dict(), kind="models")
    [event] = _bot_events(fake, 9132)
    assert "v4 — cross-validated accuracy 98.7%" in event["message"]["text"]


# --- The outbox ----------------------------------------------------------------------------------


def _outbox_entry(client: redis.Redis, outbox_id: str, at: float) -> None:
    """What the bot writes before it publishes a classify chain (bot/jobs.py)."""
    signature = {"task": contract.CLASSIFY, "args": [], "kwargs": {}}
    client.hset(contract.OUTBOX_JOBS, outbox_id, contract.OutboxEntry(signature).to_json())
    client.zadd(contract.OUTBOX_DUE, {outbox_id: at})


def test_reply_removes_its_outbox_entry(fake: FakeTelegram, user: PlaygroundClient) -> None:
    client = replies.redis_client()
    _outbox_entry(client, "answered", time.time())
    _outbox_entry(client, "waiting", time.time())
    target = _target(user, 9109)
    replies.reply(PUG.to_dict(), reply_to=target.to_dict(), kind="classify", outbox_id="answered")
    assert client.hkeys(contract.OUTBOX_JOBS) == ["waiting"]
    assert client.zrange(contract.OUTBOX_DUE, 0, -1) == ["waiting"]


def test_outbox_sweep_rescues_only_old_unanswered_entries(fake: FakeTelegram) -> None:
    """Young entries wait; an old one is published again and its clock restarts; an entry
    answered meanwhile (still due, no longer in the jobs hash) is forgotten."""
    client = replies.redis_client()
    now = time.time()
    _outbox_entry(client, "young", now - 10)
    _outbox_entry(client, "old", now - 120)
    client.zadd(contract.OUTBOX_DUE, {"answered": now - 120})
    published: list[dict[str, Any]] = []
    assert outbox.sweep(client, published.append, 60, 3, now=now) == 1
    assert published == [{"task": contract.CLASSIFY, "args": [], "kwargs": {}}]
    due = dict(client.zrange(contract.OUTBOX_DUE, 0, -1, withscores=True))
    assert due == {"young": now - 10, "old": now}
    old = contract.OutboxEntry.from_json(client.hget(contract.OUTBOX_JOBS, "old"))
    assert old.attempts == 1


def test_outbox_sweep_gives_up_after_max_attempts(fake: FakeTelegram) -> None:
    """An entry that is never answered is published again max_attempts times, then dropped;
    nothing is re-published while photo jobs still wait in the queue."""
    client = redis.Redis.from_url(botapi.settings().broker_url())
    published: list[dict[str, Any]] = []
    _outbox_entry(client, "never", time.time())
    client.rpush(contract.QUEUE_INFER, "a queued photo job")
    assert outbox.sweep(client, published.append, 0, 2) == 0  # a backlog: wait for it to drain
    client.delete(contract.QUEUE_INFER)
    rounds = [outbox.sweep(client, published.append, 0, 2, now=time.time() + i) for i in range(4)]
    assert rounds == [1, 1, 0, 0]
    assert published == [published[0]] * 2 and published[0]["task"] == contract.CLASSIFY
    assert not client.exists(contract.OUTBOX_JOBS, contract.OUTBOX_DUE)
    client.close()


def test_export_reply_sends_documents_and_words_what_is_too_big(
    fake: FakeTelegram, user: PlaygroundClient
) -> None:
    """/export's answer: each file as a document, README.txt last with the caption; a file over
    the Bot API's upload limit is named with the CLI command instead, in the user's language."""
    target = _target(user, 9120, language="pt-BR")
    files = {"README.txt": b"breedbot export", "labels.txt": b"beagle\npug\n"}
    result = contract.ExportResult(
        3, {name: contract.encode_bytes(data) for name, data in files.items()},
        {"model_float.tflite": 61_200_000},
    )  # fmt: skip
    replies.reply(result.to_dict(), reply_to=target.to_dict(), kind="export")
    sent = [e["message"] for e in _bot_events(fake, 9120)]
    assert [user.file(m["document"]["file_id"]) for m in sent[:2]] == [
        files["labels.txt"],
        files["README.txt"],
    ]
    assert sent[1]["caption"] == t("pt-BR", "export_sent", version=3)
    too_big = t("pt-BR", "export_too_big", name="model_float.tflite", size=61.2, version=3)
    assert sent[2]["text"] == too_big and "61,2 MB" in too_big
