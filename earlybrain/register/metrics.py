"""Registration quality measures: intensity agreement and overlap of masks and labels."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Normalised cross-correlation of two equally shaped arrays, inside `mask` if given."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if mask is not None:
        sel = np.asarray(mask, dtype=bool)
        a, b = a[sel], b[sel]
    a = a.ravel() - a.mean() if a.size else a.ravel()
    b = b.ravel() - b.mean() if b.size else b.ravel()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two binary arrays (NaN when both are empty)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    total = int(a.sum()) + int(b.sum())
    return float(2.0 * np.logical_and(a, b).sum() / total) if total else float("nan")


def label_dice(a: np.ndarray, b: np.ndarray, labels: Iterable[int]) -> dict[int, float]:
    """Dice per label value; labels absent from both images give NaN."""
    return {int(lab): dice(a == lab, b == lab) for lab in labels}


def mean_dice(per_label: dict[int, float]) -> float:
    """Mean over the labels present in at least one image."""
    vals = [v for v in per_label.values() if np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")
