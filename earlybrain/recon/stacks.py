"""Input stacks: validation with clear errors, slice packets, and the choice of reference.

Every check names the offending input, because the user meets these errors first
when a BIDS dataset holds a localiser, a 3D volume, a mask from another run, or a
resampled stack whose affine is no longer rigid plus scale.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from earlybrain.io.nifti import load_nifti
from earlybrain.io.provenance import source_reference
from earlybrain.io.sidecar import sidecar_path

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
    slice_thickness_mm: float | None = None  # slice profile FWHM; None: the slice spacing
    notes: tuple[str, ...] = ()  # how the acquisition parameters were obtained

    @property
    def spacing(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    @property
    def thickness(self) -> float:
        """FWHM of the slice profile: SliceThickness when known (gaps and overlaps
        between slices are then modelled), else the distance between slices."""
        if self.slice_thickness_mm is not None:
            return float(self.slice_thickness_mm)
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


def usable_slice_timing(name: str, timing: object, n_slices: int) -> tuple[np.ndarray | None, str]:
    """SliceTiming as an array when it has one finite entry per slice, else None and a
    note saying why it was not used (absent, empty as dcm2niix writes it, or malformed).
    Notes about a present but unusable entry start with "warning"."""
    if timing is None:
        return None, f"{name}: no SliceTiming"
    try:
        arr = np.asarray(timing, dtype=float).ravel()
    except (TypeError, ValueError):
        return None, f"warning: {name}: SliceTiming is not a list of numbers: ignored"
    if arr.size == 0:
        return None, f"warning: {name}: SliceTiming is empty: ignored"
    if arr.size != n_slices or not np.isfinite(arr).all():
        what = "non-finite entries" if arr.size == n_slices else f"{arr.size} entries"
        return None, f"warning: {name}: SliceTiming has {what} for {n_slices} slices: ignored"
    return arr, ""


def usable_slice_thickness(
    name: str, thickness: object, spacing_mm: float
) -> tuple[float | None, str]:
    """SliceThickness (mm) when it is a plausible slice profile for slices `spacing_mm`
    apart (0.3..3 x the spacing: a gap or an overlap, not a different scan), else None
    and a note. The profile then comes from the spacing."""
    if thickness is None:
        return None, ""
    try:
        th = float(thickness)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        th = float("nan")
    if not np.isfinite(th) or not 0.3 * spacing_mm <= th <= 3.0 * spacing_mm:
        return None, (
            f"warning: {name}: SliceThickness {thickness!r} is implausible for slices "
            f"{spacing_mm:.2f} mm apart: ignored, slice profile = slice spacing"
        )
    if abs(th - spacing_mm) <= 0.01 * spacing_mm:
        return th, ""
    kind = "gap" if th < spacing_mm else "overlap"
    return th, (
        f"{name}: slices {th:g} mm thick, {spacing_mm:.2f} mm apart "
        f"({kind} of {abs(spacing_mm - th):.2f} mm, modelled)"
    )


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
    slice_timing: object = None,
    interleave: int = 2,
    mask_name: str | None = None,
    slice_thickness: object = None,
) -> Stack:
    """Validate one stack and its mask and put the thick axis last.

    Errors name the file at fault: `mask_name` (the mask's path) for mask problems.
    Acquisition parameters (BIDS `SliceTiming`, `SliceThickness`) are used when present
    and sane; otherwise the stack's notes say what was assumed instead, never an error.
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
    notes = []
    short = Path(name).name  # notes reach the report: the file name, not the full path
    timing, why = usable_slice_timing(short, slice_timing, data.shape[2])
    if timing is not None:
        packets = packets_from_timing(timing)
        rank = np.argsort(np.argsort(timing, kind="stable"), kind="stable")
    else:
        packets = packets_from_interleave(data.shape[2], interleave)
        rank = np.argsort(np.argsort(packets * data.shape[2] + np.arange(data.shape[2])))
        notes.append(f"{why}; slice order assumed interleaved in {interleave} packet(s)")
    profile, why = usable_slice_thickness(short, slice_thickness, float(spacing[thick]))
    if why:
        notes.append(why)
    return Stack(
        name=name,
        data=data.astype(np.float32),
        mask=mask_b,
        affine=affine,
        packets=packets,
        acquisition_rank=rank,
        slice_thickness_mm=profile,
        notes=tuple(notes),
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


def _sidecar(stack: Path) -> dict:
    """The stack's JSON sidecar as a dict; {} when absent or unreadable (logged), since
    every acquisition parameter has a fallback."""
    side = sidecar_path(stack)
    if side == stack or not side.exists():
        return {}
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        log.warning("%s: sidecar not readable (%s): acquisition parameters assumed", side, exc)
        return {}
    return meta if isinstance(meta, dict) else {}


def load_stacks(
    stack_paths: list[str | os.PathLike[str]],
    mask_paths: list[str | os.PathLike[str]],
    interleave: int = 2,
) -> list[Stack]:
    """Read stacks + masks, and SliceTiming / SliceThickness from their BIDS sidecars."""
    if len(stack_paths) != len(mask_paths):
        raise ReconInputError(
            f"got {len(stack_paths)} stacks but {len(mask_paths)} masks; give one mask per stack"
        )
    stacks = []
    for sp, mp in zip(stack_paths, mask_paths, strict=True):
        img = load_nifti(sp)
        msk = load_nifti(mp)
        meta = _sidecar(Path(sp))
        data = np.asanyarray(img.dataobj).astype(np.float32)
        stacks.append(
            make_stack(
                source_reference(sp),  # names in notes and errors: inside the dataset
                data,
                img.affine,
                np.asanyarray(msk.dataobj),
                msk.affine,
                slice_timing=meta.get("SliceTiming"),
                interleave=interleave,
                mask_name=source_reference(mp),
                slice_thickness=meta.get("SliceThickness"),
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


def dark_slices(data: np.ndarray, mask: np.ndarray, ratio: float = 0.7) -> np.ndarray:
    """Slices much darker than their neighbours (signal drop-out), before any reconstruction.

    A slice's median brain intensity is compared with the mean of its neighbours'
    (k +- 1, k +- 2 where present); anatomy changes little over a few millimetres,
    a drop-out slice loses half or more of its signal. Returns a bool per slice.
    """
    nz = data.shape[2]
    med = np.full(nz, np.nan)
    for k in range(nz):
        m = mask[..., k]
        if m.sum() >= 20:
            med[k] = float(np.median(data[..., k][m]))
    out = np.zeros(nz, dtype=bool)
    for k in range(nz):
        if not np.isfinite(med[k]):
            continue
        nb = [med[j] for j in (k - 2, k - 1, k + 1, k + 2) if 0 <= j < nz and np.isfinite(med[j])]
        if len(nb) >= 2:
            ref = float(np.median(nb))
            out[k] = ref > 0 and med[k] < ratio * ref
    return out
