"""Thick-slice stacks of a given true volume (e.g. a real atlas anatomy) moving rigidly.

For testing and benchmarking the reconstruction on anatomy and contrast it was not
designed on: the true volume is any T2w image with a brain mask (the Fidon atlas's
real super-resolution templates), not the earlybrain phantom. To keep clear of an
inverse crime, the acquisition model differs from the one the reconstruction inverts:
a box-shaped slice profile (uniform over the slice thickness, with a gap or overlap
between slices when the thickness differs from the spacing) instead of a Gaussian, an
in-plane blur of one pixel FWHM instead of 1.2, and Rician noise.

Motion levels are stated as the bounds a fetal-imaging paper would quote: `moderate`
drifts and jumps within +-10 mm / +-10 degrees, `severe` within +-20 mm / +-20 degrees
(young fetuses in plenty of fluid).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from earlybrain.geometry import apply, rigid_matrix
from earlybrain.simulate.acquisition import FWHM_TO_SIGMA, ORIENTATIONS, rician_noise
from earlybrain.simulate.motion import MotionLevel, interleaved_order, motion_trajectory

# drift std (deg, mm), jump rate (/s), jump size (deg, mm), bounds (deg, mm)
VOLUME_MOTION: dict[str, MotionLevel] = {
    "none": MotionLevel(0, 0, 0, 0, 0, 0, 0),
    "moderate": MotionLevel(3.0, 2.0, 1 / 12, 8.0, 8.0, 10.0, 10.0),
    "severe": MotionLevel(6.0, 4.0, 1 / 6, 16.0, 16.0, 20.0, 20.0),
}
_AXES = {  # rows: in-plane u, in-plane v, slice normal, in the volume's frame
    "axial": np.eye(3),
    "coronal": np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]], dtype=float),
    "sagittal": np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=float),
}


@dataclass(frozen=True)
class Acquisition:
    inplane_mm: float = 1.1
    spacing_mm: float = 3.0  # distance between slice centres
    thickness_mm: float = 3.0  # slice profile width (< spacing: a gap)
    fov_margin_mm: float = 12.0
    interleave: int = 2
    slice_time_s: float = 0.8
    stack_pause_s: float = 10.0
    noise_fraction: float = 0.03  # Rician sigma / median brain intensity
    planning_error_deg: float = 8.0


@dataclass
class VolumeStack:
    data: np.ndarray  # float32 (nu, nv, nz)
    mask: np.ndarray  # uint8 true brain mask of each slice
    affine: np.ndarray  # voxel -> scanner mm
    slice_times: np.ndarray  # (nz,) seconds: BIDS SliceTiming
    true_maps: np.ndarray  # (nz,4,4) scanner -> truth world of each slice


@dataclass
class VolumeSession:
    stacks: list[VolumeStack]
    truth: dict  # "image", "affine" (truth world), "brain": as recon.evaluate expects
    thickness_mm: float  # what a sidecar's SliceThickness would say


def simulate_volume_stacks(
    image: np.ndarray,
    affine: np.ndarray,
    brain: np.ndarray,
    n_stacks: int,
    motion: str | MotionLevel,
    seed: int,
    acq: Acquisition = Acquisition(),
) -> VolumeSession:
    """`n_stacks` interleaved stacks (axial, coronal, sagittal, ...) of `image` (on the
    grid `affine`, brain mask `brain`), with the head in a random pose and moving by
    `motion` (a VOLUME_MOTION name or a MotionLevel) during the acquisition."""
    rng = np.random.default_rng(seed)
    level = VOLUME_MOTION[motion] if isinstance(motion, str) else motion
    image = np.asarray(image, dtype=np.float32)
    brain = np.asarray(brain) > 0
    voxel = float(np.mean(np.sqrt((affine[:3, :3] ** 2).sum(0))))
    blurred = ndimage.gaussian_filter(image, acq.inplane_mm * FWHM_TO_SIGMA / voxel)
    brain_f = brain.astype(np.float32)
    # head frame = the volume's world; a random rigid placement in the scanner
    pts = apply(affine, np.argwhere(brain).astype(float))
    centre_vol = pts.mean(0)
    head = np.eye(4)
    head[:3, :3] = Rotation.random(random_state=rng).as_matrix()
    head[:3, 3] = rng.uniform(-20, 20, 3) - head[:3, :3] @ centre_vol
    truth_affine = head @ affine
    centre = head[:3, 3] + head[:3, :3] @ centre_vol  # brain centre in the scanner
    half = np.abs(pts - centre_vol).max(0)
    to_vox = np.linalg.inv(truth_affine)
    noise = acq.noise_fraction * float(np.median(image[brain]))
    offsets = (np.arange(7) + 0.5) / 7 - 0.5  # box profile: 7 samples across the slice

    plans, t0 = [], 0.0
    for s in range(n_stacks):
        axes = _AXES[ORIENTATIONS[s % 3]]
        err = Rotation.from_euler("xyz", rng.uniform(-1, 1, 3) * acq.planning_error_deg, True)
        R = head[:3, :3] @ err.as_matrix() @ axes.T  # columns u, v, n in the scanner
        ext = np.abs(axes @ half) + acq.fov_margin_mm
        shape = (
            int(np.ceil(2 * ext[0] / acq.inplane_mm)),
            int(np.ceil(2 * ext[1] / acq.inplane_mm)),
            int(np.ceil(2 * (ext[2] - acq.fov_margin_mm + 4) / acq.spacing_mm)),
        )
        A = np.eye(4)
        A[:3, :3] = R * np.array([acq.inplane_mm, acq.inplane_mm, acq.spacing_mm])
        A[:3, 3] = centre + rng.uniform(-3, 3, 3) - A[:3, :3] @ ((np.array(shape) - 1) / 2)
        order = interleaved_order(shape[2], acq.interleave)
        times = np.empty(shape[2])
        times[order] = t0 + acq.slice_time_s * np.arange(shape[2])
        t0 = float(times.max()) + acq.stack_pause_s
        plans.append((A, shape, times))
    poses = motion_trajectory(
        np.concatenate([p[2] for p in plans]), level, int(rng.integers(2**31))
    )

    stacks, k0 = [], 0
    for A, shape, times in plans:
        ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
        normal = A[:3, 2] / np.linalg.norm(A[:3, 2])
        data = np.zeros(shape, np.float32)
        mask = np.zeros(shape, np.uint8)
        maps = np.zeros((shape[2], 4, 4))
        for k in range(shape[2]):
            M_inv = np.linalg.inv(rigid_matrix(poses[k0 + k], centre))  # scanner -> truth
            maps[k] = M_inv
            p = apply(A, np.stack([ii, jj, np.full_like(ii, k)], -1).astype(float))
            acc = np.zeros(ii.shape)
            for o in offsets:
                q = apply(to_vox @ M_inv, p + o * acq.thickness_mm * normal)
                acc += ndimage.map_coordinates(blurred, q.reshape(-1, 3).T, order=1).reshape(
                    ii.shape
                )
            data[..., k] = acc / offsets.size
            q = apply(to_vox @ M_inv, p).reshape(-1, 3).T
            mask[..., k] = ndimage.map_coordinates(brain_f, q, order=1).reshape(ii.shape) >= 0.5
        k0 += shape[2]
        noisy = rician_noise(data, noise, rng).astype(np.float32)
        stacks.append(VolumeStack(noisy, mask, A, times - times.min(), maps))
    truth = {"image": image, "affine": truth_affine, "brain": brain}
    return VolumeSession(stacks=stacks, truth=truth, thickness_mm=acq.thickness_mm)
