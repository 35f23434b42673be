"""Label tables: the 7 FeTA tissues, split left/right where anatomy is lateral."""

from __future__ import annotations

import numpy as np

# FeTA challenge tissue classes (Payette et al. 2021).
TISSUES: dict[int, str] = {
    1: "eCSF",
    2: "cortical_GM",
    3: "WM",
    4: "ventricles",
    5: "cerebellum",
    6: "deep_GM",
    7: "brainstem",
}

# How reports and flags name each volume a session gets: the tissues, then the sums
STRUCTURE_NAMES: dict[str, str] = {
    "eCSF": "external CSF",
    "cortical_GM": "cortical grey matter",
    "WM": "white matter",
    "ventricles": "ventricles",
    "cerebellum": "cerebellum",
    "deep_GM": "deep grey matter",
    "brainstem": "brainstem",
    "total_brain": "total brain (tissue without CSF)",
    "intracranial": "intracranial",
}

# Detailed labels written by the simulator. eCSF and brainstem are midline structures.
LABELS: dict[int, tuple[str, int, str]] = {
    # label: (name, FeTA tissue, hemisphere)
    1: ("eCSF", 1, "both"),
    2: ("cortical_GM_left", 2, "left"),
    3: ("cortical_GM_right", 2, "right"),
    4: ("WM_left", 3, "left"),
    5: ("WM_right", 3, "right"),
    6: ("ventricle_left", 4, "left"),
    7: ("ventricle_right", 4, "right"),
    8: ("cerebellum_left", 5, "left"),
    9: ("cerebellum_right", 5, "right"),
    10: ("deep_GM_left", 6, "left"),
    11: ("deep_GM_right", 6, "right"),
    12: ("brainstem", 7, "both"),
}

# Non-brain classes that exist only inside the simulator's scene.
SKULL, SCALP, BODY, FLUID = 13, 14, 15, 16


def to_tissues(labels: np.ndarray) -> np.ndarray:
    """Map detailed (left/right) labels to the 7 FeTA tissue classes; others to 0."""
    lut = np.zeros(max(int(labels.max()) + 1, 17), dtype=np.uint8)
    for lab, (_, tissue, _) in LABELS.items():
        lut[lab] = tissue
    return lut[labels]


def label_volumes_ml(labels: np.ndarray, affine: np.ndarray) -> dict[str, float]:
    """Volume (mL) of every earlybrain label, by name."""
    vox_ml = float(abs(np.linalg.det(np.asarray(affine)[:3, :3]))) / 1000.0
    counts = np.bincount(np.asarray(labels).ravel().astype(np.int64), minlength=256)
    return {name: float(counts[lab]) * vox_ml for lab, (name, _, _) in LABELS.items()}


def label_table_rows() -> list[dict[str, object]]:
    """Rows for a BIDS-style `dseg.tsv` label table."""
    return [
        {"index": lab, "name": name, "tissue": TISSUES[t], "hemisphere": hemi}
        for lab, (name, t, hemi) in LABELS.items()
    ]


def label_table_tsv() -> str:
    """The label table as BIDS `dseg.tsv` text."""
    cols = ("index", "name", "tissue", "hemisphere")
    lines = ["\t".join(cols)]
    lines += ["\t".join(str(r[c]) for c in cols) for r in label_table_rows()]
    return "\n".join(lines) + "\n"
