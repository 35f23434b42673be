"""Simulated reconstructions in arbitrary poses, with ground-truth labels, for tests/benchmarks.

A reconstruction keeps the pose the fetal head had in the scanner, on a grid aligned
with the scanner, so its voxel axes are unrelated to the anatomy. This resamples a
simulator phantom (brain only, as after brain masking) into such a grid: any of the
24 axis-aligned orientations composed with a random rotation, and a shift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from earlybrain.geometry import apply
from earlybrain.register.init import cube_rotations
from earlybrain.simulate.contrast import intensity_image
from earlybrain.simulate.phantom import make_phantom


@dataclass
class PosedSubject:
    image: np.ndarray  # float32, brain only (zero outside the mask)
    affine: np.ndarray  # voxel -> scanner RAS mm
    mask: np.ndarray  # uint8 brain (intracranial) mask
    labels: np.ndarray  # uint8 ground-truth labels 0..12
    pose: np.ndarray  # 4x4 head frame -> scanner
    age_weeks: float
    seed: int


def random_pose(rng: np.random.Generator, max_extra_deg: float = 180.0) -> np.ndarray:
    """One of the 24 axis-aligned orientations, then a random rotation, plus a shift."""
    G = cube_rotations()[int(rng.integers(24))]
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    extra = Rotation.from_rotvec(np.deg2rad(rng.uniform(-max_extra_deg, max_extra_deg)) * axis)
    M = np.eye(4)
    M[:3, :3] = extra.as_matrix() @ G
    M[:3, 3] = rng.uniform(-30.0, 30.0, 3)
    return M


def posed_subject(
    age_weeks: float,
    seed: int,
    voxel_mm: float,
    pose: np.ndarray,
    *,
    phantom_voxel_mm: float | None = None,
    noise: float = 0.02,
    margin_mm: float = 8.0,
    values: dict[int, float] | None = None,
    ventricle_factor: float = 1.0,
) -> PosedSubject:
    """A brain-masked T2w volume of phantom (`age_weeks`, `seed`) in scanner pose `pose`.

    The phantom is rasterised at `phantom_voxel_mm` (default: `voxel_mm`) and resampled
    (linear for the image, nearest for labels) onto a scanner-aligned grid of `voxel_mm`;
    Gaussian noise of `noise` x the median brain intensity is added inside the mask.
    `values` (intensity per label) replaces the simulator's T2w contrast.
    """
    ph = make_phantom(
        age_weeks, seed, kind="fetal", voxel_mm=phantom_voxel_mm or voxel_mm,
        ventricle_factor=ventricle_factor,
    )  # fmt: skip
    brain = (ph.labels >= 1) & (ph.labels <= 12)
    img = intensity_image(ph, values=values) * brain
    labels = np.where(brain, ph.labels, 0).astype(np.uint8)
    head_to_vox = np.linalg.inv(ph.affine)
    corners = np.array(list(np.ndindex(2, 2, 2))) * (np.array(brain.shape) - 1)
    world = apply(pose @ ph.affine, corners.astype(np.float64))
    lo = world.min(axis=0) - margin_mm
    hi = world.max(axis=0) + margin_mm
    shape = tuple(int(np.ceil((h - lo_) / voxel_mm)) + 1 for lo_, h in zip(lo, hi, strict=True))
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = lo
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    src = apply(head_to_vox @ np.linalg.inv(pose) @ affine, idx.reshape(-1, 3).astype(float)).T
    out_img = ndimage.map_coordinates(img, src, order=1, mode="constant").reshape(shape)
    out_lab = ndimage.map_coordinates(labels, src, order=0, mode="constant").reshape(shape)
    mask = out_lab > 0
    rng = np.random.default_rng(seed + 7)
    scale = float(np.median(out_img[mask])) if mask.any() else 1.0
    out_img = np.where(mask, out_img + rng.normal(0, noise * scale, shape), 0.0)
    return PosedSubject(
        image=np.clip(out_img, 0, None).astype(np.float32),
        affine=affine,
        mask=mask.astype(np.uint8),
        labels=out_lab.astype(np.uint8),
        pose=pose,
        age_weeks=age_weeks,
        seed=seed,
    )
