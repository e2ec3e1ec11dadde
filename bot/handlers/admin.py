"""Admin commands: /retrain with a zip (or on feedback), /models, /promote N, /rollback, /stats,
/export [N].

`build_app` gates these with `filters.User(admin_ids)`; `refuse` answers everyone else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from telegram import Document, Message, Update

import contract
from bot.context import Context, settings_of
from bot.handlers.common import language_of, reply_to
from bot.i18n import problem_text, t
from bot.jobs import submit, task
from contract import options

log = logging.getLogger(__name__)
ADMIN_COMMANDS = ("retrain", "models", "promote", "rollback", "stats", "export")


# The names a caption may use, as the "unknown option" answer lists them.
KNOWN = ", ".join(o.short for o in options.HPARAMS + options.REQUEST if o.short)
REQUEST_NAMES = {option.name for option in options.REQUEST}


@dataclass(frozen=True)
class RetrainOptions:
    """A parsed `/retrain` caption."""

    params: dict[str, Any] = field(default_factory=dict)
    min_accuracy: float | None = None
    force: bool = False
    feedback: bool = False
    merge_last: bool = False


def parse_retrain_options(words: list[str]) -> RetrainOptions:
    """`["feedback", "steps=500"]` -> RetrainOptions, or OptionError listing each problem."""
    params: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    shown: dict[str, str] = {}
    feedback = False
    problems: list[tuple[str, dict[str, Any]]] = []
    for word in words:
        if word.lower() == "feedback":
            feedback = True
            continue
        if word.lower() == "merge":  # the same as merge=1
            extra["merge_last"] = True
            shown["merge_last"] = word
            continue
        key, sep, raw = word.partition("=")
        option = options.IN_CAPTION.get(key)
        if not sep or option is None:
            problems.append(("option_unknown", {"word": word, "known": KNOWN}))
            continue
        try:
            value = option.parse(raw, key)
        except options.OptionError as error:
            problems += error.problems
            continue
        (extra if option.name in REQUEST_NAMES else params)[option.name] = value
        shown[option.name] = key
    if not problems:
        try:
            options.check(params, shown=shown)  # what no single value shows (the split)
        except options.OptionError as error:
            problems += error.problems
    if problems:
        raise options.OptionError(problems)
    return RetrainOptions(params, feedback=feedback, **extra)


def options_text(error: options.OptionError, language: str) -> str:
    """One "• problem" line each, in `language`."""
    return "\n".join(
        f"• {problem_text(language, code, values, options.MESSAGES[code].format(**values))}"
        for code, values in error.problems
    )


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
    """Queue a retrain on the attached (or replied-to) zip, on it added to the active version's
    kept photos (`merge`), or on the collected feedback added to them."""
    message = update.effective_message
    assert message is not None and update.effective_user is not None
    language = language_of(update)
    words = (message.text or message.caption or "").split()[1:]
    try:
        caption = parse_retrain_options(words)
    except options.OptionError as error:
        problems = options_text(error, language)
        await message.reply_text(t(language, "retrain_bad_options", problems=problems))
        return
    document = _zip_of(message)
    if caption.feedback:
        dataset = contract.DatasetRef(name="feedback", feedback=True, merge_last=caption.merge_last)
    elif document is None:
        usage = "retrain_merge_usage" if caption.merge_last else "retrain_usage"
        await message.reply_text(t(language, usage))
        return
    elif (document.file_size or 0) > contract.MAX_IMAGE_BYTES:
        size = round((document.file_size or 0) / 2**20, 1)
        await message.reply_text(t(language, "too_big", size=size))
        return
    else:
        # The bot's image is the one that talks to Telegram: the worker gets the bytes.
        data = await (await context.bot.get_file(document.file_id)).download_as_bytearray()
        name = document.file_name or ""
        dataset = contract.DatasetRef(
            zip_b64=contract.encode_bytes(bytes(data)), name=name, merge_last=caption.merge_last
        )
    status = await message.reply_text(t(language, "retrain_queued"))
    target = reply_to(message, language, "retrain", status_message_id=status.message_id)
    request = contract.RetrainRequest(
        dataset=dataset.to_dict(),
        params=caption.params,
        min_accuracy=caption.min_accuracy,
        force=caption.force,
        requested_by=update.effective_user.id,
        reply_to=target.to_dict(),
        mistake_caption=t(language, "mistake_caption"),
    )
    await submit(
        context,
        task(context, contract.RETRAIN, request.to_dict()),
        target,
        contract.ReplyKind.RETRAIN,
    )


async def _control(update: Update, context: Context, name: str, kind: str, *args: Any) -> None:
    message = update.effective_message
    assert message is not None
    target = reply_to(message, language_of(update), name.rsplit(".", 1)[-1])
    await submit(context, task(context, name, *args), target, kind)


async def models(update: Update, context: Context) -> None:
    """List the model versions."""
    await _control(update, context, contract.LIST_MODELS, contract.ReplyKind.MODELS)


async def promote(update: Update, context: Context) -> None:
    """Make version N active."""
    assert update.effective_message is not None and update.effective_user is not None
    if len(context.args or []) != 1 or not context.args[0].isdigit():
        await update.effective_message.reply_text(t(language_of(update), "promote_usage"))
        return
    request = contract.PromoteRequest(int(context.args[0]), update.effective_user.id)
    await _control(update, context, contract.PROMOTE, contract.ReplyKind.SWITCH, request.to_dict())


async def rollback(update: Update, context: Context) -> None:
    """Return to the previously active version."""
    assert update.effective_user is not None
    request = contract.RollbackRequest(update.effective_user.id)
    await _control(update, context, contract.ROLLBACK, contract.ReplyKind.SWITCH, request.to_dict())


async def stats(update: Update, context: Context) -> None:
    """Jobs today, average latency and the active version."""
    await _control(update, context, contract.STATS, contract.ReplyKind.STATS)


async def zip_alone(update: Update, context: Context) -> None:
    """A .zip sent without /retrain: say what to do with it (admins) or who can (others)."""
    message = update.effective_message
    assert message is not None and update.effective_user is not None
    language = language_of(update)
    document = _zip_of(message)
    if update.effective_user.id in settings_of(context).admin_ids:
        name = (document.file_name if document else None) or "zip"
        await message.reply_text(t(language, "zip_reply_retrain", name=name))
    else:
        await message.reply_text(t(language, "zip_not_admin"))


async def export(update: Update, context: Context) -> None:
    """Send the active version (or version N) as a portable .tflite, labels.txt and README.txt."""
    assert update.effective_message is not None and update.effective_user is not None
    args = context.args or []
    if len(args) > 1 or (args and not args[0].isdigit()):
        await update.effective_message.reply_text(t(language_of(update), "export_usage"))
        return
    version = int(args[0]) if args else None
    request = contract.ExportRequest(version, update.effective_user.id)
    await _control(update, context, contract.EXPORT, contract.ReplyKind.EXPORT, request.to_dict())


async def refuse(update: Update, context: Context) -> None:
    """Anyone not in ADMIN_IDS: refuse and log the attempt."""
    message = update.effective_message
    assert message is not None and update.effective_user is not None
    command = (message.text or message.caption or "").split(maxsplit=1)[0]
    log.warning("refused %s from non-admin user %s", command, update.effective_user.id)
    await message.reply_text(t(language_of(update), "not_admin"))
