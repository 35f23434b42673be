"""MR contrast of the phantom: per-tissue intensities, myelination, texture, partial volume.

Fetal T2w: CSF bright, cortex dark, unmyelinated white matter intermediate (brighter
than cortex). Infants: white matter myelinates in the first year, so on T2w it goes
from brighter to darker than grey matter and on T1w from darker to brighter, with an
isointense phase around 6-8 months; T1w changes first, posterior fossa before
cerebrum (Dubois et al. 2014 review).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from earlybrain.simulate import biometry
from earlybrain.simulate.labels import BODY, FLUID, SCALP, SKULL
from earlybrain.simulate.phantom import Phantom

# values in arbitrary units (amniotic fluid ~1000); tissue classes by detailed label
_FETAL_T2 = {1: 1000, 2: 380, 4: 620, 6: 950, 8: 480, 10: 450, 12: 420}
_SCENE_FETAL = {SKULL: 120, SCALP: 550, BODY: 500, FLUID: 1050}

# infant: (unmyelinated, myelinated) per class
_INFANT = {
    "T2w": {
        1: (1000, 1000),
        2: (450, 430),
        4: (650, 300),
        6: (950, 950),
        8: (520, 380),
        10: (480, 400),
        12: (460, 300),
    },
    "T1w": {
        1: (150, 150),
        2: (500, 520),
        4: (400, 780),
        6: (140, 140),
        8: (460, 650),
        10: (520, 620),
        12: (480, 760),
    },
}
_SCENE_INFANT = {
    "T2w": {SKULL: 80, SCALP: 600, BODY: 500, FLUID: 0},
    "T1w": {SKULL: 80, SCALP: 800, BODY: 550, FLUID: 0},
}
# months at which myelination is half complete; posterior fossa leads the cerebrum
_MYELIN_HALF_MONTHS = {"T1w": 4.0, "T2w": 9.0}
_POSTERIOR_LEAD_MONTHS = 3.0


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def tissue_intensities(phantom: Phantom, contrast: str = "T2w") -> dict[int, float]:
    """Intensity of each detailed label (left/right share their tissue's value)."""
    traits = phantom.traits.intensity
    if phantom.kind == "fetal":
        if contrast != "T2w":
            raise ValueError("fetal acquisitions are T2w")
        base = dict(_FETAL_T2) | _SCENE_FETAL
    else:
        months = (phantom.age_weeks - biometry.TERM_WEEKS) / biometry.WEEKS_PER_MONTH
        half = _MYELIN_HALF_MONTHS[contrast]
        base = {}
        for lab, (unmy, my) in _INFANT[contrast].items():
            lead = _POSTERIOR_LEAD_MONTHS if lab in (8, 12) else 0.0
            m = _sigmoid((months + lead - half) / 2.0)
            base[lab] = (1 - m) * unmy + m * my
        base |= _SCENE_INFANT[contrast]
    # left/right labels share the tissue value of their left label
    for left in (2, 4, 6, 8, 10):
        base[left + 1] = base[left]
    # contrast varies between subjects; the variation is shared across contrasts
    return {lab: float(v * traits[lab]) for lab, v in base.items()}


def intensity_image(
    phantom: Phantom, contrast: str = "T2w", values: dict[int, float] | None = None
) -> np.ndarray:
    """Noise-free image of the phantom: tissue values, smooth texture, partial volume.

    `values` (detailed label -> intensity) replaces the contrast's own table, e.g. to
    test a network on a contrast it was never trained on.
    """
    values = tissue_intensities(phantom, contrast) if values is None else values
    lut = np.zeros(256, dtype=np.float32)
    for lab, v in values.items():
        lut[lab] = v
    img = lut[phantom.labels]
    voxel = float(np.abs(phantom.affine[0, 0]))
    rng = np.random.default_rng(phantom.traits.texture_seed)
    texture = ndimage.gaussian_filter(
        rng.standard_normal(img.shape).astype(np.float32), 2.0 / voxel
    )
    texture *= 0.04 / max(float(texture.std()), 1e-6)
    texture[phantom.labels == FLUID] = 0.0  # fluid is homogeneous, like outside the grid
    img = img * (1.0 + texture)
    return ndimage.gaussian_filter(img, 0.5).astype(np.float32)


def scene_value(label: int, phantom: Phantom, contrast: str = "T2w") -> float:
    """Intensity of a scene class outside the grid (body, fluid)."""
    return tissue_intensities(phantom, contrast)[label]
