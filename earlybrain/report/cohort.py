"""Cohort overview: one row per session (TSV for analysis, HTML with links for people).

The HTML adds what a table cannot show: every session on the normative growth chart of
each structure and on brain age vs age, each point a link to the session's report, and
the sessions flagged by the brain-age step, so that outliers are found at a glance.
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from earlybrain import __version__
from earlybrain.brainage.norms import Norms, NormsError
from earlybrain.io.atomic import write_text_atomic
from earlybrain.io.provenance import source_reference
from earlybrain.report.growth import Point, age_scatter_svg, fmt, growth_chart_svg, number
from earlybrain.report.html import cohort_page, esc

PathLike = str | os.PathLike[str]
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
    "predicted_age_weeks",
    "brain_age_gap_weeks",
    "brain_age_gap_z",
    "flags",
    "flagged_stages",
    "status",
    "failed_stage",
    "reason",
    "report",
)
Z_LIMIT = 2.0  # when a session's stage JSON does not record the brain-age step's limit


class Session(NamedTuple):
    """A session's stage JSON (what its report recorded) and its cohort-table row."""

    stage: dict[str, Any]
    row: dict[str, str]

    @property
    def name(self) -> str:
        ses = self.row["session_id"]
        return self.row["participant_id"] + (f" {ses}" if ses != "n/a" else "")

    @property
    def href(self) -> str | None:
        return self.row["report"] if self.row["report"] != "n/a" else None


def read_sessions(
    stage_files: Sequence[PathLike], reports: Sequence[PathLike], out_dir: PathLike
) -> list[Session]:
    """The sessions of the stage JSONs, sorted; report links are relative to `out_dir`."""
    by_name = {Path(r).name: Path(r) for r in reports}
    sessions = []
    for f in stage_files:
        st = json.loads(Path(f).read_text())
        report = by_name.get(st.get("report", ""))
        volumes = st.get("volumes_ml") or {}
        age = st.get("brain_age") or {}
        row = {
            "participant_id": f"sub-{st['subject']}",
            "session_id": f"ses-{st['session']}" if st.get("session") else "n/a",
            "kind": st.get("kind") or "n/a",
            "age_weeks": fmt(st.get("age_weeks"), ".2f"),
            "age_measure": st.get("age_measure") or "n/a",
            "age_column": st.get("age_column") or "n/a",
            "n_images": str(st.get("n_images", 0)),
            "total_brain_volume_ml": fmt(volumes.get("total_brain"), ".2f"),
            "intracranial_volume_ml": fmt(volumes.get("intracranial"), ".2f"),
            "predicted_age_weeks": fmt(age.get("predicted_weeks"), ".2f"),
            "brain_age_gap_weeks": fmt(age.get("gap_weeks"), "+.2f"),
            "brain_age_gap_z": fmt(age.get("gap_z"), "+.2f"),
            "flags": str(len(age.get("flags", []))) if age else "n/a",
            "flagged_stages": flagged_stages(st),
            "status": st.get("status", "failed"),
            "failed_stage": st.get("failed_stage") or "n/a",
            "reason": (st.get("reason") or "n/a").replace("\t", " ").replace("\n", " "),
            "report": os.path.relpath(report, out_dir) if report else "n/a",
        }
        sessions.append(Session(st, row))
    sessions.sort(key=lambda s: (s.row["participant_id"], s.row["session_id"]))
    return sessions


def flagged_stages(stage: dict[str, Any]) -> str:
    """The stages whose QC flagged the session (their report says why), comma-separated:
    a flagged segmentation or registration must reach the table, not only the brain age's
    flags; "none" when nothing was flagged, "n/a" when the stages are unknown."""
    stages = stage.get("stages")
    if not stages:
        return "n/a"
    flagged = [s.get("key", "?") for s in stages if s.get("status") == "flagged"]
    return ",".join(flagged) or "none"


def beyond_limit(stage: dict[str, Any]) -> dict[str, float]:
    """The structures whose |z| exceeds the brain-age step's limit, with their z."""
    limit = number((stage.get("brain_age") or {}).get("z_limit")) or Z_LIMIT
    zscores = {s: number(z) for s, z in (stage.get("zscores") or {}).items()}
    return {s: z for s, z in zscores.items() if z is not None and abs(z) > limit}


def outlier_reasons(stage: dict[str, Any]) -> list[str]:
    """Why a session stands out: the brain-age step's flags, else any |z| beyond its limit."""
    flags = (stage.get("brain_age") or {}).get("flags")
    return (
        list(flags)
        if flags
        else [f"{s} volume z = {z:+.2f}" for s, z in beyond_limit(stage).items()]
    )


def is_infant(stage: dict[str, Any]) -> bool:
    """Whether a session is an infant's (its age is PMA, its norms and charts are infant)."""
    return stage.get("kind") == "infant"


def growth_charts(sessions: Sequence[Session], norms: Norms) -> str:
    """One chart per structure of the norms, the sessions of the norms' age kind on it."""
    charts = []
    for structure in norms.structures:
        points = []
        for s in sessions:
            age = number(s.stage.get("age_weeks"))
            volume = number((s.stage.get("volumes_ml") or {}).get(structure))
            if age is None or volume is None or s.stage.get("age_measure") != norms.age_kind:
                continue
            z = number((s.stage.get("zscores") or {}).get(structure))
            label = f"{s.name}: {volume:.1f} mL at {age:.1f} weeks" + (
                f", z {z:+.2f}" if z is not None else ""
            )
            points.append(Point(age, volume, s.href, label, structure in beyond_limit(s.stage)))
        if points:
            charts.append(growth_chart_svg(norms, structure, points))
    if not charts:
        return (
            f"<p>No session has volumes at a {esc(norms.age_kind)} age, so there is nothing "
            "to place on the growth charts.</p>"
        )
    return (
        f'<div class="charts">{"".join(charts)}</div><p class="muted">Bands: the 3rd-97th and '
        "10th-90th centiles of the reference, line: the median "
        f"({esc(norms.source)}; {esc(source_reference(norms.origin))}). Red: |z| beyond the "
        "limit. Each point links to its session's report.</p>"
    )


def _age_points(sessions: Sequence[Session]) -> tuple[list[Point], list[float], set]:
    """The sessions with a brain age as chart points, their healthy-gap SDs, age kinds."""
    points, gap_sds, kinds = [], [], set()
    for s in sessions:
        age = s.stage.get("brain_age") or {}
        chrono, pred = number(s.stage.get("age_weeks")), number(age.get("predicted_weeks"))
        if chrono is None or pred is None:
            continue
        interval = [number(v) for v in age.get("interval_95_weeks") or []]
        lo_hi = (interval[0], interval[1]) if len(interval) == 2 and None not in interval else None
        months = number(age.get("predicted_months"))
        label = (
            f"{s.name}: brain age {pred:.1f}"
            + (f" ({months:.1f} months)" if months is not None else "")
            + f" at {chrono:.1f} weeks, gap "
            f"{fmt(age.get('gap_weeks'), '+.1f')} (z {fmt(age.get('gap_z'), '+.2f')})"
        )
        points.append(Point(chrono, pred, s.href, label, bool(outlier_reasons(s.stage)), lo_hi))
        gap_sds += [v for v in [number(age.get("gap_sd_weeks"))] if v]
        kinds.add(age.get("age_kind") or s.stage.get("age_measure"))
    return points, gap_sds, kinds


def age_chart(sessions: Sequence[Session]) -> str:
    """Brain age vs chronological age of every session that has one: fetal sessions on
    one chart, infants (PMA, weeks to years) on their own."""
    fetal = [s for s in sessions if not is_infant(s.stage)]
    infant = [s for s in sessions if is_infant(s.stage)]
    points, gap_sds, kinds = _age_points(fetal)
    infant_points, _, _ = _age_points(infant)
    if not points and not infant_points:
        return (
            "<p>No session has a brain age (the brain-age step did not run or failed), so "
            "there is no brain-age chart.</p>"
        )
    parts = []
    if points:
        gap_sd = statistics.median(gap_sds) if gap_sds else None
        kind = kinds.pop() if len(kinds) == 1 else None
        band = (
            f" Band: ±2 SD ({gap_sd:.2f} weeks) of the gap in healthy subjects." if gap_sd else ""
        )
        parts.append(
            f'<div class="charts">{age_scatter_svg(points, gap_sd, kind)}</div>'
            '<p class="muted">Deep-ensemble brain age with its 95 % interval against '
            f"chronological age; dashed: brain age = age.{band} Red: flagged sessions. Each "
            "point links to its session's report.</p>"
        )
    if infant_points:
        title = "infant brain age vs age"
        parts.append(
            ("<h3>Infants</h3>" if points else "")
            + f'<div class="charts">{age_scatter_svg(infant_points, None, "PMA", title)}</div>'
            '<p class="muted">Infants: combined brain age (atlas similarity, volumes under the '
            "infant norms, myelination) with its 95 % interval against post-menstrual age; "
            "dashed: brain age = age. The spread of healthy gaps changes with age (each "
            "report scores the gap at its age), so no band is drawn. Red: flagged sessions. "
            "Each point links to its session's report.</p>"
        )
    return "".join(parts)


def outliers_html(sessions: Sequence[Session]) -> str:
    """The flagged sessions, each with its reasons and a link to its report."""
    items = []
    for s in sessions:
        reasons = outlier_reasons(s.stage)
        if reasons:
            who = f'<a href="{esc(s.href)}">{esc(s.name)}</a>' if s.href else esc(s.name)
            items.append(f"<li>{who}: {esc('; '.join(reasons))}</li>")
    if not items:
        return "<p>None: no session has a flag or a volume beyond the normative limits.</p>"
    return f'<ul id="outlier-list">{"".join(items)}</ul>'


def _load_norms(norms: PathLike | None, what: str = "") -> tuple[Norms | None, str]:
    """The normative curves, or None and the sentence that says why there are none."""
    if norms is None:
        return None, f"<p>No {what}normative curves were given, so there are no growth charts.</p>"
    try:
        return Norms.from_json(norms), ""
    except NormsError as exc:
        return None, (
            f"<p>No growth charts: the {what}normative curves cannot be used ({esc(exc)}).</p>"
        )


def growth_sections(
    sessions: Sequence[Session], norms: PathLike | None, infant_norms: PathLike | None
) -> list[str]:
    """The growth charts: fetal sessions on `norms`, infants on `infant_norms`.

    An infant is never placed on fetal centiles nor a fetus on infant ones. The fetal
    charts are left out of a cohort of infants only, the infant ones of a fetal cohort.
    """
    infants = [s for s in sessions if is_infant(s.stage)]
    fetal = [s for s in sessions if not is_infant(s.stage)]
    parts = []
    if fetal or not infants:
        curves, why_not = _load_norms(norms)
        parts.append(growth_charts(fetal, curves) if curves is not None else why_not)
    if infants:
        curves, why_not = _load_norms(infant_norms, "infant ")
        parts.append("<h3>Infants</h3>" if fetal else "")
        parts.append(growth_charts(infants, curves) if curves is not None else why_not)
    return parts


def write_cohort(
    stage_files: Sequence[PathLike],
    reports: Sequence[PathLike],
    out_tsv: PathLike,
    out_html: PathLike,
    norms: PathLike | None = None,
    infant_norms: PathLike | None = None,
) -> list[dict[str, str]]:
    """Write cohort.tsv (BIDS-style: tab-separated, n/a for missing) and cohort.html,
    with growth charts on the normative curves of `norms` (a norms JSON) when given, the
    infant sessions' on `infant_norms`."""
    html_dir = Path(out_html).resolve().parent
    sessions = read_sessions(stage_files, [Path(r).resolve() for r in reports], html_dir)
    rows = [s.row for s in sessions]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out_tsv, buf.getvalue())
    sections = [
        '<h2 id="outliers">Flagged outliers</h2>',
        outliers_html(sessions),
        '<h2 id="brain-age">Brain age</h2>',
        age_chart(sessions),
        '<h2 id="growth">Growth charts</h2>',
        *growth_sections(sessions, norms, infant_norms),
    ]
    write_text_atomic(
        out_html,
        cohort_page(
            title="earlybrain cohort overview",
            header=COLUMNS,
            rows=rows,
            version=__version__,
            tsv_link=os.path.relpath(Path(out_tsv).resolve(), html_dir),
            sections=sections,
        ),
    )
    return rows
