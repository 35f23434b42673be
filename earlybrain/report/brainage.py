"""The brain-age stage in the reports: stage row, summary line, section, stage-JSON values.

Everything here works on content already read (the brain-age JSON, the z-score TSV
rows), so the report reads each file once. The three age estimates are shown side by
side because their agreement is the check: the deep ensemble gives the age, atlas
similarity and the volumes are classical estimates that fail in other ways.
`brainage_figure_file` is the `brainage_figures` rule's step: the normative chart as a
PNG file, which the report embeds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from earlybrain.anatomy.labels import STRUCTURE_NAMES
from earlybrain.brainage.norms import Norms
from earlybrain.io.atomic import write_bytes_atomic
from earlybrain.report.growth import fmt, is_flagged, normative_chart, number
from earlybrain.report.html import esc, table, td
from earlybrain.report.readers import read_json
from earlybrain.report.segmentation import CARD_NAME

PathLike = str | os.PathLike[str]
GAP_ROW = "brain_age_gap_weeks"  # the z-score TSV's last row: the gap, not a volume
METHOD_LABELS = {
    "deep_ensemble": "deep ensemble (primary)",
    "combined": "combined (primary)",
    "atlas_similarity": "atlas similarity",
    "volumes": "regional volumes",
    "myelination": "myelination (contrast indexes)",
}
CHART_CAPTION = (
    "Normative growth charts: per structure, the 3rd-97th (light) and 10th-90th (dark) "
    "centile bands and the median of the reference volumes by age, and this session's "
    "volume at its chronological age (red when flagged, |z| beyond the limit). Last panel: "
    "brain age against chronological age, with the deep ensemble's 95 % interval, the two "
    "classical estimates (square: atlas similarity, triangle: volumes; drawn a little "
    "left and right of the age), the identity line and the band of healthy brain-age gaps "
    "(±2 SD)."
)
INFANT_CHART_CAPTION = (
    "Normative growth charts of the infant norms: per structure, the 3rd-97th (light) and "
    "10th-90th (dark) centile bands and the median of the reference volumes by "
    "post-menstrual age (bottom axis, weeks; top axis: months after term), and this "
    "session's volume at its age (red when flagged, |z| beyond the limit). Last panel: "
    "brain age against age, with the combined estimate's 95 % interval, the three "
    "estimates it combines (square: atlas similarity, triangle: volumes, diamond: "
    "myelination; drawn a little left and right of the age), the identity line and the "
    "band of healthy brain-age gaps at this age (±2 SD around their mean)."
)


def is_infant(result: dict[str, Any]) -> bool:
    """Whether a brain-age JSON is an infant's (`earlybrain.brainage.infant`)."""
    return result.get("population") == "infant"


def chart_caption(result: dict[str, Any]) -> str:
    return INFANT_CHART_CAPTION if is_infant(result) else CHART_CAPTION


def _months(value: Any, end: str = "") -> str:
    """An age in months after term when the JSON gives one ("4.2 months" + `end`), else ""."""
    return f"{fmt(value)} months{end}" if number(value) is not None else ""


def structure_name(structure: str) -> str:
    return "brain-age gap" if structure == GAP_ROW else STRUCTURE_NAMES.get(structure, structure)


def ensemble_card(result: dict[str, Any]) -> dict[str, Any]:
    """The model card beside the ensemble's weights ({} when it cannot be read)."""
    weights = result.get("methods", {}).get("deep_ensemble", {}).get("weights")
    return read_json(Path(weights).parent / CARD_NAME) if weights else {}


def summary_line(result: dict[str, Any]) -> str:
    """Predicted age ± SD, its interval, the chronological age and the gap (z, centile);
    an infant's ages also in months after term."""
    kind = result.get("age_kind") or ""
    lo, hi = [*(result.get("interval_95_weeks") or []), None, None][:2]
    chrono_months = _months(result.get("chronological_age_months"))
    return (
        f"{fmt(result.get('predicted_age_weeks'))} ± {fmt(result.get('uncertainty_sd_weeks'))} "
        f"weeks {kind} ({_months(result.get('predicted_age_months'), '; ')}95 % interval "
        f"{fmt(lo)}-{fmt(hi)}) at a chronological age of "
        f"{fmt(result.get('chronological_age_weeks'))} weeks"
        + (f" ({chrono_months})" if chrono_months else "")
        + f": gap "
        f"{fmt(result.get('brain_age_gap_weeks'), '+.1f')} weeks (z "
        f"{fmt(result.get('brain_age_gap_z'), '+.2f')}, centile "
        f"{fmt(result.get('brain_age_gap_centile'))})"
    )


def brainage_row(result: dict[str, Any]) -> dict[str, str]:
    """Stage-table row of a brain-age step that ran: done, or flagged with its flags."""
    times = result.get("timings", {})
    detail = (
        f"{summary_line(result)}; estimates spread {fmt(result.get('method_spread_weeks'))} "
        f"weeks; {fmt(times.get('total_s'))} s on {result.get('device', '?')}"
    )
    flags = result.get("flags") or []
    if not flags:
        return {"status": "done", "detail": detail}
    return {"status": "flagged", "detail": detail + "; check: " + "; ".join(flags)}


def _method_detail(key: str, m: dict[str, Any], result: dict[str, Any]) -> str:
    if key == "deep_ensemble":
        ages = ", ".join(fmt(x.get("age_weeks")) for x in m.get("members", []))
        lo, hi = [*(m.get("training_range_weeks") or []), None, None][:2]
        text = (
            f"{len(m.get('members', []))} members ({ages} weeks); aleatoric SD "
            f"{fmt(m.get('aleatoric_sd_weeks'))}, epistemic SD {fmt(m.get('epistemic_sd_weeks'))}"
            f"; trained on {fmt(lo)}-{fmt(hi)} weeks; validation MAE "
            f"{fmt(m.get('validation_mae_weeks'), '.2f')} weeks"
        )
        if result.get("out_of_training_range"):
            text += "; outside the training range: an extrapolation"
        return text
    if key == "combined":
        features = m.get("features") or []
        indexes = sum(":" in f for f in features)
        used = [METHOD_LABELS.get(f, f) for f in features if ":" not in f]
        return (
            "posterior over age given the estimates below at once ("
            + ", ".join(used + ([f"{indexes} myelination indexes"] if indexes else []))
            + f"); posterior SD scaled by {fmt(m.get('sd_scale'), '.2f')} to the calibration"
        )
    if key == "atlas_similarity":
        contrast = f" {m['contrast']}" if m.get("contrast") else ""
        text = (
            f"most similar{contrast} template: {fmt(m.get('best_template_weeks'))} weeks of "
            f"{m.get('atlas')}"
        )
        return text + ("; at the edge of the atlas' ages" if m.get("at_range_edge") else "")
    if key == "volumes":
        note = m.get("note")
        what = (
            "posterior mean age of the volumes under the infant normative growth curves"
            if is_infant(result)
            else "most likely age of the volumes under the normative growth curves"
        )
        return what + (f"; {note}" if note else "")
    if key == "myelination":
        contrasts = "+".join(m.get("contrasts") or []) or "?"
        n = len(m.get("indexes") or {})
        return (
            f"{n} contrast indexes ({contrasts}: white-matter zones, cerebellum and brainstem "
            "against deep grey matter) under their calibrated change with age"
        )
    return ""


def methods_table(result: dict[str, Any]) -> str:
    """The three estimates side by side, and how far apart they are."""
    methods = result.get("methods") or {}
    # an infant's estimates also in months after term (a column of their own)
    months = any(isinstance(m, dict) and "age_months" in m for m in methods.values())
    body = [
        [
            td(METHOD_LABELS.get(k, k)),
            td(fmt(m.get("age_weeks"))),
            td(fmt(m.get("sd_weeks"))),
            *([td(fmt(m.get("age_months")))] if months else []),
            td(_method_detail(k, m, result)),
        ]
        for k, m in methods.items()
        if isinstance(m, dict)
    ]
    limit = result.get("Parameters", {}).get("spread_limit_weeks")
    spread = number(result.get("method_spread_weeks"))
    wide = spread is not None and number(limit) is not None and spread > float(limit)
    body.append(
        [
            td("spread (largest - smallest)"),
            td(fmt(spread)),
            td(""),
            *([td("")] if months else []),
            td(f"flagged above {fmt(limit)} weeks" + (": flagged" if wide else "")),
        ]
    )
    header = ["method", "age (weeks)", "SD (weeks)"]
    header += ["age (months)", "details"] if months else ["details"]
    classes = [""] * (len(body) - 1) + ["warn" if wide else ""]
    return "<h3>Age estimates</h3>" + table(header, body, classes)


def zscore_table(rows: list[dict[str, str]], infant: bool = False) -> str:
    """Each volume (and the gap) against the norms: z, centile; flagged rows coloured."""
    if not rows:
        return '<p class="muted">z-score table not available</p>'
    body = [
        [
            td(structure_name(r.get("structure", ""))),
            td(fmt(r.get("volume_ml"), ".2f")),
            td(fmt(r.get("expected_ml"), ".2f")),
            td(fmt(r.get("z"), "+.2f")),
            td(fmt(r.get("centile"))),
            td("flagged" if is_flagged(r) else ""),
            td(r.get("note") if r.get("note") not in (None, "n/a") else ""),
        ]
        for r in rows
    ]
    header = ["structure", "volume (mL)", "expected (mL)", "z", "centile", "flag", "note"]
    return (
        "<h3>Volumes against the norms</h3>"
        + table(header, body, ["warn" if is_flagged(r) else "" for r in rows])
        + '<p class="muted">Expected: the median volume of the reference at this '
        "chronological age; z: standard deviations of log volume from it; centile: the "
        "percentage of the reference with a smaller volume. The last row scores the "
        + (
            "brain-age gap against the gaps of healthy simulated calibration infants at this "
            "age.</p>"
            if infant
            else "brain-age gap against the gaps of healthy validation subjects.</p>"
        )
    )


def brainage_html(result: dict[str, Any], rows: list[dict[str, str]]) -> str:
    """The section's text after its figure: flags, the estimates, the z-scores, timing."""
    flags = result.get("flags") or []
    checks = (
        '<ul class="warn">' + "".join(f"<li>Check: {esc(f)}</li>" for f in flags) + "</ul>"
        if flags
        else "<p>No flags: every volume and the brain-age gap are within the limits.</p>"
    )
    times, deep = result.get("timings", {}), result.get("methods", {}).get("deep_ensemble", {})
    norms = esc(result.get("norms", {}).get("source", "?"))
    if is_infant(result):
        cal = result.get("calibration") or {}
        run = (
            f"<p>{fmt(times.get('total_s'))} s on {esc(result.get('device', '?'))}; "
            f"{esc(result.get('primary_method_description', ''))}. Calibration: "
            f"{esc(cal.get('source') or '?')} (configuration {esc(cal.get('configuration'))}); "
            f"norms: {norms}. Months: after term, (PMA - 40 weeks) / 4.345 (the corrected "
            "age of an infant born preterm).</p>"
        )
    else:
        run = (
            f"<p>Network {fmt(times.get('network_s'))} s on {esc(result.get('device', '?'))} "
            f"(whole step {fmt(times.get('total_s'))} s); weights "
            f"{esc(Path(str(deep.get('weights', '?'))).name)} (SHA-256 "
            f"{esc(str(deep.get('weights_sha256', '?'))[:12])}); norms: {norms}.</p>"
        )
    return (
        f"<p><strong>Brain age</strong> {esc(summary_line(result))}.</p>"
        + checks
        + methods_table(result)
        + zscore_table(rows, is_infant(result))
        + run
    )


def stage_values(result: dict[str, Any], rows: list[dict[str, str]]) -> dict[str, Any]:
    """What the cohort needs of a session's brain age (its stage JSON keys `brain_age`
    and `zscores`; empty when the step did not run or failed)."""
    if not result:
        return {"brain_age": {}, "zscores": {}}
    methods = result.get("methods") or {}
    brain_age = {
        "predicted_weeks": number(result.get("predicted_age_weeks")),
        "sd_weeks": number(result.get("uncertainty_sd_weeks")),
        "interval_95_weeks": [number(v) for v in result.get("interval_95_weeks") or []],
        "gap_weeks": number(result.get("brain_age_gap_weeks")),
        "gap_z": number(result.get("brain_age_gap_z")),
        "gap_sd_weeks": number(result.get("gap_sd_weeks")),
        "age_kind": result.get("age_kind"),
        "methods": {k: number(m.get("age_weeks")) for k, m in methods.items()},
        "flags": list(result.get("flags") or []),
        "z_limit": number(result.get("Parameters", {}).get("z_limit")),
    }
    if is_infant(result):  # its population, its ages in months after term too
        brain_age |= {
            "population": "infant",
            "predicted_months": number(result.get("predicted_age_months")),
            "chronological_months": number(result.get("chronological_age_months")),
            "gap_bias_weeks": number(result.get("gap_bias_weeks")),
        }
    return {
        "brain_age": brain_age,
        "zscores": {
            r["structure"]: number(r.get("z"))
            for r in rows
            if r.get("structure") and r["structure"] != GAP_ROW
        },
    }


def brainage_figure_file(
    brainage_json: PathLike,
    zscores_tsv: PathLike,
    out_png: PathLike,
    norms_file: PathLike | None = None,
) -> Path:
    """Write the normative chart of a session (atomically). The norms default to the
    file the brain-age step used (`norms.file` in its JSON)."""
    if norms_file is None:
        norms_file = read_json(brainage_json).get("norms", {}).get("file")
        if not norms_file:
            raise ValueError(f"{brainage_json}: names no norms file (norms.file)")
    png = normative_chart(brainage_json, zscores_tsv, Norms.from_json(norms_file))
    return write_bytes_atomic(out_png, png)
