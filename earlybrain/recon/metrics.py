"""Quality measures of a reconstruction: consistency, motion summaries, and truth comparisons.

The truth comparisons (pose error after the best global rigid transform, NCC inside the
brain) are for tests and benchmarks on simulated data; the rest is reported for every
subject as QC.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def ncc(a: np.ndarray, b: np.ndarray, w: np.ndarray | None = None) -> float:
    """(Weighted) normalised cross-correlation of two equally shaped arrays."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    w = np.ones_like(a) if w is None else np.asarray(w, dtype=np.float64).ravel()
    sw = w.sum()
    if sw <= 0:
        return float("nan")
    a = a - (w * a).sum() / sw
    b = b - (w * b).sum() / sw
    den = np.sqrt((w * a * a).sum() * (w * b * b).sum())
    return float((w * a * b).sum() / den) if den > 0 else float("nan")


def slice_ncc(y: np.ndarray, sim: np.ndarray, slice_of: np.ndarray, n_slices: int) -> np.ndarray:
    """NCC between observed and simulated pixels of every slice (NaN for < 10 pixels)."""
    out = np.full(n_slices, np.nan)
    order = np.argsort(slice_of, kind="stable")
    bounds = np.searchsorted(slice_of[order], np.arange(n_slices + 1))
    for k in range(n_slices):
        sel = order[bounds[k] : bounds[k + 1]]
        if sel.size >= 10:
            out[k] = ncc(y[sel], sim[sel])
    return out


def kabsch(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """4x4 rigid transform G minimising sum ||G src - dst||^2 (points (n,3))."""
    cs, cd = src.mean(0), dst.mean(0)
    H = (src - cs).T @ (dst - cd)
    U, _, Vt = np.linalg.svd(H)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
    R = Vt.T @ D @ U.T
    G = np.eye(4)
    G[:3, :3] = R
    G[:3, 3] = cd - R @ cs
    return G


def apply4(T: np.ndarray, p: np.ndarray) -> np.ndarray:
    return p @ T[:3, :3].T + T[:3, 3]


def slice_corners(mask: np.ndarray, affine: np.ndarray) -> list[np.ndarray | None]:
    """Per slice: the 4 in-plane corners (scanner mm) of the mask's bounding box, or None."""
    out: list[np.ndarray | None] = []
    for k in range(mask.shape[2]):
        ij = np.argwhere(mask[..., k])
        if ij.size == 0:
            out.append(None)
            continue
        (i0, j0), (i1, j1) = ij.min(0), ij.max(0)
        v = np.array([[i0, j0, k], [i0, j1, k], [i1, j0, k], [i1, j1, k]], dtype=float)
        out.append(apply4(affine, v))
    return out


def pose_error(
    T_est: np.ndarray, T_true: np.ndarray, corners: list[np.ndarray | None]
) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean corner displacement (mm) between estimated and true slice maps.

    T_est (K,4,4): scanner -> reconstruction world; T_true (K,4,4): scanner -> truth
    world (M_k^-1 of the simulator). The reconstruction's frame is arbitrary, so the
    best global rigid G (least squares over all corners) is applied first. Returns
    (mean error, per-slice error (NaN for slices without brain), G).
    """
    src, dst, owner = [], [], []
    for k, c in enumerate(corners):
        if c is None:
            continue
        src.append(apply4(T_est[k], c))
        dst.append(apply4(T_true[k], c))
        owner.append(np.full(len(c), k))
    src_a, dst_a, own = np.concatenate(src), np.concatenate(dst), np.concatenate(owner)
    G = kabsch(src_a, dst_a)
    err = np.linalg.norm(apply4(G, src_a) - dst_a, axis=1)
    per = np.full(len(corners), np.nan)
    for k in np.unique(own):
        per[k] = err[own == k].mean()
    return float(err.mean()), per, G


def motion_summary(T: np.ndarray, points: list[np.ndarray | None]) -> dict[str, float]:
    """Motion within one stack: slice displacement from the stack's mean rigid pose.

    `points` (per slice, scanner mm, e.g. brain-box corners) are mapped by every T_k; the
    stack's mean pose is the rigid fit to all of them, and each slice's displacement is
    its mean distance from it (and the rotation angle between them).
    """
    src, dst, owner = [], [], []
    for k, p in enumerate(points):
        if p is None:
            continue
        src.append(p)
        dst.append(apply4(T[k], p))
        owner.append(np.full(len(p), k))
    if not src:
        return {
            "mean_displacement_mm": 0.0,
            "max_displacement_mm": 0.0,
            "mean_rotation_deg": 0.0,
            "max_rotation_deg": 0.0,
        }
    src_a, dst_a, own = np.concatenate(src), np.concatenate(dst), np.concatenate(owner)
    G = kabsch(src_a, dst_a)
    err = np.linalg.norm(apply4(G, src_a) - dst_a, axis=1)
    disp, rot = [], []
    for k in np.unique(own):
        disp.append(err[own == k].mean())
        Rrel = T[k][:3, :3] @ G[:3, :3].T
        rot.append(np.degrees(np.arccos(np.clip((np.trace(Rrel) - 1) / 2, -1, 1))))
    return {
        "mean_displacement_mm": float(np.mean(disp)),
        "max_displacement_mm": float(np.max(disp)),
        "mean_rotation_deg": float(np.mean(rot)),
        "max_rotation_deg": float(np.max(rot)),
    }


def sharpness(volume: np.ndarray, mask: np.ndarray, voxel_mm: float) -> float:
    """Band-pass (difference of Gaussians, 1 and 3 mm) energy inside the mask relative to
    the mean intensity: tissue edges at the scale of cortex and ventricles. Motion blur
    lowers it; compare volumes on the same mask (a stripy artefact also has edges, but
    at the slice scale, which the 3 mm Gaussian takes out less than it adds noise)."""
    v = volume.astype(np.float64)
    dog = ndimage.gaussian_filter(v, 1.0 / voxel_mm) - ndimage.gaussian_filter(v, 3.0 / voxel_mm)
    m = mask.astype(bool)
    mean = float(v[m].mean()) if m.any() else 0.0
    return float(dog[m].std() / mean) if mean > 0 else 0.0


def largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask.astype(bool)
    sizes = ndimage.sum(mask, lab, range(1, n + 1))
    return lab == (int(np.argmax(sizes)) + 1)
