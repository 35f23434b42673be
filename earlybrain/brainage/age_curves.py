"""Features whose means follow logistic curves of age, jointly normal (or Student t) around them.

Why logistic: a contrast index of myelination changes over a few months and then stays
(`myelination`), and an estimate of age from brain size or template similarity follows
the true age and then saturates (template matches at the oldest template, volumes that
grow slowly in the second year). A logistic with free centre and width covers a line, a
step and a plateau; the joint normal residuals (the covariance) weigh features that
share a subject's errors (e.g. size seen by both the volumes and the template match) as
one piece of evidence, not two. The estimate is the posterior over ages with a flat
prior on the calibrated ages, so a saturated feature widens the posterior instead of
pulling it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, special

from earlybrain.brainage.ensemble import BrainAgeError

# the age grid of the infant posteriors (here and the volume posterior in `infant`)
AGE_STEP_WEEKS = 0.1
AGE_MARGIN_WEEKS = 2.0


def logistic(ages: np.ndarray, p: np.ndarray) -> np.ndarray:
    """p0 + p1 * sigmoid((age - p2) / p3): the mean contrast index at each age."""
    return p[0] + p[1] * special.expit((np.asarray(ages, dtype=float) - p[2]) / p[3])


def fit_logistic(ages: np.ndarray, y: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Least-squares logistic curve of an index against age: from several starts (or
    the one given), with centre and width bounded so that a flat index stays a
    well-defined, flat curve."""
    ages, y = np.asarray(ages, dtype=float), np.asarray(y, dtype=float)
    lo, hi = float(ages.min()), float(ages.max())
    bounds = (
        np.array([-np.inf, -np.inf, lo - 60.0, 2.0]),
        np.array([np.inf, np.inf, hi + 60.0, 60.0]),
    )
    if start is not None:
        starts = [np.asarray(start, dtype=float)]
    else:
        order = np.argsort(ages)
        k = max(3, len(ages) // 6)
        y0, y1 = float(np.mean(y[order[:k]])), float(np.mean(y[order[-k:]]))
        starts = [
            np.array([y0, (y1 - y0) or 1e-3, centre, width])
            for centre in np.linspace(lo - 20.0, hi, 6)
            for width in (5.0, 20.0)
        ]
    best = None
    for x0 in starts:
        x0 = np.clip(x0, bounds[0] + 1e-6, bounds[1] - 1e-6)
        res = optimize.least_squares(lambda p: logistic(ages, p) - y, x0, bounds=bounds)
        if best is None or res.cost < best.cost:
            best = res
    return best.x


@dataclass(frozen=True)
class LogisticAgeModel:
    """Features ~ Normal(logistic curves of age, covariance): the contrast indexes of
    myelination, or those with the other methods' ages (`infant`'s combination)."""

    key: str
    names: tuple[str, ...]
    params: np.ndarray  # (n_indexes, 4) logistic parameters, ages in PMA weeks
    cov: np.ndarray  # (n_indexes, n_indexes) residual covariance
    age_range: tuple[float, float]
    # None: normal residuals; else multivariate Student t with these degrees of freedom,
    # whose heavy tails keep one feature far off its curve (a template match stuck at
    # the oldest template) from making the posterior sure of a wrong age
    dof: float | None = None

    @classmethod
    def from_dict(cls, key: str, d: Mapping[str, Any]) -> LogisticAgeModel:
        return cls(
            key,
            tuple(d["names"]),
            np.asarray(d["params"], dtype=float),
            np.asarray(d["cov"], dtype=float),
            tuple(float(a) for a in d["age_range"]),
            None if d.get("dof") is None else float(d["dof"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "params": [[float(v) for v in p] for p in self.params],
            "cov": [[float(v) for v in row] for row in self.cov],
            "age_range": list(self.age_range),
        } | ({} if self.dof is None else {"dof": self.dof})

    @classmethod
    def fit(
        cls,
        key: str,
        ages: np.ndarray,
        indexes: np.ndarray,
        names: tuple[str, ...],
        start: LogisticAgeModel | None = None,
        dof: float | None = None,
    ) -> LogisticAgeModel:
        """Fit on (ages, indexes) of healthy subjects (rows with a NaN index are skipped);
        `start`: a model fitted on similar data whose curves start the fit (one start);
        `dof`: the posterior's residuals (None: normal; the curves and covariance are
        least squares either way)."""
        ages, indexes = np.asarray(ages, dtype=float), np.asarray(indexes, dtype=float)
        ok = np.all(np.isfinite(indexes), axis=1)
        ages, indexes = ages[ok], indexes[ok]
        params = np.stack(
            [
                fit_logistic(ages, indexes[:, j], None if start is None else start.params[j])
                for j in range(len(names))
            ]
        )
        resid = indexes - np.stack([logistic(ages, p) for p in params], axis=1)
        n, p = len(ages), 4
        cov = resid.T @ resid / max(n - p, 1)
        return cls(key, names, params, cov, (float(ages.min()), float(ages.max())), dof)

    def grid(self) -> np.ndarray:
        lo, hi = self.age_range[0] - AGE_MARGIN_WEEKS, self.age_range[1] + AGE_MARGIN_WEEKS
        return np.arange(lo, hi + AGE_STEP_WEEKS / 2, AGE_STEP_WEEKS)

    def estimate(self, indexes: Mapping[str, float]) -> dict[str, Any]:
        """Posterior mean and SD of age (flat prior over the calibrated ages) given the
        indexes (the calibrated SD is a table by age: `estimates`)."""
        use = [j for j, s in enumerate(self.names) if np.isfinite(indexes.get(s, np.nan))]
        if not use:
            raise BrainAgeError(f"none of the {self.key} features could be measured")
        grid = self.grid()
        x = np.array([indexes[self.names[j]] for j in use])
        mu = np.stack([logistic(grid, self.params[j]) for j in use], axis=1)
        prec = np.linalg.inv(self.cov[np.ix_(use, use)])
        r = x[None, :] - mu
        d2 = np.einsum("gi,ij,gj->g", r, prec, r)
        if self.dof is None:
            ll = -0.5 * d2
        else:  # multivariate t, scale matrix nu / (nu - 2) x cov
            nu = self.dof
            ll = -0.5 * (nu + len(use)) * np.log1p(d2 * (nu - 2) / nu**2)
        w = np.exp(ll - ll.max())
        w /= w.sum()
        mean = float(np.sum(w * grid))
        sd = float(np.sqrt(np.sum(w * (grid - mean) ** 2)))
        return {
            "age_weeks": mean,
            "sd_posterior_weeks": sd,
            "indexes": {self.names[j]: float(x[k]) for k, j in enumerate(use)},
            "structures": [self.names[j] for j in use],
        }
