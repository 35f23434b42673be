"""Infant sessions: the contrast to work on, and the brain mask of a 3D head image.

Infants need no slice-to-volume reconstruction: the N4-corrected 3D image is the
volume. Which contrast carries the grey/white contrast changes in the first year:
unmyelinated white matter is bright on T2w and dark on T1w; myelination makes T1w
white matter bright first (half way at ~4 months) and T2w white matter dark later
(~9 months). Yet on T1w the cerebrospinal fluid is as dark as the skull, so the outer
boundary of the intracranial space (the brain mask, the eCSF) is lost; on T2w it is the
brightest thing in the head at every age. On simulated infants of 8 and 18 months the
T2w path gave mask Dice 0.986 and tissue Dice 0.81-0.82, the T1w path 0.927 and
0.76-0.79 (tests/test_infant.py). Hence T2w whenever a session has it; labs whose T1w
serve them better after some age set `t1w_from_months`; a session with one contrast
uses it.

The brain mask of a whole head comes from the tissue segmentation network: it was
trained on synthetic images of heads with skull, scalp and body around the brain
(domain-randomised, `earlybrain.segment.synth`), and everything it labels as one of the
7 tissues is intracranial. The same trick as SynthStrip (Hoopes et al. 2022), with our
own network. Many shared infant datasets come skull-stripped instead (exact zeros
outside the brain); that network, trained on whole heads, does not know them (a real
19-month-old got a 27 mL mask). Such an image keeps its own non-zero region as the mask
(`preprocess.support`), after a check that it holds an intracranial volume for the
infant's age; the QC and the mask's sidecar say which way was taken.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from earlybrain import __version__
from earlybrain.anatomy.biometry import TERM_WEEKS, WEEKS_PER_MONTH, infant_brain_volume_ml
from earlybrain.io.atomic import write_json_atomic
from earlybrain.io.nifti import load_input_image, load_nifti, save_nifti, voxel_sizes
from earlybrain.io.provenance import portable
from earlybrain.io.sidecar import write_sidecar
from earlybrain.preprocess.support import support_mask
from earlybrain.segment.inference import SegmentationModel, predict_probabilities

PathLike = str | os.PathLike[str]

CONTRASTS = ("T1w", "T2w")
# A skull-stripped image's non-zero region is its mask when it holds this many times the
# typical brain tissue volume at the infant's age (anatomy.biometry, after Knickmeyer et
# al. 2008): the intracranial volume is brain plus CSF, and infants of one age differ by
# about a fifth; a whole head with its background zeroed holds far more. On 40 simulated
# infants of the norms' reference split the intracranial volume was 0.96-1.68 x the
# typical brain (median 1.29; an upper bound of 1.6 sent 1 in 60 skull-stripped
# calibration sessions to the network), the brain with skull and scalp alone, without
# face or neck, 1.44-2.38 x.
SUPPORT_VOLUME_RATIO = (0.6, 1.8)
METHOD_TEXT = {
    "support": "the image came skull-stripped: its non-zero region, holes filled",
    "network": "tissue segmentation network on the whole head, union of the tissues",
}


class InfantError(ValueError):
    """An infant session cannot be prepared (names the file and the problem)."""


def months_from_pma(pma_weeks: float) -> float:
    """Postnatal months of a term-born infant (negative before term)."""
    return (float(pma_weeks) - TERM_WEEKS) / WEEKS_PER_MONTH


def primary_contrast(
    available: Iterable[str], pma_weeks: float, t1w_from_months: float | None = None
) -> str:
    """The contrast an infant session is masked, registered and segmented on: T2w when
    present, unless `t1w_from_months` is set and the infant is at least that old."""
    have = [c for c in CONTRASTS if c in set(available)]
    if not have:
        raise InfantError(f"an infant session needs a T1w or T2w image, got {sorted(available)}")
    if len(have) == 1:
        return have[0]
    old_enough = t1w_from_months is not None and months_from_pma(pma_weeks) >= t1w_from_months
    return "T1w" if old_enough else "T2w"


def brain_mask_from_probabilities(
    prob: np.ndarray, affine: np.ndarray, threshold: float = 0.5
) -> np.ndarray:
    """Intracranial mask: where the tissues outweigh the background, one component, no holes.

    The largest connected component drops stray tissue-like voxels outside the skull;
    holes (a ventricle the network called background) are filled per 3D component and
    then slice by slice, as a skull-stripped brain has none.
    """
    brain = prob[0] < threshold
    labels, n = ndimage.label(brain)
    if n == 0:
        return np.zeros(prob.shape[1:], dtype=bool)
    sizes = ndimage.sum_labels(brain, labels, index=np.arange(1, n + 1))
    brain = labels == (1 + int(np.argmax(sizes)))
    # close 2 mm gaps (partial-volume voxels at the surface), then fill
    iters = max(1, round(2.0 / float(np.min(voxel_sizes(affine)))))
    brain = ndimage.binary_closing(brain, iterations=iters, border_value=0) | brain
    brain = ndimage.binary_fill_holes(brain)
    for axis in range(3):
        brain = np.stack(
            [ndimage.binary_fill_holes(s) for s in np.moveaxis(brain, axis, 0)], axis=0
        )
        brain = np.moveaxis(brain, 0, axis)
    return brain


def infant_brain_mask(
    image: np.ndarray, affine: np.ndarray, model: SegmentationModel, tta: bool = True
) -> tuple[np.ndarray, dict[str, Any]]:
    """Brain mask of a whole-head 3D image, and QC numbers for the report."""
    if image.ndim != 3:
        raise InfantError(f"expected a 3D image, got shape {image.shape}")
    prob = predict_probabilities(image, affine, model, tta)
    mask = brain_mask_from_probabilities(prob, affine)
    voxel_ml = float(np.prod(voxel_sizes(affine))) / 1000.0
    inside = prob[0][mask]
    qc = {
        "volume_ml": round(float(mask.sum()) * voxel_ml, 2),
        # how sure the network is inside the mask (near 0 = confidently brain)
        "mean_background_probability_inside": round(float(inside.mean()), 4)
        if inside.size
        else None,
    }
    return mask, qc


def skull_stripped_mask(
    raw: np.ndarray, affine: np.ndarray, pma_weeks: float
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """(mask, QC with its volume) when `raw` is skull-stripped with an intracranial
    volume for its age; (None, QC saying why not) otherwise."""
    support = support_mask(raw)
    if support is None:
        return None, {"skull_stripped": False}
    volume = float(support.sum()) * float(np.prod(voxel_sizes(affine))) / 1000.0
    typical = infant_brain_volume_ml(months_from_pma(pma_weeks))
    lo, hi = (r * typical for r in SUPPORT_VOLUME_RATIO)
    if lo <= volume <= hi:
        return support, {"skull_stripped": True, "volume_ml": round(volume, 2)}
    return None, {
        "skull_stripped": False,
        "note": f"the image has a zero background, but its non-zero region holds "
        f"{volume:.0f} mL, outside the {lo:.0f}-{hi:.0f} mL of an intracranial volume at "
        "this age: masked by the network",
    }


def prepare_infant_to_files(
    image_path: PathLike,
    contrast: str,
    pma_weeks: float,
    out_mask: PathLike,
    out_qc: PathLike,
    model_loader: Callable[[], SegmentationModel],
    *,
    raw_path: PathLike | None = None,
    tta: bool = True,
    min_volume_ml: float = 150.0,
) -> dict[str, Any]:
    """Mask an infant's N4-corrected image; write the mask (+ sidecar) and the QC JSON.

    `raw_path`, the image as given, decides whether it came skull-stripped (N4 may add
    zeros inside the brain); `model_loader()` gives the segmentation network, loaded
    only for a whole head.
    """
    img = load_nifti(image_path)
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim != 3:
        raise InfantError(f"{image_path}: expected a 3D image, got shape {data.shape}")
    mask, qc = None, {"skull_stripped": False}
    if raw_path is not None:
        raw_img, _ = load_input_image(raw_path)
        raw = np.asarray(raw_img.dataobj, dtype=np.float32)
        if raw.shape != data.shape or not np.allclose(raw_img.affine, img.affine, atol=1e-3):
            raise InfantError(f"{raw_path}: its grid differs from its N4 image {image_path}")
        mask, qc = skull_stripped_mask(raw, img.affine, pma_weeks)
    weights = None
    if mask is None:
        model = model_loader()
        mask, net_qc = infant_brain_mask(data, img.affine, model, tta)
        qc |= net_qc | {"method": "network"}
        weights = model
    else:
        qc["method"] = "support"
    if qc["volume_ml"] < min_volume_ml:
        raise InfantError(
            f"{image_path}: the brain mask holds {qc['volume_ml']:.0f} mL, less than "
            f"{min_volume_ml:g} mL (the smallest term brain is ~350 mL): is this a head image "
            f"of a {contrast} contrast?"
        )
    out_mask = Path(out_mask)
    save_nifti(mask.astype(np.uint8), img.affine, out_mask, dtype=np.uint8)
    parameters: dict[str, Any] = {"method": METHOD_TEXT[qc["method"]]}
    if weights is not None:
        parameters |= {
            "weights": weights.path,
            "weights_sha256": weights.sha256,
            "test_time_mirror": tta,
        }
    write_sidecar(
        out_mask,
        step="infant_prep",
        sources=[image_path] + ([raw_path] if raw_path is not None else []),
        parameters=parameters,
        extra={
            "Type": "Brain",
            "Description": "intracranial mask (brain and CSF spaces)",
            "Contrast": contrast,
            "BrainVolume_ml": qc["volume_ml"],
            "MaskMethod": qc["method"],
        },
    )
    qc |= {
        "contrast": contrast,
        "pma_weeks": float(pma_weeks),
        "age_months": round(months_from_pma(pma_weeks), 2),
        "image": str(image_path),
        "mask": str(out_mask),
        "weights": weights.path if weights is not None else None,
        "software": {"earlybrain": __version__},
    }
    write_json_atomic(Path(out_qc), portable(qc))
    return qc
