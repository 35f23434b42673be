"""Rigid transforms in torch, the reconstruction grid, and earlybrain's pose convention.

Internally a slice's pose is the map T_k from scanner millimetres (where the slice
was acquired) to the reconstruction's world millimetres, stored as (R_k, t_k) in
coordinates centred on `origin` (the brain centre) for float32 accuracy. Outputs use
`earlybrain.geometry`'s convention instead: M_k = T_k^-1 as six numbers about a centre,
the same as the simulator's motion table, so they can be compared directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from earlybrain.geometry import rigid_params


def axis_angle_matrix(w: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) of axis-angle vectors (..., 3) in radians (Rodrigues)."""
    theta = torch.linalg.norm(w, dim=-1, keepdim=True).unsqueeze(-1)  # (...,1,1)
    K = torch.zeros(*w.shape[:-1], 3, 3, dtype=w.dtype, device=w.device)
    K[..., 0, 1] = -w[..., 2]
    K[..., 0, 2] = w[..., 1]
    K[..., 1, 0] = w[..., 2]
    K[..., 1, 2] = -w[..., 0]
    K[..., 2, 0] = -w[..., 1]
    K[..., 2, 1] = w[..., 0]
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(K)
    small = theta < 1e-8
    safe = torch.where(small, torch.ones_like(theta), theta)
    a = torch.where(small, torch.ones_like(theta), torch.sin(safe) / safe)
    b = torch.where(small, 0.5 * torch.ones_like(theta), (1 - torch.cos(safe)) / safe**2)
    return eye + a * K + b * (K @ K)


@dataclass
class Grid:
    """Isotropic reconstruction grid: world = origin + rot @ (h * idx + corner)."""

    shape: tuple[int, int, int]
    voxel: float
    rot: np.ndarray  # (3,3) columns: grid axes in world
    corner: np.ndarray  # (3,) centred position of voxel 0 in the rotated frame
    origin: np.ndarray  # (3,) world mm subtracted from every coordinate

    @property
    def affine(self) -> np.ndarray:
        """Voxel -> scanner world mm (for NIfTI)."""
        A = np.eye(4)
        A[:3, :3] = self.rot * self.voxel
        A[:3, 3] = self.origin + self.rot @ self.corner
        return A

    def world_to_grid(self, device: torch.device) -> torch.Tensor:
        """(3,4) map: centred world -> grid_sample coordinates (z, y, x order; align_corners)."""
        inv = np.eye(4)
        inv[:3, :3] = self.rot.T / self.voxel
        inv[:3, 3] = -self.corner / self.voxel
        scale = 2.0 / (np.array(self.shape, dtype=float) - 1.0)
        norm = np.eye(4)
        norm[:3, :3] = np.diag(scale)
        norm[:3, 3] = -1.0
        M = (norm @ inv)[[2, 1, 0], :]
        return torch.tensor(M, dtype=torch.float32, device=device)

    def centred_points(self) -> np.ndarray:
        """Centred world coordinates of every voxel (shape + (3,))."""
        idx = np.stack(np.meshgrid(*[np.arange(n) for n in self.shape], indexing="ij"), -1)
        return (idx * self.voxel + self.corner) @ self.rot.T


def make_grid(points_world: np.ndarray, rot: np.ndarray, voxel: float, margin: float) -> Grid:
    """Grid aligned with `rot` (the reference stack's axes) covering `points_world` + margin."""
    origin = points_world.mean(axis=0)
    local = (points_world - origin) @ rot  # coordinates along the grid axes
    lo = local.min(axis=0) - margin
    hi = local.max(axis=0) + margin
    shape = tuple(int(np.ceil((h - lo_) / voxel)) + 1 for lo_, h in zip(lo, hi, strict=True))
    centre = 0.5 * (lo + hi)
    corner = centre - voxel * (np.array(shape) - 1) / 2.0
    return Grid(shape=shape, voxel=float(voxel), rot=rot, corner=corner, origin=origin)


def to_matrices(R: torch.Tensor, t: torch.Tensor, origin: np.ndarray) -> np.ndarray:
    """(K,4,4) world-mm matrices of T_k (scanner -> reconstruction world)."""
    R = R.detach().double().cpu().numpy()
    t = t.detach().double().cpu().numpy()
    K = R.shape[0]
    T = np.tile(np.eye(4), (K, 1, 1))
    T[:, :3, :3] = R
    # centred: q = R p_c + t, with p_c = p - o, q_c = q - o
    T[:, :3, 3] = t + origin - np.einsum("kij,j->ki", R, origin)
    return T


def from_matrices(
    T: np.ndarray, origin: np.ndarray, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of `to_matrices`: centred (R, t) float64 tensors from (K,4,4) world matrices."""
    T = np.asarray(T, dtype=np.float64)
    R = T[:, :3, :3]
    t = T[:, :3, 3] + np.einsum("kij,j->ki", R, origin) - origin
    return (
        torch.as_tensor(R, dtype=torch.float64, device=device),
        torch.as_tensor(t, dtype=torch.float64, device=device),
    )


def pose_table_params(T: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """(K,6) poses M_k = T_k^-1 in earlybrain.geometry's convention about `centre`."""
    return np.stack([rigid_params(np.linalg.inv(Tk), centre) for Tk in T])


def interpolate_in_time(
    R: torch.Tensor,
    t: torch.Tensor,
    stack: np.ndarray,
    rank: np.ndarray,
    good: np.ndarray,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each slice's pose interpolated from the nearest `good` slices before and after it
    in acquisition order (same stack): fetal motion is continuous over a second, so this
    is the best guess for slices that cannot be registered on their own."""
    Rn = R.detach().cpu().double().numpy()
    tn = t.detach().cpu().double().numpy()
    Ro, to = Rn.copy(), tn.copy()
    for s in np.unique(stack):
        ks = np.nonzero(stack == s)[0]
        ks = ks[np.argsort(rank[ks])]
        g = [k for k in ks if good[k]]
        if not g:
            continue
        pos = {k: i for i, k in enumerate(ks)}
        gpos = np.array([pos[k] for k in g])
        for k in ks:
            i = pos[k]
            j = np.searchsorted(gpos, i)
            lo = g[j - 1] if j > 0 else None
            hi = g[j] if j < len(g) else None
            if hi is not None and pos[hi] == i:
                continue  # good slices keep their own pose
            if lo is None or hi is None:
                src = hi if lo is None else lo
                Ro[k], to[k] = Rn[src], tn[src]
                continue
            a = (i - pos[lo]) / (pos[hi] - pos[lo])
            rel = Rotation.from_matrix(Rn[hi] @ Rn[lo].T).as_rotvec()
            Ro[k] = Rotation.from_rotvec(a * rel).as_matrix() @ Rn[lo]
            to[k] = (1 - a) * tn[lo] + a * tn[hi]
    return (
        torch.as_tensor(Ro, dtype=R.dtype, device=R.device),
        torch.as_tensor(to, dtype=t.dtype, device=t.device),
    )
