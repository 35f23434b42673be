"""Stacks as 2D slices on a fixed in-plane grid, and back.

The network sees every stack the same way whatever the scanner wrote: slices along the
thickest voxel axis (the acquisition direction of a 2D stack), in-plane resampled to
one spacing, intensities scaled by a robust per-stack maximum. Predictions are mapped
back to the stack's own grid with the exact inverse coordinate map, so a mask lands
on the voxels it was computed for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from earlybrain.io.nifti import voxel_sizes


@dataclass(frozen=True)
class SliceGrid:
    """How a stack was turned into slices: enough to put predictions back."""

    axis: int  # array axis of the stack that runs across slices
    native_shape: tuple[int, int, int]  # the stack's own shape
    inplane_mm: tuple[float, float]  # native spacing of the two in-plane axes
    target_mm: float
    shape: tuple[int, int]  # in-plane shape on the target grid

    @property
    def factors(self) -> tuple[float, float]:
        """Native pixels per target pixel along each in-plane axis."""
        return (self.target_mm / self.inplane_mm[0], self.target_mm / self.inplane_mm[1])


def slice_axis(affine: np.ndarray) -> int:
    """The thickest voxel axis; axis 2 when the voxels are (nearly) isotropic."""
    sp = voxel_sizes(affine)
    thickest = int(np.argmax(sp))
    return thickest if sp[thickest] > 1.05 * np.min(sp) else 2


def inplane_mm(affine: np.ndarray) -> tuple[int, tuple[float, float]]:
    """(slice axis, in-plane spacings of the two other axes)."""
    axis = slice_axis(affine)
    sp = voxel_sizes(affine)
    plane = [a for a in range(3) if a != axis]
    return axis, (float(sp[plane[0]]), float(sp[plane[1]]))


def normalise_stack(data: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """Scale by a high percentile of the positive voxels, clipped to [0, 2].

    Positive voxels only: a stack that was already skull-stripped (zero outside the
    brain) would otherwise be scaled by its background.
    """
    x = np.asarray(data, dtype=np.float32)
    x = np.where(np.isfinite(x), x, 0.0)
    pos = x[x > 0]
    scale = float(np.percentile(pos, percentile)) if pos.size else 1.0
    if scale <= 0:
        scale = 1.0
    return np.clip(x / scale, 0.0, 2.0).astype(np.float32)


def native_coords(
    c: float | np.ndarray, n_native: int, n_target: int, step: float
) -> float | np.ndarray:
    """Native pixel coordinate of target-grid coordinate(s) `c`, the target grid having
    n_target pixels `step` native pixels apart and sharing the native grid's centre."""
    return (n_native - 1) / 2.0 + (np.asarray(c, dtype=float) - (n_target - 1) / 2.0) * step


def _sample_planes(
    vol: np.ndarray,
    c0: np.ndarray,
    c1: np.ndarray,
    mode: str,
    steps: tuple[float, float] | None = None,
) -> np.ndarray:
    """(n, len(c0), len(c1)) float32: every slice of (n, a, b) `vol` sampled linearly at
    in-plane coordinates c0 x c1. With `steps` (native pixels per sample) it is
    low-passed first where sampling is coarser than its pixels (anti-aliasing)."""
    if steps is not None:
        sigma = (0.0, 0.4 * max(steps[0] - 1, 0.0), 0.4 * max(steps[1] - 1, 0.0))
        if max(sigma) > 0:
            vol = ndimage.gaussian_filter(vol, sigma, mode="nearest")
    g0, g1 = np.meshgrid(c0, c1, indexing="ij")
    out = np.empty((vol.shape[0], len(c0), len(c1)), dtype=np.float32)
    for k in range(vol.shape[0]):
        out[k] = ndimage.map_coordinates(vol[k], [g0, g1], order=1, mode=mode)
    return out


def to_slices(
    data: np.ndarray, affine: np.ndarray, target_mm: float
) -> tuple[np.ndarray, SliceGrid]:
    """Stack -> (n_slices, h, w) float32 on the target in-plane grid (not normalised)."""
    arr = np.asarray(data, dtype=np.float32)
    if arr.ndim != 3:
        raise ValueError(f"expected a 3D stack, got shape {arr.shape}")
    axis, inplane = inplane_mm(affine)
    vol = np.moveaxis(arr, axis, 0)  # (nz, n0, n1)
    n0, n1 = vol.shape[1:]
    f0, f1 = target_mm / inplane[0], target_mm / inplane[1]
    shape = (max(1, round(n0 / f0)), max(1, round(n1 / f1)))
    c0 = native_coords(np.arange(shape[0]), n0, shape[0], f0)
    c1 = native_coords(np.arange(shape[1]), n1, shape[1], f1)
    out = _sample_planes(vol, c0, c1, "nearest", steps=(f0, f1))
    grid = SliceGrid(axis, tuple(int(s) for s in arr.shape), inplane, float(target_mm), shape)
    return out, grid


def from_slices(values: np.ndarray, grid: SliceGrid) -> np.ndarray:
    """(n_slices, h, w) on the target grid -> the stack's own grid (linear interpolation)."""
    native = list(grid.native_shape)
    del native[grid.axis]
    n0, n1 = native
    f0, f1 = grid.factors
    # inverse of native_coords: native pixel i sits at target coordinate (i - c_n)/f + c_m
    c0 = (np.arange(n0) - (n0 - 1) / 2.0) / f0 + (grid.shape[0] - 1) / 2.0
    c1 = (np.arange(n1) - (n1 - 1) / 2.0) / f1 + (grid.shape[1] - 1) / 2.0
    out = _sample_planes(np.asarray(values, dtype=np.float32), c0, c1, "nearest")
    return np.moveaxis(out, 0, grid.axis)


@dataclass(frozen=True)
class CropGrid:
    """A box of a stack's slices resampled to a finer in-plane grid: the head's crop."""

    axis: int
    native_shape: tuple[int, int, int]
    inplane_mm: tuple[float, float]
    spacing_mm: float
    origin: tuple[float, float]  # native pixel coordinates of the crop's first pixel
    shape: tuple[int, int]
    slices: tuple[int, int]  # first and last+1 native slice index

    @property
    def steps(self) -> tuple[float, float]:
        """Native pixels per crop pixel along each in-plane axis."""
        return (self.spacing_mm / self.inplane_mm[0], self.spacing_mm / self.inplane_mm[1])


def crop_slices(
    data: np.ndarray,
    affine: np.ndarray,
    centre_px: tuple[float, float],
    shape: tuple[int, int],
    spacing_mm: float,
    slices: tuple[int, int],
) -> tuple[np.ndarray, CropGrid]:
    """(n, h, w) float32 crop of `shape` pixels of `spacing_mm`, centred on native in-plane
    pixel `centre_px`, of native slices slices[0]..slices[1]-1 (zero beyond the stack)."""
    arr = np.asarray(data, dtype=np.float32)
    axis, inplane = inplane_mm(affine)
    vol = np.moveaxis(arr, axis, 0)[slices[0] : slices[1]]
    f0, f1 = spacing_mm / inplane[0], spacing_mm / inplane[1]
    origin = (
        centre_px[0] - (shape[0] - 1) / 2.0 * f0,
        centre_px[1] - (shape[1] - 1) / 2.0 * f1,
    )
    c0, c1 = origin[0] + f0 * np.arange(shape[0]), origin[1] + f1 * np.arange(shape[1])
    out = _sample_planes(vol, c0, c1, "constant", steps=(f0, f1))
    grid = CropGrid(
        axis, tuple(int(s) for s in arr.shape), inplane, float(spacing_mm), origin,
        tuple(shape), (int(slices[0]), int(slices[1])),
    )  # fmt: skip
    return out, grid


def uncrop(values: np.ndarray, grid: CropGrid) -> np.ndarray:
    """Crop values back on the stack's own grid (linear; zero outside the crop)."""
    native = list(grid.native_shape)
    nz = native.pop(grid.axis)
    n0, n1 = native
    f0, f1 = grid.steps
    c0 = (np.arange(n0) - grid.origin[0]) / f0
    c1 = (np.arange(n1) - grid.origin[1]) / f1
    out = np.zeros((nz, n0, n1), dtype=np.float32)
    lo, hi = grid.slices
    out[lo:hi] = _sample_planes(np.asarray(values, dtype=np.float32), c0, c1, "constant")
    return np.moveaxis(out, 0, grid.axis)


def with_context(slices: np.ndarray, context: int) -> np.ndarray:
    """(n, h, w) -> (n, 2*context+1, h, w): each slice with its neighbours as channels.

    Neighbouring slices tell the network whether a slice is at the top or bottom of
    the brain, where a single thick slice is ambiguous; edges repeat the last slice.
    """
    n = slices.shape[0]
    idx = np.clip(np.arange(n)[:, None] + np.arange(-context, context + 1)[None, :], 0, n - 1)
    return slices[idx]
