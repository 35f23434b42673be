"""Find the fetal head in a whole stack before masking it.

A clinical stack shows the maternal abdomen with the fetal head somewhere in it; the
brain is a small part of the field of view and bright round things (bowel, bladder,
fetal stomach, eyes) are everywhere. The localiser network sees every slice whole at
3 mm (a 480 mm canvas), which is enough to tell a head by its skull, fluid and brain
inside, and its brain probability is grouped into 3D candidates. One brain per stack:
with twins, the candidate nearest the stack's centre, with a note. The crop around it
is then masked at the stack's own resolution (`inference`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from earlybrain.io.nifti import voxel_sizes
from earlybrain.preprocess.masking.slices import SliceGrid, native_coords

# a candidate brain must hold at least this fraction of the largest candidate's volume
# to count as a second brain (twins); smaller ones are spurious detections
TWIN_FRACTION = 0.3
# a smaller candidate is not a brain (the workflow's masking.min_volume_ml)
MIN_BRAIN_ML = 1.0


@dataclass(frozen=True)
class Candidate:
    """One connected brain-like region found by the localiser."""

    volume_ml: float
    centre_px: tuple[float, float, float]  # native voxel coordinates
    slices: tuple[int, int]  # first, last+1 slice index along the slice axis
    inplane_box_px: tuple[float, float, float, float]  # lo0, hi0, lo1, hi1 (native pixels)
    distance_mm: float  # of its centre from the stack's centre


@dataclass
class Localisation:
    candidates: list[Candidate]
    chosen: Candidate | None
    note: str


def pad_to_canvas(x: np.ndarray, canvas: int, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Zero-pad (n, h, w) slices to at least `canvas` (a multiple of `multiple`), centred."""
    h, w = x.shape[-2:]
    H = max(canvas, -(-h // multiple) * multiple)
    W = max(canvas, -(-w // multiple) * multiple)
    top, left = (H - h) // 2, (W - w) // 2
    out = np.zeros((*x.shape[:-2], H, W), dtype=x.dtype)
    out[..., top : top + h, left : left + w] = x
    return out, (top, left)


def candidates(
    prob: np.ndarray,
    grid: SliceGrid,
    affine: np.ndarray,
    threshold: float = 0.5,
    min_volume_ml: float = MIN_BRAIN_ML,
) -> list[Candidate]:
    """Brain candidates of the coarse probability (n_slices, h, w) of one stack.

    Slices are linked to their neighbours after a small in-plane dilation, so that a
    head that moved a few millimetres between two slices stays one candidate.
    """
    fg = prob >= threshold
    if not fg.any():
        return []
    linked = ndimage.binary_dilation(fg, structure=np.ones((1, 5, 5), bool))
    lab, _ = ndimage.label(linked, structure=np.ones((3, 3, 3), bool))
    lab = np.where(fg, lab, 0)
    sp = voxel_sizes(affine)
    slice_mm = float(sp[grid.axis])
    px_ml = grid.target_mm**2 * slice_mm / 1000.0
    f0, f1 = grid.factors
    native = list(grid.native_shape)
    n_slices = native.pop(grid.axis)
    centre_stack = (np.array(grid.native_shape, float) - 1) / 2.0
    out = []
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None:
            continue
        region = lab[sl] == i
        vol = float(region.sum() * px_ml)
        if vol < min_volume_ml:
            continue
        w = prob[sl] * region
        idx = np.indices(region.shape).reshape(3, -1)
        com = (idx * w.reshape(-1)).sum(1) / w.sum() + np.array([s.start for s in sl])
        c0 = native_coords(com[1], native[0], grid.shape[0], f0)
        c1 = native_coords(com[2], native[1], grid.shape[1], f1)
        centre = [0.0, 0.0, 0.0]
        plane = [a for a in range(3) if a != grid.axis]
        centre[grid.axis], centre[plane[0]], centre[plane[1]] = float(com[0]), c0, c1
        dist = float(np.linalg.norm((np.array(centre) - centre_stack) * sp))
        box = (
            native_coords(sl[1].start - 0.5, native[0], grid.shape[0], f0),
            native_coords(sl[1].stop - 0.5, native[0], grid.shape[0], f0),
            native_coords(sl[2].start - 0.5, native[1], grid.shape[1], f1),
            native_coords(sl[2].stop - 0.5, native[1], grid.shape[1], f1),
        )
        out.append(
            Candidate(vol, tuple(centre), (sl[0].start, min(sl[0].stop, n_slices)), box, dist)
        )
    return sorted(out, key=lambda c: -c.volume_ml)


def choose(cands: list[Candidate]) -> Localisation:
    """One brain: the largest candidate, or with several brain-sized ones (twins) the
    one nearest the stack's centre."""
    if not cands:
        return Localisation([], None, "no fetal head found")
    largest = cands[0].volume_ml
    brains = [c for c in cands if c.volume_ml >= TWIN_FRACTION * largest]
    if len(brains) == 1:
        return Localisation(cands, brains[0], "")
    chosen = min(brains, key=lambda c: c.distance_mm)
    others = ", ".join(
        f"{c.volume_ml:.0f} mL at {c.distance_mm:.0f} mm" for c in brains if c is not chosen
    )
    note = (
        f"{len(brains)} fetal brains found (twins?): kept the one nearest the stack centre "
        f"({chosen.volume_ml:.0f} mL at {chosen.distance_mm:.0f} mm from it); also found {others}"
    )
    return Localisation(cands, chosen, note)
