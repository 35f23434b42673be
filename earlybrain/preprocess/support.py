"""The brain mask a brain-extracted image carries: its non-zero region.

Tools that reconstruct fetal brains (SVRTK, NiftyMIC, NeSVoR) and many shared infant
datasets write images skull-stripped: exact zeros outside the brain. That region is
the lab's own mask, so no network can do better; the given-reconstruction and infant
masking steps take it when the image has one (and it passes their size check).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# A brain-extracted volume: at least this fraction of exact zeros around the brain...
MIN_ZERO_FRACTION = 0.2
# ...and its non-zero voxels mostly one region (scattered noise voxels are no mask)
MIN_LARGEST_FRACTION = 0.9


def support_mask(data: np.ndarray) -> np.ndarray | None:
    """The brain mask a brain-extracted volume carries (its non-zero region), or None.

    None when the volume is not brain-extracted: too few exact zeros, or non-zero
    voxels scattered over several regions.
    """
    nonzero = data != 0
    if nonzero.mean() > 1.0 - MIN_ZERO_FRACTION or not nonzero.any():
        return None
    labels, n = ndimage.label(nonzero)
    sizes = ndimage.sum_labels(nonzero, labels, index=np.arange(1, n + 1))
    largest = int(np.argmax(sizes))
    if sizes[largest] < MIN_LARGEST_FRACTION * nonzero.sum():
        return None
    return ndimage.binary_fill_holes(labels == largest + 1)
