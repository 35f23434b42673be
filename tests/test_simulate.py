"""The simulator is the ground truth of every later test: check it is self-consistent.

The re-slicing check is written independently of the simulator's own sampling code
(dense through-plane integration instead of Gauss-Hermite nodes, poses rebuilt from
the TSV with scipy), so a wrong affine, pose convention or PSF in the simulator fails it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from scipy.spatial import ConvexHull
from scipy.spatial.transform import Rotation
from skimage import measure

from earlybrain.anatomy import biometry
from earlybrain.anatomy.labels import LABELS, to_tissues
from earlybrain.simulate.cohort import CohortSpec, simulate_cohort
from earlybrain.simulate.contrast import (
    intensity_image,
    tissue_intensities,
    wm_half_months,
    wm_position,
)
from earlybrain.simulate.motion import MOTION_LEVELS, interleaved_order, motion_trajectory
from earlybrain.simulate.phantom import make_phantom

FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))


def _predict_stack(stack_img, truth_img, poses: pd.DataFrame, centre, inplane, thickness, bias):
    """Noise-free stack predicted from the truth volume, the true poses and the true bias."""
    A = stack_img.affine
    shape = stack_img.shape
    truth = truth_img.get_fdata(dtype=np.float32)
    vox = float(truth_img.header.get_zooms()[0])
    sigma_ip = 1.2 * inplane / FWHM
    sigma_tp = thickness / FWHM
    blurred = ndimage.gaussian_filter(truth, sigma_ip / vox, mode="nearest")
    sigma_rest = np.sqrt(sigma_tp**2 - sigma_ip**2)
    offsets = np.linspace(-3.5, 3.5, 29) * sigma_rest
    w = np.exp(-0.5 * (offsets / sigma_rest) ** 2)
    w /= w.sum()
    normal = A[:3, 2] / np.linalg.norm(A[:3, 2])
    world_to_vox = np.linalg.inv(truth_img.affine)
    ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    pred = np.full(shape, np.nan, dtype=np.float64)
    for k in range(shape[2]):
        row = poses.iloc[k]
        R = Rotation.from_euler(
            "xyz", [row.rot_x_deg, row.rot_y_deg, row.rot_z_deg], degrees=True
        ).as_matrix()
        t = np.array([row.trans_x_mm, row.trans_y_mm, row.trans_z_mm])
        p = np.stack([ii, jj, np.full_like(ii, k)], -1) @ A[:3, :3].T + A[:3, 3]
        acc = np.zeros(ii.shape)
        for off, wi in zip(offsets, w, strict=True):
            q = p + off * normal
            ref = (q - centre - t) @ R + centre  # R^T (q - c - t) + c, row-vector form
            v = ref @ world_to_vox[:3, :3].T + world_to_vox[:3, 3]
            acc += wi * ndimage.map_coordinates(
                blurred, v.reshape(-1, 3).T, order=1, cval=np.nan
            ).reshape(ii.shape)
        pred[..., k] = acc * row.intensity_factor
    return pred * bias


def _zero_poses(poses: pd.DataFrame) -> pd.DataFrame:
    z = poses.copy()
    for c in ("rot_x_deg", "rot_y_deg", "rot_z_deg", "trans_x_mm", "trans_y_mm", "trans_z_mm"):
        z[c] = 0.0
    return z


def test_reslicing_truth_with_true_poses_reproduces_stacks(tiny_cohort: tuple[Path, Path]) -> None:
    bids, truth = tiny_cohort
    for sub in ("sub-f01", "sub-f02"):
        info = json.loads((truth / sub / f"{sub}_truth.json").read_text())
        acq = info["acquisition"]
        assert acq["motion"] == "moderate"
        centre = np.array(info["head_centre_mm"])
        truth_img = nib.load(truth / sub / f"{sub}_desc-truth_T2w.nii.gz")
        motion = pd.read_csv(truth / sub / f"{sub}_motion.tsv", sep="\t")
        sigma = acq["noise_sigma"]
        for run in (1, 2, 3):
            stack = nib.load(bids / sub / "anat" / f"{sub}_run-{run}_T2w.nii.gz")
            mask = nib.load(truth / sub / f"{sub}_run-{run}_desc-brain_mask.nii.gz").get_fdata() > 0
            bias = nib.load(truth / sub / f"{sub}_run-{run}_desc-bias_T2w.nii.gz").get_fdata()
            poses = motion[motion.run == run].sort_values("slice").reset_index(drop=True)
            assert len(poses) == stack.shape[2]
            args = (centre, acq["inplane_mm"], acq["thickness_mm"], bias)
            pred = _predict_stack(stack, truth_img, poses, *args)
            # brain interior, away from slice edges where partial volume is steep
            inner = ndimage.binary_erosion(mask, np.ones((3, 3, 1))) & np.isfinite(pred)
            assert inner.sum() > 500
            obs = stack.get_fdata()
            resid = (obs - pred)[inner]
            # high SNR inside the brain: Rician noise is close to Gaussian with this sigma
            assert abs(resid.mean()) < 0.5 * sigma, (sub, run, resid.mean())
            assert resid.std() < 1.6 * sigma, (sub, run, resid.std(), sigma)
            # the same check with the poses ignored must fail: poses carry real information
            pred0 = _predict_stack(stack, truth_img, _zero_poses(poses), *args)
            resid0 = (obs - pred0)[inner & np.isfinite(pred0)]
            assert resid0.std() > 2.0 * resid.std(), (sub, run)


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path: Path) -> None:
    def digest(root: Path) -> dict[str, str]:
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    spec = CohortSpec(n_fetal=1, n_infant=1, seed=5, preset="tiny", n_stacks=2)
    simulate_cohort(tmp_path / "a", spec)
    simulate_cohort(tmp_path / "b", spec)
    simulate_cohort(
        tmp_path / "c", CohortSpec(n_fetal=1, n_infant=1, seed=6, preset="tiny", n_stacks=2)
    )
    a, b, c = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert len(a) > 10
    assert a == b
    stack = "bids/sub-f01/anat/sub-f01_run-1_T2w.nii.gz"
    assert a[stack] != c[stack]


def test_bids_layout_and_participants(tiny_cohort: tuple[Path, Path]) -> None:
    bids, truth = tiny_cohort
    desc = json.loads((bids / "dataset_description.json").read_text())
    assert desc["BIDSVersion"] and desc["DatasetType"] == "raw"
    part = pd.read_csv(bids / "participants.tsv", sep="\t", na_values="n/a")
    assert list(part.participant_id) == ["sub-f01", "sub-f02", "sub-i01"]
    assert part.ga_weeks.notna().tolist() == [True, True, False]
    assert part.pma_weeks.notna().tolist() == [False, False, True]
    pattern = re.compile(r"^sub-[a-z0-9]+(_run-\d+)?_(T1w|T2w)\.(nii\.gz|json)$")
    raw = [p for p in bids.rglob("*") if "derivatives" not in p.relative_to(bids).parts]
    files = [p for p in raw if p.is_file() and p.parent.name == "anat"]
    assert files and all(pattern.match(p.name) for p in files)
    for p in bids.rglob("*_T2w.nii.gz"):
        img = nib.load(p)
        assert img.ndim == 3 and np.isfinite(img.affine).all()
        assert img.header.get_sform(coded=True)[1] == 1  # scanner-space affine
    # ground truth never leaks into the raw dataset; masks only as a derivatives dataset
    assert not any("truth" in p.name for p in bids.rglob("*"))
    assert not any("mask" in p.name for p in raw)
    masks = bids / "derivatives" / "masks"
    assert (masks / "dataset_description.json").is_file()
    assert len(list(masks.rglob("*_mask.nii.gz"))) == len(
        list(bids.glob("sub-f*/anat/*_T2w.nii.gz"))
    )
    assert (truth / "sub-f01" / "sub-f01_motion.tsv").exists()


def test_stack_geometry_thick_slices_interleaved(tiny_cohort: tuple[Path, Path]) -> None:
    bids, _truth = tiny_cohort
    for p in sorted((bids / "sub-f01" / "anat").glob("*_T2w.nii.gz")):
        zooms = nib.load(p).header.get_zooms()
        assert zooms[2] > 2 * zooms[0]  # thick slices
        side = json.loads(p.with_name(p.name.replace(".nii.gz", ".json")).read_text())
        timing = np.array(side["SliceTiming"])
        assert len(timing) == nib.load(p).shape[2]
        # interleaved: neighbouring slices are not acquired one after the other
        assert len(np.unique(timing)) == len(timing)
        assert np.argsort(timing)[1] != 1
    # three orthogonal orientations relative to the head
    normals = [
        nib.load(p).affine[:3, 2] for p in sorted((bids / "sub-f01" / "anat").glob("*.nii.gz"))
    ]
    normals = [n / np.linalg.norm(n) for n in normals]
    for i in range(3):
        for j in range(i + 1, 3):
            assert abs(normals[i] @ normals[j]) < 0.3


def _measure(ph) -> dict[str, float]:
    lab = ph.labels
    vox = float(ph.affine[0, 0])
    # gyrification index per hemisphere: surface area over the area of its convex hull
    gi = []
    for hemi in ([2, 4, 6, 10], [3, 5, 7, 11]):
        mask = np.isin(lab, hemi).astype(np.float32)
        verts, faces, _, _ = measure.marching_cubes(mask, 0.5, spacing=(vox,) * 3)
        gi.append(measure.mesh_surface_area(verts, faces) / ConvexHull(verts).area)
    skull_outer = (lab >= 1) & (lab <= 13)
    xs = np.where(skull_outer.any(axis=(1, 2)))[0]
    vols = ph.volumes_ml()
    vent = vols["ventricle_left"] + vols["ventricle_right"]
    return {
        "brain": ph.brain_volume_ml(),
        "gyrification": float(np.mean(gi)),
        "bpd": (xs.max() - xs.min() + 1) * vox,
        "ventricle_fraction": vent / ph.brain_volume_ml(),
        "cerebellum": vols["cerebellum_left"] + vols["cerebellum_right"],
    }


def test_age_drives_size_folding_and_ventricles_monotonically() -> None:
    ages = [21, 25, 29, 33, 38]
    m = [_measure(make_phantom(ga, seed=42, voxel_mm=1.2)) for ga in ages]
    for key in ("brain", "gyrification", "bpd", "cerebellum"):
        seq = [x[key] for x in m]
        assert all(b > a for a, b in itertools.pairwise(seq)), (key, seq)
    vent = [x["ventricle_fraction"] for x in m]
    assert all(b < a for a, b in itertools.pairwise(vent)), vent
    assert m[0]["gyrification"] < 1.12  # lissencephalic at 21 weeks
    assert m[-1]["gyrification"] > 1.35  # folded at term
    # cerebellum grows faster than the whole brain (published x34 vs x~8)
    assert m[-1]["cerebellum"] / m[0]["cerebellum"] > 1.5 * m[-1]["brain"] / m[0]["brain"]
    for ga, x in zip(ages, m, strict=True):
        assert x["bpd"] == pytest.approx(biometry.bpd_mm(ga), rel=0.10), ga


def test_subjects_differ_but_keep_identity_across_ages() -> None:
    a = make_phantom(30, seed=1, voxel_mm=1.6)
    b = make_phantom(30, seed=2, voxel_mm=1.6)
    assert a.brain_volume_ml() != pytest.approx(b.brain_volume_ml(), rel=1e-3)
    assert a.traits == make_phantom(24, seed=1, voxel_mm=1.6).traits


def test_labels_cover_the_seven_tissues_left_and_right() -> None:
    ph = make_phantom(30, seed=3, voxel_mm=1.2)
    present = set(np.unique(ph.labels).tolist())
    assert set(LABELS) <= present
    tissues = to_tissues(ph.labels)
    assert set(np.unique(tissues).tolist()) == set(range(8))
    # lateral structures lie on their own side (RAS: left is -x)
    coords = np.stack(np.nonzero(ph.labels == 2), -1) @ ph.affine[:3, :3].T + ph.affine[:3, 3]
    assert (coords[:, 0] < 0).all()
    vols = ph.volumes_ml()
    assert vols["WM_left"] == pytest.approx(vols["WM_right"], rel=0.15)


def test_fetal_t2_contrast_order() -> None:
    v = tissue_intensities(make_phantom(28, seed=0, voxel_mm=2.0))
    assert v[1] > v[4] > v[2]  # CSF bright, unmyelinated WM intermediate, cortex dark


def test_infant_myelination_inverts_white_matter_contrast() -> None:
    def wm_minus_gm(months: float, contrast: str) -> float:
        v = tissue_intensities(make_phantom(months, seed=0, kind="infant", voxel_mm=3.0), contrast)
        return v[4] - v[2]

    assert wm_minus_gm(0.5, "T2w") > 0 > wm_minus_gm(20, "T2w")
    assert wm_minus_gm(0.5, "T1w") < 0 < wm_minus_gm(20, "T1w")
    assert (
        make_phantom(24, 0, kind="infant", voxel_mm=3.0).brain_volume_ml()
        > make_phantom(1, 0, kind="infant", voxel_mm=3.0).brain_volume_ml()
    )


def test_infant_white_matter_myelinates_centre_to_periphery_back_to_front() -> None:
    """T2w white matter darkens deep and posterior first, superficial frontal last; a
    faster maturation clock myelinates more and leaves the anatomy alone."""
    ph = make_phantom(12, seed=0, kind="infant", voxel_mm=2.0)
    wm = np.isin(ph.labels, (4, 5))
    depth, front = wm_position(ph, wm)
    img = intensity_image(ph, "T2w")[wm]
    deep_back = np.median(img[(depth < 0.3) & (front < 0.4)])
    outer_front = np.median(img[(depth > 0.7) & (front > 0.6)])
    assert deep_back < 0.8 * outer_front  # myelinated (dark) vs still bright
    assert wm_half_months("T2w", np.array(1.0), np.array(1.0)) > 15.0
    assert wm_half_months("T1w", np.array(1.0), np.array(1.0)) < 10.0
    fast = replace(ph, traits=replace(ph.traits, maturation=1.2))
    assert np.median(intensity_image(fast, "T2w")[wm]) < np.median(img)
    again = make_phantom(12, seed=0, kind="infant", voxel_mm=2.0)
    assert np.array_equal(again.labels, ph.labels)
    traits = [make_phantom(12, seed=s, kind="infant", voxel_mm=4.0).traits for s in range(40)]
    rates = np.array([t.maturation for t in traits])
    assert 0.02 < rates.std() < 0.08 and abs(rates.mean() - 1.0) < 0.03


def test_motion_levels() -> None:
    t = np.arange(0, 120, 0.8)
    assert not motion_trajectory(t, "none", 0).any()
    mod = motion_trajectory(t, "moderate", 0)
    sev = motion_trajectory(t, "severe", 0)
    lv = MOTION_LEVELS["moderate"]
    assert np.abs(mod[:, :3]).max() <= lv.max_deg and np.abs(mod[:, 3:]).max() <= lv.max_mm
    assert np.abs(sev).mean() > 1.5 * np.abs(mod).mean()
    assert np.array_equal(mod, motion_trajectory(t, "moderate", 0))
    # sudden jumps exist: some slice-to-slice changes are far above the drift's
    steps = np.abs(np.diff(sev[:, :3], axis=0)).max(axis=1)
    assert steps.max() > 5 * np.median(steps)


def test_interleaved_order() -> None:
    assert interleaved_order(7, 2).tolist() == [0, 2, 4, 6, 1, 3, 5]
    assert sorted(interleaved_order(10, 3).tolist()) == list(range(10))


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="18-42 weeks"):
        make_phantom(12, 0)
    with pytest.raises(ValueError, match="preset"):
        simulate_cohort(tmp_path, CohortSpec(preset="huge"))
    with pytest.raises(ValueError, match="one age per subject"):
        CohortSpec(n_fetal=2, fetal_ages=(25.0,)).ages()
