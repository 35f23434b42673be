"""BIDS tables (participants.tsv, sessions.tsv): one strict reader and one writer, so
that session discovery and the DICOM import agree on what a well-formed table is."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from earlybrain.io.atomic import write_text_atomic


class TableError(ValueError):
    """A BIDS table that cannot be read as tab-separated values with a header, or that
    cannot take a row without becoming ambiguous (no id column, a label in other case)."""


def read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a TSV; a missing file is an empty table.

    A row with more fields than the header (often a comma- or space-separated file)
    is an error rather than a row with a ``None`` column."""
    if not path.is_file():
        return [], []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, delimiter="\t")
            rows = list(reader)
            header = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TableError(f"{path}: cannot read TSV ({exc})") from exc
    if any(None in row for row in rows):
        raise TableError(f"{path}: rows have more fields than the header (not tab-separated?)")
    return header, rows


def write_table(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    """Write atomically; a column a row lacks is written as BIDS's ``n/a``."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, header, delimiter="\t", lineterminator="\n", restval="n/a")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def update_table(
    path: Path,
    id_column: str,
    label: str,
    age_aliases: Sequence[str],
    age_column: str,
    age: float | None,
) -> tuple[str, str]:
    """Add or update the row of `label` (e.g. ``sub-01``), keeping other rows and columns.

    The age goes into the table's existing age column when it has one of `age_aliases`
    (the discovery code reads those), else into a new `age_column`. Without an age an
    existing value is kept, a new row gets n/a. Returns (column, value now stored).
    """
    header, rows = read_table(path)
    if header and id_column not in header:
        raise TableError(f"{path}: no {id_column!r} column")
    if not header:
        header = [id_column]
    column = next((c for c in header if c.strip().lower() in age_aliases), None) or age_column
    if column not in header:
        header.append(column)
    prefix = id_column.split("_")[0][:3] + "-"  # "sub-" / "ses-"
    bare = label.removeprefix(prefix)
    match = [r for r in rows if (r.get(id_column) or "").strip().removeprefix(prefix) == bare]
    near = [
        r
        for r in rows
        if (r.get(id_column) or "").strip().removeprefix(prefix).lower() == bare.lower()
    ]
    if not match and near:
        raise TableError(
            f"{path}: has {near[0][id_column]!r}, which differs from {label!r} only in letter "
            "case; use the same spelling"
        )
    if match:
        row = match[0]
    else:
        row = {c: "n/a" for c in header} | {id_column: label}
        rows.append(row)
    if age is not None:
        row[column] = f"{age:g}"
    elif not (row.get(column) or "").strip():
        row[column] = "n/a"
    for r in rows:
        for c in header:
            if not (r.get(c) or "").strip():
                r[c] = "n/a"
    write_table(path, header, rows)
    return column, row[column]
