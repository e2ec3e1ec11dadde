"""Inline keyboards as plain Bot API dicts, shared by the worker's replies and the bot's buttons."""

from __future__ import annotations

from typing import Any

from bot.i18n import t

FEEDBACK_PREFIX = "fb"
RIGHT, WRONG, OTHER = "ok", "no", "other"


def feedback_data(photo_id: str, choice: str | int) -> str:
    """Callback data of a feedback button (well under Telegram's 64 bytes)."""
    return f"{FEEDBACK_PREFIX}:{photo_id}:{choice}"


def parse_feedback(data: str) -> tuple[str, str]:
    """(photo_id, choice) from a feedback button's callback data."""
    _, photo_id, choice = data.split(":", 2)
    return photo_id, choice


def _button(text: str, data: str) -> dict[str, str]:
    return {"text": text, "callback_data": data}


def feedback_keyboard(photo_id: str, language: str) -> dict[str, Any]:
    """The "✅ right / ❌ wrong" row under an answer."""
    row = [
        _button(t(language, "right"), feedback_data(photo_id, RIGHT)),
        _button(t(language, "wrong"), feedback_data(photo_id, WRONG)),
    ]
    return {"inline_keyboard": [row]}


def breeds_keyboard(photo_id: str, names: list[str], language: str) -> dict[str, Any]:
    """After "wrong": the other likely breeds (by index into the answer's top-k) plus "other"."""
    rows = [[_button(name, feedback_data(photo_id, i))] for i, name in enumerate(names) if i > 0]
    rows.append([_button(t(language, "other"), feedback_data(photo_id, OTHER))])
    return {"inline_keyboard": rows}
