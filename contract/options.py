"""Every retrain option, defined once: its name, type, range and help text.

The bot's `/retrain` caption, the `breedbot retrain` flags and `HParams.validate` all read this
table, so a value one of them accepts the others accept too. Standard library only: the bot,
which never imports the model, and the model both import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# English wording of each problem; `bot/i18n.py` words the same codes in other languages.
MESSAGES = {
    "option_unknown": "{word}: there is no such option (the options are {known})",
    "option_int": "{option}={raw}: use a whole number from {low} to {high}",
    "option_float": "{option}={raw}: use a number from {low} to {high}",
    "option_flag": "{option}={raw}: use 1 (on) or 0 (off)",
    "option_backbone": (
        "{raw}: a queued retrain takes one of {known}; a TF Hub handle is for the command line"
    ),
    "option_split": (
        "the test and validation shares add up to {total}%; together they must stay below 100%"
    ),
}
FLAG_WORDS = {"1": True, "true": True, "yes": True, "on": True}
FLAG_WORDS |= {"0": False, "false": False, "no": False, "off": False}


def _plain(number: float) -> str:
    # "0.00001", not "1e-05": a range a user can copy.
    return f"{number:.10f}".rstrip("0").rstrip(".") if isinstance(number, float) else str(number)


@dataclass(frozen=True)
class Option:
    """One option: its retrain.py name, type, inclusive range, help text and caption name."""

    name: str
    kind: type  # int, float or bool
    help: str
    low: float | None = None
    high: float | None = None
    short: str | None = None  # its name in a /retrain caption; None: not offered in Telegram

    def problem(self, shown: str, raw: object) -> tuple[str, dict[str, Any]]:
        """(code, values) saying what a good value of this option looks like."""
        code = {int: "option_int", float: "option_float", bool: "option_flag"}[self.kind]
        values = {"option": shown, "raw": raw}
        if self.kind is not bool:
            values |= {"low": _plain(self.low), "high": _plain(self.high)}
        return code, values

    def accepts(self, value: object) -> bool:
        """True for a value of the right type inside the range."""
        if self.kind is bool:
            return isinstance(value, bool)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        return self.low <= value <= self.high  # type: ignore[operator]

    def parse(self, raw: str, shown: str | None = None) -> Any:
        """`raw` text as this option's value; OptionError when it is not a good one."""
        try:
            value = FLAG_WORDS[raw.lower()] if self.kind is bool else self.kind(raw)
        except (KeyError, ValueError):
            value = None
        if value is None or not self.accepts(value):
            raise OptionError([self.problem(shown or self.name, raw)])
        return value


class OptionError(ValueError):
    """Unusable options; `problems` holds (code, values) pairs, one per problem."""

    def __init__(self, problems: list[tuple[str, dict[str, Any]]]) -> None:
        self.problems = problems
        super().__init__("; ".join(MESSAGES[code].format(**values) for code, values in problems))

    @property
    def code(self) -> str:
        """The first problem's code (a result carries one)."""
        return self.problems[0][0]

    @property
    def params(self) -> dict[str, Any]:
        """The first problem's values."""
        return self.problems[0][1]


_STEPS = 100_000
HPARAMS = (
    Option("how_many_training_steps", int, "training steps", 1, _STEPS, "steps"),
    Option("learning_rate", float, "learning rate of the new layer", 1e-5, 1.0, "lr"),
    Option(
        "testing_percentage",
        float,
        "% of the images held out as a test split (default: none; k-fold cross-validation)",
        0.0,
        50.0,
        "test_pct",
    ),
    Option("validation_percentage", float, "% of the images for validation", 0.0, 50.0, "val_pct"),
    Option("cv_folds", int, "folds of the cross-validation that measures accuracy", 2, 20, "folds"),
    Option("eval_step_interval", int, "validate every this many steps", 1, _STEPS, "eval_every"),
    Option("train_batch_size", int, "images per training step", 1, 4096, "batch"),
    Option("test_batch_size", int, "kept for retrain.py users; the test covers all", -1, _STEPS),
    Option("validation_batch_size", int, "kept for retrain.py users", -1, _STEPS),
    Option("print_misclassified_test_images", bool, "list the test images it got wrong"),
    Option("flip_left_right", bool, "also train on mirrored images", short="flip"),
    Option("random_crop", int, "random crop margin, %", 0, 100, "crop"),
    Option("random_scale", int, "random scale change, %", 0, 100, "scale"),
    Option("random_brightness", int, "random brightness change, %", 0, 100, "brightness"),
    Option("distortion_copies", int, "distorted copies cached per training image", 0, 20),
    Option("early_stopping", bool, "stop when validation loss stops improving"),
    Option(
        "early_stopping_patience", int, "evaluations without improvement before stopping", 1, 1000
    ),
    Option("class_weighting", bool, "weight classes by their inverse frequency"),
    Option("l2", float, "L2 weight of the new layer (default: chosen by cross-validation)", 0, 1.0),
    Option("label_smoothing", float, "label smoothing", 0.0, 0.99),
    Option("seed", int, "random seed (splits are by content, not by seed)", 0, 2**31 - 1, "seed"),
    Option("min_images_per_class", int, "fewer usable images refuse the class", 2, _STEPS),
    Option("extraction_batch_size", int, "images per bottleneck batch", 1, 1024),
    Option("assert_accuracy_at_least", float, "write nothing below this test accuracy", 0.0, 1.0),
    Option(
        "open_set_threshold",
        float,
        "evidence below it answers 'not one of my breeds' (default: chosen by cross-validation)",
        0.0,
        1.0,
        "open_set",
    ),
)
# Not hyper-parameters: they go on the retrain request itself (bot only).
REQUEST = (
    Option("min_accuracy", float, "accuracy gate of this retrain", 0.0, 1.0, "min_acc"),
    Option("force", bool, "go live even below the active version", short="force"),
    # `/retrain merge` and `merge=1` alike; feedback is always added to the kept dataset.
    Option(
        "merge_last", bool, "add the photos to the active version's kept dataset", short="merge"
    ),
)
# What a caption may say: the short name, or (for hyper-parameters) the retrain.py name.
IN_CAPTION = {o.short: o for o in HPARAMS + REQUEST if o.short} | {
    o.name: o for o in HPARAMS if o.short
}


def check(
    values: Mapping[str, Any],
    table: tuple[Option, ...] = HPARAMS,
    shown: Mapping[str, str] | None = None,
) -> None:
    """Raise OptionError for names not in `table`, bad values and a test + validation share of
    100 % or more. `shown` maps a name to the word the user typed, so problems quote it back;
    None values (an unset optional option) pass."""
    by_name = {option.name: option for option in table}
    shown = shown or {}
    problems = []
    for name, value in values.items():
        option = by_name.get(name)
        if option is None:
            problems.append(("option_unknown", {"word": name, "known": ", ".join(by_name)}))
        elif value is not None and not option.accepts(value):
            problems.append(option.problem(shown.get(name, name), value))
    total = sum(float(values.get(n) or 0) for n in ("testing_percentage", "validation_percentage"))
    if not problems and total >= 100:
        problems.append(("option_split", {"total": _plain(total)}))
    if problems:
        raise OptionError(problems)
