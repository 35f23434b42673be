"""The brain-age network's input: the brain in atlas orientation at its own size.

Why not the atlas-space volume of the registration stage: it is warped (affine + SyN)
onto the template chosen by the chronological age, so the brain's size, the strongest
age cue, is gone, and what is left is pulled towards the template's age: the "predicted"
age would echo the age given to the pipeline. Here only the rotation of the
registration's affine is kept (its polar decomposition), so the brain lies in the atlas
orientation, centred on its own centroid, at its own size, on a fixed 2 mm grid that
holds the largest brain of the age range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from earlybrain.geometry import apply
from earlybrain.io.nifti import voxel_sizes


@dataclass(frozen=True)
class Grid:
    """Network grid in atlas orientation (RAS), centred on the brain's centroid."""

    shape: tuple[int, int, int] = (56, 72, 56)
    voxel_mm: float = 2.0

    def points(self) -> np.ndarray:
        """Millimetre offsets from the centre of every voxel, shape + (3,)."""
        axes = [(np.arange(n) - (n - 1) / 2.0) * self.voxel_mm for n in self.shape]
        return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


GRID = Grid()


def rotation_of(matrix: np.ndarray) -> np.ndarray:
    """The rotation of a 4x4 (or 3x3) linear map: its polar decomposition L = R S,
    R = U Vt from the SVD, without the scale and shear that the affine stage adds."""
    u, _, vt = np.linalg.svd(np.asarray(matrix, dtype=np.float64)[:3, :3])
    r = u @ vt
    if np.linalg.det(r) < 0:  # a reflection is not a pose
        u[:, -1] *= -1
        r = u @ vt
    return r


def mask_centroid_mm(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Centroid (world mm) of a binary mask."""
    ijk = np.argwhere(np.asarray(mask) > 0)
    if ijk.size == 0:
        raise ValueError("the brain mask is empty")
    return apply(affine, ijk.mean(axis=0))


def sample_on_grid(
    image: np.ndarray,
    affine: np.ndarray,
    rotation: np.ndarray,
    centre_mm: np.ndarray,
    grid: Grid = GRID,
) -> np.ndarray:
    """The image on `grid`: grid offset p maps to world point rotation @ p + centre_mm.

    The image is low-pass filtered to the grid's voxel size first (no aliasing from fine
    reconstructions), then sampled linearly; outside the image is 0.
    """
    image = np.asarray(image, dtype=np.float32)
    vox = voxel_sizes(affine)
    sigma = [max(0.0, (grid.voxel_mm**2 - v**2)) ** 0.5 / 2.355 / v for v in vox]
    smooth = ndimage.gaussian_filter(image, sigma) if max(sigma) > 0.2 else image
    world = grid.points() @ np.asarray(rotation).T + np.asarray(centre_mm)
    ijk = apply(np.linalg.inv(affine), world)
    coords = np.moveaxis(ijk, -1, 0)
    return ndimage.map_coordinates(smooth, coords, order=1, mode="constant", cval=0.0).astype(
        np.float32
    )


def normalise(x: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """Intensity scale of the brain: its `percentile` among nonzero voxels becomes 1."""
    nz = x[x > 0]
    scale = float(np.percentile(nz, percentile)) if nz.size else 1.0
    return (x / max(scale, 1e-6)).astype(np.float32)


def network_input(
    image: np.ndarray,
    affine: np.ndarray,
    mask: np.ndarray,
    atlas_to_subject: np.ndarray,
    grid: Grid = GRID,
    percentile: float = 99.0,
) -> np.ndarray:
    """Masked subject volume -> normalised network input in atlas orientation, own size.

    `atlas_to_subject` is the registration's linear map (atlas point -> subject point,
    4x4 RAS, as read from its affine .mat file); only its rotation is used.
    """
    masked = np.where(np.asarray(mask) > 0, np.asarray(image, dtype=np.float32), 0.0)
    sampled = sample_on_grid(
        np.clip(masked, 0, None), affine, rotation_of(atlas_to_subject),
        mask_centroid_mm(mask, affine), grid,
    )  # fmt: skip
    return normalise(sampled, percentile)
