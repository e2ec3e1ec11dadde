"""Bot pieces without Redis or workers: options, language, texts, keyboards, settings, handlers."""

from __future__ import annotations

import asyncio
import io
import pickle
import string
from typing import Any

import pytest
from PIL import Image
from telegram import Update
from telegram.ext import ApplicationBuilder, MessageHandler, filters

import contract
from bot import render
from bot.app import build_app
from bot.handlers.admin import OptionsError, parse_retrain_options
from bot.i18n import PROBLEMS, STRINGS, pick_language, problem_text, t
from bot.keyboards import breeds_keyboard, feedback_keyboard, parse_feedback
from bot.polling import handle_batch
from bot.settings import BotSettings
from fakegram.playground import PLAYGROUND_TOKEN
from model.data import DatasetError
from model.registry import GATE_MESSAGES, RegistryError
from model.train import AccuracyGateError
from worker.settings import WorkerSettings


def test_retrain_options_map_to_retrain_py_names() -> None:
    """Short names and retrain.py names both land on HParams names; request flags apart."""
    options = parse_retrain_options(
        ["steps=500", "lr=0.01", "flip=1", "min_acc=0.85", "random_crop=10", "force=yes"]
    )
    assert options.params == {
        "how_many_training_steps": 500,
        "learning_rate": 0.01,
        "flip_left_right": True,
        "random_crop": 10,
    }
    assert options.min_accuracy == 0.85 and options.force and not options.feedback
    feedback = parse_retrain_options(["feedback", "merge=1"])
    assert feedback.feedback and feedback.merge_last and feedback.params == {}


@pytest.mark.parametrize(
    ("words", "problem"),
    [
        (["speed=3"], "speed=3: unknown option"),
        (["steps"], "steps: unknown option"),
        (["steps=0"], "steps=0: out of range"),
        (["lr=fast"], "lr: 'fast' is not a valid float"),
        (["flip=maybe"], "flip: 'maybe' is not a valid flag"),
        (["min_acc=1.5"], "min_acc=1.5: out of range"),
        (["merge=1"], "merge=1 only goes with /retrain feedback"),
    ],
)
def test_retrain_options_errors_name_the_problem(words: list[str], problem: str) -> None:
    """Each bad option is reported by name."""
    with pytest.raises(OptionsError, match=problem):
        parse_retrain_options(words)


def test_option_problems_are_worded_in_the_users_language() -> None:
    with pytest.raises(OptionsError) as info:
        parse_retrain_options(["speed=3", "steps=0", "lr=fast"])
    lines = info.value.text("pt-BR").splitlines()
    assert lines[0].startswith("• speed=3: opção desconhecida (conhecidas: steps, lr,")
    assert lines[1:] == [
        "• steps=0: fora do intervalo (1…100000)",
        "• lr: 'fast' não é um float válido",
    ]
    assert str(info.value) == info.value.text("en")


def test_language_choice_and_complete_translations() -> None:
    """pt* -> pt-BR, anything else -> English; every English string exists in Portuguese."""
    assert [pick_language(c) for c in ("pt-br", "pt", "PT-PT", "en", "de", None)] == [
        "pt-BR", "pt-BR", "pt-BR", "en", "en", "en",
    ]  # fmt: skip
    assert set(STRINGS["pt-BR"]) == set(STRINGS["en"])
    assert t("xx", "right") == "✅ right"


def _result(probability: float, is_pet: bool = True, error: str | None = None) -> Any:
    guesses = [
        contract.Guess("pug", "Pug", probability).to_dict(),
        contract.Guess("boxer", "Boxer", 0.05).to_dict(),
        contract.Guess("beagle", "Beagle", 0.03).to_dict(),
    ]
    return contract.ClassifyResult(3, guesses, is_pet, 0.9, "espresso", 0.61, error=error)


def test_reply_texts() -> None:
    """Breed and percentage, "not sure", "no cat or dog" and translated image errors."""
    assert render.classification_text(_result(0.93), "en", 0.5).splitlines() == [
        "Pug — 93 %",
        "Next guesses: Boxer (5 %), Beagle (3 %)",
        "Model v3",
    ]
    assert render.headline(_result(0.4), "pt-BR", 0.5).startswith("🤔 Não tenho certeza")
    assert render.headline(_result(0.9, is_pet=False), "en", 0.5) == (
        "I see no cat or dog here. Looks like: espresso (61 %)"
    )
    assert render.headline(_result(0, error="truncated"), "en", 0.5).endswith("(truncated)")
    progress = contract.Progress("training", 300, 500, 0.91)
    assert render.progress_text(progress, "en") == (
        "🏋️ Training step 300/500 · validation accuracy 91 %"
    )


def _chart(result: Any, language: str) -> Image.Image:
    return Image.open(io.BytesIO(render.top_k_chart(result, language)))


def test_chart_is_a_phone_sized_png_with_long_names_wrapped() -> None:
    """The chart is a palette PNG 720 px wide; a long name wraps to a second line, then is cut."""
    short = _chart(_result(0.93), "en")
    assert short.format == "PNG" and short.mode == "P" and short.width == render.CHART_WIDTH
    long_name = "Cão de Água Português " * 6
    guesses = [contract.Guess("x", long_name, 0.9).to_dict(), *_result(0.93).top_k[1:]]
    long = _chart(contract.ClassifyResult(3, guesses, True, 0.9, "x", 0.9), "pt-BR")
    assert long.width == short.width and long.height == short.height + render.NAME_SIZE + 4
    font = render._font(render.NAME_SIZE)
    lines = render._wrap(long_name, font, 500)
    assert len(lines) == 2 and lines[1].endswith("…")
    assert all(font.getlength(line) <= 500 for line in lines)
    assert render._wrap("Supercalifragilistic" * 4, font, 300)[0].endswith("…")
    # Title and axis follow the language: the pixels differ between en and pt-BR.
    assert _chart(_result(0.93), "pt-BR").tobytes() != short.tobytes()


def test_keyboards_round_trip() -> None:
    """Callback data stays under 64 bytes and parses back; "wrong" offers the others + other."""
    row = feedback_keyboard("abcdef123456", "en")["inline_keyboard"][0]
    assert all(len(b["callback_data"].encode()) <= 64 for b in row)
    assert parse_feedback(row[1]["callback_data"]) == ("abcdef123456", "no")
    rows = breeds_keyboard("p", ["Pug", "Boxer", "Beagle"], "en")["inline_keyboard"]
    assert [r[0]["text"] for r in rows] == ["Boxer", "Beagle", "other"]


def test_settings_parse_admin_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """ADMIN_IDS accepts commas and spaces; URLs derive from the API root."""
    monkeypatch.setenv("ADMIN_IDS", "1, 2 3")
    monkeypatch.setenv("TELEGRAM_API_URL", "http://127.0.0.1:9/")
    settings = BotSettings()
    assert settings.admin_ids == {1, 2, 3}
    assert settings.base_file_url == "http://127.0.0.1:9/file/bot"


def test_build_app_without_token_points_at_the_playground() -> None:
    """No token: a clear error that names the playground."""
    with pytest.raises(ValueError, match="playground"):
        build_app(BotSettings(_env_file=None))


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compose passes `TELEGRAM_BOT_TOKEN=` when there is none: both sides read it as unset."""
    for name in ("TELEGRAM_BOT_TOKEN", "TELEGRAM_API_URL", "PLAYGROUND_PORT", "REDIS_URL"):
        monkeypatch.setenv(name, "")
    bot, worker = BotSettings(_env_file=None), WorkerSettings(_env_file=None)
    assert bot.telegram_bot_token is None
    assert bot.telegram_api_url == "https://api.telegram.org"
    assert bot.playground_port == 8081 and bot.redis_url is None and worker.redis_url is None


def test_the_worker_reads_no_telegram_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker computes and returns results: a token in its environment is not even read."""
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "1:secret")
    fields = set(WorkerSettings.model_fields)
    assert not {name for name in fields if "telegram" in name}
    assert "1:secret" not in repr(WorkerSettings(_env_file=None).model_dump())


def test_batch_keeps_each_chats_order_and_runs_chats_concurrently(emulator_url: str) -> None:
    """A slow first update holds back the rest of its chat, but not another chat's updates."""
    application = (
        ApplicationBuilder().token(PLAYGROUND_TOKEN).base_url(f"{emulator_url}/bot").build()
    )
    handled: list[tuple[int, str]] = []

    async def record(update: Update, _: object) -> None:
        message = update.effective_message
        assert message is not None and message.text is not None
        if message.text == "slow":
            await asyncio.sleep(0.2)
        handled.append((message.chat_id, message.text))

    application.add_handler(MessageHandler(filters.TEXT, record))
    texts = [(1, "slow"), (2, "a"), (1, "fast"), (2, "b")]
    updates = tuple(
        Update.de_json(
            {
                "update_id": number,
                "message": {
                    "message_id": number,
                    "date": 0,
                    "chat": {"id": chat, "type": "private"},
                    "text": text,
                },
            },
            application.bot,
        )
        for number, (chat, text) in enumerate(texts)
    )

    async def main() -> None:
        async with application:
            await handle_batch(application, updates)

    asyncio.run(main())
    assert handled == [(2, "a"), (2, "b"), (1, "slow"), (1, "fast")]


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_every_problem_the_worker_reports_is_worded_in_portuguese() -> None:
    """Same codes and the same values as the English texts of the library and the worker."""
    english = {
        **DatasetError.messages,
        **AccuracyGateError.messages,
        **RegistryError.messages,
        **GATE_MESSAGES,
        # worker/retraining.py and worker/fetch.py word these inline, with these values
        "storage": "{why}",
        "unsupported": "",
        "too_large": "{limit_mb}",
    }
    portuguese = PROBLEMS["pt-BR"]
    assert set(portuguese) == set(english)
    for code, template in english.items():
        assert _fields(portuguese[code]) == _fields(template), code


def test_problem_text_words_a_dataset_error_or_falls_back_to_english() -> None:
    error = DatasetError("too_few_images", min=3, short="'dogs': 1")
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.code, copy.params, str(copy)) == (
        DatasetError,
        error.code,
        error.params,
        str(error),
    )
    assert problem_text("pt-BR", error.code, error.params, str(error)) == (
        "Cada classe precisa de pelo menos 3 imagens utilizáveis: 'dogs': 1."
    )
    assert problem_text("en", error.code, error.params, str(error)) == str(error)
    assert problem_text("pt-BR", "no_such_version", {}, "english") == "english"  # values missing
    assert problem_text("pt-BR", None, {}, "english") == "english"
