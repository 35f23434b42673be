"""Held-out simulated subjects for the brain-age checks (tests and bench/brainage.py).

A simulated fetal volume (`segment.evaluate.simulated_volume`) is placed in a random
scanner pose, and the registration's linear map is stood in for by that pose times an
isotropic scale (the template's size differs from the subject's; the affine stage
absorbs it): exactly what `frame.network_input` must undo. Its mask is as tight as the
reconstruction's (`PIPELINE_RIM_MM`); how the estimate moves with a looser mask is
measured too (tests, `bench/brainage.py --rims`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from earlybrain.brainage.frame import GRID, Grid, network_input
from earlybrain.geometry import rigid_matrix
from earlybrain.segment.evaluate import SimulatedVolume, simulated_volume

# non-brain margin of the mask the brain-age step gets: the reconstruction's brain mask
# lies -0.2 and +0.3 mm from the true brain's surface on average (demo fetuses f02 and
# f01: mask minus true brain volume over the brain's surface area; asserted within 1 mm in
# tests/test_workflow.py), i.e. it hugs the brain
PIPELINE_RIM_MM = 0.5


@dataclass
class PosedSubject:
    volume: SimulatedVolume
    affine: np.ndarray  # scanner voxel -> world
    atlas_to_subject: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        return self.volume.image > 0

    def network_input(self, grid: Grid = GRID) -> np.ndarray:
        return network_input(self.volume.image, self.affine, self.mask, self.atlas_to_subject, grid)


def posed_subject(
    age_weeks: float,
    seed: int,
    voxel_mm: float = 1.0,
    ventricle_factor: float = 1.0,
    rim_mm: float = PIPELINE_RIM_MM,
) -> PosedSubject:
    """A simulated subject in a random pose (seeded), with its registration's linear map."""
    vol = simulated_volume(
        age_weeks, seed, voxel_mm=voxel_mm, ventricle_factor=ventricle_factor, rim_mm=rim_mm
    )
    rng = np.random.default_rng([seed, 17])
    pose = rigid_matrix(
        np.concatenate([rng.uniform(-180, 180, 3), rng.uniform(-20, 20, 3)]), np.zeros(3)
    )
    scale = np.diag([*(rng.uniform(0.8, 1.25),) * 3, 1.0])
    return PosedSubject(vol, pose @ vol.affine, pose @ scale)


def fidon_ensemble_ages(model: Any) -> list[dict[str, float | str]]:
    """The deep ensemble on the real T2w templates of fidon-sb-atlas (none of which it was
    trained on): time point, true and predicted weeks, predictive SD.

    The templates are already in the anatomical frame the atlas uses (RAS, upright), so
    the registration's rotation is the identity. They are spina bifida brains (smaller
    than typical, so they may read younger): reported as measured, never tuned to.
    """
    from earlybrain import shared_data
    from earlybrain.brainage.ensemble import predict

    root = shared_data.require(shared_data.FIDON)
    rows: list[dict[str, float | str]] = []
    for name in shared_data.FIDON_TIMEPOINTS:
        week = shared_data.fidon_week(name)
        image, affine, brain = shared_data.fidon_timepoint(root, name)
        deep = predict(model, network_input(image, affine, brain, np.eye(4))[None])
        rows.append(
            {
                "time_point": name,
                "age_weeks": float(week),
                "predicted_weeks": float(deep["age_weeks"][0]),
                "sd_weeks": float(deep["sd_weeks"][0]),
            }
        )
    return rows
