"""Fitting the normative growth curves on a cohort: the shipped reference cohorts' and a lab's.

Both parts of a structure's model (`norms`) are fitted by Gaussian maximum likelihood
(alternating weighted least squares for the mean and Newton steps for the SD, each of
which lowers the same likelihood), with the SD scaled by sqrt(n / (n - 4)) so that small
cohorts do not give overconfident z-scores. A fit also calibrates the SD of the age the
volumes point to (`volume_age`) by leave-one-out on the same cohort, which is why this
sits above both `norms` and `volume_age`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import scipy

from earlybrain import __version__
from earlybrain.brainage.norms import (
    AGE_KINDS,
    MEAN_DEGREE,
    Norms,
    NormsError,
    StructureNorm,
    pipeline_order,
    read_volumes_tsv,
)
from earlybrain.brainage.volume_age import VOLUME_AGE_STRUCTURES, default_age_grid, ml_age

MIN_SUBJECTS = 12  # twice the six parameters of a structure's model
MIN_AGE_SPAN_WEEKS = 3.0


def _negloglik(r2: np.ndarray, log_sd: np.ndarray) -> float:
    """-log likelihood (up to a constant) of squared residuals `r2` with log SDs `log_sd`."""
    return float(np.sum(log_sd + 0.5 * r2 * np.exp(-2.0 * log_sd)))


def _fit_structure(ages: np.ndarray, log_v: np.ndarray) -> StructureNorm:
    """Gaussian maximum likelihood of the mean polynomial and the log-linear SD."""
    lo, hi = float(ages.min()), float(ages.max())
    centre, scale = (lo + hi) / 2.0, (hi - lo) / 2.0
    t = (ages - centre) / scale
    X = np.polynomial.polynomial.polyvander(t, MEAN_DEGREE)
    Z = np.stack([np.ones_like(t), t], axis=1)
    beta = np.linalg.lstsq(X, log_v, rcond=None)[0]
    r = log_v - X @ beta
    # a floor keeps the SD finite when volumes sit exactly on a curve (e.g. no variation)
    r2_floor = 1e-12 * max(1.0, float(np.mean(log_v**2)))
    gamma = np.array([0.5 * np.log(max(float(np.mean(r**2)), r2_floor)), 0.0])
    previous = np.inf
    for _ in range(200):
        sw = np.exp(-Z @ gamma)  # square root of the weights 1 / sd**2
        beta = np.linalg.lstsq(X * sw[:, None], log_v * sw, rcond=None)[0]
        r2 = np.maximum((log_v - X @ beta) ** 2, r2_floor)
        for _ in range(20):  # Newton on the SD parameters (convex for fixed residuals)
            e = r2 * np.exp(-2.0 * Z @ gamma)
            grad = Z.T @ (1.0 - e)
            step = np.linalg.solve(Z.T @ (Z * (2.0 * e)[:, None]), grad)
            f0 = _negloglik(r2, Z @ gamma)
            shrink = 1.0
            while _negloglik(r2, Z @ (gamma - shrink * step)) > f0 and shrink > 1e-4:
                shrink /= 2.0
            gamma = gamma - shrink * step
            if np.max(np.abs(shrink * step)) < 1e-10:
                break
        current = _negloglik(r2, Z @ gamma)
        if previous - current < 1e-10 * max(1.0, abs(current)):
            break
        previous = current
    n, p = len(ages), MEAN_DEGREE + 1
    gamma[0] += 0.5 * np.log(n / (n - p))  # ML underestimates the SD by sqrt((n - p) / n)
    return StructureNorm(
        n,
        (lo, hi),
        centre,
        scale,
        tuple(float(b) for b in beta),
        (float(gamma[0]), float(gamma[1])),
    )


def _volumes(rows: Sequence[Mapping[str, float | None]], structure: str) -> np.ndarray:
    """Volumes of `structure` across subjects, NaN where missing."""
    return np.array([np.nan if r.get(structure) is None else float(r[structure]) for r in rows])


def _structure_data(
    ages: np.ndarray, rows: Sequence[Mapping[str, float]], structure: str
) -> tuple[np.ndarray, np.ndarray]:
    """Ages and log volumes of the subjects that have a finite volume of `structure`."""
    v = _volumes(rows, structure)
    ok = np.isfinite(v)
    bad = np.flatnonzero(ok & (v <= 0))
    if len(bad):
        raise NormsError(f"{structure}: volume {v[bad[0]]} of subject {bad[0]} is not positive")
    return ages[ok], np.log(v[ok])


def _check_cohort(structure: str, ages: np.ndarray) -> None:
    if len(ages) < MIN_SUBJECTS:
        raise NormsError(
            f"{structure}: {len(ages)} subjects with a volume, need at least {MIN_SUBJECTS}"
        )
    if np.ptp(ages) < MIN_AGE_SPAN_WEEKS:
        raise NormsError(
            f"{structure}: ages span {np.ptp(ages):.1f} weeks, need at least "
            f"{MIN_AGE_SPAN_WEEKS:g} to fit growth"
        )


def fit_norms(
    rows: Sequence[tuple[float, Mapping[str, float]]],
    source: str,
    age_kind: str = "GA",
    metadata: Mapping[str, object] | None = None,
) -> Norms:
    """Fit every structure found in `rows` = [(age_weeks, {structure: total_ml})].

    Missing or NaN volumes are skipped per structure; a structure with fewer than
    `MIN_SUBJECTS` volumes or ages spanning less than `MIN_AGE_SPAN_WEEKS` is an error.
    """
    if age_kind not in AGE_KINDS:
        raise NormsError(f"age_kind must be one of {AGE_KINDS}, got {age_kind!r}")
    ages = np.array([float(a) for a, _ in rows])
    if not len(ages) or not np.all(np.isfinite(ages)):
        raise NormsError("every subject needs a finite age (and there must be subjects)")
    vols = [v for _, v in rows]
    structures = {}
    for s in pipeline_order({s for v in vols for s in v}):
        a, log_v = _structure_data(ages, vols, s)
        _check_cohort(s, a)
        structures[s] = _fit_structure(a, log_v)
    return Norms(
        structures=structures,
        source=source,
        n_subjects=len(rows),
        age_range=(float(ages.min()), float(ages.max())),
        age_kind=age_kind,
        fitted_with={
            "earlybrain": __version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
        },
        volume_age_calibration=_calibrate_volume_age(ages, vols),
        metadata=dict(metadata or {}),
    )


def _calibrate_volume_age(
    ages: np.ndarray, vols: Sequence[Mapping[str, float]]
) -> dict[str, object] | None:
    """Leave-one-out on the fitting cohort: each subject's volume age under norms fitted
    without it. `sd_scale` = RMS of (error / naive SD), so that calibrated SDs match the
    errors on average; the RMS error itself is the SD of the brain-age gap."""
    names = list(VOLUME_AGE_STRUCTURES)
    log_v = np.full((len(ages), len(names)), np.nan)
    for j, s in enumerate(names):
        v = _volumes(vols, s)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_v[:, j] = np.where(v > 0, np.log(v), np.nan)
    complete = np.all(np.isfinite(log_v), axis=1)
    ages, log_v = ages[complete], log_v[complete]
    if len(ages) <= MIN_SUBJECTS or np.ptp(ages) < MIN_AGE_SPAN_WEEKS:
        return None
    grid = default_age_grid((float(ages.min()), float(ages.max())))
    errors, z = [], []
    for i in range(len(ages)):
        keep = np.arange(len(ages)) != i
        models = [_fit_structure(ages[keep], log_v[keep, j]) for j in range(len(names))]
        est, sd, _ = ml_age(models, log_v[i], grid)
        errors.append(est - ages[i])
        z.append((est - ages[i]) / sd)
    errors, z = np.array(errors), np.array(z)
    scale = float(np.sqrt(np.mean(z**2)))
    return {
        "method": "leave-one-out on the fitting cohort; sd_weeks = naive SD * sd_scale",
        "structures": names,
        "n": len(ages),
        "sd_scale": scale,
        "loo_rmse_weeks": float(np.sqrt(np.mean(errors**2))),
        "loo_bias_weeks": float(np.mean(errors)),
        "loo_coverage_95": float(np.mean(np.abs(z) <= 1.96 * scale)),
    }


def norms_from_files(
    volume_tsvs: Sequence[str | os.PathLike[str]],
    ages: Sequence[float],
    source: str,
    age_kind: str = "GA",
) -> Norms:
    """Norms fitted on a cohort's volumes TSVs (e.g. a lab's healthy controls)."""
    if len(volume_tsvs) != len(ages):
        raise NormsError(f"{len(volume_tsvs)} volumes files but {len(ages)} ages")
    rows = []
    for path, age in zip(volume_tsvs, ages, strict=True):
        # a structure the segmentation found nothing of: missing for this subject
        vols = {s: (v if v > 0 else None) for s, v in read_volumes_tsv(path).items()}
        if not np.isfinite(age):
            raise NormsError(f"{path}: age {age} is not a number")
        rows.append((float(age), vols))
    return fit_norms(
        rows, source, age_kind, metadata={"volume_tsvs": [str(p) for p in volume_tsvs]}
    )


def fit_norms_files(
    volume_tsvs: Sequence[str | os.PathLike[str]],
    ages: Sequence[float],
    out_json: str | os.PathLike[str],
    source: str,
    age_kind: str = "GA",
) -> Norms:
    """The refit rule: fit norms on the given volumes and write them atomically."""
    norms = norms_from_files(volume_tsvs, ages, source, age_kind)
    norms.to_json(out_json)
    norms.origin = str(out_json)
    return norms
