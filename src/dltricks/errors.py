"""Errors a user can cause. The CLI prints them as one line, never a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DltricksError(Exception):
    """A mistake in the user's input: a key, value, file or name. Exit code 2."""

    exit_code = 2


class RunFailed(DltricksError):
    """A run that started but could not finish (NaN loss, crash in a model). Exit code 1."""

    exit_code = 1


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def one_of(choices: Iterable[str]) -> str:
    return ", ".join(sorted(choices))


def unknown(kind: str, name: str, choices: Iterable[str]) -> DltricksError:
    """The error for a name that is not registered, listing what is."""
    choices = list(choices)
    return DltricksError(f"unknown {kind} {name!r}{did_you_mean(name, choices)}; valid: {one_of(choices)}")
