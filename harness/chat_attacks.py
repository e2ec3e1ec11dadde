"""Attacks through the chat, on the real bot in webhook mode: another group member's feedback,
button floods, 4,096-character texts, replies longer than Telegram takes, a token in a logged
URL; and cross-site requests to the playground page. Each returns counts (tried, held) for
tests/test_chat_attacks.py and bench/reliability.py.
"""

from __future__ import annotations

from typing import Any

import httpx

import contract
from bot.i18n import t
from bot.jobs import make_celery
from bot.keyboards import RIGHT, WRONG, feedback_data
from fakegram.api import FakeTelegram, PlaygroundClient, serve_in_thread
from fakegram.playground import PLAYGROUND_ADMIN, TOKEN_HEADER, page_app
from harness.stack import Stack
from harness.user import all_events, pet_photos, replies_to
from harness.waiting import wait_until
from harness.webhook_attacks import start_webhook_bot
from ops.redis_server import free_port

FLOOD_LIMIT = 5  # RATE_LIMIT_COUNT of the bot in these scenarios
PRESSES = 12
CLASSES = 1500  # the retrain of 1,500 one-photo classes (27,060 characters)


def _handled(stack: Stack, chat: int, update_id: int) -> None:
    """Wait until the bot answered the webhook POST of this update (it has handled it)."""
    assert stack.fake is not None
    fake = stack.fake
    wait_until(
        lambda: any(e.get("update_id") == update_id for e in all_events(fake, chat)),
        60,
        f"update {update_id} to be handled",
    )


def _said(stack: Stack, client: PlaygroundClient, chat: int, user: int, text: str) -> list[str]:
    """`user` types `text` in `chat`; the texts the bot sent in the chat while handling it."""
    assert stack.fake is not None
    sent = client.send(chat, text=text, user_id=user)
    _handled(stack, chat, sent["update_id"])
    return [e["message"].get("text", "") for e in _sent_after(stack.fake, chat, sent)]


def _sent_after(fake: FakeTelegram, chat: int, sent: dict[str, Any]) -> list[dict[str, Any]]:
    events = all_events(fake, chat)
    mine = next(
        e["seq"]
        for e in events
        if e["type"] == "user" and e["message"]["message_id"] == sent["message"]["message_id"]
    )
    return [e for e in events if e["seq"] > mine and e["type"] == "sent"]


def _pressed(
    stack: Stack, client: PlaygroundClient, chat: int, message_id: int, data: str, user: int
) -> str | None:
    """`user` presses the button `data` under `message_id`; the bot's answer to it, if any."""
    assert stack.fake is not None
    pressed = client.press(chat, message_id, data, user_id=user)
    _handled(stack, chat, pressed["update_id"])
    answers = [
        e.get("text") or ""
        for e in all_events(stack.fake, chat)
        if e["type"] == "answer" and e["callback_query_id"] == pressed["callback_query_id"]
    ]
    return answers[0] if answers else None


def group_feedback(stack: Stack) -> dict[str, dict[str, Any]]:
    """In a group, another member presses and types for someone's photo; the sender answers,
    once with a 4,096-character breed name."""
    assert stack.fake is not None
    group, sender, other = -700, 701, 702
    client = stack.client()
    try:
        photo = client.send(group, file=pet_photos(1)[0], user_id=sender)
        answer = wait_until(
            lambda: replies_to(all_events(stack.fake, group), photo["message"]["message_id"]), 120
        )[0]
        buttons = [b for row in answer["reply_markup"]["inline_keyboard"] for b in row]
        photo_id = buttons[0]["callback_data"].split(":")[1]
        wrong = feedback_data(photo_id, WRONG)
        other_press = _pressed(stack, client, group, answer["message_id"], wrong, other)
        other_typed = _said(stack, client, group, other, "Persian")
        sender_press = _pressed(stack, client, group, answer["message_id"], wrong, sender)
        other_after = _said(stack, client, group, other, "Abyssinian")
        long_typed = _said(stack, client, group, sender, "x" * 4096)
        right = feedback_data(photo_id, RIGHT)
        thanks = _pressed(stack, client, group, answer["message_id"], right, sender)
    finally:
        client.close()
    hint = t("en", "hint")
    return {
        "other_member_press": {
            "tried": 1,
            "held": int(other_press == t("en", "feedback_not_yours")),
            "answer": other_press,
        },
        "other_member_text": {
            "tried": 2,
            "held": (other_typed == [hint]) + (other_after == [hint]),
            "replies": other_typed + other_after,
        },
        "sender_answers": {
            "tried": 2,
            "held": (sender_press == t("en", "which")) + (thanks or "").startswith("Thanks!"),
            "answers": [sender_press, thanks],
        },
        "typed_4096_chars": {
            "tried": 1,
            "held": int(
                len(long_typed) == 1
                and long_typed[0].startswith("I do not know a breed called “xxx")
                and len(long_typed[0]) < 300
            ),
            "replies": [text[:120] for text in long_typed],
        },
    }


def button_flood(stack: Stack) -> dict[str, Any]:
    """One user presses a button PRESSES times (the bot lets FLOOD_LIMIT messages a minute
    through): the presses past the limit get one polite answer and no work."""
    user = 703
    client = stack.client()
    try:
        start = client.send(user, text="/start", user_id=user)
        _handled(stack, user, start["update_id"])
        target = _sent_after_id(stack, user, start)
        answers = [
            _pressed(stack, client, user, target, feedback_data("0" * 12, RIGHT), user)
            for _ in range(PRESSES)
        ]
    finally:
        client.close()
    limited = t("en", "rate_limited", count=FLOOD_LIMIT, seconds=60)
    worked = sum(a == t("en", "feedback_gone") for a in answers)
    return {  # tried: the presses past the limit (/start was the first message)
        "tried": PRESSES - (FLOOD_LIMIT - 1),
        "held": PRESSES - worked,
        "handled": worked,
        "warned": sum(a == limited for a in answers),
        "ok": worked == FLOOD_LIMIT - 1 and answers.count(limited) == 1,
    }


def _sent_after_id(stack: Stack, chat: int, sent: dict[str, Any]) -> int:
    assert stack.fake is not None
    return int(_sent_after(stack.fake, chat, sent)[0]["message"]["message_id"])


def long_replies(stack: Stack) -> dict[str, Any]:
    """Answers longer than Telegram's 4,096 characters, sent by the real reply sender: a retrain
    of 1,500 classes (en) and /breeds of them (pt-BR); each arrives, cut, saying so."""
    assert stack.fake is not None
    names = [f"Breed_number_{i:04d}" for i in range(CLASSES)]
    retrain = contract.RetrainResult(
        version=1,
        activated=True,
        test_accuracy=0.5,
        metrics={
            "n_test": CLASSES,
            "worst_classes": [[name, 0.0, 1] for name in names],
            "dataset": {
                "photos": CLASSES,
                "base_version": 0,
                "sources": {"upload": CLASSES, "feedback": 0},
                "new_classes": names,
            },
        },
    )
    breeds = contract.Breeds(version=1, names=[name.replace("_", " ") for name in names])
    cases = (
        (7101, "en", contract.ReplyKind.RETRAIN, retrain.to_dict()),
        (7102, "pt-BR", contract.ReplyKind.BREEDS, breeds.to_dict()),
    )
    celery = make_celery(stack.redis_url())
    try:
        for chat, language, kind, result in cases:
            target = contract.ReplyTo(chat_id=chat, language=language, key=f"{kind}:{chat}:1")
            kwargs = {"reply_to": target.to_dict(), "kind": kind}
            celery.send_task(contract.REPLY, args=[result], kwargs=kwargs)
    finally:
        celery.close()
    seen = {}
    for chat, language, _, _ in cases:
        got = wait_until(lambda c=chat: _texts(stack.fake, c), 60) or [""]
        seen[language] = got[0]
    cut = {lang: t(lang, "text_cut", n=0).split("0")[0] for lang in seen}
    held = sum(0 < len(text) <= 4096 and cut[lang] in text for lang, text in seen.items())
    return {
        "tried": len(cases),
        "held": held,
        "lengths": {lang: len(text) for lang, text in seen.items()},
        "endings": {lang: text[-80:] for lang, text in seen.items()},
    }


def _texts(fake: FakeTelegram | None, chat: int) -> list[str]:
    assert fake is not None
    return [e["message"].get("text", "") for e in all_events(fake, chat) if e["type"] == "sent"]


def token_in_logs(stack: Stack) -> dict[str, Any]:
    """The Bot API answers sendMessage with a redirect to itself: aiohttp gives up with an error
    quoting the URL. The bot's log (and the reply sender's) must not hold the token."""
    assert stack.fake is not None and stack.bot is not None
    secret = stack.token.split(":", 1)[1]
    user = 704
    stack.fake.redirect_methods.add("sendMessage")
    client = stack.client()
    try:
        sent = client.send(user, text="/start", user_id=user)
        _handled(stack, user, sent["update_id"])
    finally:
        stack.fake.redirect_methods.discard("sendMessage")
        client.close()
    log = stack.bot.log_text()
    quoted = "TooManyRedirects" in log
    return {
        "tried": 1,
        "held": int(quoted and secret not in stack.all_logs()),
        "error_logged": quoted,
    }


def chat_attacks(stack: Stack) -> dict[str, dict[str, Any]]:
    """Every chat attack on one webhook bot with a worker (flood guard at FLOOD_LIMIT)."""
    stack.start_worker("w1")
    start_webhook_bot(stack, free_port(), RATE_LIMIT_COUNT=str(FLOOD_LIMIT))
    return {
        **group_feedback(stack),
        "button_flood": button_flood(stack),
        "long_replies": long_replies(stack),
        "token_in_logs": token_in_logs(stack),
    }


def playground_requests() -> dict[str, Any]:
    """Cross-site and rebound requests to the playground page (the emulator and its page, as
    `breedbot playground` serves them): each refused; the page's own requests pass."""
    fake = FakeTelegram()
    form = {
        "chat_id": str(PLAYGROUND_ADMIN),
        "user_id": str(PLAYGROUND_ADMIN),
        "text": "/promote 0",
    }
    with serve_in_thread(page_app(fake)) as url, httpx.Client(base_url=url) as http:
        page = http.get("/").text
        token = page.split('RUN_TOKEN = "')[1].split('"')[0]
        same = {"Origin": url}
        attacks = {
            "cross-site form": http.post(
                "/test/message", data=form, headers={"Origin": "http://evil.example"}
            ),
            "null origin": http.post("/test/message", data=form, headers={"Origin": "null"}),
            "same origin, no token": http.post("/test/message", data=form, headers=same),
            "same origin, wrong token": http.post(
                "/test/message", data=form, headers={**same, TOKEN_HEADER: "guess"}
            ),
            "fetch metadata, cross-site": http.post(
                "/test/message", data=form, headers={"Sec-Fetch-Site": "cross-site"}
            ),
            "rebound Host, page": http.get("/", headers={"Host": "evil.example:8081"}),
            "rebound Host, events": http.get(
                "/test/events",
                params={"chat_id": PLAYGROUND_ADMIN},
                headers={"Host": "evil.example"},
            ),
        }
        own = http.post("/test/message", data=form, headers={**same, TOKEN_HEADER: token})
    refused = {name: r.status_code for name, r in attacks.items()}
    return {
        "tried": len(attacks),
        "held": sum(code == 403 for code in refused.values()),
        "statuses": refused,
        "page_request": own.status_code,
        "queued_updates": len(fake.updates),
        "ok": own.status_code == 200 and len(fake.updates) == 1,
    }
