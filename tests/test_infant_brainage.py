"""Infant brain age: shipped infant norms, the brain-age files and their report, ventricles."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from earlybrain.anatomy import biometry
from earlybrain.brainage.infant import (
    infant_brain_age_to_files,
    weeks_to_months,
)
from earlybrain.brainage.infant_reference import (
    INFANT_BENCH_SPLIT_CODE,
    INFANT_CALIBRATION_SPLIT_CODE,
    INFANT_REFERENCE_SPLIT_CODE,
    INFANT_TEST_SPLIT_CODE,
    brain_labels,
    infant_subjects,
    phantom_volumes,
)
from earlybrain.brainage.myelination import contrast_indexes, index_names
from earlybrain.brainage.norms import Norms, shipped_infant_norms_path, subject_zscores
from earlybrain.io.nifti import save_nifti
from earlybrain.register import antsio
from earlybrain.report.brainage import brainage_html, stage_values, summary_line
from earlybrain.report.growth import normative_chart
from earlybrain.report.readers import read_tsv
from earlybrain.segment.volumes import volume_rows, volumes_tsv
from earlybrain.simulate.contrast import intensity_image
from earlybrain.simulate.phantom import make_phantom
from earlybrain.training import derived_seeds

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "atlases" / "earlybrain-infant" / "manifest.json"
VOXEL_MM = 1.5  # fast
needs_atlas = pytest.mark.skipif(not MANIFEST.exists(), reason="no infant atlas")


@pytest.fixture(scope="module")
def norms() -> Norms:
    return Norms.from_json(shipped_infant_norms_path())


@cache
def phantom(months: float, seed: int, ventricle_factor: float = 1.0):
    return make_phantom(
        months, seed, kind="infant", voxel_mm=VOXEL_MM, ventricle_factor=ventricle_factor
    )


def write_subject(
    months: float, seed: int, out: Path, ventricle_factor: float = 1.0, contrast: str = "T2w"
) -> dict:
    """A simulated infant's files as the workflow has them (rotated 10 degrees about z:
    the affine .mat carries the rotation, as a registration's would)."""
    p = phantom(months, seed, ventricle_factor)
    labels = brain_labels(p)
    theta = np.deg2rad(10.0)
    pose = np.eye(4)
    pose[:2, :2] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    affine = pose @ p.affine
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "volume": out / f"{contrast}.nii.gz",
        "mask": out / "mask.nii.gz",
        "dseg": out / "dseg.nii.gz",
        "volumes_tsv": out / "volumes.tsv",
        "xfm": out / "affine.mat",
    }
    image = np.where(labels > 0, intensity_image(p, contrast), 0.0).astype(np.float32)
    save_nifti(image, affine, files["volume"], dtype=np.float32)
    save_nifti((labels > 0).astype(np.uint8), affine, files["mask"], dtype=np.uint8)
    save_nifti(labels, affine, files["dseg"], dtype=np.uint8)
    files["volumes_tsv"].write_text(volumes_tsv(volume_rows(labels, affine)))
    antsio.write_matrix_transform(pose, files["xfm"])  # atlas (head frame) -> subject
    return files | {"contrast": contrast, "pma": float(p.age_weeks)}


def run(files: dict, out: Path, prefix: str = "sub-01_ses-1", **kw: object) -> dict:
    return infant_brain_age_to_files(
        files["volume"], files["mask"], files["contrast"], files["xfm"], files["volumes_tsv"],
        files["pma"], MANIFEST, out, prefix, dseg=files["dseg"], **kw,
    )  # fmt: skip


def test_split_codes_are_their_own() -> None:
    codes = {INFANT_REFERENCE_SPLIT_CODE, INFANT_CALIBRATION_SPLIT_CODE}
    codes |= {INFANT_BENCH_SPLIT_CODE, INFANT_TEST_SPLIT_CODE}
    used_elsewhere = {1, 2, 101, 202, 303, 404, 313, 414, 505, 701, 702, 703, 710}
    assert len(codes) == 4 and not codes & used_elsewhere
    seeds = [set(derived_seeds(0, c, 60)) for c in sorted(codes)]
    assert all(not a & b for i, a in enumerate(seeds) for b in seeds[i + 1 :])


def test_infant_norms_follow_the_simulator(norms: Norms) -> None:
    assert norms.age_kind == "PMA"
    lo, hi = norms.age_range
    assert lo < 42.0 and hi > 140.0
    months = np.linspace(0.0, 24.0, 49)
    weeks = 40.0 + 4.345 * months
    expected = norms.expected_ml("total_brain", weeks)
    target = np.array([biometry.infant_brain_volume_ml(m) for m in months])
    ratio = expected / target
    # the phantom's sulci, fissures and tentorium take ~9 % of the ellipsoid the biometry
    # curve sizes (0.89-0.95 x as fitted); the fitted curve follows its shape within 7 %
    assert np.all((ratio > 0.85) & (ratio < 1.0)), ratio
    assert ratio.max() / ratio.min() < 1.08, ratio
    assert 360 < expected[0] < 420 and 860 < expected[-1] < 960, expected[[0, -1]]
    assert np.all(np.diff(expected) > 0)
    # about 10 % between-subject SD of log volume (size SD 3.5 % per axis)
    assert 0.06 < float(np.median(norms.sd_log("total_brain", weeks))) < 0.15
    for s in ("eCSF", "cortical_GM", "WM", "cerebellum", "deep_GM", "brainstem"):
        assert np.all(np.diff(norms.expected_ml(s, weeks)) > 0), s
    # the ventricles grow with the brain in the simulator; their SD of log volume is
    # 0.28 (the subject's ventricle factor enters cubed), so the end of their cubic is
    # loose: it turns down after 18 months, 12 % (0.45 SD) below brain-like growth at 24
    growth = norms.expected_ml("ventricles", weeks[-1]) / norms.expected_ml("ventricles", weeks[0])
    assert 1.8 < growth < 3.0, growth


def test_norms_fit_held_out_infants(norms: Norms) -> None:
    """Held-out phantoms (test split) score near 0 on every structure at 1.5 mm."""
    z = []
    for months, seed in infant_subjects(3, 0, INFANT_TEST_SPLIT_CODE):
        rows = subject_zscores(norms, 40 + 4.345 * months, phantom_volumes(phantom(months, seed)))
        z += [r["z"] for r in rows]
    assert np.all(np.abs(z) < 3.0), z


def test_enlarged_ventricles_are_flagged(norms: Norms) -> None:
    months, seed = 9.0, 11
    normal = phantom_volumes(phantom(months, seed))
    enlarged = phantom_volumes(phantom(months, seed, ventricle_factor=1.8))
    pma = biometry.months_to_pma_weeks(months)
    z_normal = {r["structure"]: r["z"] for r in subject_zscores(norms, pma, normal)}
    big = {r["structure"]: r for r in subject_zscores(norms, pma, enlarged)}
    assert abs(z_normal["ventricles"]) < 2.0, z_normal
    assert big["ventricles"]["z"] > 2.0 and big["ventricles"]["flag"] is True


def test_white_matter_zones_follow_the_head_and_its_myelination() -> None:
    """Zones are placed in atlas orientation (a pose in the affine and the registration
    gives the same indexes) and at 12 months T2w the deep posterior white matter is
    myelinated (dark) while the superficial frontal is not yet."""
    p = phantom(12.0, 5)
    labels = brain_labels(p)
    image = intensity_image(p, "T2w")
    still = contrast_indexes(image, labels, p.affine, np.eye(4))
    theta = np.deg2rad(30.0)
    pose = np.eye(4)
    pose[:2, :2] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    posed = contrast_indexes(image, labels, pose @ p.affine, pose)
    assert set(still) == set(index_names()) and all(np.isfinite(list(still.values())))
    for k, v in still.items():
        assert posed[k] == pytest.approx(v, abs=0.01), k
    wrong = contrast_indexes(image, labels, pose @ p.affine, np.eye(4))
    assert max(abs(wrong[k] - still[k]) for k in still) > 0.02  # the pose matters
    assert still["WM_deep_posterior"] < still["WM_superficial_anterior"] - 0.2, still


@needs_atlas
def test_files_have_what_the_report_reads(tmp_path: Path) -> None:
    files = write_subject(4.0, 21, tmp_path / "in")
    res = run(files, tmp_path / "anat")
    brainage = tmp_path / "anat" / "sub-01_ses-1_desc-brainage.json"
    zscores = tmp_path / "anat" / "sub-01_ses-1_desc-zscores.tsv"
    assert brainage.exists() and zscores.exists()
    assert zscores.with_suffix(".json").exists()  # the TSV's sidecar
    on_disk = json.loads(brainage.read_text())
    assert on_disk == json.loads(json.dumps(res))
    for key in (
        "chronological_age_weeks", "age_kind", "predicted_age_weeks", "uncertainty_sd_weeks",
        "interval_95_weeks", "brain_age_gap_weeks", "brain_age_gap_z", "brain_age_gap_centile",
        "primary_method", "methods", "method_spread_weeks", "out_of_training_range", "flags",
        "gap_sd_weeks", "norms", "device", "timings", "GeneratedBy", "Parameters", "Sources",
        "predicted_age_months", "chronological_age_months",
    ):  # fmt: skip
        assert key in res, key
    assert res["age_kind"] == "PMA" and res["primary_method"] == "combined"
    assert set(res["methods"]) == {"combined", "atlas_similarity", "volumes", "myelination"}
    for m in res["methods"].values():
        assert np.isfinite(m["age_weeks"]) and m["sd_weeks"] > 0
    assert res["chronological_age_months"] == pytest.approx(4.0, abs=0.01)
    assert res["predicted_age_months"] == pytest.approx(
        weeks_to_months(res["predicted_age_weeks"]), abs=0.01
    )
    assert abs(res["brain_age_gap_weeks"]) < 12.0, res["methods"]
    assert res["norms"]["file"] == str(shipped_infant_norms_path())
    assert {"spread_limit_weeks", "z_limit"} <= set(res["Parameters"])
    rows = read_tsv(zscores)
    assert rows[-1]["structure"] == "brain_age_gap_weeks"
    assert {r["structure"] for r in rows} >= {"WM", "ventricles", "total_brain"}
    # the report renders it: summary, section, stage values, normative chart
    assert "weeks PMA" in summary_line(on_disk)
    html = brainage_html(on_disk, rows)
    assert "Age estimates" in html and "myelination" in html
    values = stage_values(on_disk, rows)
    assert values["brain_age"]["predicted_weeks"] == res["predicted_age_weeks"]
    assert set(values["zscores"]) >= {"WM", "ventricles"}
    png = normative_chart(brainage, zscores, Norms.from_json(res["norms"]["file"]))
    assert png[:4] == b"\x89PNG"
    # without a segmentation the myelination estimate is left out, and said so
    bare = run(files | {"dseg": None}, tmp_path / "bare")
    assert "myelination" not in bare["methods"]
    assert "left out: myelination" in bare["primary_method_description"]


@needs_atlas
def test_enlarged_ventricles_flagged_in_the_files(tmp_path: Path) -> None:
    files = write_subject(9.0, 11, tmp_path / "in", ventricle_factor=1.8, contrast="T1w")
    res = run(files, tmp_path / "anat")
    rows = {
        r["structure"]: r for r in read_tsv(tmp_path / "anat" / "sub-01_ses-1_desc-zscores.tsv")
    }
    assert float(rows["ventricles"]["z"]) > 2.0 and rows["ventricles"]["flag"] == "true"
    assert any(f.startswith("ventricles volume z") for f in res["flags"])
