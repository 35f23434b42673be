"""Fetal sessions that bring their own reconstruction (SVRTK, NiftyMIC, NeSVoR output).

Discovery (a `rec` entity, or `reconstructed: true`), the brain mask of such a volume,
and the workflow from the given volume to brain age and the report: once on a real
anatomy (a Fidon atlas reconstruction, brain-extracted, of a week the segmentation
network never trained on, turned into an oblique scanner orientation) and once on a
simulated head that is not brain-extracted (the network masks it).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import file_checksums
from scipy.spatial.transform import Rotation
from shared_data import fidon_or_skip
from synth_fixtures import make_stack

from earlybrain.io.bids import MissingAgeError, discover_sessions
from earlybrain.preprocess.support import support_mask
from earlybrain.runner import run_workflow
from earlybrain.shared_data import fidon_week

# a Fidon time point outside the segmentation network's training weeks (21-31)
FIDON_GIVEN = "fetal_SB_atlas_GA33_operated"


def oblique_copy(src: Path, dest: Path, seed: int = 0) -> np.ndarray:
    """`src` written with its voxel axes permuted and flipped and its world coordinates
    turned by a random oblique rotation and shift: the same anatomy as a scanner would
    place a fetus lying any way. No interpolation, so the anatomy is exactly the source's.
    Returns the world transform applied (source world -> copy world)."""
    img = nib.load(src)
    data = np.asanyarray(img.dataobj)
    rng = np.random.default_rng(seed)
    order = rng.permutation(3)
    flips = rng.random(3) < 0.5
    moved = np.transpose(data, order)
    index = np.eye(4)[[*order, 3]].T  # new voxel index -> old voxel index
    for axis in np.flatnonzero(flips):
        moved = np.flip(moved, axis)
        flip = np.eye(4)
        flip[axis, axis], flip[axis, 3] = -1, moved.shape[axis] - 1
        index = index @ flip
    turn = np.eye(4)
    turn[:3, :3] = Rotation.random(random_state=seed).as_matrix()
    turn[:3, 3] = rng.uniform(-40, 40, 3)
    dest.parent.mkdir(parents=True, exist_ok=True)
    out = nib.Nifti1Image(np.ascontiguousarray(moved).astype(np.float32), turn @ img.affine @ index)
    nib.save(out, str(dest))
    return turn


def test_oblique_copy_keeps_the_anatomy(tmp_path: Path) -> None:
    src = make_stack(tmp_path / "a.nii.gz", shape=(12, 10, 8))
    turn = oblique_copy(src, tmp_path / "b.nii.gz", seed=3)
    a, b = nib.load(src), nib.load(tmp_path / "b.nii.gz")
    for ijk_b in [(3, 4, 5), (0, 0, 0), (7, 2, 9)]:
        world = np.linalg.solve(turn, b.affine @ [*ijk_b, 1])  # back in the source's world
        ijk_a = tuple(np.rint(np.linalg.solve(a.affine, world)[:3]).astype(int))
        assert np.isclose(a.get_fdata()[ijk_a], b.get_fdata()[ijk_b])
    assert b.shape != a.shape and not np.allclose(a.affine[:3, :3], b.affine[:3, :3])


def _bids_with(root: Path, images: dict[str, float]) -> Path:
    """A BIDS folder with one image per session name -> GA."""
    bids = root / "bids"
    rows = []
    for name, ga in images.items():
        sub = name.split("_")[0]
        make_stack(bids / sub / "anat" / name, shape=(24, 24, 20))
        rows.append(f"{sub}\t{ga}")
    (bids / "participants.tsv").write_text("participant_id\tga_weeks\n" + "\n".join(rows) + "\n")
    return bids


def test_rec_entity_with_a_gestational_age_is_a_given_reconstruction(tmp_path: Path) -> None:
    bids = _bids_with(tmp_path, {"sub-01_rec-nesvor_T2w.nii.gz": 29})
    (rec,) = discover_sessions(bids)
    assert rec.kind == "fetal" and rec.reconstruction == "nesvor" and rec.age_weeks == 29
    assert any("made outside earlybrain (rec-nesvor)" in n for n in rec.notes)


def test_rec_entity_of_an_infant_scan_stays_infant(tmp_path: Path) -> None:
    """A scanner's `rec-norm` on an infant's T2w: PMA, no GA, so no fetal reconstruction."""
    bids = tmp_path / "bids"
    make_stack(bids / "sub-01" / "anat" / "sub-01_rec-norm_T2w.nii.gz", shape=(24, 24, 20))
    (bids / "participants.tsv").write_text("participant_id\tpma_weeks\nsub-01\t50\n")
    (rec,) = discover_sessions(bids)
    assert rec.kind == "infant" and rec.reconstruction is None and rec.age_weeks == 50


def test_reconstructed_config_takes_a_plain_t2w_volume(tmp_path: Path) -> None:
    bids = _bids_with(tmp_path, {"sub-01_T2w.nii.gz": 30})
    with pytest.raises(MissingAgeError):  # without the setting: an infant without a PMA
        discover_sessions(bids)
    (rec,) = discover_sessions(bids, reconstructed=True)
    assert rec.kind == "fetal" and rec.reconstruction == "given" and rec.age_weeks == 30


def test_given_reconstruction_may_not_take_earlybrains_own_name(tmp_path: Path) -> None:
    bids = _bids_with(tmp_path, {"sub-01_rec-svr_T2w.nii.gz": 30})
    (rec,) = discover_sessions(bids, strict=False)
    assert rec.errors and "rec-svr is the name earlybrain gives" in rec.errors[0]


def test_support_mask_of_a_brain_extracted_volume() -> None:
    data = np.zeros((40, 40, 40), np.float32)
    zz, yy, xx = np.mgrid[:40, :40, :40]
    brain = (zz - 20) ** 2 + (yy - 20) ** 2 + ((xx - 20) / 1.3) ** 2 < 14**2
    data[brain] = 1.0 + np.random.default_rng(0).random(brain.sum())
    data[20, 20, 20] = 0.0  # a zero inside (dark CSF rounded to 0): still brain
    assert np.array_equal(support_mask(data), brain)
    assert support_mask(data + 0.1) is None  # signal everywhere: not brain-extracted
    speckle = np.where(np.random.default_rng(1).random(data.shape) < 0.3, 1.0, 0.0)
    assert support_mask(speckle) is None  # scattered non-zero voxels are no mask


def test_implausible_given_reconstruction_is_one_clear_error(tmp_path: Path, capsys) -> None:
    """A brain-extracted volume holding 0.5 mL (a voxel size in cm, say) is refused by the
    given-mask step in one line naming the file; nothing is written."""
    from earlybrain.io.nifti import save_nifti
    from earlybrain.preprocess.steps import given_recon_mask_step
    from earlybrain.stepkit import Compute

    data = np.zeros((30, 30, 30), np.float32)
    data[10:20, 10:20, 10:20] = 1.0  # 1000 voxels of 0.5 mm: 0.125 mL
    raw = save_nifti(data, np.diag([0.5, 0.5, 0.5, 1.0]), tmp_path / "sub-01_rec-x_T2w.nii.gz")
    out = tmp_path / "out"
    rc = given_recon_mask_step(
        raw, raw, out / "mask.nii.gz", out / "qc.json",
        weights=None, compute=Compute(device="cpu"),
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.startswith(f"error: {raw}: the brain mask") and "\n" not in err
    assert not out.exists()


@pytest.fixture(scope="module")
def given_run(tmp_path_factory: pytest.TempPathFactory, tiny_cohort) -> dict:
    """One workflow run on two given reconstructions: a real brain-extracted anatomy
    (Fidon, rec-svrtk, with an SVRTK sidecar carrying PHI) and a simulated whole head
    (no rec entity: `reconstructed: true`), both in oblique scanner orientations."""
    fidon = fidon_or_skip()
    root = tmp_path_factory.mktemp("given")
    bids = root / "bids"
    anat = bids / "sub-b01" / "anat"
    oblique_copy(fidon / FIDON_GIVEN / "srr.nii.gz", anat / "sub-b01_rec-svrtk_T2w.nii.gz")
    (anat / "sub-b01_rec-svrtk_T2w.json").write_text(
        json.dumps(
            {
                "GeneratedBy": [{"Name": "SVRTK", "Version": "2.1"}],
                "PatientName": "DOE^JANE",
                "InstitutionName": "St Example Hospital",
            }
        )
    )
    sim_bids, truth = tiny_cohort
    with (sim_bids / "participants.tsv").open() as fh:
        ages = {r["participant_id"]: r for r in csv.DictReader(fh, delimiter="\t")}
    sim_ga = float(ages["sub-f01"]["ga_weeks"])
    oblique_copy(
        truth / "sub-f01" / "sub-f01_desc-truth_T2w.nii.gz",
        bids / "sub-s01" / "anat" / "sub-s01_T2w.nii.gz",
        seed=1,
    )
    (bids / "participants.tsv").write_text(
        f"participant_id\tga_weeks\nsub-b01\t{fidon_week(FIDON_GIVEN)}\nsub-s01\t{sim_ga}\n"
    )
    before = file_checksums(bids)
    out = root / "out"
    rc = run_workflow(bids, out, cores=2, overrides={"reconstructed": True})
    return {"rc": rc, "bids": bids, "out": out, "before": before, "sim_ga": sim_ga}


def _stages(out: Path, prefix: str) -> dict:
    return json.loads(
        (out / "earlybrain" / "group" / "stages" / f"{prefix}_stages.json").read_text()
    )


@pytest.mark.slow
@pytest.mark.shared_data
def test_given_reconstructions_run_to_brain_age_and_report(given_run: dict) -> None:
    out = given_run["out"]
    assert given_run["rc"] == 0, "see the logs under " + str(out / "logs")
    assert file_checksums(given_run["bids"]) == given_run["before"]  # inputs untouched
    deriv = out / "earlybrain"
    for prefix, label, truth_ga in (
        ("sub-b01", "svrtk", fidon_week(FIDON_GIVEN)),
        ("sub-s01", "given", given_run["sim_ga"]),
    ):
        st = _stages(out, prefix)
        rows = {s["key"]: s for s in st["stages"]}
        assert st["status"] == "ok", rows
        assert rows["svr_srr"]["status"] == "not applicable"
        name = f"{prefix}_rec-{label}_T2w" if label != "given" else f"{prefix}_T2w"
        assert f"reconstruction given: {name}.nii.gz (rec-{label}" in rows["svr_srr"]["detail"]
        assert rows["stack_qc"]["status"] == "not applicable"
        assert rows["segmentation"]["status"] in ("done", "flagged")
        age = st["brain_age"]["predicted_weeks"]
        assert abs(age - truth_ga) <= 3.0, (prefix, age, truth_ga)
        anat = deriv / prefix / "anat"
        assert (anat / f"{prefix}_rec-{label}_desc-volumes.tsv").is_file()
        assert (anat / f"{prefix}_rec-{label}_dseg.nii.gz").is_file()
        assert (deriv / f"{prefix}.html").is_file()
    real = _stages(out, "sub-b01")
    rows = {s["key"]: s for s in real["stages"]}
    assert "by SVRTK 2.1" in rows["svr_srr"]["detail"]
    assert "came brain-extracted" in rows["brain_mask"]["detail"]
    assert any("brought its own super-resolution" in t for t in real["methods"]["paragraphs"])
    # the real anatomy's volumes: a 33-week brain (Fidon's own labels: about 230 mL of
    # brain tissue); cerebellum and brainstem present
    volumes = real["volumes_ml"]
    assert 150 <= volumes["total_brain"] <= 320, volumes
    assert volumes["cerebellum"] >= 5 and volumes["brainstem"] >= 1.5, volumes
    sim = {s["key"]: s for s in _stages(out, "sub-s01")["stages"]}
    assert "segmentation network" in sim["brain_mask"]["detail"]
    for path in out.rglob("*"):  # the lab's sidecar's PHI reaches no output
        if path.is_file() and path.suffix in (".json", ".html", ".tsv", ".log", ".yaml"):
            text = path.read_text(errors="replace")
            assert "DOE^JANE" not in text and "St Example Hospital" not in text, path
