"""Bot pieces without Redis or workers: options, language, texts, keyboards, settings, handlers."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import dataclasses
import importlib
import io
import pickle
import string
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from telegram import Update
from telegram.ext import ApplicationBuilder, MessageHandler, filters

import contract
from bot import render
from bot.app import build_app
from bot.handlers.admin import options_text, parse_retrain_options
from bot.i18n import PROBLEMS, STRINGS, moment, percent, pick_language, problem_text, t
from bot.keyboards import breeds_keyboard, feedback_keyboard, parse_feedback
from bot.polling import handle_batch
from bot.settings import BotSettings
from contract import options
from contract.options import OptionError
from fakegram.api import PlaygroundClient
from fakegram.playground import PLAYGROUND_TOKEN
from model.cli import build_parser
from model.data import DatasetError
from model.hparams import HParams, validate
from model.problems import Problem
from model.runtime.imagenet import PET_CLASS_IDS
from store.registry import GATE_MESSAGES
from tests.browser import chromium_or_skip
from worker import tf_jobs
from worker.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[1]


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
    merge = parse_retrain_options(["merge", "steps=50"])  # the word and merge=1 say the same
    assert (
        merge.merge_last and not merge.feedback and merge.params == {"how_many_training_steps": 50}
    )


@pytest.mark.parametrize(
    ("words", "problem"),
    [
        (["speed=3"], "speed=3: there is no such option"),
        (["steps"], "steps: there is no such option"),
        (["steps=0"], "steps=0: use a whole number from 1 to 100000"),
        (["steps=abc"], "steps=abc: use a whole number from 1 to 100000"),
        (["lr=fast"], "lr=fast: use a number from 0.00001 to 1"),
        (["lr=5"], "lr=5: use a number from 0.00001 to 1"),
        (["flip=maybe"], r"flip=maybe: use 1 \(on\) or 0 \(off\)"),
        (["min_acc=1.5"], "min_acc=1.5: use a number from 0 to 1"),
        (["test_pct=50", "val_pct=50"], "add up to 100%"),
    ],
)
def test_retrain_options_errors_name_the_problem(words: list[str], problem: str) -> None:
    """Each bad option is reported by name, with what a good value looks like."""
    with pytest.raises(OptionError, match=problem):
        parse_retrain_options(words)


def test_one_option_table_for_the_bot_the_cli_and_hparams() -> None:
    """A value the bot accepts, HParams.validate and the CLI accept too, and the reverse."""
    for raw, accepted in (("5", False), ("1", True), ("0.00001", True), ("0", False)):
        hparams = HParams(learning_rate=float(raw))
        if accepted:
            assert parse_retrain_options([f"lr={raw}"]).params == {"learning_rate": float(raw)}
            validate(hparams)
            assert retrain_args(["--learning_rate", raw]).learning_rate == float(raw)
        else:
            with pytest.raises(OptionError):
                parse_retrain_options([f"lr={raw}"])
            with pytest.raises(OptionError, match="learning_rate"):
                validate(hparams)
            with pytest.raises(SystemExit):
                retrain_args(["--learning_rate", raw])
    with pytest.raises(OptionError, match="extraction_batch_size"):
        validate(HParams(extraction_batch_size=0))
    assert {f.name for f in dataclasses.fields(HParams)} - {o.name for o in options.HPARAMS} == {
        "tfhub_module"  # a name or a path, checked when the backbone loads
    }


@pytest.mark.parametrize(
    "handle", ["https://tfhub.dev/attacker/model/1", "/tmp/a-saved-model", "", ["auto"]]
)
def test_a_queued_retrain_names_auto_or_a_backbone_breedbot_builds(handle: object) -> None:
    """A TF Hub handle or path is a CLI-only option: from the queue it is an option problem,
    worded in the user's language, before anything loads it."""
    from worker.tf_jobs import hparams_from

    for named in ("auto", "efficientnet_lite2"):
        assert hparams_from({"tfhub_module": named}, "auto").tfhub_module == named
    with pytest.raises(OptionError) as refused:
        hparams_from({"tfhub_module": handle}, "auto")
    assert refused.value.code == "option_backbone"
    assert "linha de comando" in problem_text(
        "pt-BR", refused.value.code, refused.value.params, str(refused.value)
    )


def retrain_args(flags: list[str]) -> Any:
    """`breedbot retrain` flags as parsed."""
    return build_parser().parse_args(["retrain", "--image_dir", "x", *flags])


def test_option_problems_are_worded_in_the_users_language() -> None:
    with pytest.raises(OptionError) as info:
        parse_retrain_options(["speed=3", "steps=0", "lr=fast"])
    lines = options_text(info.value, "pt-BR").splitlines()
    assert lines[0].startswith("• speed=3: essa opção não existe (as opções são steps, lr,")
    assert lines[1:] == [
        "• steps=0: use um número inteiro de 1 a 100000",
        "• lr=fast: use um número de 0.00001 a 1",
    ]
    assert options_text(info.value, "en").splitlines()[1] == (
        "• steps=0: use a whole number from 1 to 100000"
    )


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
        "Pug — 93%",
        "Next guesses: Boxer (5%), Beagle (3%)",
        "Model v3",
    ]
    assert render.headline(_result(0.4), "pt-BR", 0.5).startswith("🤔 Não tenho certeza")
    assert render.headline(_result(0.9, is_pet=False), "en", 0.5) == (
        "I see no cat or dog here. Looks like: espresso (61%)"
    )
    assert render.headline(_result(0, error="truncated"), "en", 0.5).endswith("(truncated)")
    progress = contract.Progress("training", 300, 500, 0.91)
    assert render.progress_text(progress, "en") == (
        "🏋️ Training step 300/500 · validation accuracy 91%"
    )


def test_numbers_dates_and_percentages_follow_the_locale() -> None:
    """CLDR through Babel: "25,3 MB" and "93%" in pt-BR, "25.3 MB" and "93%" in English."""
    assert t("pt-BR", "too_big", size=25.3).startswith("Este arquivo tem 25,3 MB;")
    assert t("en", "too_big", size=25.3).startswith("This file is 25.3 MB;")
    assert render.headline(_result(0.93), "pt-BR", 0.5) == "Pug — 93%"
    assert percent(0.931, "en") == percent(0.931, "pt-BR") == "93%"
    gate = {"accuracy": 0.931, "minimum": 0.95}
    assert problem_text("pt-BR", "below_minimum", gate, "") == (
        "a acurácia de teste 93,1% está abaixo do mínimo 95,0%"
    )
    when = datetime(2026, 12, 1, 20, 55)
    assert (moment(when, "pt-BR"), moment(when, "en")) == (
        "01/12/2026 20:55",
        "12/1/26, 8:55\u202fPM",
    )


def test_retrain_reply_reads_like_a_report() -> None:
    """Display names, only classes below 100 %, the photos behind each figure, stages in order."""
    per_class = {
        "Egyptian_Mau": {"accuracy": 2 / 3, "n": 3},
        "american_bulldog": {"accuracy": 1.0, "n": 5},
        "pug": {"accuracy": 0.75, "n": 4},
    }
    metrics = {"n_test": 12, "worst_classes": tf_jobs._weakest(per_class)}
    result = contract.RetrainResult(7, True, 0.83, metrics)
    assert render.retrain_text(result, "en").splitlines() == [
        "✅ Model v7 trained: 83.0% right on 12 test photos.",  # one decimal, as the gate says
        "Weakest breeds:",
        "• Egyptian Mau: 2 of 3 right (67%)",
        "• Pug: 3 of 4 right (75%)",
        "It is live now.",
    ]
    assert render.retrain_text(result, "pt-BR").splitlines()[2] == (
        "• Egyptian Mau: 2 de 3 certas (67%)"
    )
    comparing = contract.Progress("comparing", 0, 1, 0.9)
    assert render.progress_text(comparing, "en") == (
        "⚖️ Comparing it with the active model… · validation accuracy 90%"
    )


def test_retrain_reply_says_where_a_merged_datasets_photos_came_from() -> None:
    """A merge names the kept and uploaded photos and the new classes; a plain upload does not."""
    dataset = {
        "photos": 130,
        "sources": {"kept": 100, "upload": 30, "feedback": 0},
        "base_version": 1,
        "new_classes": ["Sphynx"],
    }
    merged = contract.RetrainResult(2, True, 0.9, {"n_test": 10, "dataset": dataset})
    assert render.retrain_text(merged, "en").splitlines()[1:3] == [
        "Trained on 130 photos: 100 kept from version 1, 30 from your upload.",
        "1 new class: Sphynx",
    ]
    two_new = dataset | {"new_classes": ["Sphynx", "Pug"]}
    feedback = two_new | {"sources": {"kept": 100, "upload": 0, "feedback": 30}}
    result = contract.RetrainResult(3, True, 0.9, {"n_test": 10, "dataset": feedback})
    assert render.retrain_text(result, "pt-BR").splitlines()[1:3] == [
        "Treinado com 130 fotos: 100 guardadas da versão 1, 30 das correções.",
        "2 classes novas: Sphynx, Pug",
    ]
    plain = {"photos": 30, "sources": {"kept": 0, "upload": 30, "feedback": 0}}
    alone = contract.RetrainResult(
        1, True, 0.9, {"n_test": 10, "dataset": plain | {"base_version": None}}
    )
    assert "Trained on" not in render.retrain_text(alone, "en")


def test_retrain_reply_reports_cross_validation_and_the_auto_choice() -> None:
    """All photos trained the model: the reply gives the CV accuracy, its spread and the choice."""
    metrics = {
        "accuracy_source": "cross_validation",
        "n_train": 599,
        "cross_validation": {"k": 5, "accuracy": 0.893, "std": 0.021},
        "auto": {
            "chosen": "efficientnet_lite2",
            "candidates": {
                "efficientnet_lite0": {"cv_accuracy": 0.841},
                "efficientnet_lite2": {"cv_accuracy": 0.893},
            },
        },
    }
    result = contract.RetrainResult(4, True, 0.893, metrics)
    assert render.retrain_text(result, "en").splitlines()[:2] == [
        "✅ Model v4 trained on all 599 photos: 5-fold cross-validated accuracy 89.3% ± 2.1%.",
        "Backbone efficientnet_lite2, chosen by cross-validation: efficientnet_lite0 84.1%, "
        "efficientnet_lite2 89.3%.",
    ]
    held_out = contract.RetrainResult(5, True, 0.9, {"accuracy_source": "test_split", "n_test": 20})
    assert render.retrain_text(held_out, "en").startswith(
        "✅ Model v5 trained: 90.0% right on 20 test photos."
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
    """Callback data stays under 64 bytes and parses back; "wrong" offers the others, another
    breed (typed) and skip."""
    row = feedback_keyboard("abcdef123456", "en")["inline_keyboard"][0]
    assert all(len(b["callback_data"].encode()) <= 64 for b in row)
    assert parse_feedback(row[1]["callback_data"]) == ("abcdef123456", "no")
    rows = breeds_keyboard("p", ["Pug", "Boxer", "Beagle"], "en")["inline_keyboard"]
    assert [r[0]["text"] for r in rows] == [
        "Boxer", "Beagle", "✏️ another breed (type it)", "🚫 skip this photo"
    ]  # fmt: skip


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


def _problem_classes(cls: type[Problem]) -> list[type[Problem]]:
    return [cls, *(c for sub in cls.__subclasses__() for c in _problem_classes(sub))]


def _inline_codes() -> dict[str, set[str]]:
    """Codes the worker raises inline, read from its source: `_refused(code, message, **values)`
    and `InputError(code, message, **values)` calls with a literal code."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / "worker").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name not in {"_refused", "InputError"} or not node.args:
                continue
            code = node.args[0]
            if isinstance(code, ast.Constant) and isinstance(code.value, str):
                found.setdefault(code.value, set()).update(k.arg for k in node.keywords if k.arg)
    return found


def test_every_problem_the_worker_reports_is_worded_in_portuguese() -> None:
    """Every problem code in the source (library errors, accuracy gate, options, the worker's
    inline codes) has a Portuguese text using exactly the values the English one gets."""
    importlib.import_module("model.train")  # defines AccuracyGateError
    templates = {
        code: template
        for cls in _problem_classes(Problem)
        for code, template in cls.messages.items()
    }
    values = {code: _fields(template) for code, template in templates.items()}
    values |= {code: _fields(template) for code, template in GATE_MESSAGES.items()}
    values |= {code: _fields(template) for code, template in options.MESSAGES.items()}
    inline = _inline_codes()
    assert {"storage", "feedback_one_class", "too_large"} <= set(inline)  # the scan works
    values |= inline
    # A gate problem on a cross-validated accuracy is worded by the bot as such (render.py).
    values |= {
        f"{code}_cv": values[code] for code in GATE_MESSAGES if f"{code}_cv" in PROBLEMS["en"]
    }
    portuguese = PROBLEMS["pt-BR"]
    assert sorted(set(values) - set(portuguese)) == []  # missing translations
    assert sorted(set(portuguese) - set(values)) == []  # codes nothing raises any more
    for code, fields in values.items():
        assert _fields(portuguese[code]) == fields, code


def test_problem_text_words_a_dataset_error_or_falls_back_to_english() -> None:
    error = DatasetError("too_few_images", min=3, short="Dogs (1)")
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.code, copy.params, str(copy)) == (
        DatasetError,
        error.code,
        error.params,
        str(error),
    )
    assert problem_text("pt-BR", error.code, error.params, str(error)) == (
        "Cada classe precisa de pelo menos 3 imagens utilizáveis: Dogs (1)."
    )
    assert problem_text("en", error.code, error.params, str(error)) == str(error)
    assert problem_text("pt-BR", "no_such_version", {}, "english") == "english"  # values missing
    assert problem_text("pt-BR", None, {}, "english") == "english"


def test_browser_test_skips_without_chromium_but_fails_in_ci(tmp_path: Path) -> None:
    """No Chromium: a skip that says how to install it; with CI=true, a failure instead."""
    missing = tmp_path / "chromium"
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        chromium_or_skip(missing, env={})
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        chromium_or_skip(missing, env={"CI": "true"})
    missing.write_bytes(b"")
    assert chromium_or_skip(missing, env={"CI": "true"}) == missing


def test_playground_page_hint_favicon_and_toast_anchor(emulator_url: str) -> None:
    """The page opens with a hint (not blank), the favicon exists, and a button press names its
    callback query, so the page can show the toast beside the message whose button it was."""
    with contextlib.closing(PlaygroundClient(emulator_url)) as user:
        page = user.http.get("/").text
        assert 'id="hint"' in page and "123 cat and dog classes" in page
        assert "reply_to_message_id" in page  # "↩ reply" under a sent zip, then /retrain
        icon = user.http.get("/favicon.ico")
        assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
        assert Image.open(io.BytesIO(icon.content)).format == "ICO"
        sent = user.send(601, text="hi")["message"]
        pressed = user.press(601, sent["message_id"], "fb:x:ok")
        press = [e for e in user.events(601) if e["type"] == "press"][-1]
        assert press["callback_query_id"] == pressed["callback_query_id"]
        assert press["message_id"] == sent["message_id"]


def test_v0s_limits_are_explained_where_a_newcomer_looks() -> None:
    """/start and /help (both languages) and the README name the 123 ImageNet classes."""
    classes = str(len(PET_CLASS_IDS))
    for language in ("en", "pt-BR"):
        assert classes in t(language, "start", name="Ana") and classes in t(language, "help")
        assert "/retrain" in t(language, "help_admin") and classes in t(language, "help_admin")
    assert f"ImageNet's {classes} cat and dog classes" in (REPO / "README.md").read_text()


def test_aiohttp_requests_reach_the_bot_api_and_fail_as_ptb_errors(emulator_url: str) -> None:
    """PTB's calls through bot.aiohttp_request: a real getMe and upload against the emulator; a
    refused connection is a NetworkError and a slow answer a TimedOut, which polling backs off
    on."""
    from aiohttp import web
    from telegram import Bot
    from telegram.error import NetworkError, TimedOut

    from bot.aiohttp_request import AiohttpRequest
    from fakegram.api import serve_in_thread
    from ops.redis_server import free_port

    async def calls() -> None:
        bot = Bot(PLAYGROUND_TOKEN, base_url=f"{emulator_url}/bot", request=AiohttpRequest())
        async with bot:
            assert (await bot.get_me()).is_bot
            png = io.BytesIO()
            Image.new("RGB", (8, 8), "white").save(png, "PNG")
            sent = await bot.send_photo(4321, photo=png.getvalue(), caption="chart")
            assert sent.caption == "chart" and sent.photo
        nowhere = f"http://127.0.0.1:{free_port()}/bot"
        with pytest.raises(NetworkError, match="aiohttp"):
            async with Bot("1:x", base_url=nowhere, request=AiohttpRequest()):
                pass
        slow = AiohttpRequest(read_timeout=0.2)
        await slow.initialize()
        try:
            with pytest.raises(TimedOut):
                await slow.do_request(f"{slow_url}/slow", "GET")
        finally:
            await slow.shutdown()

    async def stall(_: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(text="late")

    slow_app = web.Application()
    slow_app.router.add_get("/slow", stall)
    with serve_in_thread(slow_app) as slow_url:
        asyncio.run(calls())
