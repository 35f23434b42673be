"""Precomputed masks: found beside the raw layout, or a clear error naming the stack."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from shared_data import fetpype_or_skip, mial_or_skip

from earlybrain.io.masks import MaskNotFoundError, find_mask
from earlybrain.simulate.cohort import CohortSpec, simulate_cohort


def test_simulated_masks_derivative_is_found_and_matches_the_truth(tmp_path: Path) -> None:
    spec = CohortSpec(n_fetal=1, n_stacks=2, preset="tiny", seed=2, write_masks=True)
    bids, truth = simulate_cohort(tmp_path, spec)
    masks_dir = bids / "derivatives" / "masks"
    assert (masks_dir / "dataset_description.json").is_file()
    for run in (1, 2):
        path = find_mask(masks_dir, "sub-f01", f"sub-f01_run-{run}")
        stack = nib.load(bids / "sub-f01" / "anat" / f"sub-f01_run-{run}_T2w.nii.gz")
        mask = nib.load(path)
        assert mask.shape == stack.shape and np.allclose(mask.affine, stack.affine)
        true = nib.load(truth / "sub-f01" / f"sub-f01_run-{run}_desc-brain_mask.nii.gz")
        assert np.array_equal(np.asanyarray(mask.dataobj), np.asanyarray(true.dataobj))


def test_missing_mask_names_the_stack_and_the_places_looked(tmp_path: Path) -> None:
    with pytest.raises(MaskNotFoundError, match=r"sub-a_ses-1_run-3_T2w.*sub-a/ses-1/anat"):
        find_mask(tmp_path, "sub-a/ses-1", "sub-a_ses-1_run-3", "T2w")


@pytest.mark.parametrize(
    "name",
    [
        "sub-a_run-2_T2w_desc-brain_mask.nii.gz",  # MIALSRTK: full stem + _desc-brain_mask
        "sub-a_run-2_desc-brain_mask.nii.gz",
        "sub-a_run-2_mask.nii.gz",
        "sub-a_run-2_brainmask.nii",
        "sub-a_run-2_T2w_mask.nii.gz",
        "sub-a_run-2_T2w_brainmask.nii.gz",
        "sub-a_run-2_desc-brain_T2w_mask.nii.gz",  # earlybrain's own naming
    ],
)
def test_mask_naming_variants_are_found(tmp_path: Path, name: str) -> None:
    anat = tmp_path / "sub-a" / "anat"
    anat.mkdir(parents=True)
    (anat / name).write_bytes(b"x")
    (anat / "sub-a_run-20_mask.nii.gz").write_bytes(b"x")  # another run's: never picked
    assert find_mask(tmp_path, "sub-a", "sub-a_run-2", "T2w") == anat / name
    with pytest.raises(MaskNotFoundError):
        find_mask(tmp_path, "sub-a", "sub-a_run-3", "T2w")


def test_mial_manual_masks_are_found() -> None:
    """The real dataset's hand-drawn masks (MIALSRTK naming), which masks_dir used to
    ignore without a word."""

    mial = mial_or_skip()
    masks = mial / "derivatives" / "manual_masks"
    for run in range(1, 7):
        path = find_mask(masks, "sub-01", f"sub-01_run-{run}", "T2w")
        assert path.name == f"sub-01_run-{run}_T2w_desc-brain_mask.nii.gz"


def test_shared_fetpype_layout_is_understood() -> None:
    data = fetpype_or_skip()
    path = find_mask(
        data / "derivatives" / "masks", "sub-simu001/ses-01", "sub-simu001_ses-01_run-2"
    )
    assert path.name == "sub-simu001_ses-01_run-2_mask.nii.gz"
