"""Normative growth models of brain volumes: centile curves and z-scores.

Per structure, log(volume) is normal at each age with
- mean: a cubic polynomial in age (centred and scaled to [-1, 1] over the fitted range).
  Brain growth over a fetal or neonatal age window is smooth and decelerating in log
  scale; a cubic follows that shape with four parameters, which stay well determined
  from 30 subjects without the smoothing parameter a penalised spline would need;
- SD: exp(linear in age), so the spread may widen or narrow with age but stays positive.
Log scale makes the spread proportional to size (a 10 % larger brain is as unusual at
22 weeks as at 38) and keeps the centile curves positive. The curves are only trusted
over the age range they were fitted on: scores outside it carry a note.

This module is what every user of the norms needs: read them, evaluate them, score a
subject's volumes (and read the pipeline's volumes TSV that they score). Fitting them
on a cohort is `norms_fit`; the age the volumes point to is `volume_age`. The pipeline
ships curves fitted on its simulated reference cohort (`reference`); a lab refits them
on its own healthy controls with `norms_fit.fit_norms_files`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import special

from earlybrain import REPO_ROOT
from earlybrain.anatomy.labels import TISSUES
from earlybrain.io.atomic import write_json_atomic
from earlybrain.io.provenance import source_reference
from earlybrain.segment.volumes import tsv_cell

FORMAT = "earlybrain-norms-1"
# the rows of the pipeline's volumes TSV (`segment.volumes.volume_rows`)
STRUCTURES = (*TISSUES.values(), "total_brain", "intracranial")
AGE_KINDS = ("GA", "PMA")
MEAN_DEGREE = 3
ZSCORE_COLUMNS = ("structure", "volume_ml", "expected_ml", "z", "centile", "flag", "note")


class NormsError(ValueError):
    """A norms file or a cohort that cannot give norms; the message names the file."""


def shipped_norms_path(name: str = "norms.json") -> Path:
    """The reference norms that ship with earlybrain (`models/brainage/` of the checkout)."""
    return REPO_ROOT / "models" / "brainage" / name


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
            raise NormsError(
                f"{source_reference(self.origin)}: no norms for {structure!r} (has {have})"
            ) from None

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
        structures = {s: structures[s] for s in pipeline_order(structures)}  # JSON sorts keys
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


def pipeline_order(names: Iterable[str]) -> list[str]:
    """The volumes TSV's order, then any other structures alphabetically."""
    names = set(names)
    return [s for s in STRUCTURES if s in names] + sorted(names - set(STRUCTURES))


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
            row["note"] = f"no norms for this structure in {source_reference(norms.origin)}"
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
