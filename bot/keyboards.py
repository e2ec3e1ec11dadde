"""Inline keyboards as plain Bot API dicts, shared by the worker's replies and the bot's buttons."""

from __future__ import annotations

from typing import Any

from bot.i18n import t

FEEDBACK_PREFIX = "fb"
RIGHT, WRONG, OTHER, SKIP = "ok", "no", "other", "skip"


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


def album_keyboard(photo_ids: dict[int, str], language: str) -> dict[str, Any]:
    """Under an album's answer: "1 ✅ right" and "1 ❌ wrong" for each numbered photo."""
    rows = [
        [
            _button(f"{i} {t(language, 'right')}", feedback_data(photo_id, RIGHT)),
            _button(f"{i} {t(language, 'wrong')}", feedback_data(photo_id, WRONG)),
        ]
        for i, photo_id in sorted(photo_ids.items())
    ]
    return {"inline_keyboard": rows}


def without_photo(markup: dict[str, Any] | None, photo_id: str) -> list[list[dict[str, Any]]]:
    """The rows of `markup` that are not about `photo_id` (an album's other photos)."""
    rows = (markup or {}).get("inline_keyboard", [])
    mine = f"{FEEDBACK_PREFIX}:{photo_id}:"
    return [r for r in rows if not any(b.get("callback_data", "").startswith(mine) for b in r)]


def breeds_keyboard(photo_id: str, names: list[str], language: str) -> dict[str, Any]:
    """After "wrong": the other likely breeds (by index into the answer's top-k), "another
    breed" (its name is typed next), and "skip" (the photo is used for no breed)."""
    rows = [[_button(name, feedback_data(photo_id, i))] for i, name in enumerate(names) if i > 0]
    rows.append([_button(t(language, "other"), feedback_data(photo_id, OTHER))])
    rows.append([_button(t(language, "skip"), feedback_data(photo_id, SKIP))])
    return {"inline_keyboard": rows}
