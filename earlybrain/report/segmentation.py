"""The segmentation stage in the subject report: its stage row, section and QC flag.

Everything here works on content already read (the QC JSON, the volumes TSV rows), so
the report reads each file once. The segmentation is checked against the atlas labels
that the registration warped to the subject: the two are independent estimates of the
same tissues, so a strong disagreement means one of the two stages failed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from earlybrain.anatomy.labels import STRUCTURE_NAMES
from earlybrain.report.html import STATUS_CLASS, esc, table, td

# earlybrain.segment.inference.CARD_NAME, not imported from there: that imports torch
CARD_NAME = "card.json"
# below this mean Dice with the atlas-propagated labels, registration or segmentation failed
MIN_ATLAS_AGREEMENT = 0.5

# (TSV column, header, decimals)
VOLUME_COLUMNS = (
    ("left_ml", "left (mL)", 2),
    ("right_ml", "right (mL)", 2),
    ("total_ml", "total (mL)", 2),
    ("asymmetry_index", "asymmetry index", 3),
)

FIGURE_CAPTION = (
    "Tissue segmentation: the network's labels (7 tissues, left and right hemispheres "
    "apart), pulled back to the reconstruction's grid and outlined on it (one colour per "
    "label) through the centre of the brain. Outlines that follow the cortex, white matter, "
    "ventricles and cerebellum mean the network found them."
)


def card_path(qc: dict[str, Any]) -> Path | None:
    """Where the model card of the weights used lies (next to them), if they are named."""
    weights = qc.get("parameters", {}).get("weights")
    return Path(weights).parent / CARD_NAME if weights else None


def mean_agreement(qc: dict[str, Any]) -> float | None:
    """Mean Dice of the tissues with the atlas-propagated labels (None when not measured)."""
    values = [
        float(v)
        for v in qc.get("agreement_with_atlas_labels", {}).values()
        if isinstance(v, int | float) and math.isfinite(v)
    ]
    return sum(values) / len(values) if values else None


def segmentation_warnings(qc: dict[str, Any]) -> list[str]:
    """Why the segmentation is flagged ([] when it is not)."""
    mean = mean_agreement(qc)
    if mean is None or mean >= MIN_ATLAS_AGREEMENT:
        return []
    return [
        f"mean Dice with the atlas-propagated labels {mean:.2f} < {MIN_ATLAS_AGREEMENT:g}: "
        "the registration or the segmentation failed"
    ]


def segmentation_row(qc: dict[str, Any]) -> dict[str, str]:
    """Stage-table row of a segmentation that ran: done, or flagged with the reason."""
    vols, times = qc.get("volumes_ml", {}), qc.get("timings", {})
    mean = mean_agreement(qc)
    detail = (
        f"total brain {vols.get('total_brain', float('nan')):.1f} mL, intracranial "
        f"{vols.get('intracranial', float('nan')):.1f} mL; network "
        f"{times.get('network_s', float('nan')):.1f} s on "
        f"{qc.get('parameters', {}).get('device', '?')}"
        + (f"; mean Dice with atlas labels {mean:.2f}" if mean is not None else "")
    )
    warnings = segmentation_warnings(qc)
    if not warnings:
        return {"status": "done", "detail": detail}
    return {"status": "flagged", "detail": detail + "; check: " + "; ".join(warnings)}


def _number(value: str | None, decimals: int) -> str:
    """A TSV value rounded for reading ("n/a" and other text unchanged)."""
    if value is None:
        return "n/a"
    try:
        return f"{float(value):.{decimals}f}"
    except ValueError:
        return value


def volume_table(rows: list[dict[str, str]]) -> str:
    """The volumes TSV as an HTML table, with how they were measured."""
    if not rows:
        return '<p class="muted">volume table not available</p>'
    body = [
        [td(STRUCTURE_NAMES.get(r.get("structure", ""), r.get("structure", "")))]
        + [td(_number(r.get(key), decimals)) for key, _, decimals in VOLUME_COLUMNS]
        for r in rows
    ]
    header = ["structure", *(label for _, label, _ in VOLUME_COLUMNS)]
    return (
        "<h3>Volumes</h3>"
        + table(header, body)
        + '<p class="muted">Measured on the labels in the reconstruction\'s grid (subject '
        "space). Asymmetry index = (L - R) / ((L + R) / 2): positive when the left side is "
        "larger.</p>"
    )


def agreement_table(qc: dict[str, Any]) -> str:
    """Dice per tissue with the atlas-propagated labels, and their mean ("" if not measured)."""
    agree = qc.get("agreement_with_atlas_labels", {})
    mean = mean_agreement(qc)
    if mean is None:
        return ""
    body = [[td(STRUCTURE_NAMES.get(k, k)), td(f"{float(v):.3f}")] for k, v in agree.items()]
    status = "done" if mean >= MIN_ATLAS_AGREEMENT else "flagged"
    body.append([td("mean"), f'<td class="{STATUS_CLASS[status]}">{mean:.3f}</td>'])
    return (
        "<h3>Agreement with the atlas-propagated labels</h3>"
        + table(["tissue", "Dice"], body)
        + '<p class="muted">The atlas labels warped to the reconstruction by the registration '
        "and the network's labels are independent estimates of the same tissues: a mean Dice "
        f"below {MIN_ATLAS_AGREEMENT:g} means the registration or the segmentation failed; "
        "moderate disagreement is expected where the atlas does not fit this brain.</p>"
    )


def network_line(qc: dict[str, Any]) -> str:
    """How long the network ran, where, and with which weights."""
    par, times = qc.get("parameters", {}), qc.get("timings", {})
    return (
        f"<p>Network {times.get('network_s', float('nan')):.1f} s on "
        f"{esc(par.get('device', '?'))} (whole step {times.get('total_s', float('nan')):.1f} s"
        f"); test-time mirror averaging: "
        f"{'yes' if par.get('test_time_augmentation') else 'no'}; weights "
        f"{esc(Path(str(par.get('weights', '?'))).name)} (SHA-256 "
        f"{esc(str(par.get('weights_sha256', '?'))[:12])}).</p>"
    )


def segmentation_html(qc: dict[str, Any], volumes: list[dict[str, str]]) -> str:
    """The section's text after its figure: warnings, volumes, timing, agreement."""
    warnings = "".join(f'<p class="warn">Check: {esc(w)}.</p>' for w in segmentation_warnings(qc))
    return warnings + volume_table(volumes) + network_line(qc) + agreement_table(qc)
