"""Rebuild the atlas that earlybrain ships (`atlases/earlybrain-fetal`), exactly.

    python -m earlybrain.atlas.default --out atlases/earlybrain-fetal

The subjects are simulator phantoms (`earlybrain.simulate`) standing in for
reconstructions: for cohort seed COHORT_SEED and the ages AGES, subject i is exactly the
ground truth that `earlybrain simulate OUT --fetal 24 --ga AGES... --seed COHORT_SEED
--preset demo` writes as `sub-fNN_desc-truth_T2w` / `_desc-truth_dseg` (1.0 mm, in a
random head pose), taken brain-only. They are made in memory, so no files are needed.
Everything is seeded; the ANTs metrics used are deterministic for a fixed thread count.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from earlybrain.atlas.build import build_templates
from earlybrain.atlas.buildspec import BuildParams
from earlybrain.atlas.standardise import AtlasSubject
from earlybrain.atlas.write import write_atlas
from earlybrain.simulate.acquisition import random_head_pose
from earlybrain.simulate.cohort import PRESETS, subject_seed
from earlybrain.simulate.contrast import intensity_image
from earlybrain.simulate.phantom import make_phantom

log = logging.getLogger("earlybrain.atlas")

NAME = "earlybrain-fetal"
SPACE = "earlybrainFetal"
COHORT_SEED = 2025
N_SUBJECTS = 24
# a little beyond 21-38 weeks so that the first and last weeks have subjects on both sides
AGES: tuple[float, ...] = tuple(round(float(a), 1) for a in np.linspace(20.0, 39.0, N_SUBJECTS))
WEEKS: tuple[float, ...] = tuple(float(w) for w in range(21, 39))
PRESET = "demo"
PARAMS = BuildParams(voxel_mm=1.2, sigma_weeks=1.0, iterations=3, threads=2, random_seed=1)


def simulated_subject(index: int, age: float, cohort_seed: int, voxel_mm: float) -> AtlasSubject:
    """Subject `index` (1-based) of a simulated cohort: brain-only truth volume + labels.

    Same phantom and head pose as `simulate_cohort` gives sub-f{index:02d} (the pose is
    the first draw of the stack simulator's generator, seeded with seed + 1).
    """
    seed = subject_seed(cohort_seed, "fetal", index)
    ph = make_phantom(age, seed, kind="fetal", voxel_mm=voxel_mm)
    pose = random_head_pose(np.random.default_rng(seed + 1))
    brain = (ph.labels >= 1) & (ph.labels <= 12)
    return AtlasSubject(
        image=(intensity_image(ph) * brain).astype(np.float32),
        affine=pose @ ph.affine,
        age_weeks=age,
        labels=np.where(brain, ph.labels, 0).astype(np.uint8),
        name=f"sub-f{index:02d}",
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        allow_abbrev=False, prog="python -m earlybrain.atlas.default", description=__doc__
    )
    ap.add_argument("--out", default="atlases/earlybrain-fetal")
    ap.add_argument("--weeks", type=float, nargs="*", default=None, help="default: 21..38")
    ap.add_argument("--preset", default=PRESET, choices=sorted(PRESETS), help="subject resolution")
    ap.add_argument("--voxel-mm", type=float, default=PARAMS.voxel_mm, help="template grid")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    weeks = tuple(args.weeks) if args.weeks else WEEKS
    voxel = PRESETS[args.preset].truth_voxel_mm
    params = replace(PARAMS, voxel_mm=args.voxel_mm)
    subjects, seeds = [], {}
    for i, age in enumerate(AGES, start=1):
        if min(abs(age - w) for w in weeks) > 3 * params.sigma_weeks:
            continue  # cannot weigh in on any requested week
        subjects.append(simulated_subject(i, age, COHORT_SEED, voxel))
        seeds[subjects[-1].name] = subject_seed(COHORT_SEED, "fetal", i)
        log.info("simulated %s (%.1f weeks)", subjects[-1].name, age)
    templates = build_templates(subjects, weeks, params)
    provenance = {
        "generated_by": "earlybrain.atlas.default",
        "command": "python -m earlybrain.atlas.default "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "subjects_from": "earlybrain simulator phantoms (brain-only ground-truth T2w + labels)",
        "equivalent_simulation": f"earlybrain simulate OUT --fetal {N_SUBJECTS} --ga "
        + " ".join(f"{a:g}" for a in AGES)
        + f" --seed {COHORT_SEED} --preset {args.preset}",
        "cohort_seed": COHORT_SEED,
        "subjects": [
            {"name": s.name, "age_weeks": s.age_weeks, "seed": seeds[s.name]} for s in subjects
        ],
        "subject_voxel_mm": voxel,
    }
    path = write_atlas(
        templates,
        Path(args.out),
        name=NAME,
        space=SPACE,
        params=params,
        provenance=provenance,
        description="earlybrain's own fetal T2w spatiotemporal atlas, 21-38 weeks GA, one "
        "template per week, built by earlybrain's age-kernel-weighted groupwise registration "
        "from simulated subjects (a stand-in for real reconstructions; for real data prefer "
        "a published atlas or one built from your own cohort)",
        citation="earlybrain (this repository); built with ANTsPy (Avants et al., "
        "Neuroimage 2011; Tustison et al., Sci Rep 2021)",
    )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
