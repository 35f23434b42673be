"""Where the development data lie (`../shared/data` beside the checkout), and how the
real fetal anatomies of `fidon-sb-atlas` are split between training and validation.

The data are never copied into the repository: training commands, tests and benches
look them up here. `EARLYBRAIN_SHARED_DATA` points elsewhere.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from earlybrain import REPO_ROOT

FIDON = "fidon-sb-atlas"
MIAL = "mial-sub01"
FETPYPE = "fetpype-simu001"

# Fidon et al. 2021 spina bifida atlas: 15 time points. Neighbouring weeks of one atlas
# are near copies, so the split is one contiguous block of weeks: the oldest three
# (32-34 weeks, the largest brains) are held out for validation, never trained on.
FIDON_TIMEPOINTS: tuple[str, ...] = (
    *(f"fetal_SB_atlas_GA{w}_notoperated" for w in range(21, 26)),
    *(f"fetal_SB_atlas_GA{w}_operated" for w in range(25, 35)),
)
FIDON_VALIDATION_WEEKS = (32, 33, 34)


def fidon_week(name: str) -> int:
    """Gestational week of a Fidon time point folder name."""
    return int(name.split("_GA")[1].split("_")[0])


def fidon_split(split: str) -> tuple[str, ...]:
    """Time points of the `train` or `val` split (see FIDON_VALIDATION_WEEKS)."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    val = tuple(t for t in FIDON_TIMEPOINTS if fidon_week(t) in FIDON_VALIDATION_WEEKS)
    return val if split == "val" else tuple(t for t in FIDON_TIMEPOINTS if t not in val)


def fidon_timepoint(root: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T2w image, its affine, brain mask) of the Fidon time point `name`. By name, not by
    week: week 25 has two time points (not operated and operated)."""
    img = nib.load(root / name / "srr.nii.gz")
    brain = np.asanyarray(nib.load(root / name / "mask.nii.gz").dataobj) > 0
    return img.get_fdata(dtype=np.float32), img.affine, brain


def fidon_anatomy(root: Path, week: int) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """(time point name, T2w image, its affine, brain mask) of the Fidon time point of
    `week` (the first of two, 25 weeks, is the not-operated one)."""
    name = next(t for t in FIDON_TIMEPOINTS if fidon_week(t) == week)
    return name, *fidon_timepoint(root, name)


def candidates() -> list[Path]:
    """Folders that may hold the shared data, in the order they are tried."""
    out = []
    if os.environ.get("EARLYBRAIN_SHARED_DATA"):
        out.append(Path(os.environ["EARLYBRAIN_SHARED_DATA"]))
    out += [REPO_ROOT.parent / "shared" / "data", Path("/work/shared/data")]
    return list(dict.fromkeys(out))  # the checkout may well be /work/<name>


def dataset(name: str) -> Path | None:
    """The folder of one shared dataset, or None when it is nowhere to be found."""
    return next((c / name for c in candidates() if (c / name).is_dir()), None)


def require(name: str) -> Path:
    """Like `dataset`, but a missing dataset is an error that says where it was looked for."""
    path = dataset(name)
    if path is None:
        tried = ", ".join(str(c / name) for c in candidates())
        raise FileNotFoundError(
            f"shared dataset {name} not found (looked in {tried}); "
            "set EARLYBRAIN_SHARED_DATA to the folder that holds it"
        )
    return path


# mial-sub01's age is not published; the intracranial volume of its hand-drawn masks
# (about 150-170 mL) suggests 25-27 weeks
MIAL_GA_WEEKS = 26


def mial_bids_copy(dest: Path, ga_weeks: float = MIAL_GA_WEEKS) -> Path:
    """Copy mial-sub01 to `dest` (a new folder) as a lab would hand it to the pipeline:
    without its derivatives, with only a `ga_weeks` column added to participants.tsv."""
    shutil.copytree(require(MIAL), dest, ignore=shutil.ignore_patterns("derivatives"))
    (dest / "participants.tsv").write_text(
        f"participant_id\tsex\tage\tga_weeks\nsub-01\tn/a\tn/a\t{ga_weeks:g}\n"
    )
    return dest


def mial_manual_masks(root: Path) -> Path:
    """mial-sub01's hand-drawn masks folder, as shipped (MIALSRTK naming): a `masks_dir`."""
    return root / "derivatives" / "manual_masks"


def mial_pairs(root: Path) -> list[tuple[Path, Path]]:
    """(real stack, its hand-drawn brain mask) for the six runs of mial-sub01 at `root`."""
    masks = mial_manual_masks(root) / "sub-01" / "anat"
    return [
        (
            root / "sub-01" / "anat" / f"sub-01_run-{r}_T2w.nii.gz",
            masks / f"sub-01_run-{r}_T2w_desc-brain_mask.nii.gz",
        )
        for r in range(1, 7)
    ]


def fetpype_pairs(root: Path) -> list[tuple[Path, Path]]:
    """(stack, provided brain mask) for the three runs of fetpype-simu001 at `root`."""
    anat = root / "sub-simu001" / "ses-01" / "anat"
    masks = root / "derivatives" / "masks" / "sub-simu001" / "ses-01" / "anat"
    return [
        (
            anat / f"sub-simu001_ses-01_run-{r}_T2w.nii.gz",
            masks / f"sub-simu001_ses-01_run-{r}_mask.nii.gz",
        )
        for r in (1, 2, 3)
    ]
