"""Normative growth models of brain volumes: centile curves, z-scores, volume-based age.

Per structure, log(volume) is normal at each age with
- mean: a cubic polynomial in age (centred and scaled to [-1, 1] over the fitted range).
  Brain growth over a fetal or neonatal age window is smooth and decelerating in log
  scale; a cubic follows that shape with four parameters, which stay well determined
  from 30 subjects without the smoothing parameter a penalised spline would need;
- SD: exp(linear in age), so the spread may widen or narrow with age but stays positive.
Log scale makes the spread proportional to size (a 10 % larger brain is as unusual at
22 weeks as at 38) and keeps the centile curves positive. Both are fitted by Gaussian
maximum likelihood (alternating weighted least squares for the mean and Newton steps
for the SD, each of which lowers the same likelihood), with the SD scaled by
sqrt(n / (n - 4)) so that small cohorts do not give overconfident z-scores. The curves
are only trusted over the age range they were fitted on: scores outside it carry a note.

The pipeline ships curves fitted on its simulated reference cohort (`reference`); a lab
refits them on its own healthy controls with `fit_norms_files`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy
from scipy import special

from earlybrain import __version__
from earlybrain.anatomy.labels import TISSUES
from earlybrain.io.atomic import write_json_atomic
from earlybrain.segment.volumes import tsv_cell

FORMAT = "earlybrain-norms-1"
# the rows of the pipeline's volumes TSV (`segment.volumes.volume_rows`)
STRUCTURES = (*TISSUES.values(), "total_brain", "intracranial")
# total_brain and intracranial are sums of these, so they would count twice
VOLUME_AGE_STRUCTURES = tuple(TISSUES.values())
AGE_KINDS = ("GA", "PMA")
MEAN_DEGREE = 3
MIN_SUBJECTS = 12  # twice the six parameters of a structure's model
MIN_AGE_SPAN_WEEKS = 3.0
# volume_age searches this far beyond the fitted ages: a little extrapolation is safe
AGE_GRID_MARGIN_WEEKS = 2.0
AGE_GRID_STEP_WEEKS = 0.02
ZSCORE_COLUMNS = ("structure", "volume_ml", "expected_ml", "z", "centile", "flag", "note")


class NormsError(ValueError):
    """A norms file or a cohort that cannot give norms; the message names the file."""


def shipped_norms_path(name: str = "norms.json") -> Path:
    """The reference norms that ship with earlybrain (`models/brainage/` of the checkout)."""
    import earlybrain

    return Path(earlybrain.__file__).resolve().parents[1] / "models" / "brainage" / name


def shipped_infant_norms_path() -> Path:
    """The infant reference norms that ship with earlybrain (`models/brainage/`)."""
    return shipped_norms_path("norms_infant.json")


def _scalar_or_array(x: np.ndarray) -> float | np.ndarray:
    return float(x) if x.ndim == 0 else x


@dataclass(frozen=True)
class StructureNorm:
    """log(volume) ~ Normal(polynomial(t), exp(g0 + g1 t)), t = (age - centre) / scale."""

    n: int
    age_range: tuple[float, float]
    centre: float
    scale: float
    mean_coef: tuple[float, ...]  # increasing powers of t
    log_sd_coef: tuple[float, float]

    def _t(self, age: np.ndarray) -> np.ndarray:
        return (np.asarray(age, dtype=float) - self.centre) / self.scale

    def mean_log(self, age: float | np.ndarray) -> np.ndarray:
        return np.polynomial.polynomial.polyval(self._t(age), self.mean_coef)

    def sd_log(self, age: float | np.ndarray) -> np.ndarray:
        g0, g1 = self.log_sd_coef
        return np.exp(g0 + g1 * self._t(age))

    def to_dict(self) -> dict[str, object]:
        return {
            "n": self.n,
            "age_range": list(self.age_range),
            "age_centre": self.centre,
            "age_scale": self.scale,
            "mean_coef": list(self.mean_coef),
            "log_sd_coef": list(self.log_sd_coef),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> StructureNorm:
        """Raises KeyError/TypeError/ValueError on a malformed entry (the caller names it)."""
        lo, hi = (float(a) for a in d["age_range"])
        mean_coef = tuple(float(c) for c in d["mean_coef"])
        log_sd_coef = tuple(float(c) for c in d["log_sd_coef"])
        scale = float(d["age_scale"])
        values = (lo, hi, scale, float(d["age_centre"]), *mean_coef, *log_sd_coef)
        if not (mean_coef and len(log_sd_coef) == 2 and scale > 0 and lo <= hi):
            raise ValueError("needs mean_coef, 2 log_sd_coef, age_scale > 0, age_range lo <= hi")
        if not all(math.isfinite(v) for v in values):
            raise ValueError("non-finite number")
        return cls(int(d["n"]), (lo, hi), float(d["age_centre"]), scale, mean_coef, log_sd_coef)


@dataclass
class Norms:
    """Growth models of every structure, with where they come from."""

    structures: dict[str, StructureNorm]
    source: str
    n_subjects: int
    age_range: tuple[float, float]
    age_kind: str  # "GA" (fetal) or "PMA" (infant)
    fitted_with: dict[str, str]
    # leave-one-out check of `volume_age` on the fitting cohort (None: too few subjects)
    volume_age_calibration: dict[str, object] | None = None
    metadata: dict[str, object] = field(default_factory=dict)
    origin: str = "<norms fitted in memory>"  # the file it was read from, for messages

    def model(self, structure: str) -> StructureNorm:
        try:
            return self.structures[structure]
        except KeyError:
            have = ", ".join(self.structures)
            raise NormsError(f"{self.origin}: no norms for {structure!r} (has {have})") from None

    def expected_ml(self, structure: str, age: float | np.ndarray) -> float | np.ndarray:
        """Median volume at `age` (the 50th centile; the mean of log volume)."""
        return _scalar_or_array(np.exp(self.model(structure).mean_log(age)))

    def sd_log(self, structure: str, age: float | np.ndarray) -> float | np.ndarray:
        """SD of log volume at `age` (about the relative SD of the volume)."""
        return _scalar_or_array(self.model(structure).sd_log(age))

    def zscore(
        self, structure: str, age: float | np.ndarray, volume_ml: float | np.ndarray
    ) -> float | np.ndarray:
        """(log volume - expected) / SD; a volume of 0 is -inf (infinitely unusual)."""
        m = self.model(structure)
        v = np.asarray(volume_ml, dtype=float)
        if np.any(v < 0):
            raise ValueError(f"{structure}: negative volume {volume_ml}")
        with np.errstate(divide="ignore"):
            z = (np.log(v) - m.mean_log(age)) / m.sd_log(age)
        return _scalar_or_array(z)

    def centile(
        self, structure: str, age: float | np.ndarray, volume_ml: float | np.ndarray
    ) -> float | np.ndarray:
        """Percentage of the reference population with a smaller volume at that age."""
        z = np.asarray(self.zscore(structure, age, volume_ml))
        return _scalar_or_array(100.0 * special.ndtr(z))

    def centile_curves(
        self,
        structure: str,
        ages: Sequence[float] | np.ndarray,
        centiles: Sequence[float] = (3, 10, 50, 90, 97),
    ) -> dict[float, np.ndarray]:
        """Volume (mL) at each centile over `ages`, for growth charts."""
        m = self.model(structure)
        ages = np.asarray(ages, dtype=float)
        mu, sd = m.mean_log(ages), m.sd_log(ages)
        return {c: np.exp(mu + sd * special.ndtri(c / 100.0)) for c in centiles}

    def to_dict(self) -> dict[str, object]:
        return {
            "format": FORMAT,
            "source": self.source,
            "n_subjects": self.n_subjects,
            "age_range": list(self.age_range),
            "age_kind": self.age_kind,
            "fitted_with": self.fitted_with,
            "model": {
                "mean": f"log(total_ml) = sum_k mean_coef[k] * t**k, k = 0..{MEAN_DEGREE}",
                "sd": "sd of log(total_ml) = exp(log_sd_coef[0] + log_sd_coef[1] * t)",
                "t": "(age_weeks - age_centre) / age_scale",
            },
            "structures": {k: m.to_dict() for k, m in self.structures.items()},
            "volume_age_calibration": self.volume_age_calibration,
            "metadata": self.metadata,
        }

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (a reader never sees half a file)."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> Norms:
        """Read a norms file; NormsError naming the file when it is not one."""
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise NormsError(f"{path}: cannot read norms ({exc})") from None
        fmt = d.get("format") if isinstance(d, dict) else None
        if fmt != FORMAT:
            raise NormsError(
                f"{path}: not an earlybrain norms file (format {fmt!r}, expected {FORMAT!r})"
            )
        try:
            structures = {str(k): StructureNorm.from_dict(v) for k, v in d["structures"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise NormsError(f"{path}: malformed structure entry ({exc!r})") from None
        if not structures:
            raise NormsError(f"{path}: no structures")
        structures = {s: structures[s] for s in _pipeline_order(structures)}  # JSON sorts keys
        try:
            lo, hi = (float(a) for a in d["age_range"])
            norms = cls(
                structures=structures,
                source=str(d["source"]),
                n_subjects=int(d["n_subjects"]),
                age_range=(lo, hi),
                age_kind=str(d["age_kind"]),
                fitted_with=dict(d["fitted_with"]),
                volume_age_calibration=d.get("volume_age_calibration"),
                metadata=dict(d.get("metadata") or {}),
                origin=str(path),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise NormsError(f"{path}: malformed norms ({exc!r})") from None
        if norms.age_kind not in AGE_KINDS:
            raise NormsError(f"{path}: age_kind {norms.age_kind!r} is not one of {AGE_KINDS}")
        return norms


# --- fitting -------------------------------------------------------------------------


def _pipeline_order(names: Iterable[str]) -> list[str]:
    """The volumes TSV's order, then any other structures alphabetically."""
    names = set(names)
    return [s for s in STRUCTURES if s in names] + sorted(names - set(STRUCTURES))


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
    for s in _pipeline_order({s for v in vols for s in v}):
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


# --- per subject ---------------------------------------------------------------------


def _out_of_range_note(norms: Norms, m: StructureNorm, age: float) -> str | None:
    lo, hi = m.age_range
    if lo <= age <= hi:
        return None
    return (
        f"age {age:g} outside fitted range {lo:.1f}-{hi:.1f} weeks {norms.age_kind}: extrapolated"
    )


def subject_zscores(
    norms: Norms, age: float, volumes: Mapping[str, float | None], threshold: float = 2.0
) -> list[dict[str, object]]:
    """One row per volume: expected volume, z, centile, flag (|z| > threshold), note."""
    rows: list[dict[str, object]] = []
    for structure, volume in volumes.items():
        row: dict[str, object] = dict.fromkeys(ZSCORE_COLUMNS)
        row.update(structure=structure, volume_ml=volume, flag=False)
        m = norms.structures.get(structure)
        if m is None:
            row["note"] = f"no norms for this structure in {norms.origin}"
        elif volume is None or not np.isfinite(volume):
            row["note"] = "no volume"
        else:
            z = norms.zscore(structure, age, volume)
            row.update(
                expected_ml=norms.expected_ml(structure, age),
                z=z,
                centile=norms.centile(structure, age, volume),
                flag=bool(abs(z) > threshold),
            )
            notes = [
                _out_of_range_note(norms, m, age),
                "volume 0: z is -inf" if z == -np.inf else None,
            ]
            row["note"] = "; ".join(n for n in notes if n) or None
        rows.append(row)
    return rows


def zscores_tsv(rows: Iterable[Mapping[str, object]]) -> str:
    """BIDS-style TSV text of `subject_zscores` rows (n/a for missing values)."""

    def cell(v: object) -> str:
        return str(v).lower() if isinstance(v, bool) else tsv_cell(v)

    lines = ["\t".join(ZSCORE_COLUMNS)]
    lines += ["\t".join(cell(r[c]) for c in ZSCORE_COLUMNS) for r in rows]
    return "\n".join(lines) + "\n"


# --- age from volumes ----------------------------------------------------------------


def _default_grid(age_range: tuple[float, float]) -> np.ndarray:
    lo, hi = age_range[0] - AGE_GRID_MARGIN_WEEKS, age_range[1] + AGE_GRID_MARGIN_WEEKS
    return np.arange(lo, hi + AGE_GRID_STEP_WEEKS / 2, AGE_GRID_STEP_WEEKS)


def _ml_age(
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
    grid = _default_grid(norms.age_range) if age_grid is None else np.asarray(age_grid, float)
    log_v = np.log([float(volumes[s]) for s in used])
    age, sd_naive, at_edge = _ml_age([norms.model(s) for s in used], log_v, grid)
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
    grid = _default_grid((float(ages.min()), float(ages.max())))
    errors, z = [], []
    for i in range(len(ages)):
        keep = np.arange(len(ages)) != i
        models = [_fit_structure(ages[keep], log_v[keep, j]) for j in range(len(names))]
        est, sd, _ = _ml_age(models, log_v[i], grid)
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


# --- files ---------------------------------------------------------------------------


def read_volumes_tsv(path: str | os.PathLike[str]) -> dict[str, float]:
    """total_ml per structure of a pipeline volumes TSV (NaN for n/a)."""
    path = Path(path)
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise NormsError(f"{path}: cannot read volumes ({exc})") from None
    header = lines[0].split("\t") if lines else []
    missing = [c for c in ("structure", "total_ml") if c not in header]
    if missing:
        raise NormsError(f"{path}: not a volumes TSV, no column {', '.join(missing)}")
    i_s, i_v = header.index("structure"), header.index("total_ml")
    volumes: dict[str, float] = {}
    for k, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        if len(cells) != len(header):
            raise NormsError(f"{path}: line {k} has {len(cells)} cells, header {len(header)}")
        structure, text = cells[i_s].strip(), cells[i_v].strip()
        if structure in volumes:
            raise NormsError(f"{path}: line {k}: {structure!r} appears twice")
        try:
            volumes[structure] = float("nan") if text in ("n/a", "") else float(text)
        except ValueError:
            raise NormsError(
                f"{path}: line {k}: total_ml {text!r} of {structure!r} is not a number"
            ) from None
    return volumes


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
