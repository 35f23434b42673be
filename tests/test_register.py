"""Atlas registration: conventions, robust initialisation, accuracy in any pose, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from earlybrain.atlas.manifest import AgeError, load_manifest, select_template
from earlybrain.atlas.templates import load_template
from earlybrain.geometry import apply
from earlybrain.io.nifti import load_nifti, save_nifti
from earlybrain.register import antsio, stages
from earlybrain.register.init import (
    InitResult,
    candidate_transforms,
    cube_rotations,
    initialise,
    mask_moments,
)
from earlybrain.register.metrics import dice, label_dice, mean_dice, ncc
from earlybrain.register.register import (
    RegistrationParams,
    register_images,
    register_to_atlas,
    registration_paths,
)
from earlybrain.register.stages import RegistrationError
from earlybrain.register.synthetic import posed_subject, random_pose

REPO = Path(__file__).resolve().parents[1]
ATLAS = REPO / "atlases" / "earlybrain-fetal"


def _rotation_error_deg(A: np.ndarray, B: np.ndarray) -> float:
    ra = A[:3, :3] / np.cbrt(np.linalg.det(A[:3, :3]))
    rb = B[:3, :3] / np.cbrt(np.linalg.det(B[:3, :3]))
    return float(np.degrees(np.arccos(np.clip((np.trace(ra.T @ rb) - 1) / 2, -1, 1))))


# --- conventions -------------------------------------------------------------------------


def test_ants_images_keep_ras_placement_and_matrix_transforms_round_trip(tmp_path: Path) -> None:
    ants = antsio.ants_module()
    rng = np.random.default_rng(0)
    A = np.eye(4)
    A[:3, :3] = random_pose(rng)[:3, :3] @ np.diag([1.2, 0.9, 1.0])
    A[:3, 3] = [10.0, -5.0, 7.0]
    data = rng.random((6, 7, 8)).astype(np.float32)
    img = antsio.to_ants(data, A)
    assert np.allclose(antsio.ras_affine(img), A, atol=1e-5)
    assert np.allclose(img.numpy(), data)
    # an ITK transform written from a RAS point map moves images as that map says
    M = random_pose(rng)
    path = antsio.write_matrix_transform(M, tmp_path / "m.mat")
    assert np.allclose(antsio.read_matrix_transform(path), M, atol=1e-6)
    moved = antsio.to_ants(data, M @ A)  # the same voxels placed by M
    back = ants.apply_transforms(img, moved, [str(path)], interpolator="nearestNeighbor")
    assert np.allclose(back.numpy(), data, atol=1e-5)


def test_cube_rotations_are_the_24_proper_ones() -> None:
    rots = cube_rotations()
    assert len(rots) == 24
    assert all(np.isclose(np.linalg.det(r), 1.0) for r in rots)
    assert len({tuple(np.rint(r).astype(int).ravel()) for r in rots}) == 24


def test_metrics() -> None:
    a = np.zeros((4, 4), bool)
    a[:2] = True
    assert dice(a, a) == 1.0 and dice(a, ~a) == 0.0 and np.isnan(dice(a & ~a, a & ~a))
    x = np.arange(16.0).reshape(4, 4)
    assert ncc(x, 2 * x + 1) == pytest.approx(1.0) and ncc(x, -x, a) == pytest.approx(-1.0)
    d = label_dice(np.array([1, 1, 2]), np.array([1, 2, 2]), [1, 2, 3])
    assert mean_dice(d) == pytest.approx(np.mean([d[1], d[2]]))  # label 3 absent: ignored


# --- against the shipped atlas -------------------------------------------------------------


@pytest.fixture(scope="module")
def atlas():
    return load_manifest(ATLAS)


def _template(atlas, age: float):
    return load_template(atlas, select_template(atlas, age).template)


@pytest.mark.parametrize("seed", [1, 2])
def test_initialisation_finds_any_pose(atlas, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pose = random_pose(rng)
    sub = posed_subject(27.3, 500 + seed, 2.0, pose)
    tpl = _template(atlas, 27.3)
    res = initialise(tpl.image, tpl.affine, tpl.mask, sub.image, sub.affine, sub.mask)
    # the atlas frame is the head frame up to a few degrees: the chosen map ~ the pose
    assert _rotation_error_deg(res.matrix, pose) < 12.0
    log = res.log()
    assert log["n_candidates"] >= 24 and log["chosen"]["name"] == res.chosen.name
    assert json.dumps(log)  # JSON-ready for the QC file


def test_candidates_include_the_principal_axes_match() -> None:
    rng = np.random.default_rng(4)
    sub = posed_subject(25.0, 11, 2.0, random_pose(rng))
    m = mask_moments(sub.mask, sub.affine)
    cands = candidate_transforms(m, m, use_scale=True)
    errs = [_rotation_error_deg(c.matrix, np.eye(4)) for c in cands]
    assert min(errs) < 1e-6  # identity is among them: axes mapped to themselves


@pytest.mark.parametrize(
    ("voxel_mm", "seed", "ages"),
    [
        (1.6, 3, (23.0, 35.0)),
        (1.6, 8, (23.0, 35.0)),
        pytest.param(1.0, 5, (22.0, 37.0), marks=pytest.mark.slow),
        pytest.param(1.0, 13, (22.0, 37.0), marks=pytest.mark.slow),
    ],
)
def test_subject_in_any_pose_registers_with_dice_above_080(
    atlas, tmp_path: Path, voxel_mm: float, seed: int, ages: tuple[float, float]
) -> None:
    """One of the 24 axis-aligned orientations + a random angle + a shift; the warped
    atlas labels match the subject's, and its atlas-space volume lies in the atlas frame."""
    rng = np.random.default_rng(seed)
    age = float(rng.uniform(*ages))
    offset = 700 if voxel_mm > 1.2 else 900
    sub = posed_subject(age, offset + seed, voxel_mm, random_pose(rng))
    tpl = _template(atlas, age)
    res = register_images(tpl, sub.image, sub.affine, sub.mask, tmp_path)
    per_label = label_dice(res.subject_dseg, sub.labels, range(1, 13))
    assert mean_dice(per_label) >= 0.80, per_label
    centre_tpl = apply(tpl.affine, np.argwhere(tpl.mask > 0).astype(float)).mean(axis=0)
    centre_sub = apply(res.atlas_affine, np.argwhere(res.atlas_mask > 0).astype(float)).mean(0)
    assert np.linalg.norm(centre_tpl - centre_sub) < 3.0


def test_register_to_atlas_writes_everything(atlas, tmp_path: Path) -> None:
    rng = np.random.default_rng(21)
    sub = posed_subject(30.2, 42, 1.6, random_pose(rng))
    vol = save_nifti(sub.image, sub.affine, tmp_path / "in" / "sub-01_T2w.nii.gz")
    msk = save_nifti(sub.mask, sub.affine, tmp_path / "in" / "sub-01_mask.nii.gz", dtype=np.uint8)
    out = tmp_path / "out"
    # outputs and repeatability, not accuracy (tested above): light settings keep it quick
    light = {"syn_iterations": [30, 15, 0], "rigid_iterations": [50, 20, 0]}
    qc = register_to_atlas(vol, msk, 30.2, ATLAS, out, "sub-01", params=light)
    paths = registration_paths(out, "sub-01", atlas.space)
    for p in paths.values():
        assert p.is_file(), p
    assert qc["template"]["age_weeks"] == 30.0 and "30-week" in qc["template"]["selection"]
    assert qc["initialisation"]["chosen"]["name"]
    # the shipped segmentation network is the orientation's voter (its weights on record);
    # it votes when more than one refined orientation is left (here one: tests of the
    # vote itself in test_orientation.py)
    assert qc["parameters"]["orientation_vote_weights"]["sha256"]
    refined = qc["initialisation"]["refined"]
    voted = "segmentation network is clearly surer" in qc["initialisation"]["method"]
    assert voted == (len(refined) > 1) and voted == all("network_confidence" in c for c in refined)
    assert json.loads(paths["qc"].read_text())["ncc"] == pytest.approx(qc["ncc"])
    stage_s = qc["timings"]
    assert stage_s["linear_s"] > 0 and stage_s["syn_s"] > 0.1  # SyN timed on its own
    side = json.loads(paths["dseg"].with_name("sub-01_desc-atlas_dseg.json").read_text())
    assert side["Template"]["space"] == "earlybrainFetal" and side["Sources"]
    # atlas-space volume: standard orientation, on the template's extent
    vol_atlas = load_nifti(paths["volume"])
    assert np.allclose(vol_atlas.affine[:3, :3], np.diag([1.6, 1.6, 1.6]), atol=1e-4)
    dseg = np.asarray(load_nifti(paths["dseg"]).dataobj)
    assert dseg.shape == sub.image.shape
    assert mean_dice(label_dice(dseg, sub.labels, range(1, 13))) >= 0.70
    # the transforms on disk map the subject onto the atlas as described in the JSON
    ants = antsio.ants_module()
    note = json.loads(paths["xfm"].read_text())
    fwd = [str(paths["xfm"].parent / n) for n in note["Forward"]["transformlist"]]
    tpl = load_template(atlas, select_template(atlas, 30.2).template)
    mask_atlas = ants.apply_transforms(
        antsio.to_ants(tpl.mask, tpl.affine),
        antsio.to_ants(sub.mask, sub.affine),
        fwd,
        interpolator="genericLabel",
    ).numpy()
    assert dice(mask_atlas > 0, tpl.mask > 0) >= 0.9
    # same input, same output (seeded ANTs, deterministic metrics for a fixed thread count)
    out2 = tmp_path / "out2"
    register_to_atlas(vol, msk, 30.2, ATLAS, out2, "sub-01", params=light)
    p2 = registration_paths(out2, "sub-01", atlas.space)
    for key in ("dseg", "affine", "warp", "volume"):
        assert paths[key].read_bytes() == p2[key].read_bytes(), key


def test_register_refuses_far_ages_and_bad_params(tmp_path: Path) -> None:
    sub = posed_subject(22.0, 3, 2.0, np.eye(4))
    vol = save_nifti(sub.image, sub.affine, tmp_path / "v.nii.gz")
    with pytest.raises(AgeError, match="covers 21-38 weeks"):
        register_to_atlas(vol, None, 45.0, ATLAS, tmp_path / "o", "x")
    with pytest.raises(ValueError, match=r"unknown registration parameter.*syn_its"):
        RegistrationParams.from_dict({"syn_its": [1]})
    p = RegistrationParams.from_dict({"syn_iterations": [10, 0], "init": {"refine_top": 1}})
    assert p.syn_iterations == (10, 0) and p.init.refine_top == 1


# --- when ANTs fails ----------------------------------------------------------------------

ANTS_FAILURE = "Registration failed with error code 1"  # what antspy raises
LIGHT = {"syn_iterations": [30, 15, 0], "rigid_iterations": [50, 20, 0]}


def _subject_files(tmp_path: Path) -> tuple[Path, Path, float]:
    """The subject of test_register_to_atlas_writes_everything (it passes QC)."""
    sub = posed_subject(30.2, 42, 1.6, random_pose(np.random.default_rng(21)))
    vol = save_nifti(sub.image, sub.affine, tmp_path / "in" / "sub-01_T2w.nii.gz")
    msk = save_nifti(sub.mask, sub.affine, tmp_path / "in" / "sub-01_mask.nii.gz", dtype=np.uint8)
    return vol, msk, 30.2


def test_a_start_that_fails_gives_way_to_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ANTs fails from the chosen start of the orientation search: the other starts are
    tried, the one whose affine result agrees best with the template is kept (here the
    same orientation before its refinement), and the QC records every start."""
    real = stages.linear_stage
    calls: list[str] = []

    def first_rigid_fails(kind: str, *args: object, **kwargs: object) -> dict:
        calls.append(kind)
        if calls == ["Rigid"]:
            raise RuntimeError(ANTS_FAILURE)
        return real(kind, *args, **kwargs)

    monkeypatch.setattr(stages, "linear_stage", first_rigid_fails)
    vol, msk, age = _subject_files(tmp_path)
    qc = register_to_atlas(vol, msk, age, ATLAS, tmp_path / "out", "sub-01", params=LIGHT)
    first, *others = qc["starts"]
    assert first["failed"] == "rigid" and ANTS_FAILURE in first["error"]
    assert len(others) == 2 and all("ncc_affine" in o for o in others)
    kept = max(others, key=lambda o: o["ncc_affine"])
    assert qc["start"] == kept["start"] == f"{first['start']} unrefined"
    assert qc["deformable"] and qc["mask_dice"] >= 0.85 and qc["qc_pass"], qc["qc_warnings"]


def test_syn_that_fails_leaves_the_affine_alignment_flagged(
    atlas, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every output is written, with an identity warp in place of SyN's; the QC flags it
    and the transforms on disk still carry the subject onto the atlas."""

    def syn_fails(*args: object, **kwargs: object) -> dict:
        raise RuntimeError(ANTS_FAILURE)

    monkeypatch.setattr(stages, "syn_stage", syn_fails)
    vol, msk, age = _subject_files(tmp_path)
    out = tmp_path / "out"
    qc = register_to_atlas(vol, msk, age, ATLAS, out, "sub-01", params=LIGHT)
    assert qc["deformable"] is False and not qc["qc_pass"]
    assert any(w.startswith("SyN failed") and ANTS_FAILURE in w for w in qc["qc_warnings"])
    paths = registration_paths(out, "sub-01", atlas.space)
    assert all(p.is_file() for p in paths.values())
    assert not np.asarray(load_nifti(paths["warp"]).dataobj).any()  # the identity
    assert qc["jacobian_min"] == pytest.approx(1.0) == qc["jacobian_max"]
    ants = antsio.ants_module()
    note = json.loads(paths["xfm"].read_text())
    fwd = [str(paths["xfm"].parent / n) for n in note["Forward"]["transformlist"]]
    tpl = _template(atlas, age)
    sub_mask = load_nifti(msk)
    mask_atlas = ants.apply_transforms(
        antsio.to_ants(tpl.mask, tpl.affine),
        antsio.to_ants(np.asarray(sub_mask.dataobj), sub_mask.affine),
        fwd,
        interpolator="genericLabel",
    ).numpy()
    assert dice(mask_atlas > 0, tpl.mask > 0) >= 0.85  # an affine alignment's overlap


def test_registration_that_cannot_succeed_says_where_and_what_to_try(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starts that put the template 1 m from the image (as a failed initialisation would):
    no sample of the template falls on the image from any of them, and the error names
    the image, the stage, the starts and what to do, on one line for the log's end."""
    real_starts = stages.starts

    def far_starts(init: InitResult, n: int) -> list[tuple[str, np.ndarray]]:
        far = np.eye(4)
        far[:3, 3] = 1000.0
        return [(name, far @ matrix) for name, matrix in real_starts(init, n)]

    monkeypatch.setattr(stages, "starts", far_starts)
    vol, msk, age = _subject_files(tmp_path)
    params = LIGHT | {"max_starts": 2}
    with pytest.raises(RegistrationError) as err:
        register_to_atlas(vol, msk, age, ATLAS, tmp_path / "out", "sub-01", params=params)
    message = str(err.value)
    assert message.startswith(f"{vol}: atlas registration failed at the affine stage")
    assert "each of 2 start(s)" in message and "no overlap" in message
    assert "register.max_starts" in message and "\n" not in message  # one log line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.nii.gz"))
