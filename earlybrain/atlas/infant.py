"""Build the infant atlas that earlybrain ships (`atlases/earlybrain-infant`), exactly.

    python -m earlybrain.atlas.infant --out atlases/earlybrain-infant

What it is: for each postnatal age in MONTHS (term to 2 years), the simulator's
*typical* infant at that age, rendered as T1w and T2w. "Typical" means the subject
traits of `earlybrain.simulate.phantom.SubjectTraits` at their population means (size
1, aspect (1, 1, 1), ventricle factor 1, every class intensity factor 1) with one fixed
folding pattern (FOLD_SEED) and texture (TEXTURE_SEED), so the templates are one
simulated infant growing up, not population averages: no registration, no averaging.

How a template is made: `infant_anatomy(months, traits)` and `build_labels` give the
head's labels on an isotropic grid in the phantom's head frame (RAS mm, the cerebrum
ellipsoid's centre at the origin, midsagittal plane x = 0, left at x < 0);
`intensity_image` renders both contrasts (noise-free: tissue values with the
myelination-driven T1w/T2w contrast inversion, smooth texture, partial volume). The
template keeps the intracranial brain (labels 1..12: tissues, ventricles and eCSF,
like the fetal templates), is cropped to it plus MARGIN_MM, and is moved along y and z
so that the origin sits at the cerebrum's centroid (the frame of
`earlybrain.atlas.frame.standard_frame`, within about 1 mm of the head frame's; x is
left alone so that x = 0 stays the exact midsagittal plane). Each contrast is scaled
so that the 99th percentile of brain voxels is 1000 and stored as int16, the brain
mask and the 12-label map as uint8 (`earlybrain.atlas.write.write_atlas`), on a
VOXEL_MM isotropic grid (the phantom's own, so no resampling). Ages are stored as
postmenstrual weeks (`months_to_pma_weeks`, rounded to 0.1): templates are ~8.7 weeks
apart, so registering an infant needs `register.max_age_distance_weeks` >= 4.4.

Everything is deterministic: the same code and library versions give the same files.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from earlybrain.anatomy.biometry import months_to_pma_weeks
from earlybrain.atlas.buildspec import BuildParams, WeekTemplate
from earlybrain.atlas.frame import CEREBRUM
from earlybrain.atlas.write import write_atlas
from earlybrain.geometry import apply
from earlybrain.simulate.contrast import intensity_image
from earlybrain.simulate.phantom import Phantom, SubjectTraits, build_labels, infant_anatomy

log = logging.getLogger("earlybrain.atlas")

NAME = "earlybrain-infant"
SPACE = "earlybrainInfant"
MONTHS: tuple[float, ...] = (0, 2, 4, 6, 8, 10, 12, 15, 18, 21, 24)
CONTRASTS: tuple[str, ...] = ("T1w", "T2w")
# The rendered texture makes every brain voxel ~11 bits of gzip entropy: at 1.5 mm the
# atlas is 9.4 MiB, at 1.6 mm 7.9 MiB (the repository's budget for it is 8 MiB); the
# Dice of a registered infant is the same at both (0.87 tissue mean, 0.99 mask).
VOXEL_MM = 1.6
MARGIN_MM = 5.0
FOLD_SEED = 20251  # the typical infant's folding pattern...
TEXTURE_SEED = 20252  # ...and tissue texture (the same at every age)
BRAIN_LABELS = tuple(range(1, 13))  # intracranial: tissues, ventricles, eCSF
TISSUE_LABELS = (2, 3, 4, 5, 8, 9, 10, 11, 12)  # without CSF spaces
_SCALE = BuildParams()  # intensity scaling shared with built atlases


def pma_weeks(months: float) -> float:
    """The stored age of the template of `months`: postmenstrual weeks, 0.1 precision."""
    return round(months_to_pma_weeks(months), 1)


def typical_traits() -> SubjectTraits:
    """The simulator's typical subject: every trait at its population mean, fixed seeds."""
    return SubjectTraits(
        size=1.0,
        aspect=(1.0, 1.0, 1.0),
        ventricle=1.0,
        fold_seed=FOLD_SEED,
        intensity={k: 1.0 for k in range(1, 17)},
        texture_seed=TEXTURE_SEED,
    )


def _scaled(image: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Brain-only image with its brain's 99th percentile at 1000 (as built atlases)."""
    top = float(np.percentile(image[brain], _SCALE.intensity_percentile))
    return np.where(brain, image * (_SCALE.intensity_scale / top), 0.0).astype(np.float32)


def typical_template(months: float, voxel_mm: float = VOXEL_MM) -> WeekTemplate:
    """The template of the typical infant `months` after term birth (both contrasts)."""
    traits = typical_traits()
    anat = infant_anatomy(float(months), traits)
    labels, affine = build_labels(anat, traits, voxel_mm)
    ph = Phantom(labels, affine, anat, traits, pma_weeks(months), "infant")
    rendered = {c: intensity_image(ph, c) for c in CONTRASTS}
    brain = np.isin(labels, BRAIN_LABELS)
    # crop to the brain plus the margin
    idx = np.argwhere(brain)
    pad = int(np.ceil(MARGIN_MM / voxel_mm))
    lo = np.maximum(idx.min(axis=0) - pad, 0)
    hi = np.minimum(idx.max(axis=0) + pad + 1, labels.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    brain = brain[box]
    crop = affine.copy()
    crop[:3, 3] = apply(affine, lo.astype(np.float64)[None])[0]
    # origin at the cerebrum's centroid in y and z; x = 0 stays the midsagittal plane
    centre = apply(crop, np.argwhere(np.isin(labels[box], CEREBRUM)).astype(np.float64))
    offset = np.round(centre.mean(axis=0), 3)
    offset[0] = 0.0
    crop[:3, 3] -= offset
    images = {c: _scaled(img[box], brain) for c, img in rendered.items()}
    vox_ml = voxel_mm**3 / 1000.0
    info: dict[str, Any] = {
        "made_from": "one typical simulated infant (not a population average)",
        "postnatal_months": float(months),
        "pma_weeks": round(months_to_pma_weeks(months), 3),
        "head_frame_origin_mm": [float(-v) + 0.0 for v in offset],
        "intracranial_volume_ml": round(float(brain.sum()) * vox_ml, 1),
        "brain_tissue_volume_ml": round(
            float(np.isin(labels[box], TISSUE_LABELS).sum()) * vox_ml, 1
        ),
    }
    return WeekTemplate(
        week=pma_weeks(months),
        image=images["T2w"],
        affine=crop,
        mask=brain.astype(np.uint8),
        dseg=np.where(brain, labels[box], 0).astype(np.uint8),
        images=images,
        info=info,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python -m earlybrain.atlas.infant",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--out", default="atlases/earlybrain-infant")
    ap.add_argument("--voxel-mm", type=float, default=VOXEL_MM, help="template grid (mm)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    templates = []
    for months in MONTHS:
        templates.append(typical_template(months, args.voxel_mm))
        log.info("template %g months (%.1f weeks PMA) done", months, templates[-1].week)
    provenance = {
        "generated_by": "earlybrain.atlas.infant",
        "command": "python -m earlybrain.atlas.infant "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "made_from": "earlybrain simulator phantom of one typical infant per age "
        "(earlybrain.simulate.phantom.infant_anatomy + build_labels, rendered by "
        "earlybrain.simulate.contrast.intensity_image); noise-free, no registration, "
        "no averaging",
        "postnatal_months": [float(m) for m in MONTHS],
        "age_weeks": "postmenstrual age = 40 + months * 4.345 (months_to_pma_weeks), "
        "rounded to 0.1",
        "voxel_mm": args.voxel_mm,
        "margin_mm": MARGIN_MM,
        "traits": asdict(typical_traits()),
        "brain_labels": list(BRAIN_LABELS),
        "intensity": f"each contrast x brain mask, scaled so that the "
        f"{_SCALE.intensity_percentile:g}th percentile of brain voxels is "
        f"{_SCALE.intensity_scale:g}, stored as int16",
        "origin": "cerebrum centroid in y and z; x = 0 is the phantom's midsagittal plane",
    }
    path = write_atlas(
        templates,
        Path(args.out),
        name=NAME,
        space=SPACE,
        params=None,
        resolution_mm=args.voxel_mm,
        provenance=provenance,
        description="earlybrain's own infant T1w + T2w atlas, term (0 months) to 24 months "
        "postnatal, one template per age, ages in postmenstrual weeks. Each template is a "
        "single typical simulated infant (the simulator's phantom with mean traits), not a "
        "population average of real infants: a stand-in so that the pipeline runs offline; "
        "for real data prefer a published infant atlas or one built from your own cohort",
        population="infant",
        age_kind="PMA",
        citation="earlybrain (this repository)",
    )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
