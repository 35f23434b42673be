"""The age a subject's volumes point to: the age that makes them most likely under the norms.

The volumes' brain-age estimate: the fetal step (`pipeline`) reports it beside the deep
ensemble, the infant step tempers its likelihood (`infant.volume_posterior`). It uses
the norms without being part of them; the leave-one-out calibration of its SD, made
when the norms are fitted (`norms_fit`), runs the same likelihood on the fitting cohort.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from earlybrain.anatomy.labels import TISSUES
from earlybrain.brainage.norms import Norms, NormsError, StructureNorm

# total_brain and intracranial are sums of these, so they would count twice
VOLUME_AGE_STRUCTURES = tuple(TISSUES.values())
# volume_age searches this far beyond the fitted ages: a little extrapolation is safe
AGE_GRID_MARGIN_WEEKS = 2.0
AGE_GRID_STEP_WEEKS = 0.02


def default_age_grid(age_range: tuple[float, float]) -> np.ndarray:
    lo, hi = age_range[0] - AGE_GRID_MARGIN_WEEKS, age_range[1] + AGE_GRID_MARGIN_WEEKS
    return np.arange(lo, hi + AGE_GRID_STEP_WEEKS / 2, AGE_GRID_STEP_WEEKS)


def ml_age(
    models: Sequence[StructureNorm], log_v: np.ndarray, grid: np.ndarray
) -> tuple[float, float, bool]:
    """Maximum-likelihood age, the SD of the (flat-prior) posterior over the grid, and
    whether the maximum sits on the grid's edge (the age is then outside the grid)."""
    ll = np.zeros_like(grid)
    for m, lv in zip(models, log_v, strict=True):
        sd = m.sd_log(grid)
        ll -= np.log(sd) + 0.5 * ((lv - m.mean_log(grid)) / sd) ** 2
    best = int(np.argmax(ll))
    p = np.exp(ll - ll[best])
    p /= p.sum()
    mean = float(np.sum(p * grid))
    sd = float(np.sqrt(np.sum(p * (grid - mean) ** 2)))
    return float(grid[best]), sd, best in (0, len(grid) - 1)


def volume_age(
    norms: Norms,
    volumes: Mapping[str, float | None],
    structures: Sequence[str] = VOLUME_AGE_STRUCTURES,
    age_grid: Sequence[float] | np.ndarray | None = None,
) -> dict[str, object]:
    """Age (weeks) that makes the subject's volumes most likely under the norms.

    The naive SD treats the structures as independent, but they all scale with head
    size, so it is too small: when the structures are those the norms' leave-one-out
    calibration used, the SD is multiplied by its `sd_scale` (`calibrated` says so).
    """
    known = [s for s in structures if volumes.get(s) is not None and np.isfinite(volumes[s])]
    # a structure the segmentation found nothing of says nothing about age: left out
    missing = [s for s in known if volumes[s] <= 0]
    used = [s for s in known if volumes[s] > 0]
    if not used:
        raise NormsError(f"none of {', '.join(structures)} has a positive volume")
    grid = default_age_grid(norms.age_range) if age_grid is None else np.asarray(age_grid, float)
    log_v = np.log([float(volumes[s]) for s in used])
    age, sd_naive, at_edge = ml_age([norms.model(s) for s in used], log_v, grid)
    cal = norms.volume_age_calibration
    calibrated = cal is not None and sorted(cal["structures"]) == sorted(used)
    scale = float(cal["sd_scale"]) if calibrated else 1.0
    return {
        "age_weeks": age,
        "sd_weeks": sd_naive * scale,
        "sd_naive_weeks": sd_naive,
        "calibrated": calibrated,
        "structures": used,
        "note": "; ".join(
            [f"on the edge of the searched ages {grid[0]:g}-{grid[-1]:g}"] * at_edge
            + [f"left out (volume 0): {', '.join(missing)}"] * bool(missing)
        )
        or None,
    }
