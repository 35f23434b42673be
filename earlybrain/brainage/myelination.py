"""Infant brain age from myelination: the contrast of the white matter against deep grey matter.

White matter myelinates over the first two years, from the centre to the periphery and
from the back to the front (T1w first, T2w later; Barkovich et al. 1988, Dubois et al.
2014), so the contrast of each white-matter zone (deep, middle, superficial x posterior,
anterior; `wm_zone_masks`), of the cerebellum and of the brainstem against deep grey
matter changes with age, zone after zone. Each contrast index is log(median region
intensity / median deep grey matter intensity) inside the session's segmentation; its
mean is a logistic function of age and the indexes are jointly normal around it
(`age_curves.LogisticAgeModel`, fitted on the calibration cohort), so the estimate is
the posterior mean over ages with a flat prior, and its SD is the posterior SD. The
zones share a subject's own white-matter intensity, so their differences carry the
age; once the last zone is myelinated (T1w after ~12 months, T2w after ~2 years) the
likelihood flattens.

This is one of the three estimates an infant's brain age reports, and its indexes are
features of the combination (`infant`); the curves and covariance are fitted on the
calibration cohort (`infant_reference`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from scipy import ndimage

from earlybrain.brainage.frame import rotation_of

# contrast indexes: a region (detailed labels) against deep grey matter, the largest
# compact grey matter: its core is free of partial volume even at 1.5 mm, which the
# cortical ribbon (2-3 mm thick) is not
INDEX_TISSUES: dict[str, tuple[int, ...]] = {"cerebellum": (8, 9), "brainstem": (12,)}
REFERENCE_LABELS = (10, 11)
WM_LABELS = (4, 5)
CEREBRUM_LABELS = (2, 3, 4, 5, 6, 7, 10, 11)
# cerebral white matter zones: bins of depth (0 at the ventricles' level .. 1 at the
# cortex) and of position from back (0) to front (1); myelination sweeps through them
# (4 x 3 zones did worse on 40 simulated infants: T2w leave-one-out MAE 3.8 against 3.3
# weeks; smaller zones are noisier and their covariance less well determined)
WM_DEPTH_BINS: dict[str, tuple[float, float]] = {
    "deep": (0.0, 0.4),
    "middle": (0.4, 0.7),
    "superficial": (0.7, 1.01),
}
WM_AP_BINS: dict[str, tuple[float, float]] = {"posterior": (0.0, 0.5), "anterior": (0.5, 1.01)}
MIN_INDEX_VOXELS = 50


def _region_median(image: np.ndarray, region: np.ndarray, erode: bool) -> float:
    """Median intensity of a region; eroded by one voxel against partial volume when
    enough is left. NaN when the region is (nearly) empty."""
    if region.sum() < MIN_INDEX_VOXELS:
        return float("nan")
    box = ndimage.find_objects(region.astype(np.uint8))[0]
    sub, img = region[box], image[box]
    if erode:
        core = ndimage.binary_erosion(sub)
        if core.sum() >= MIN_INDEX_VOXELS:
            sub = core
    return float(np.median(img[sub]))


def index_names() -> tuple[str, ...]:
    """Names of a contrast's indexes, in model order: white-matter zones, then tissues."""
    zones = tuple(f"WM_{d}_{p}" for d in WM_DEPTH_BINS for p in WM_AP_BINS)
    return zones + tuple(INDEX_TISSUES)


def wm_zone_masks(
    dseg: np.ndarray, affine: np.ndarray, atlas_to_subject: np.ndarray
) -> dict[str, np.ndarray]:
    """Masks of the cerebral white-matter zones (cores: eroded by one voxel).

    Positions come from the subject's own cerebrum in atlas orientation: coordinates
    about its centroid, rotated by the registration's rotation, scaled by the semi-axes
    of the ellipsoid with the same second moments (a^2 = 5 x variance). Depth is the
    ellipsoidal radius from 0.3 (the ventricles' level) to 0.9 (the cortex) mapped to
    0..1; the front-back position is the anterior coordinate mapped to 0..1. Size-free
    and orientation-free, so the zones of any subject cover the same anatomy.
    """
    cerebrum = np.isin(dseg, CEREBRUM_LABELS)
    wm = ndimage.binary_erosion(np.isin(dseg, WM_LABELS))
    if cerebrum.sum() < MIN_INDEX_VOXELS or wm.sum() < MIN_INDEX_VOXELS:
        return {}
    lin, off = np.asarray(affine, dtype=float)[:3, :3], np.asarray(affine, dtype=float)[:3, 3]
    rot = rotation_of(atlas_to_subject)
    pts = np.argwhere(cerebrum) @ lin.T + off
    centre = pts.mean(axis=0)
    semi = np.sqrt(5.0 * (((pts - centre) @ rot) ** 2).mean(axis=0))
    idx = np.argwhere(wm)
    rel = ((idx @ lin.T + off - centre) @ rot) / semi
    depth = np.clip((np.linalg.norm(rel, axis=1) - 0.3) / 0.6, 0.0, 1.0)
    front = np.clip((rel[:, 1] + 1.0) / 2.0, 0.0, 1.0)
    out = {}
    for dname, (d0, d1) in WM_DEPTH_BINS.items():
        for pname, (p0, p1) in WM_AP_BINS.items():
            sel = (depth >= d0) & (depth < d1) & (front >= p0) & (front < p1)
            mask = np.zeros(dseg.shape, dtype=bool)
            mask[tuple(idx[sel].T)] = True
            out[f"WM_{dname}_{pname}"] = mask
    return out


def contrast_indexes(
    image: np.ndarray, dseg: np.ndarray, affine: np.ndarray, atlas_to_subject: np.ndarray
) -> dict[str, float]:
    """log(median intensity / median deep GM intensity) of each `index_names()`.

    `dseg` holds earlybrain's 12 labels on the image's grid (`affine`), `atlas_to_subject`
    the registration's map (only its rotation is used: `wm_zone_masks`). Every region
    is eroded by one voxel (its core, away from partial volume). NaN for a region the
    segmentation has (almost) none of, or a non-positive median. Within a subject the
    zones share its white-matter intensity, so their differences follow myelination
    alone: the sweep from deep to superficial and from back to front keeps the indexes
    changing into the second year on T2w.
    """
    image = np.asarray(image, dtype=np.float32)
    dseg = np.asarray(dseg)
    ref = _region_median(image, np.isin(dseg, REFERENCE_LABELS), erode=True)
    regions = wm_zone_masks(dseg, affine, atlas_to_subject)
    values = {name: _region_median(image, m, erode=False) for name, m in regions.items()}
    for name, labels in INDEX_TISSUES.items():
        values[name] = _region_median(image, np.isin(dseg, labels), erode=True)
    out = {}
    for name in index_names():
        v = values.get(name, float("nan"))
        ok = np.isfinite(v) and np.isfinite(ref) and v > 0 and ref > 0
        out[name] = float(np.log(v / ref)) if ok else float("nan")
    return out


def myelination_key(contrasts: Iterable[str]) -> str:
    """Calibration key of a set of contrasts, e.g. "T1w+T2w"."""
    return "+".join(sorted(set(contrasts)))


def subject_indexes(
    images: Mapping[str, np.ndarray],
    dseg: np.ndarray,
    affine: np.ndarray,
    atlas_to_subject: np.ndarray,
) -> dict[str, float]:
    """Contrast indexes of every contrast, named "<contrast>:<region>"."""
    return {
        f"{c}:{t}": v
        for c, image in images.items()
        for t, v in contrast_indexes(image, dseg, affine, atlas_to_subject).items()
    }
