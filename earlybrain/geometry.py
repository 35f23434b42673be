"""Rigid transforms in scanner (world) millimetres.

Convention used throughout earlybrain: a rigid pose is six numbers
(rx, ry, rz in degrees, tx, ty, tz in mm) acting about a centre c:

    M(p) = R @ (p - c) + c + t,    R = Rz(rz) @ Ry(ry) @ Rx(rx)

Rotating about the head centre rather than the scanner origin keeps rotation and
translation decoupled, so "10 degrees" means the same displacement wherever the
fetus lies in the scanner.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def rotation_matrix(rx: float, ry: float, rz: float) -> np.ndarray:
    """R = Rz @ Ry @ Rx, angles in degrees (extrinsic x, then y, then z)."""
    return Rotation.from_euler("xyz", [rx, ry, rz], degrees=True).as_matrix()


def rigid_matrix(params: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """4x4 homogeneous matrix of the pose (rx, ry, rz, tx, ty, tz) about `centre`."""
    params = np.asarray(params, dtype=np.float64)
    centre = np.asarray(centre, dtype=np.float64)
    R = rotation_matrix(*params[:3])
    M = np.eye(4)
    M[:3, :3] = R
    M[:3, 3] = centre - R @ centre + params[3:6]
    return M


def rigid_params(M: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Inverse of `rigid_matrix`: the six pose numbers of a rigid 4x4 matrix about `centre`."""
    R = M[:3, :3]
    angles = Rotation.from_matrix(R).as_euler("xyz", degrees=True)
    t = M[:3, 3] - centre + R @ centre
    return np.concatenate([angles, t])


def apply(M: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to points of shape (..., 3)."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ M[:3, :3].T + M[:3, 3]


def voxel_grid_world(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """World coordinates (shape + (3,)) of every voxel centre of an image."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape[:3]], indexing="ij"), axis=-1)
    return apply(affine, idx.astype(np.float64))
