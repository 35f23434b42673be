"""`earlybrain step infant-brainage` (rule brainage_infant) on a small simulated infant.

Checks the step's wiring and the outputs' schema, not the ages: the estimator's
calibration is regenerated when the simulator or the infant atlas changes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from earlybrain.brainage.infant_reference import brain_labels
from earlybrain.brainage.norms import shipped_infant_norms_path
from earlybrain.cli import main
from earlybrain.io.nifti import save_nifti
from earlybrain.register import antsio
from earlybrain.report.brainage import brainage_html, stage_values, summary_line
from earlybrain.report.readers import read_tsv
from earlybrain.segment.volumes import volume_rows, volumes_tsv
from earlybrain.simulate.contrast import intensity_image
from earlybrain.simulate.phantom import make_phantom

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "atlases" / "earlybrain-infant" / "manifest.json"
PREFIX = "sub-i01_mod-T2w"
MONTHS = 6.0
pytestmark = pytest.mark.skipif(not MANIFEST.exists(), reason="no infant atlas")


@pytest.fixture(scope="module")
def infant(tmp_path_factory) -> dict:
    """A 6-month-old's files as the workflow has them: T2w image, brain mask and
    segmentation on its grid, volumes TSV, and the registration's affine (identity: the
    phantom is in the atlas orientation)."""
    p = make_phantom(MONTHS, 3, kind="infant", voxel_mm=2.0)
    labels = brain_labels(p)
    out = tmp_path_factory.mktemp("infant_brainage_step")
    files = {
        "volume": out / "sub-i01_desc-n4_T2w.nii.gz",
        "mask": out / f"{PREFIX}_desc-brain_mask.nii.gz",
        "dseg": out / f"{PREFIX}_dseg.nii.gz",
        "volumes": out / f"{PREFIX}_desc-volumes.tsv",
        "affine": out / f"{PREFIX}_from-T2w_to-atlas_mode-image_xfm.mat",
    }
    image = np.where(labels > 0, intensity_image(p, "T2w"), 0.0).astype(np.float32)
    save_nifti(image, p.affine, files["volume"], dtype=np.float32)
    save_nifti((labels > 0).astype(np.uint8), p.affine, files["mask"], dtype=np.uint8)
    save_nifti(labels, p.affine, files["dseg"], dtype=np.uint8)
    files["volumes"].write_text(volumes_tsv(volume_rows(labels, p.affine)))
    antsio.write_matrix_transform(np.eye(4), files["affine"])
    return files | {"age": float(p.age_weeks), "root": out}


def step_args(files: dict, out_anat: Path, *extra: str) -> list[str]:
    return [
        "step", "infant-brainage", "--volume", str(files["volume"]), "--mask",
        str(files["mask"]), "--contrast", "T2w", "--affine", str(files["affine"]),
        "--volumes", str(files["volumes"]), "--dseg", str(files["dseg"]), "--age",
        f"{files['age']}", "--atlas", str(MANIFEST), "--out-anat", str(out_anat),
        "--prefix", PREFIX, *extra,
    ]  # fmt: skip


def test_step_writes_what_the_reports_read(infant, tmp_path: Path, capsys) -> None:
    anat = tmp_path / "anat"
    assert main(step_args(infant, anat)) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"{PREFIX}: brain age ") and "months" in printed
    brainage = anat / f"{PREFIX}_desc-brainage.json"
    zscores = anat / f"{PREFIX}_desc-zscores.tsv"
    assert zscores.with_suffix(".json").is_file()  # the TSV's sidecar
    r = json.loads(brainage.read_text())
    assert r["population"] == "infant" and r["age_kind"] == "PMA" and r["contrast"] == "T2w"
    assert r["chronological_age_weeks"] == pytest.approx(infant["age"])
    assert r["chronological_age_months"] == pytest.approx(MONTHS, abs=0.01)
    assert r["primary_method"] == "combined"
    # the segmentation was given: the myelination estimate is part of the combination
    assert set(r["methods"]) == {"combined", "atlas_similarity", "volumes", "myelination"}
    for m in r["methods"].values():
        assert np.isfinite(m["age_weeks"]) and m["sd_weeks"] > 0 and "age_months" in m
    assert r["norms"]["file"] == str(shipped_infant_norms_path())  # the default
    assert str(infant["dseg"]) in r["Sources"]
    rows = read_tsv(zscores)
    assert rows[-1]["structure"] == "brain_age_gap_weeks"
    assert {row["structure"] for row in rows} >= {"WM", "ventricles", "total_brain"}
    # what the reports make of it
    assert "weeks PMA (" in summary_line(r) and " months" in summary_line(r)
    html = brainage_html(r, rows)
    assert "combined (primary)" in html and "myelination (contrast indexes)" in html
    assert "<th>age (months)</th>" in html
    values = stage_values(r, rows)["brain_age"]
    assert values["population"] == "infant"
    assert values["predicted_months"] == r["predicted_age_months"]
    # the normative chart (rule brainage_figures_infant): on the norms the JSON names
    png = tmp_path / "chart.png"
    assert main(["step", "brainage-figures", "--brainage", str(brainage), "--zscores",
                 str(zscores), "--out", str(png)]) == 0  # fmt: skip
    assert png.read_bytes().startswith(b"\x89PNG")


def test_step_takes_other_norms(infant, tmp_path: Path) -> None:
    """--norms (config brainage.infant_norms) replaces the shipped infant norms."""
    norms = shutil.copy(shipped_infant_norms_path(), tmp_path / "lab_norms.json")
    anat = tmp_path / "anat"
    assert main(step_args(infant, anat, "--norms", str(norms))) == 0
    r = json.loads((anat / f"{PREFIX}_desc-brainage.json").read_text())
    assert r["norms"]["file"] == str(norms)


def test_unusable_inputs_end_with_one_line(infant, tmp_path: Path, capsys) -> None:
    """A BrainAgeError is one line on stderr (the end of the job's log) and status 1."""
    empty = tmp_path / "empty_mask.nii.gz"
    img = nib.load(infant["mask"])
    save_nifti(np.zeros(img.shape, np.uint8), img.affine, empty, dtype=np.uint8)
    anat = tmp_path / "anat"
    assert main(step_args(infant | {"mask": empty}, anat)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: infant brain age of {PREFIX}: BrainAgeError: ")
    assert "brain mask is empty or tiny" in err[-1]
    assert not (anat / f"{PREFIX}_desc-brainage.json").exists()
