"""Volumes of a label map: per tissue, per side, asymmetry, total brain and intracranial.

Volumes are measured on the subject-space label map (the reconstruction's grid): in
atlas space the deformable registration has stretched the brain to the template.
"""

from __future__ import annotations

import numpy as np

from earlybrain.anatomy.labels import LABELS, TISSUES, label_volumes_ml

# brain tissue without the CSF spaces (the usual "total brain volume")
CSF_TISSUES = ("eCSF", "ventricles")
COLUMNS = ("structure", "left_ml", "right_ml", "total_ml", "asymmetry_index")


def asymmetry_index(left: float, right: float) -> float:
    """AI = (L - R) / ((L + R) / 2): 0 symmetric, > 0 larger on the left."""
    mean = (left + right) / 2.0
    return (left - right) / mean if mean > 0 else float("nan")


def volume_rows(labels: np.ndarray, affine: np.ndarray) -> list[dict[str, object]]:
    """One row per tissue (left/right/total/AI; sides 'n/a' for midline tissues), then
    total brain volume (tissue without eCSF and ventricles) and intracranial volume."""
    per_label = label_volumes_ml(labels, affine)
    rows: list[dict[str, object]] = []
    for t, tissue in TISSUES.items():
        sides = {hemi: per_label[name] for name, tt, hemi in LABELS.values() if tt == t}
        total = sum(sides.values())
        if "left" in sides:
            left, right = sides["left"], sides["right"]
            rows.append(
                {"structure": tissue, "left_ml": left, "right_ml": right, "total_ml": total,
                 "asymmetry_index": asymmetry_index(left, right)}
            )  # fmt: skip
        else:
            rows.append({"structure": tissue, "left_ml": None, "right_ml": None,
                         "total_ml": total, "asymmetry_index": None})  # fmt: skip
    tissue_total = {r["structure"]: float(r["total_ml"]) for r in rows}
    tbv = sum(v for k, v in tissue_total.items() if k not in CSF_TISSUES)
    rows.append({"structure": "total_brain", "left_ml": None, "right_ml": None,
                 "total_ml": tbv, "asymmetry_index": None})  # fmt: skip
    rows.append({"structure": "intracranial", "left_ml": None, "right_ml": None,
                 "total_ml": sum(tissue_total.values()), "asymmetry_index": None})  # fmt: skip
    return rows


def tsv_cell(v: object) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "n/a" if not np.isfinite(v) else f"{v:.4f}"
    return str(v)


def volumes_tsv(rows: list[dict[str, object]]) -> str:
    """BIDS-style TSV text (n/a for missing values)."""
    lines = ["\t".join(COLUMNS)]
    lines += ["\t".join(tsv_cell(r[c]) for c in COLUMNS) for r in rows]
    return "\n".join(lines) + "\n"
