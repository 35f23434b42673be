"""Cohort overview: one row per session (TSV for analysis, HTML with links for people)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

from earlybrain import __version__
from earlybrain.io.atomic import write_text_atomic
from earlybrain.report.html import cohort_page

COLUMNS = (
    "participant_id",
    "session_id",
    "kind",
    "age_weeks",
    "age_measure",
    "age_column",
    "n_images",
    "total_brain_volume_ml",
    "intracranial_volume_ml",
    "status",
    "failed_stage",
    "reason",
    "report",
)


def _ml(volumes: dict[str, float], structure: str) -> str:
    """A volume of the session's segmentation (from its stage JSON), n/a when it has none."""
    value = volumes.get(structure)
    return f"{value:.2f}" if isinstance(value, int | float) and math.isfinite(value) else "n/a"


def cohort_rows(
    stage_files: list[str | os.PathLike[str]],
    reports: list[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
) -> list[dict[str, str]]:
    """Rows from the per-session stage JSONs; report links are relative to `out_dir`."""
    by_name = {Path(r).name: Path(r) for r in reports}
    rows = []
    for f in stage_files:
        st = json.loads(Path(f).read_text())
        report = by_name.get(st.get("report", ""))
        age = st.get("age_weeks")
        volumes = st.get("volumes_ml") or {}
        rows.append(
            {
                "participant_id": f"sub-{st['subject']}",
                "session_id": f"ses-{st['session']}" if st.get("session") else "n/a",
                "kind": st.get("kind") or "n/a",
                "age_weeks": f"{age:.2f}" if age is not None else "n/a",
                "age_measure": st.get("age_measure") or "n/a",
                "age_column": st.get("age_column") or "n/a",
                "n_images": str(st.get("n_images", 0)),
                "total_brain_volume_ml": _ml(volumes, "total_brain"),
                "intracranial_volume_ml": _ml(volumes, "intracranial"),
                "status": st.get("status", "failed"),
                "failed_stage": st.get("failed_stage") or "n/a",
                "reason": (st.get("reason") or "n/a").replace("\t", " ").replace("\n", " "),
                "report": os.path.relpath(report, out_dir) if report else "n/a",
            }
        )
    rows.sort(key=lambda r: (r["participant_id"], r["session_id"]))
    return rows


def write_cohort(
    stage_files: list[str | os.PathLike[str]],
    reports: list[str | os.PathLike[str]],
    out_tsv: str | os.PathLike[str],
    out_html: str | os.PathLike[str],
) -> list[dict[str, str]]:
    """Write cohort.tsv (BIDS-style: tab-separated, n/a for missing) and cohort.html."""
    html_dir = Path(out_html).resolve().parent
    rows = cohort_rows(stage_files, [Path(r).resolve() for r in reports], html_dir)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out_tsv, buf.getvalue())
    write_text_atomic(
        out_html,
        cohort_page(
            title="earlybrain cohort overview", header=COLUMNS, rows=rows, version=__version__
        ),
    )
    return rows
