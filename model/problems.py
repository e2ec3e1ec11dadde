"""Errors a user can fix, each with a code and parameters beside its English text.

A front end that speaks other languages words the problem from `code` and `params` (the bot's
`bot/i18n.py`); the CLI and logs use the English text.
"""

from __future__ import annotations

from typing import Any, ClassVar


class Problem(Exception):
    """Base of the library's user-facing errors; subclasses list their English templates."""

    messages: ClassVar[dict[str, str]] = {}

    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(self.messages[code].format(**params))
        self.code = code
        self.params = params

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle would rebuild it from the message, which is not a code.
        return _rebuild, (type(self), self.code, self.params)


def _rebuild(cls: type[Problem], code: str, params: dict[str, Any]) -> Problem:
    return cls(code, **params)
