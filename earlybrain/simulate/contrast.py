"""MR contrast of the phantom: per-tissue intensities, myelination, texture, partial volume.

Fetal T2w: CSF bright, cortex dark, unmyelinated white matter intermediate (brighter
than cortex). Infants: white matter myelinates over the first two years, so on T2w it
goes from brighter to darker than grey matter and on T1w from darker to brighter, with
an isointense phase around 6-8 months; T1w changes first, posterior fossa before
cerebrum (Dubois et al. 2014 review). Within the cerebral white matter myelination
runs from central to peripheral and from posterior to anterior (`wm_half_months`):
on T1w from about birth (internal capsule, splenium) to 8-9 months (peripheral frontal
white matter), on T2w from about 5 to 18 months, the milestones of Barkovich et al.
1988 and Welker & Patton 2012 (midpoints of their ranges). Each infant's myelination
clock runs at its own rate (`SubjectTraits.maturation`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from earlybrain.anatomy import biometry
from earlybrain.anatomy.labels import BODY, FLUID, SCALP, SKULL
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
_MYELIN_WIDTH_MONTHS = 2.0
# cerebral white matter: half-myelination months at its deep posterior corner, and the
# delays of its periphery (superficial = 1) and of its front (anterior = 1)
_WM_HALF_MONTHS = {"T1w": (1.5, 3.5, 3.5), "T2w": (5.0, 7.0, 6.0)}
_WM_LABELS = (4, 5)


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def tissue_intensities(phantom: Phantom, contrast: str = "T2w") -> dict[int, float]:
    """Intensity of each detailed label (left/right share their tissue's value); an
    infant's cerebral white matter varies around it by region (`intensity_image`)."""
    traits = phantom.traits.intensity
    if phantom.kind == "fetal":
        if contrast != "T2w":
            raise ValueError("fetal acquisitions are T2w")
        base = dict(_FETAL_T2) | _SCENE_FETAL
    else:
        months = maturity_months(phantom)
        half = _MYELIN_HALF_MONTHS[contrast]
        base = {}
        for lab, (unmy, my) in _INFANT[contrast].items():
            lead = _POSTERIOR_LEAD_MONTHS if lab in (8, 12) else 0.0
            m = _sigmoid((months + lead - half) / _MYELIN_WIDTH_MONTHS)
            base[lab] = (1 - m) * unmy + m * my
        base |= _SCENE_INFANT[contrast]
    # left/right labels share the tissue value of their left label
    for left in (2, 4, 6, 8, 10):
        base[left + 1] = base[left]
    # contrast varies between subjects; the variation is shared across contrasts
    return {lab: float(v * traits[lab]) for lab, v in base.items()}


def maturity_months(phantom: Phantom) -> float:
    """An infant's age on its own myelination clock (months after term)."""
    months = (phantom.age_weeks - biometry.TERM_WEEKS) / biometry.WEEKS_PER_MONTH
    return months * phantom.traits.maturation


def wm_position(phantom: Phantom, where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(superficiality, anteriority) in [0, 1] of the voxels `where` (a mask): the
    ellipsoidal radius of the cerebrum from the ventricles' level (0) to its surface
    (1), and the position from its back (0) to its front (1)."""
    ijk = np.stack(np.nonzero(where), axis=-1).astype(np.float64)
    pts = ijk @ phantom.affine[:3, :3].T + phantom.affine[:3, 3]
    rel = pts / np.asarray(phantom.anatomy.semi_axes)
    rho = np.linalg.norm(rel, axis=-1)
    return np.clip((rho - 0.3) / 0.6, 0.0, 1.0), np.clip((rel[:, 1] + 1.0) / 2.0, 0.0, 1.0)


def wm_half_months(contrast: str, superficial: np.ndarray, anterior: np.ndarray) -> np.ndarray:
    """Months at which the cerebral white matter at a position is half myelinated."""
    deep_posterior, periphery, front = _WM_HALF_MONTHS[contrast]
    return deep_posterior + periphery * superficial + front * anterior


def _regional_white_matter(img: np.ndarray, phantom: Phantom, contrast: str) -> None:
    """Give each cerebral white-matter voxel of `img` its own stage of myelination."""
    wm = np.isin(phantom.labels, _WM_LABELS)
    s, a = wm_position(phantom, wm)
    m = 1.0 / (1.0 + np.exp(-(maturity_months(phantom) - wm_half_months(contrast, s, a))
                           / _MYELIN_WIDTH_MONTHS))  # fmt: skip
    unmy, my = _INFANT[contrast][4]
    trait = np.where(
        phantom.labels[wm] == 4, phantom.traits.intensity[4], phantom.traits.intensity[5]
    )
    img[wm] = ((1 - m) * unmy + m * my) * trait


def intensity_image(
    phantom: Phantom, contrast: str = "T2w", values: dict[int, float] | None = None
) -> np.ndarray:
    """Noise-free image of the phantom: tissue values, smooth texture, partial volume.

    `values` (detailed label -> intensity) replaces the contrast's own table, e.g. to
    test a network on a contrast it was never trained on.
    """
    custom = values is not None
    values = tissue_intensities(phantom, contrast) if values is None else values
    lut = np.zeros(256, dtype=np.float32)
    for lab, v in values.items():
        lut[lab] = v
    img = lut[phantom.labels]
    if phantom.kind == "infant" and not custom:
        _regional_white_matter(img, phantom, contrast)
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
