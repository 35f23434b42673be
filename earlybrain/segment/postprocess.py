"""From network probabilities to a clean label map: hemispheres, components, holes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from earlybrain.anatomy.labels import LABELS, TISSUES
from earlybrain.atlas.manifest import LabelEntry, LabelTable
from earlybrain.geometry import voxel_grid_world

# the network's classes as an atlas label table whose tissues are not split by side
NETWORK_TABLE = LabelTable(
    Path("<segmentation network classes>"),
    tuple(LabelEntry(t, name, name, "both") for t, name in TISSUES.items()),
)


def split_hemispheres(tissues: np.ndarray, affine: np.ndarray, midline_x_mm: float) -> np.ndarray:
    """7 tissue classes -> earlybrain's 12 labels, split at the atlas's midsagittal plane.

    Inputs are in atlas space, where the plane x = `midline_x_mm` (from the manifest)
    divides the hemispheres of the registered brain.
    """
    x_mm = voxel_grid_world(tissues.shape, affine)[..., 0]
    return NETWORK_TABLE.to_earlybrain(tissues, x_mm, midline_x_mm)


# a label's component smaller than this fraction of its largest is removed (the
# workflow's segmentation.keep_fraction)
KEEP_FRACTION = 0.2


def clean_labels(labels: np.ndarray, keep_fraction: float = KEEP_FRACTION) -> np.ndarray:
    """Largest connected component per structure, then holes filled.

    Of each label, the largest 3D component is kept with any other component at least
    `keep_fraction` of its size (a temporal horn detached from its ventricle at coarse
    resolution is real anatomy, a speck in the eCSF is not). Voxels removed, and holes
    inside the brain, take the label of the nearest kept voxel.
    """
    out = np.asarray(labels).astype(np.uint8, copy=True)
    for lab in LABELS:
        sel = out == lab
        if not sel.any():
            continue
        comp, n = ndimage.label(sel)
        if n <= 1:
            continue
        sizes = np.bincount(comp.ravel())[1:]
        keep = np.flatnonzero(sizes >= keep_fraction * sizes.max()) + 1
        out[sel & ~np.isin(comp, keep)] = 0
    brain = out > 0
    comp, n = ndimage.label(brain)
    if n > 1:  # the brain is one piece: drop islands outside it
        sizes = np.bincount(comp.ravel())[1:]
        brain = comp == (int(np.argmax(sizes)) + 1)
    filled = ndimage.binary_fill_holes(ndimage.binary_closing(brain, iterations=1)) | brain
    holes = filled & (out == 0)
    labelled = filled & (out > 0)
    if holes.any() and labelled.any():
        _, idx = ndimage.distance_transform_edt(~labelled, return_indices=True)
        out[holes] = out[tuple(i[holes] for i in idx)]
    out[~filled] = 0
    return out
