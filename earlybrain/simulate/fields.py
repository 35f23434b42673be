"""Smooth random fields in scanner millimetres: organic shapes and tissue texture.

A field is white noise on a coarse grid, smoothed, and interpolated (trilinear) at any
point. Evaluating at points, not on a grid, lets one scene be sampled by stacks of any
orientation and resolution without resampling a rasterised copy.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


class SmoothField:
    """`channels` smooth random fields of unit standard deviation over a cube."""

    def __init__(
        self,
        rng: np.random.Generator,
        centre: np.ndarray,
        half_extent_mm: float,
        cell_mm: float,
        channels: int = 1,
    ) -> None:
        n = int(np.ceil(2 * half_extent_mm / cell_mm)) + 3
        self.origin = np.asarray(centre, dtype=np.float64) - (n - 1) / 2.0 * cell_mm
        self.cell = float(cell_mm)
        grids = []
        for _ in range(channels):
            g = ndimage.gaussian_filter(rng.standard_normal((n, n, n)), 1.0, mode="wrap")
            grids.append((g / max(float(g.std()), 1e-6)).astype(np.float32))
        self.grids = grids

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        """Values at points (..., 3): shape (..., channels)."""
        idx = ((pts.reshape(-1, 3) - self.origin) / self.cell).T
        out = [ndimage.map_coordinates(g, idx, order=1, mode="nearest") for g in self.grids]
        return np.stack(out, axis=-1).reshape(*pts.shape[:-1], len(self.grids))
