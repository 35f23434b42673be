"""Ages at scan from BIDS tables: which column holds a session's age, and in what unit.

Gestational age (GA) in weeks for fetal scans, post-menstrual age (PMA) in weeks for
infants: common column aliases, and any column the table's JSON data dictionary
describes as GA or PMA in weeks, days or months (converted to weeks). A postnatal age
in months becomes PMA assuming a term birth.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from earlybrain.anatomy.biometry import TERM_WEEKS, WEEKS_PER_MONTH

Kind = Literal["fetal", "infant"]


class AgeValueError(ValueError):
    """An age column whose value is not a number (the message names the table and row)."""


# Column aliases, matched case-insensitively, in order of preference.
GA_COLUMNS: tuple[str, ...] = (
    "ga_weeks",
    "ga",
    "gestational_age",
    "gestational_age_weeks",
    "ga_wk",
    "ga_w",
)
PMA_COLUMNS: tuple[str, ...] = (
    "pma_weeks",
    "pma",
    "postmenstrual_age",
    "post_menstrual_age",
    "pma_wk",
    "pma_w",
)
# Columns that hold "the age at scan in weeks" without saying GA or PMA (dHCP: scan_age):
# GA for a fetal session, PMA for an infant one.
GENERIC_WEEK_COLUMNS: tuple[str, ...] = ("age_weeks", "scan_age", "age_at_scan_weeks")
# Postnatal age in months: infants only, converted to PMA assuming a term birth.
MONTH_COLUMNS: tuple[str, ...] = ("age_months", "age_mo")

MISSING_VALUES = {"", "n/a", "na", "nan", "none", "null"}

# A data dictionary's Units (or a unit named in its Description), in weeks per unit.
UNIT_WEEKS: dict[str, float] = {
    "week": 1.0,
    "weeks": 1.0,
    "wk": 1.0,
    "wks": 1.0,
    "w": 1.0,
    "day": 1.0 / 7.0,
    "days": 1.0 / 7.0,
    "d": 1.0 / 7.0,
    "month": WEEKS_PER_MONTH,
    "months": WEEKS_PER_MONTH,
    "mo": WEEKS_PER_MONTH,
}
_GA_WORDS = re.compile(r"\bgestational\s+age\b|\bga\b", re.IGNORECASE)
_PMA_WORDS = re.compile(r"\bpost[- ]?menstrual\s+age\b|\bpma\b", re.IGNORECASE)
# "gestational age at birth" is not the age at the scan (an infant's PMA): never taken
_AT_BIRTH = re.compile(r"\bbirth\b", re.IGNORECASE)
_UNIT_IN_TEXT = re.compile(r"\b(weeks?|wks?|days?|months?)\b", re.IGNORECASE)


@dataclass(frozen=True)
class DescribedAge:
    """A column that a BIDS data dictionary describes as an age at scan."""

    measure: Literal["GA", "PMA"]
    weeks_per_unit: float
    unit: str


def measure_of(kind: Kind) -> Literal["GA", "PMA"]:
    """What a session's age is: gestational age for a fetus, post-menstrual for an infant."""
    return "GA" if kind == "fetal" else "PMA"


def described_ages(tsv: Path) -> dict[str, DescribedAge]:
    """Columns of `tsv` that its JSON data dictionary describes as GA or PMA with a unit.

    Keys are lower-case column names. A dictionary that is missing, unreadable or says
    something else gives no entries: the alias names still apply.
    """
    try:
        meta = json.loads(tsv.with_suffix(".json").read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return {}
    if not isinstance(meta, dict):
        return {}
    found: dict[str, DescribedAge] = {}
    for column, info in meta.items():
        if not isinstance(info, dict):
            continue
        text = " ".join(str(info.get(k) or "") for k in ("LongName", "Description"))
        if _AT_BIRTH.search(text):
            continue
        measure: Literal["GA", "PMA"] | None = (
            "PMA" if _PMA_WORDS.search(text) else "GA" if _GA_WORDS.search(text) else None
        )
        unit = str(info.get("Units") or "").strip().lower()
        if unit not in UNIT_WEEKS:
            named = _UNIT_IN_TEXT.search(text)
            unit = named.group(1).lower() if named else ""
        if measure and unit in UNIT_WEEKS:
            found[str(column).strip().lower()] = DescribedAge(measure, UNIT_WEEKS[unit], unit)
    return found


def age_value(row: dict[str, str], col: str, source: Path, who: str) -> float | None:
    """The number in `col`, None when missing; a clear error when it is not a number."""
    raw = (row.get(col) or "").strip()
    if raw.lower() in MISSING_VALUES:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise AgeValueError(f"{source}: {who}: column {col!r} = {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise AgeValueError(f"{source}: {who}: column {col!r} = {raw!r} is not finite")
    return value


def lookup_age(
    row: dict[str, str],
    kind: Kind,
    source: Path,
    who: str,
    described: dict[str, DescribedAge] | None = None,
) -> tuple[float, str, str | None] | None:
    """Pick the age for `kind` from a TSV row: (weeks, column, note) or None.

    Alias names first, then the columns the data dictionary `described` as this kind's
    measure (GA for fetal, PMA for infant sessions), converted to weeks.
    """
    by_lower = {k.strip().lower(): k for k in row if k is not None}
    specific = GA_COLUMNS if kind == "fetal" else PMA_COLUMNS
    weeks = [(c, False) for c in (*specific, *GENERIC_WEEK_COLUMNS)]
    months = [(c, True) for c in MONTH_COLUMNS] if kind == "infant" else []
    for alias, in_months in weeks + months:
        col = by_lower.get(alias)
        if col is None:
            continue
        value = age_value(row, col, source, who)
        if value is None:
            continue
        if in_months:
            note = (
                f"age from {col!r} (postnatal months) converted to PMA assuming term birth: "
                f"{TERM_WEEKS:g} + months * {WEEKS_PER_MONTH}"
            )
            return TERM_WEEKS + value * WEEKS_PER_MONTH, col, note
        return value, col, None
    measure = measure_of(kind)
    for lower, meaning in (described or {}).items():
        col = by_lower.get(lower)
        if col is None or meaning.measure != measure:
            continue
        value = age_value(row, col, source, who)
        if value is None:
            continue
        note = (
            f"age from column {col!r}, which {source.with_suffix('.json').name} describes as "
            f"{measure} in {meaning.unit}"
            + (
                f" (converted to weeks: x {meaning.weeks_per_unit:.4g})"
                if meaning.weeks_per_unit != 1.0
                else ""
            )
        )
        return value * meaning.weeks_per_unit, col, note
    return None


def other_kind_age_column(row: dict[str, str], kind: Kind) -> str | None:
    """Name a column that holds an age for the *other* kind (for a helpful error)."""
    other = PMA_COLUMNS + MONTH_COLUMNS if kind == "fetal" else GA_COLUMNS
    for k, v in row.items():
        if k and k.strip().lower() in other and (v or "").strip().lower() not in MISSING_VALUES:
            return k
    return None
