"""N4 bias-field correction and robust intensity normalisation of one stack or volume.

Why here and in this order: slice-to-volume reconstruction and atlas registration
compare intensities across stacks and subjects, so the smooth coil/B1 shading must be
removed (N4) and intensities put on a common scale (percentiles inside the foreground)
first. The mask used is a rough *foreground* mask (Otsu on a smoothed image): it keeps
air/background out of the N4 fit. It is NOT a brain mask (brain extraction is a later
stage) and is named "foreground" everywhere to avoid that confusion.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from earlybrain.io.nifti import load_input_image, save_nifti, voxel_sizes
from earlybrain.io.sidecar import sidecar_path, write_sidecar

# Raw sidecar fields the corrected image keeps: the geometry and timing of the
# acquisition (SVR takes the slice order, i.e. the packets, from SliceTiming).
ACQUISITION_FIELDS = (
    "MRAcquisitionType",
    "SliceTiming",
    "SliceThickness",
    "SliceEncodingDirection",
    "PhaseEncodingDirection",
    "RepetitionTime",
    "EchoTime",
    "MagneticFieldStrength",
    "Manufacturer",
)


def acquisition_metadata(image_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Acquisition fields of a raw image's BIDS sidecar ({} when there is none)."""
    side = sidecar_path(image_path)
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError):
        return {}
    return {k: meta[k] for k in ACQUISITION_FIELDS if k in meta} if isinstance(meta, dict) else {}


@dataclass(frozen=True)
class ForegroundParams:
    smoothing_sigma_mm: float = 2.0  # Gaussian smoothing before Otsu, in mm per axis
    min_component_fraction: float = 0.05  # drop blobs smaller than this share of the largest


@dataclass(frozen=True)
class N4Params:
    """N4 settings.

    The B-spline mesh starts at ``spline_distance_mm`` knot spacing and halves at each
    level (one level per entry of ``iterations``). Defaults (200 mm, 2 levels of 100
    iterations) were chosen on simulated data with known bias: a finer field (100 mm,
    3 levels) absorbed the fetal head's own contrast into the "bias" and left a larger
    error in the brain than no correction; 50 iterations per level recovered only half
    of a +/-40 % field.
    """

    shrink_factor: int = 4  # capped per image so that every shrunk axis keeps >= 4 voxels
    iterations: tuple[int, ...] = (100, 100)  # one entry per resolution level
    convergence_tol: float = 1e-6
    spline_distance_mm: float = 200.0  # initial knot spacing: larger = smoother field


@dataclass(frozen=True)
class NormaliseParams:
    lower_percentile: float = 1.0  # mapped to 0 (within the foreground)
    upper_percentile: float = 99.0  # mapped to 1 (values above are kept, not clipped)


@dataclass(frozen=True)
class PreprocessParams:
    foreground: ForegroundParams = field(default_factory=ForegroundParams)
    n4: N4Params = field(default_factory=N4Params)
    normalise: NormaliseParams = field(default_factory=NormaliseParams)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessParams:
        """From config `preprocess` (any subset: the rest keeps these defaults)."""
        unknown = set(d) - {"foreground", "n4", "normalise"}
        if unknown:
            raise TypeError(f"unknown preprocess section(s): {', '.join(sorted(unknown))}")
        n4 = dict(d.get("n4", {}))
        if "iterations" in n4:
            n4["iterations"] = tuple(n4["iterations"])
        return cls(
            ForegroundParams(**d.get("foreground", {})),
            N4Params(**n4),
            NormaliseParams(**d.get("normalise", {})),
        )


# air is below this fraction of an image's bright end (see foreground_mask)
AIR_FRACTION = 0.2


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu threshold of a 1-D sample (no scikit-image import needed at step start-up)."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(float)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mu1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def foreground_mask(
    data: np.ndarray, spacing: np.ndarray, params: ForegroundParams = ForegroundParams()
) -> np.ndarray:
    """Rough foreground (head/body vs. air): Otsu on a Gaussian-smoothed image.

    A fetal stack planned inside the uterus may hold almost no air; Otsu then splits
    bright amniotic fluid from tissue instead and calls the fetal brain background. So
    the threshold is at most AIR_FRACTION of the bright end (98th percentile): air is
    darker than that in any MR image, soft tissue brighter. Holes are filled slice by
    slice along every axis (thick-slice stacks have few slices, so a 3D fill alone can
    leak) and components much smaller than the largest are dropped. Not a brain mask.
    """
    sigma = [params.smoothing_sigma_mm / float(s) for s in spacing]
    smooth = ndi.gaussian_filter(data.astype(np.float32), sigma=sigma, mode="nearest")
    positive = smooth[smooth > 0]
    if positive.size == 0:
        return np.zeros(data.shape, dtype=bool)
    threshold = min(_otsu(positive), AIR_FRACTION * float(np.percentile(positive, 98)))
    mask = smooth > threshold
    labels, n = ndi.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())[1:]
        keep = np.flatnonzero(sizes >= params.min_component_fraction * sizes.max()) + 1
        mask = np.isin(labels, keep)
    mask = ndi.binary_fill_holes(mask)
    for axis in range(mask.ndim):
        filled = np.stack([ndi.binary_fill_holes(s) for s in np.moveaxis(mask, axis, 0)])
        mask = np.moveaxis(filled, 0, axis)
    return mask


def effective_shrink(shape: tuple[int, ...], requested: int, min_size: int = 4) -> int:
    """Largest shrink factor <= requested that leaves >= min_size voxels on every axis."""
    f = max(1, int(requested))
    while f > 1 and min(shape) // f < min_size:
        f -= 1
    return f


def n4_correct(
    data: np.ndarray,
    spacing: np.ndarray,
    mask: np.ndarray,
    params: N4Params = N4Params(),
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """N4 inside `mask`; returns (corrected, multiplicative bias field, used settings).

    ``corrected = data / bias`` everywhere (the B-spline field is defined on the whole
    grid), so the bias field saved beside the output explains the correction exactly.
    """
    if threads:
        # ITK reads this when its thread pool starts, so set it before ANTs loads.
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(int(threads))
    import ants

    img = np.clip(data.astype(np.float32), 0, None)
    if not mask.any():
        raise ValueError("foreground mask is empty: nothing to fit a bias field on")
    spacing_t = tuple(float(s) for s in spacing)
    a_img = ants.from_numpy(img, spacing=spacing_t)
    a_mask = ants.from_numpy(mask.astype(np.float32), spacing=spacing_t)
    shrink = effective_shrink(img.shape, params.shrink_factor)
    spline_mm = round(params.spline_distance_mm)  # ANTsPy formats it as an integer
    bias = ants.n4_bias_field_correction(
        a_img,
        mask=a_mask,
        shrink_factor=shrink,
        convergence={"iters": list(params.iterations), "tol": params.convergence_tol},
        spline_param=spline_mm,
        return_bias_field=True,
    ).numpy()
    bias = np.asarray(bias, dtype=np.float32)
    if not np.all(np.isfinite(bias)) or np.any(bias <= 0):
        raise ValueError("N4 returned a non-positive or non-finite bias field")
    corrected = img / bias
    used = {"shrink_factor_used": shrink, "spline_distance_mm_used": spline_mm}
    return corrected, bias, used


def normalise(
    data: np.ndarray, mask: np.ndarray, params: NormaliseParams = NormaliseParams()
) -> tuple[np.ndarray, dict[str, float]]:
    """Map the foreground's lower/upper percentiles to 0/1; values below 0 are clipped."""
    values = data[mask] if mask.any() else data.ravel()
    lo, hi = np.percentile(values, [params.lower_percentile, params.upper_percentile])
    if not hi > lo:
        raise ValueError(f"cannot normalise: percentiles are equal ({lo:g})")
    out = np.clip((data - lo) / (hi - lo), 0, None).astype(np.float32)
    return out, {"lower_value": float(lo), "upper_value": float(hi)}


def run_n4(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    bias_path: str | os.PathLike[str],
    mask_path: str | os.PathLike[str],
    params: PreprocessParams = PreprocessParams(),
    threads: int | None = None,
) -> dict[str, Any]:
    """Foreground mask -> N4 -> normalisation for one image; writes 3 images + sidecars."""
    img, _ = load_input_image(in_path)  # 3D, scaled, on its own grid (notes: validation's)
    data = np.asanyarray(img.dataobj).astype(np.float32)
    affine = img.affine
    spacing = voxel_sizes(affine)
    mask = foreground_mask(data, spacing, params.foreground)
    corrected, bias, used = n4_correct(data, spacing, mask, params.n4, threads=threads)
    normed, scale = normalise(corrected, mask, params.normalise)

    parameters = params.as_dict()
    save_nifti(normed, affine, out_path, dtype=np.float32)
    write_sidecar(
        out_path,
        step="n4",
        parameters=parameters,
        sources=[in_path],
        extra={
            **acquisition_metadata(in_path),
            "Description": "N4 bias-field corrected (inside a rough Otsu foreground mask, not a "
            "brain mask), then intensities scaled so that the foreground's lower/upper "
            "percentiles map to 0/1",
            "N4": used,
            "Normalisation": scale,
            "BiasField": Path(bias_path).name,
            "ForegroundMask": Path(mask_path).name,
        },
    )
    save_nifti(bias, affine, bias_path, dtype=np.float32)
    write_sidecar(
        bias_path,
        step="n4",
        parameters=parameters,
        sources=[in_path],
        extra={
            "Description": "N4 multiplicative bias field: corrected = input / field",
            "N4": used,
        },
    )
    save_nifti(mask.astype(np.uint8), affine, mask_path, dtype=np.uint8)
    write_sidecar(
        mask_path,
        step="n4",
        parameters={"foreground": parameters["foreground"]},
        sources=[in_path],
        extra={
            "Description": "rough foreground mask (Otsu of a smoothed image) used to fit N4; "
            "NOT a brain mask",
            "Type": "Foreground",
        },
    )
    return {
        "foreground_fraction": float(mask.mean()),
        "bias_range": [float(bias[mask].min()), float(bias[mask].max())],
        **used,
        **scale,
    }
