"""What an atlas build takes (its parameters) and what it makes for each week (a
template), apart from the building itself: the writer and the infant atlas use them
without importing the registration machinery, and without an import cycle."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from earlybrain.config_values import coerce_fields


@dataclass(frozen=True)
class BuildParams:
    voxel_mm: float = 1.2  # template grid
    sigma_weeks: float = 1.0  # Gaussian age kernel
    min_weight: float = 0.05  # subjects with a smaller kernel weight are left out of a week
    max_subjects: int = 8  # at most this many (the highest weights) per week
    iterations: int = 3  # registration rounds per week
    gradient_step: float = 0.25  # share of the mean displacement removed per shape update
    margin_mm: float = 5.0  # around the brain, on subject grids and templates
    threads: int = 2
    random_seed: int = 1
    linear_metric: str = "GC"
    affine_iterations: tuple[int, ...] = (100, 50, 0)  # shrink 4, 2, 1
    syn_metric: str = "mattes"
    syn_sampling: int = 32
    syn_iterations: tuple[int, ...] = (60, 30, 0)  # shrink 4, 2, 1
    syn_grad_step: float = 0.2
    syn_flow_sigma: float = 3.0
    intensity_percentile: float = 99.0  # subjects are scaled so that it becomes...
    intensity_scale: float = 1000.0  # ...this value (templates are stored as int16)

    def __post_init__(self) -> None:
        from earlybrain.register.init import check_seed

        check_seed(self.random_seed)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> BuildParams:
        return cls(**coerce_fields(cls, dict(values or {}), "atlas build"))


@dataclass
class WeekTemplate:
    week: float
    image: np.ndarray  # float32, intensity_scale at the brain's intensity_percentile
    affine: np.ndarray
    mask: np.ndarray  # uint8
    dseg: np.ndarray | None  # uint8, earlybrain labels
    contributors: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    # several contrasts (contrast -> image, scaled like `image`); empty: `image` is the T2w
    images: dict[str, np.ndarray] = field(default_factory=dict)
    # how a template not built from subjects was made (replaces the contributor summary)
    info: dict[str, Any] | None = None

    def contrast_images(self) -> dict[str, np.ndarray]:
        """The images to write, by contrast."""
        return dict(self.images) if self.images else {"T2w": self.image}

    def build_info(self) -> dict[str, Any]:
        if self.info is not None:
            return dict(self.info)
        w = np.array([c["weight"] for c in self.contributors])
        ages = np.array([c["age_weeks"] for c in self.contributors])
        return {
            "subjects": self.contributors,
            "effective_n": round(float(w.sum() ** 2 / (w**2).sum()), 2),
            "weighted_mean_age_weeks": round(float((w * ages).sum() / w.sum()), 2),
            "seconds": round(self.seconds, 1),
        }
