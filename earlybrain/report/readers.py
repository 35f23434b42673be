"""Forgiving readers of the files the steps wrote, for the reports.

A report is written for failed sessions too, so a file that is missing or unreadable
reads as empty (and the stage that should have written it says why), never as an error.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any


def read_json(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """A JSON object from `path`, or {} when it is missing or unreadable."""
    if path is None:
        return {}
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def read_tsv(path: str | os.PathLike[str] | None) -> list[dict[str, str]]:
    """The rows of a TSV file, or [] when it is missing or unreadable."""
    if path is None:
        return []
    try:
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh, delimiter="\t"))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []


def recon_sidecar_for(metrics: str | os.PathLike[str]) -> Path:
    """`<dir>/qc/<prefix>_rec-svr_metrics.json` -> `<dir>/anat/<prefix>_rec-svr_T2w.json`.

    The recon rule writes both; the report rule only declares the metrics as input.
    """
    m = Path(metrics)
    stem = m.name.removesuffix("_metrics.json")
    return m.parent.parent / "anat" / f"{stem}_T2w.json"
