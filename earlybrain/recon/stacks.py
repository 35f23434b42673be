"""Input stacks: validation with clear errors, slice packets, and the choice of reference.

Every check names the offending input, because the user meets these errors first
when a BIDS dataset holds a localiser, a 3D volume, a mask from another run, or a
resampled stack whose affine is no longer rigid plus scale.
"""

from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from earlybrain.io.nifti import load_nifti

log = logging.getLogger(__name__)


class ReconInputError(ValueError):
    """An input the reconstruction cannot use; the message names it and says why."""


@dataclass
class Stack:
    """One thick-slice stack; slices run along array axis 2."""

    name: str
    data: np.ndarray  # float32 (nx, ny, nz)
    mask: np.ndarray  # bool, same shape: brain
    affine: np.ndarray  # 4x4 voxel -> scanner mm
    packets: np.ndarray  # (nz,) packet index of each slice
    acquisition_rank: np.ndarray  # (nz,) position of each slice in acquisition order

    @property
    def spacing(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    @property
    def thickness(self) -> float:
        return float(self.spacing[2])

    @property
    def normal(self) -> np.ndarray:
        n = self.affine[:3, 2]
        return n / np.linalg.norm(n)


def packets_from_timing(slice_timing: np.ndarray) -> np.ndarray:
    """Packet index per slice: a new packet starts where, in time order, the slice index drops.

    Interleave 2 acquired as 0,2,4,..,1,3,5 gives two packets; a sequential stack gives one.
    """
    order = np.argsort(np.asarray(slice_timing, dtype=float), kind="stable")
    packets = np.zeros(order.size, dtype=np.int64)
    p = 0
    for a, b in itertools.pairwise(order):
        if b < a:
            p += 1
        packets[b] = p
    return packets


def packets_from_interleave(n_slices: int, interleave: int) -> np.ndarray:
    return np.arange(n_slices) % max(interleave, 1)


def _check_affine(name: str, affine: np.ndarray) -> None:
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise ReconInputError(f"{name}: affine is not a finite 4x4 matrix")
    cols = affine[:3, :3]
    norms = np.linalg.norm(cols, axis=0)
    if (norms <= 1e-6).any():
        raise ReconInputError(f"{name}: affine has a zero voxel size")
    unit = cols / norms
    gram = unit.T @ unit
    if np.abs(gram - np.eye(3)).max() > 1e-3:
        raise ReconInputError(
            f"{name}: inconsistent orientation: the affine is not rigid + scale "
            "(sheared or resampled stack); use the stack as acquired"
        )


def make_stack(
    name: str,
    data: np.ndarray,
    affine: np.ndarray,
    mask: np.ndarray,
    mask_affine: np.ndarray | None = None,
    slice_timing: np.ndarray | None = None,
    interleave: int = 2,
    mask_name: str | None = None,
) -> Stack:
    """Validate one stack and its mask and put the thick axis last.

    Errors name the file at fault: `mask_name` (the mask's path) for mask problems.
    """
    mname = f"{mask_name} (mask of {name})" if mask_name else f"{name}: mask"
    data = np.asarray(data)
    mask = np.asarray(mask)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if mask.ndim == 4 and mask.shape[3] == 1:
        mask = mask[..., 0]
    if data.ndim != 3:
        raise ReconInputError(f"{name}: expected a 3D stack, got shape {data.shape}")
    affine = np.asarray(affine, dtype=np.float64)
    _check_affine(name, affine)
    if mask.shape != data.shape:
        raise ReconInputError(
            f"{mname}: shape {mask.shape} does not match the stack's {data.shape}"
        )
    if mask_affine is not None:
        mask_affine = np.asarray(mask_affine, dtype=np.float64)
        if np.abs(mask_affine - affine).max() > 1e-2:
            raise ReconInputError(f"{mname}: affine differs from the stack's affine")
    if not np.isfinite(data).all():
        raise ReconInputError(f"{name}: stack contains NaN or infinite values")
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    thick = int(np.argmax(spacing)) if spacing.max() > spacing.min() * 1.01 else 2
    if thick != 2:  # put the slice axis last
        order = [a for a in range(3) if a != thick] + [thick]
        data = np.transpose(data, order)
        mask = np.transpose(mask, order)
        affine = affine.copy()
        affine[:3, :3] = affine[:3, order]
    if data.shape[2] < 2:
        raise ReconInputError(f"{name}: a single slice cannot be reconstructed (need >= 2)")
    mask_b = mask > 0.5
    if not mask_b.any():
        raise ReconInputError(f"{mname}: brain mask is empty")
    if np.count_nonzero(mask_b.any(axis=(0, 1))) < 2:
        raise ReconInputError(f"{mname}: brain mask covers a single slice (need >= 2)")
    if slice_timing is not None:
        timing = np.asarray(slice_timing, dtype=float)
        if timing.size != data.shape[2]:
            raise ReconInputError(
                f"{name}: SliceTiming has {timing.size} entries for {data.shape[2]} slices"
            )
        packets = packets_from_timing(timing)
        rank = np.argsort(np.argsort(timing, kind="stable"), kind="stable")
    else:
        packets = packets_from_interleave(data.shape[2], interleave)
        rank = np.argsort(np.argsort(packets * data.shape[2] + np.arange(data.shape[2])))
    return Stack(
        name=name,
        data=data.astype(np.float32),
        mask=mask_b,
        affine=affine,
        packets=packets,
        acquisition_rank=rank,
    )


def check_stack_set(stacks: list[Stack]) -> None:
    """Stacks of one subject must overlap in scanner space; else something is mislabelled."""
    if not stacks:
        raise ReconInputError("no stacks given")
    centroids, extents = [], []
    for s in stacks:
        idx = np.argwhere(s.mask).astype(float)
        pts = idx @ s.affine[:3, :3].T + s.affine[:3, 3]
        centroids.append(pts.mean(axis=0))
        extents.append(float(np.linalg.norm(pts.max(axis=0) - pts.min(axis=0))))
    ref = np.median(np.array(centroids), axis=0)
    for s, c, e in zip(stacks, centroids, extents, strict=True):
        d = float(np.linalg.norm(c - ref))
        if d > max(30.0, 0.5 * float(np.median(extents))):
            raise ReconInputError(
                f"{s.name}: brain mask lies {d:.0f} mm from the other stacks' brains: "
                "inconsistent orientation or position (wrong affine or another subject?)"
            )
        del e


def load_stacks(
    stack_paths: list[str | os.PathLike[str]],
    mask_paths: list[str | os.PathLike[str]],
    interleave: int = 2,
) -> list[Stack]:
    """Read stacks + masks (and BIDS SliceTiming from the sidecar when present)."""
    import json

    if len(stack_paths) != len(mask_paths):
        raise ReconInputError(
            f"got {len(stack_paths)} stacks but {len(mask_paths)} masks; give one mask per stack"
        )
    stacks = []
    for sp, mp in zip(stack_paths, mask_paths, strict=True):
        img = load_nifti(sp)
        msk = load_nifti(mp)
        timing = None
        side = Path(str(sp).replace(".nii.gz", ".json").replace(".nii", ".json"))
        if side.exists() and side != Path(sp):
            try:
                meta = json.loads(side.read_text())
                # dcm2niix writes "SliceTiming": [] when the scanner did not record it
                timing = meta.get("SliceTiming") or None
            except (OSError, ValueError):
                timing = None
        data = np.asanyarray(img.dataobj).astype(np.float32)
        stacks.append(
            make_stack(
                str(sp),
                data,
                img.affine,
                np.asanyarray(msk.dataobj),
                msk.affine,
                slice_timing=timing,
                interleave=interleave,
                mask_name=str(mp),
            )
        )
    check_stack_set(stacks)
    return stacks


def motion_score(stack: Stack) -> float:
    """Inter-slice inconsistency of a stack: 1 - NCC(slice k, mean of its neighbours).

    Interleaved neighbours come from another packet, seconds apart, so motion between
    packets breaks the continuity that anatomy alone would give.
    """
    d = stack.data
    m = ndimage.binary_dilation(stack.mask, np.ones((5, 5, 1), bool))
    scores, counts = [], []
    for k in range(1, d.shape[2] - 1):
        sel = m[..., k] & m[..., k - 1] & m[..., k + 1]
        n = int(sel.sum())
        if n < 30:
            continue
        a = d[..., k][sel]
        b = 0.5 * (d[..., k - 1][sel] + d[..., k + 1][sel])
        a = a - a.mean()
        b = b - b.mean()
        den = float(np.sqrt((a * a).sum() * (b * b).sum()))
        if den <= 0:
            continue
        scores.append(1.0 - float((a * b).sum()) / den)
        counts.append(n)
    if not scores:
        return 1.0
    return float(np.average(scores, weights=counts))


def choose_reference(stacks: list[Stack]) -> tuple[int, list[float], str]:
    """Index of the reference stack (least inter-slice inconsistency) and the reason."""
    scores = [motion_score(s) for s in stacks]
    ref = int(np.argmin(scores))
    listing = ", ".join(f"{Path(s.name).name}={v:.3f}" for s, v in zip(stacks, scores, strict=True))
    why = (
        f"{Path(stacks[ref].name).name} has the least inter-slice "
        f"inconsistency (1 - NCC of each slice with its neighbours' mean; lower = less "
        f"motion): {listing}"
    )
    return ref, scores, why
