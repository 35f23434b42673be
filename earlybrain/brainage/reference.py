"""The simulated healthy reference cohort and the norms the pipeline ships, fitted on it.

Subjects are phantoms (`simulate.phantom`) with seeds derived from a cohort seed under
their own split code, so they never coincide with the subjects networks are trained or
validated on, and ages uniform over the fetal range. Volumes are measured with the
pipeline's own `volume_rows` on the phantom's true labels, so a structure means the same
in the norms as in a subject's volumes TSV. Rebuild the shipped file with
`build_reference_norms(shipped_norms_path())` (about 7 minutes on one core).
"""

from __future__ import annotations

import os

import numpy as np

from earlybrain.brainage.norms import Norms
from earlybrain.brainage.norms_fit import fit_norms
from earlybrain.segment.volumes import volume_rows
from earlybrain.simulate.phantom import make_phantom
from earlybrain.training import derived_seeds

REFERENCE_SPLIT_CODE = 505  # training splits use 101/202 (masking) and 303/404 (segmentation)
REFERENCE_N = 120
REFERENCE_AGES = (21.0, 38.0)
REFERENCE_VOXEL_MM = 1.0


def reference_ages(n: int, seed: int, ages: tuple[float, float] = REFERENCE_AGES) -> np.ndarray:
    """Ages uniform over `ages`; one stream, so a larger cohort extends a smaller one."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, REFERENCE_SPLIT_CODE]))
    return rng.uniform(ages[0], ages[1], n)


def reference_cohort(
    n: int,
    seed: int,
    ages: tuple[float, float] = REFERENCE_AGES,
    voxel_mm: float = REFERENCE_VOXEL_MM,
) -> list[tuple[float, dict[str, float]]]:
    """(GA weeks, {structure: total_ml}) of `n` simulated healthy fetuses."""
    cohort = []
    subject_seeds = derived_seeds(seed, REFERENCE_SPLIT_CODE, n)
    for age, subject_seed in zip(reference_ages(n, seed, ages), subject_seeds, strict=True):
        phantom = make_phantom(float(age), subject_seed, voxel_mm=voxel_mm)
        rows = volume_rows(phantom.labels, phantom.affine)
        cohort.append((float(age), {str(r["structure"]): float(r["total_ml"]) for r in rows}))
    return cohort


def build_reference_norms(
    out_json: str | os.PathLike[str],
    n: int = REFERENCE_N,
    seed: int = 0,
    ages: tuple[float, float] = REFERENCE_AGES,
    voxel_mm: float = REFERENCE_VOXEL_MM,
) -> Norms:
    """Fit norms on the reference cohort and write them (atomically) to `out_json`."""
    cohort = reference_cohort(n, seed, ages, voxel_mm)
    source = (
        f"earlybrain simulated reference cohort: {n} healthy fetal phantoms, GA uniform "
        f"{ages[0]:g}-{ages[1]:g} weeks, seed {seed}, true labels at {voxel_mm:g} mm"
    )
    metadata = {
        "reference_cohort": {
            "n": n,
            "seed": seed,
            "ages_weeks": list(ages),
            "voxel_mm": voxel_mm,
            "subject_seeds": f"np.random.SeedSequence([seed, {REFERENCE_SPLIT_CODE}, i])",
            "ages": f"uniform from np.random.SeedSequence([seed, {REFERENCE_SPLIT_CODE}])",
            "volumes": "segment.volumes.volume_rows of make_phantom(age, subject_seed).labels",
        }
    }
    norms = fit_norms(cohort, source, age_kind="GA", metadata=metadata)
    norms.to_json(out_json)
    norms.origin = str(out_json)
    return norms
