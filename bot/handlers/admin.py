"""Admin commands: /retrain with a zip (or on feedback), /models, /promote N, /rollback, /stats.

`build_app` gates these with `filters.User(admin_ids)`; `refuse` answers everyone else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from telegram import Document, Message, Update

import contract
from bot.context import Context
from bot.handlers.common import language_of, reply_to
from bot.i18n import DEFAULT_LANGUAGE, t
from bot.jobs import submit, task

log = logging.getLogger(__name__)
ADMIN_COMMANDS = ("retrain", "models", "promote", "rollback", "stats")


def _flag(text: str) -> bool:
    if text.lower() in {"1", "true", "yes", "on"}:
        return True
    if text.lower() in {"0", "false", "no", "off"}:
        return False
    raise ValueError("use 1 or 0")


@dataclass(frozen=True)
class Option:
    """One caption option: the retrain.py name it sets, its type and allowed range."""

    name: str
    parse: Callable[[str], Any]
    low: float | None = None
    high: float | None = None


# Short names from the issue, each also accepted under its retrain.py name.
OPTIONS = {
    "steps": Option("how_many_training_steps", int, 1, 100_000),
    "lr": Option("learning_rate", float, 1e-6, 10),
    "flip": Option("flip_left_right", _flag),
    "crop": Option("random_crop", int, 0, 100),
    "scale": Option("random_scale", int, 0, 100),
    "brightness": Option("random_brightness", int, 0, 100),
    "batch": Option("train_batch_size", int, 1, 4096),
    "eval_every": Option("eval_step_interval", int, 1, 100_000),
    "test_pct": Option("testing_percentage", float, 1, 50),
    "val_pct": Option("validation_percentage", float, 1, 50),
    "seed": Option("seed", int, 0, 2**31 - 1),
}
OPTIONS |= {option.name: option for option in list(OPTIONS.values())}
# Not hyper-parameters: they go on the request itself.
REQUEST_OPTIONS = {
    "min_acc": Option("min_accuracy", float, 0, 1),
    "force": Option("force", _flag),
    "merge": Option("merge_last", _flag),
}


@dataclass(frozen=True)
class RetrainOptions:
    """A parsed `/retrain` caption."""

    params: dict[str, Any] = field(default_factory=dict)
    min_accuracy: float | None = None
    force: bool = False
    feedback: bool = False
    merge_last: bool = False


class OptionsError(ValueError):
    """Options that cannot be used: `problems` holds (i18n key, values), one per problem."""

    def __init__(self, problems: list[tuple[str, dict[str, Any]]]) -> None:
        self.problems = problems
        super().__init__(self.text(DEFAULT_LANGUAGE))

    def text(self, language: str) -> str:
        """One "• problem" line each, in `language`."""
        return "\n".join(f"• {t(language, key, **values)}" for key, values in self.problems)


def parse_retrain_options(words: list[str]) -> RetrainOptions:
    """`["feedback", "steps=500"]` -> RetrainOptions, or OptionsError listing each problem."""
    params: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    feedback = False
    problems: list[tuple[str, dict[str, Any]]] = []
    for word in words:
        if word.lower() == "feedback":
            feedback = True
            continue
        key, sep, raw = word.partition("=")
        option = OPTIONS.get(key) or REQUEST_OPTIONS.get(key)
        if not sep or option is None:
            known = ", ".join(list(OPTIONS)[:11] + list(REQUEST_OPTIONS))
            problems.append(("option_unknown", {"word": word, "known": known}))
            continue
        try:
            value = option.parse(raw)
        except ValueError:
            kind = option.parse.__name__.strip("_")
            problems.append(("option_invalid", {"option": key, "raw": raw, "kind": kind}))
            continue
        if (option.low is not None and value < option.low) or (
            option.high is not None and value > option.high
        ):
            values = {"option": key, "raw": raw, "low": option.low, "high": option.high}
            problems.append(("option_range", values))
            continue
        (extra if key in REQUEST_OPTIONS else params)[option.name] = value
    if problems:
        raise OptionsError(problems)
    if extra.get("merge_last") and not feedback:
        raise OptionsError([("option_merge", {})])
    return RetrainOptions(params, feedback=feedback, **extra)


def _zip_of(message: Message) -> Document | None:
    for candidate in (message, message.reply_to_message):
        document = candidate.document if candidate else None
        if document and (
            (document.file_name or "").lower().endswith(".zip")
            or document.mime_type in {"application/zip", "application/x-zip-compressed"}
        ):
            return document
    return None


async def retrain(update: Update, context: Context) -> None:
    """Queue a retrain on the attached (or replied-to) zip, or on the collected feedback."""
    message = update.effective_message
    assert message is not None and update.effective_user is not None
    language = language_of(update)
    words = (message.text or message.caption or "").split()[1:]
    try:
        options = parse_retrain_options(words)
    except OptionsError as error:
        await message.reply_text(t(language, "retrain_bad_options", problems=error.text(language)))
        return
    document = _zip_of(message)
    if options.feedback:
        dataset = contract.DatasetRef(name="feedback", feedback=True, merge_last=options.merge_last)
    elif document is None:
        await message.reply_text(t(language, "retrain_usage"))
        return
    elif (document.file_size or 0) > contract.MAX_IMAGE_BYTES:
        size = round((document.file_size or 0) / 2**20, 1)
        await message.reply_text(t(language, "too_big", size=size))
        return
    else:
        # The bot's image is the one that talks to Telegram: the worker gets the bytes.
        data = await (await context.bot.get_file(document.file_id)).download_as_bytearray()
        name = document.file_name or ""
        dataset = contract.DatasetRef(zip_b64=contract.encode_bytes(bytes(data)), name=name)
    status = await message.reply_text(t(language, "retrain_queued"))
    target = reply_to(message, language, "retrain", status_message_id=status.message_id)
    request = contract.RetrainRequest(
        dataset=dataset.to_dict(),
        params=options.params,
        min_accuracy=options.min_accuracy,
        force=options.force,
        requested_by=update.effective_user.id,
        reply_to=target.to_dict(),
    )
    await submit(context, task(context, contract.RETRAIN, request.to_dict()), target, "retrain")


async def _control(update: Update, context: Context, name: str, kind: str, *args: Any) -> None:
    message = update.effective_message
    assert message is not None
    target = reply_to(message, language_of(update), name.rsplit(".", 1)[-1])
    await submit(context, task(context, name, *args), target, kind)


async def models(update: Update, context: Context) -> None:
    """List the model versions."""
    await _control(update, context, contract.LIST_MODELS, "models")


async def promote(update: Update, context: Context) -> None:
    """Make version N active."""
    assert update.effective_message is not None and update.effective_user is not None
    if len(context.args or []) != 1 or not context.args[0].isdigit():
        await update.effective_message.reply_text("/promote N")
        return
    request = contract.PromoteRequest(int(context.args[0]), update.effective_user.id)
    await _control(update, context, contract.PROMOTE, "switch", request.to_dict())


async def rollback(update: Update, context: Context) -> None:
    """Return to the previously active version."""
    assert update.effective_user is not None
    request = contract.RollbackRequest(update.effective_user.id)
    await _control(update, context, contract.ROLLBACK, "switch", request.to_dict())


async def stats(update: Update, context: Context) -> None:
    """Jobs today, average latency and the active version."""
    await _control(update, context, contract.STATS, "stats")


async def refuse(update: Update, context: Context) -> None:
    """Anyone not in ADMIN_IDS: refuse and log the attempt."""
    message = update.effective_message
    assert message is not None and update.effective_user is not None
    command = (message.text or message.caption or "").split(maxsplit=1)[0]
    log.warning("refused %s from non-admin user %s", command, update.effective_user.id)
    await message.reply_text(t(language_of(update), "not_admin"))
