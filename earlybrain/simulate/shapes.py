"""Point-set geometry for analytic scenes: shapes tested or measured at many points at once.

The simulated pregnancy is built from ellipsoids, boxes, tubes along polylines and curves,
evaluated at whatever points a stack samples, so these work on (3, n) arrays (one row per
coordinate), where elementwise arithmetic on contiguous rows is several times faster than
reductions over (n, 3).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def rel(P: np.ndarray, centre: np.ndarray, rot: np.ndarray | None = None) -> np.ndarray:
    """Points (3, n) relative to a centre, in a rotated frame (columns of rot = axes)."""
    D = P - np.asarray(centre, np.float32)[:, None]
    return D if rot is None else rot.T.astype(np.float32) @ D


def norm2(D: np.ndarray, semi: np.ndarray | None = None) -> np.ndarray:
    if semi is None:
        return D[0] * D[0] + D[1] * D[1] + D[2] * D[2]
    a, b, c = (float(s) for s in semi)
    return (D[0] / a) ** 2 + (D[1] / b) ** 2 + (D[2] / c) ** 2


def ray_depth(D: np.ndarray, semi: np.ndarray) -> np.ndarray:
    """Depth below an ellipsoid's (or ellipse's) surface along the ray from its centre,
    mm (negative outside), for points D relative to its centre (rows = axes)."""
    r2 = sum((D[i] / float(semi[i])) ** 2 for i in range(len(semi)))
    dist = np.sqrt(sum(D[i] * D[i] for i in range(len(semi))))
    return dist * (1.0 / np.sqrt(np.maximum(r2, 1e-12)) - 1.0)


def in_ellipsoid(P: np.ndarray, centre: np.ndarray, semi: np.ndarray) -> np.ndarray:
    return norm2(rel(P, centre), semi) <= 1.0


def in_box(P: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return (
        (P[0] >= lo[0]) & (P[0] <= hi[0]) & (P[1] >= lo[1]) & (P[1] <= hi[1])
        & (P[2] >= lo[2]) & (P[2] <= hi[2])
    )  # fmt: skip


def segment_distance(P: np.ndarray, poly: np.ndarray, reach: float) -> tuple[np.ndarray, ...]:
    """Distance to a polyline (inf beyond `reach`) and the arc-length fraction of the
    nearest point on it; only points in each segment's box are measured."""
    seg = np.diff(poly, axis=0)
    lengths = np.sqrt((seg**2).sum(-1))
    cum = np.concatenate([[0.0], np.cumsum(lengths)])
    best = np.full(P.shape[1], np.inf, np.float32)
    frac = np.zeros(P.shape[1], np.float32)
    for i in range(seg.shape[0]):
        lo = np.minimum(poly[i], poly[i + 1]) - reach
        hi = np.maximum(poly[i], poly[i + 1]) + reach
        idx = np.flatnonzero(in_box(P, lo, hi))
        if idx.size == 0:
            continue
        D = rel(P[:, idx], poly[i])
        g = seg[i].astype(np.float32)
        t = np.clip((g[0] * D[0] + g[1] * D[1] + g[2] * D[2]) / max(lengths[i] ** 2, 1e-9), 0, 1)
        d = np.sqrt(norm2(D - g[:, None] * t))
        closer = (d < best[idx]) & (d <= reach)
        best[idx[closer]] = d[closer]
        frac[idx[closer]] = (cum[i] + t[closer] * lengths[i]) / cum[-1]
    return best, frac


def bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int = 8) -> np.ndarray:
    t = np.linspace(0, 1, n + 1)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def rotation_taking(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation that takes direction a onto direction b."""
    a, b = unit(a), unit(b)
    axis = np.cross(a, b)
    s, c = float(np.linalg.norm(axis)), float(np.dot(a, b))
    if s < 1e-9:  # parallel or opposite
        perp = unit(np.cross(a, [1.0, 0, 0] if abs(a[0]) < 0.9 else [0, 1.0, 0]))
        return np.eye(3) if c > 0 else Rotation.from_rotvec(np.pi * perp).as_matrix()
    return Rotation.from_rotvec(axis / s * np.arctan2(s, c)).as_matrix()


def in_cavity(rng: np.random.Generator, semi: np.ndarray, margin: float) -> np.ndarray:
    """A uniform random point of an ellipsoid shrunk by `margin` (its own frame)."""
    u = unit(rng.normal(0, 1, 3)) * rng.uniform(0, 1) ** (1 / 3)
    return u * np.maximum(semi - margin, 5.0)
