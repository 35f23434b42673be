"""Plain config values (YAML, or strings from `snakemake --config`) as the types of a
settings dataclass's fields, so that every science dataclass that takes a config section
refuses unknown keys and converts values the same way."""

from __future__ import annotations

from dataclasses import fields
from typing import Any


def coerce_fields(cls: type, values: dict[str, Any], what: str) -> dict[str, Any]:
    """Config values -> the types of the dataclass's defaults (lists become tuples).

    Values given on a command line (`snakemake --config`) may arrive as strings.
    """
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} parameter(s): {', '.join(unknown)}")
    defaults = cls()
    out = {}
    for key, value in values.items():
        default = getattr(defaults, key)
        try:
            if isinstance(default, tuple):
                kind = type(default[0]) if default else float
                out[key] = tuple(kind(v) for v in value)
            elif isinstance(default, bool):
                out[key] = value if isinstance(value, bool) else str(value).lower() == "true"
            elif isinstance(default, int | float):
                out[key] = type(default)(value)
            elif default is None and value is not None:
                out[key] = float(value)
            else:
                out[key] = value
        except (TypeError, ValueError):
            raise ValueError(f"{what} parameter {key}: cannot use {value!r}") from None
    return out
