"""Infant sessions: the working contrast by age, the whole-head brain mask clean-up, and
skull-stripped images."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from earlybrain.anatomy.biometry import months_to_pma_weeks
from earlybrain.io.nifti import save_nifti
from earlybrain.preprocess.infant import (
    InfantError,
    brain_mask_from_probabilities,
    months_from_pma,
    prepare_infant_to_files,
    primary_contrast,
    skull_stripped_mask,
)
from earlybrain.simulate.acquisition import simulate_volume
from earlybrain.simulate.phantom import make_phantom


def test_working_contrast() -> None:
    both = ["T1w", "T2w"]
    # T2w whenever present (its CSF outlines the intracranial space at every age)...
    assert primary_contrast(both, months_to_pma_weeks(1.0)) == "T2w"
    assert primary_contrast(both, months_to_pma_weeks(20.0)) == "T2w"
    # ...unless T1w is asked for from some age on
    assert primary_contrast(both, months_to_pma_weeks(5.9), t1w_from_months=6) == "T2w"
    assert primary_contrast(both, months_to_pma_weeks(6.1), t1w_from_months=6) == "T1w"
    # one contrast: that one, whatever the age
    assert primary_contrast(["T2w"], months_to_pma_weeks(20.0)) == "T2w"
    assert primary_contrast(["T1w", "T1w"], months_to_pma_weeks(1.0)) == "T1w"
    with pytest.raises(InfantError, match="needs a T1w or T2w"):
        primary_contrast(["FLAIR"], 50.0)
    assert months_from_pma(months_to_pma_weeks(7.5)) == pytest.approx(7.5)


def test_mask_is_one_filled_component() -> None:
    """Tissue probability of a ball with a background-labelled cavity (a ventricle the
    network missed) and a stray tissue-like blob outside: one component, no hole."""
    n = 40
    z, y, x = np.mgrid[:n, :n, :n]
    ball = (x - 20) ** 2 + (y - 20) ** 2 + (z - 20) ** 2 <= 12**2
    cavity = (x - 20) ** 2 + (y - 20) ** 2 + (z - 20) ** 2 <= 4**2
    blob = (x - 3) ** 2 + (y - 3) ** 2 + (z - 3) ** 2 <= 2**2
    tissue = (ball & ~cavity) | blob
    prob = np.stack([np.where(tissue, 0.1, 0.9), np.where(tissue, 0.9, 0.1)]).astype(np.float32)
    mask = brain_mask_from_probabilities(prob, np.diag([1.0, 1.0, 1.0, 1.0]))
    assert mask[cavity].all() and not mask[blob].any()
    assert mask.sum() == pytest.approx(ball.sum(), rel=0.02)
    empty = brain_mask_from_probabilities(np.stack([np.ones((8, 8, 8))] * 2), np.eye(4))
    assert not empty.any()


def test_every_infant_age_has_a_template_within_the_configured_distance() -> None:
    """An infant half way between two templates must still be registered."""
    from earlybrain.atlas.manifest import load_manifest, select_template
    from earlybrain.config_schema import shipped_config

    repo = Path(__file__).resolve().parents[1]
    config = shipped_config()
    limit = config["infant"]["max_template_distance_weeks"]
    manifest = load_manifest(repo / config["atlas"]["infant_manifest"])
    for months in np.arange(0.0, 24.01, 0.25):
        select_template(manifest, months_to_pma_weeks(months), "T2w", limit)


def _network_not_wanted() -> None:
    raise LookupError("the segmentation network was asked for")


@pytest.mark.parametrize("months", [1.0, 12.0, 23.0])
def test_a_skull_stripped_image_keeps_its_own_mask(tmp_path: Path, months: float) -> None:
    """A simulated infant rendered skull-stripped (zero outside its true intracranial
    mask), T1w: its non-zero region is the mask, and no network is loaded. With the
    background of a whole head zeroed, the non-zero region is no brain: the network."""
    ph = make_phantom(months, 8700 + int(months), kind="infant", voxel_mm=1.0)
    images, affine, truth, _, _ = simulate_volume(ph, ("T1w",), 1.5, 8750 + int(months))
    stripped = np.where(truth > 0, images["T1w"], 0).astype(np.float32)
    raw = save_nifti(stripped, affine, tmp_path / "raw.nii.gz")
    n4 = save_nifti(stripped * 1.1, affine, tmp_path / "n4.nii.gz")
    pma = months_to_pma_weeks(months)
    qc = prepare_infant_to_files(
        n4, "T1w", pma, tmp_path / "mask.nii.gz", tmp_path / "qc.json", _network_not_wanted,
        raw_path=raw,
    )  # fmt: skip
    assert qc["method"] == "support" and qc["skull_stripped"] and qc["weights"] is None
    mask = np.asarray(nib.load(tmp_path / "mask.nii.gz").dataobj) > 0
    assert np.array_equal(mask, truth > 0)
    side = json.loads((tmp_path / "mask.json").read_text())
    assert side["MaskMethod"] == "support" and "skull-stripped" in side["Parameters"]["method"]
    # a whole head whose scanner zeroed the background: too large for a brain of its age
    head = images["T1w"] > 0.05 * np.percentile(images["T1w"], 99)
    zeroed = save_nifti(np.where(head, images["T1w"], 0), affine, tmp_path / "head.nii.gz")
    with pytest.raises(LookupError, match="network was asked for"):
        prepare_infant_to_files(
            zeroed, "T1w", pma, tmp_path / "m2.nii.gz", tmp_path / "q2.json",
            _network_not_wanted, raw_path=zeroed,
        )  # fmt: skip
    _, why = skull_stripped_mask(np.where(head, images["T1w"], 0), affine, pma)
    assert not why["skull_stripped"]  # a note says why when it has a zero background
    assert "outside the" in why.get("note", "outside the")
