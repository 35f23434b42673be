"""Bridge between earlybrain's arrays (RAS affines, nibabel) and ANTsPy images/transforms.

Why a module of its own: ITK works in LPS physical coordinates while NIfTI affines and
the rest of earlybrain use RAS, and ANTs transforms map *fixed* points to *moving*
points (the direction used to pull the moving image onto the fixed grid). Every sign
flip and direction convention lives here, once, with a test.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # ants is imported lazily: it is slow to load and reads ITK settings
    import ants as ants_t

# RAS <-> LPS: negate x and y
FLIP = np.diag([-1.0, -1.0, 1.0])


def set_threads(threads: int | None) -> None:
    """Fix ITK's thread count (before ANTs starts its pool) so runs are reproducible.

    ANTs' random sampling is seeded, but metric sums are split per thread, so the
    number of threads is part of what makes a result repeatable.
    """
    if threads:
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(int(threads))


def ants_module() -> ants_t:
    import ants

    return ants


def to_ants(data: np.ndarray, affine: np.ndarray) -> ants_t.ANTsImage:
    """An ANTs image with the same voxels and physical placement as (data, RAS affine)."""
    ants = ants_module()
    affine = np.asarray(affine, dtype=np.float64)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    direction = FLIP @ (affine[:3, :3] / spacing)
    origin = FLIP @ affine[:3, 3]
    return ants.from_numpy(
        np.ascontiguousarray(data, dtype=np.float32),
        origin=[float(v) for v in origin],
        spacing=[float(v) for v in spacing],
        direction=direction,
    )


def ras_affine(img: ants_t.ANTsImage) -> np.ndarray:
    """The RAS voxel->world affine of an ANTs image."""
    A = np.eye(4)
    A[:3, :3] = FLIP @ np.asarray(img.direction) @ np.diag(img.spacing)
    A[:3, 3] = FLIP @ np.asarray(img.origin)
    return A


def write_matrix_transform(M_ras: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write a 4x4 RAS point map (fixed point -> moving point) as an ITK affine .mat file."""
    ants = ants_module()
    M_ras = np.asarray(M_ras, dtype=np.float64)
    lin = FLIP @ M_ras[:3, :3] @ FLIP
    trans = FLIP @ M_ras[:3, 3]
    tx = ants.create_ants_transform(
        transform_type="AffineTransform",
        dimension=3,
        matrix=lin,
        translation=[float(v) for v in trans],
        center=[0.0, 0.0, 0.0],
    )
    path = Path(path)
    ants.write_transform(tx, str(path))
    return path


def read_matrix_transform(path: str | os.PathLike[str]) -> np.ndarray:
    """Inverse of `write_matrix_transform`: the 4x4 RAS point map of an ITK .mat file."""
    ants = ants_module()
    tx = ants.read_transform(str(path))
    params = np.asarray(tx.parameters, dtype=np.float64)
    centre = np.asarray(tx.fixed_parameters, dtype=np.float64)
    lin = params[:9].reshape(3, 3)
    trans = params[9:12]
    # ITK: y = A (x - c) + t + c
    offset = trans + centre - lin @ centre
    M = np.eye(4)
    M[:3, :3] = FLIP @ lin @ FLIP
    M[:3, 3] = FLIP @ offset
    return M
