"""Parsers for CLI values. Each raises ValidationError with a message meant for the operator."""

from __future__ import annotations

import json
import keyword
import math

from netjobs.errors import ValidationError


def _reject_constant(name: str):
    # json.loads accepts NaN/Infinity, which are not JSON and cannot travel as task arguments.
    raise ValueError(name)


def parse_value(text: str):
    """JSON when it parses as JSON (numbers, true/false, null, lists, objects, "quoted"), else the text."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return text


def parse_task_args(pairs: tuple[str, ...] | list[str]) -> dict:
    """``("k=v", ...)`` -> kwargs. ``k=`` is the empty string; keys must be Python identifiers."""
    kwargs: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep:
            raise ValidationError(f"--arg {pair!r} is not KEY=VALUE")
        if not key.isidentifier() or keyword.iskeyword(key):
            raise ValidationError(f"--arg {pair!r}: {key!r} is not a valid argument name")
        if key in kwargs:
            raise ValidationError(f"--arg {key} given twice")
        kwargs[key] = parse_value(value)
    return kwargs


def parse_names(text: str, what: str = "name") -> list[str]:
    """``a,b , c`` -> ``["a", "b", "c"]`` (no empties, no duplicates)."""
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise ValidationError(f"no {what} given")
    return names


def parse_seconds(text: str, what: str, allow_zero: bool = True) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValidationError(f"{what} must be a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValidationError(f"{what} must be a {'non-negative' if allow_zero else 'positive'} number, got {text!r}")
    return value
