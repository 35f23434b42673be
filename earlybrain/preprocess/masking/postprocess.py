"""3D clean-up of slice-wise predictions: one brain, no holes, one area maximum.

A slice-wise network can fire on a bright blob in one slice (an eye, a loop of
bowel); the brain is the one large 3D component, and a slice whose mask is far away
from its neighbours' is not brain. Components are found with the voxel spacing in
mind, so thick slices still connect.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component (empty stays empty)."""
    lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return mask.astype(bool)
    sizes = ndimage.sum_labels(np.ones_like(lab), lab, index=np.arange(1, n + 1))
    return lab == (int(np.argmax(sizes)) + 1)


def fill_holes_slicewise(mask: np.ndarray, axis: int) -> np.ndarray:
    """Fill holes in every slice (ventricles and CSF are inside the brain mask), then in 3D."""
    m = np.moveaxis(mask.astype(bool), axis, 0).copy()
    for k in range(m.shape[0]):
        if m[k].any():
            m[k] = ndimage.binary_fill_holes(m[k])
    return ndimage.binary_fill_holes(np.moveaxis(m, 0, axis))


def slice_consistency(mask: np.ndarray, axis: int, min_overlap: float = 0.1) -> np.ndarray:
    """Drop the parts of a slice that do not overlap the dilated mask of either neighbour.

    Keeps the main brain (which continues from slice to slice, even with motion of a
    few millimetres) and removes isolated in-plane islands that the 3D component
    kept only through a thin bridge. A slice sharing less than `min_overlap` of its
    area with its neighbours goes entirely (it is not brain, or it is a lone edge slice).
    """
    m = np.moveaxis(mask.astype(bool), axis, 0).copy()
    n = m.shape[0]
    if n < 2:
        return mask.astype(bool)
    grown = np.stack([ndimage.binary_dilation(s, iterations=2) if s.any() else s for s in m])
    out = m.copy()
    for k in range(n):
        if not m[k].any():
            continue
        nb = np.zeros_like(m[k])
        for j in (k - 1, k + 1):
            if 0 <= j < n:
                nb |= grown[j]
        lab, nlab = ndimage.label(m[k])
        keep = np.zeros_like(m[k])
        for i in range(1, nlab + 1):
            comp = lab == i
            if (comp & nb).sum() >= min_overlap * comp.sum():
                keep |= comp
        out[k] = keep
    return np.moveaxis(out, 0, axis)


def unimodal_profile(
    mask: np.ndarray,
    axis: int,
    rise: float = 1.5,
    min_pixels: int = 20,
    max_removed: float = 0.35,
) -> np.ndarray:
    """Cut slices beyond a dip in the mask's area profile.

    Cut in parallel slices, the head's area rises to one maximum and falls again. A
    second rise while moving away from the maximum is something else joined to the
    brain: in axial stacks the neck and trunk below the skull base, which a slice
    network sees without the 3D context. Moving outward from the (smoothed) peak,
    the mask is cut at the first slice whose area exceeds `rise` times the smallest
    area so far (plus `min_pixels`) when the next slice confirms it. A cut that would
    remove more than `max_removed` of the mask is not made: then the dip is more
    likely the network's miss in a few slices (motion, drop-out) than a boundary.
    """
    m = np.moveaxis(mask.astype(bool), axis, 0).copy()
    area = raw = m.sum(axis=(1, 2)).astype(np.float64)
    if area.max() == 0:
        return mask.astype(bool)
    peak = int(np.argmax(np.convolve(area, np.ones(3) / 3, mode="same")))
    n = area.size
    for step in (1, -1):
        lowest = area[peak]
        k = peak + step
        while 0 <= k < n and area[k] > 0:
            limit = rise * lowest + min_pixels
            nxt = k + step
            confirmed = not 0 <= nxt < n or area[nxt] > limit or area[nxt] == 0
            if area[k] > limit and confirmed:
                cut = slice(k, None) if step == 1 else slice(None, k + 1)
                if raw[cut].sum() <= max_removed * raw.sum():
                    m[cut] = False
                break
            lowest = min(lowest, area[k])
            k += step
    return np.moveaxis(m, 0, axis)


def clean_mask(mask: np.ndarray, axis: int) -> np.ndarray:
    """The full clean-up: islands, largest component, area profile, holes (uint8 out)."""
    m = slice_consistency(mask, axis)
    m = largest_component(m)
    m = unimodal_profile(m, axis)
    m = largest_component(m)
    m = fill_holes_slicewise(m, axis)
    return m.astype(np.uint8)
