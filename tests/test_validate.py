"""Input validation: every bad input gives a failing status whose message names the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from synth_fixtures import corrupt_gzip, make_bids, oblique_affine, write_nifti

from earlybrain.io.bids import discover_sessions
from earlybrain.io.validate import (
    ValidationSettings,
    check_image,
    slice_axis,
    validate_session,
    write_validation,
)


def _session(tmp_path: Path, **kw):
    bids = make_bids(tmp_path / "bids", **kw)
    return bids, discover_sessions(bids, strict=False)


def test_good_session_passes(tmp_path: Path) -> None:
    _, (rec,) = _session(tmp_path, fetal={"f01": 25.0})
    report = validate_session(rec)
    assert report["status"] == "pass", report["errors"]
    assert report["errors"] == []
    assert [im["n_slices"] for im in report["images"]] == [10, 10]
    out = write_validation(report, tmp_path / "v.json")
    assert json.loads(out.read_text())["status"] == "pass"


def test_nan_voxels(tmp_path: Path) -> None:
    bids, (rec,) = _session(tmp_path, fetal={"f01": 25.0})
    path = bids / "sub-f01" / "anat" / "sub-f01_run-2_T2w.nii.gz"
    data = np.ones((20, 20, 6), np.float32)
    data[3, 4, 5] = np.nan
    data[0, 0, 0] = np.inf
    write_nifti(path, data, oblique_affine(), dtype=np.float32)
    report = validate_session(rec)
    assert report["status"] == "fail"
    assert report["errors"] == [f"{path}: 2 voxels are NaN or Inf"]


def test_2d_image(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "sub-x_run-1_T2w.nii.gz", np.ones((20, 20)), np.eye(4))
    info = check_image(path, "fetal", ValidationSettings())
    assert not info["ok"]
    assert info["problems"] == [f"{path}: image is 2D (shape (20, 20)), expected a 3D volume"]


def test_too_few_slices(tmp_path: Path) -> None:
    data = np.random.default_rng(0).uniform(1, 2, (30, 30, 2))
    path = write_nifti(tmp_path / "sub-x_run-1_T2w.nii.gz", data, oblique_affine())
    info = check_image(path, "fetal", ValidationSettings(min_slices=3))
    assert not info["ok"]
    assert "stack has 2 slice(s) along axis 2, need at least 3" in info["problems"][0]
    assert str(path) in info["problems"][0]
    # the same volume is fine as an infant scan (no per-stack slice rule)
    assert check_image(path, "infant", ValidationSettings())["ok"]


def test_corrupt_gzip_names_the_file(tmp_path: Path) -> None:
    bids, (rec,) = _session(tmp_path, fetal={"f01": 25.0})
    bad = bids / "sub-f01" / "anat" / "sub-f01_run-1_T2w.nii.gz"
    corrupt_gzip(bad)
    report = validate_session(rec)
    assert report["status"] == "fail"
    (err,) = report["errors"]
    assert err.startswith(f"{bad}: cannot read as NIfTI")
    assert report["images"][1]["ok"]  # the other stack is still checked and fine


def test_non_positive_voxel_size(tmp_path: Path) -> None:
    path = write_nifti(
        tmp_path / "sub-x_run-1_T2w.nii", np.arange(500).reshape(10, 10, 5), np.eye(4)
    )
    raw = bytearray(path.read_bytes())
    raw[84:88] = np.float32(0.0).tobytes()  # pixdim[2]; nibabel would "fix" it on save
    raw[252:256] = b"\0\0\0\0"  # qform_code, sform_code = 0: affine from pixdim
    path.write_bytes(bytes(raw))
    info = check_image(path, "fetal", ValidationSettings())
    assert not info["ok"]
    assert info["problems"] == [f"{path}: voxel sizes must be positive, header has [1.0, 0.0, 1.0]"]


def test_constant_and_empty_images(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "c.nii.gz", np.zeros((10, 10, 5)), np.eye(4))
    assert "image is constant" in check_image(path, "infant", ValidationSettings())["problems"][0]
    path = write_nifti(tmp_path / "e.nii.gz", np.zeros((10, 0, 5)), np.eye(4))
    assert "image has zero size" in check_image(path, "infant", ValidationSettings())["problems"][0]


@pytest.mark.parametrize(("kind", "age", "ok"), [("fetal", 17.0, False), ("fetal", 44.0, True)])
def test_fetal_age_range(tmp_path: Path, kind: str, age: float, ok: bool) -> None:
    _, (rec,) = _session(tmp_path, fetal={"f01": age})
    report = validate_session(rec)
    assert (report["status"] == "pass") is ok
    if not ok:
        assert "outside the supported fetal range 18-45 weeks" in report["errors"][0]
        assert "sub-f01" in report["errors"][0]


def test_infant_age_range(tmp_path: Path) -> None:
    _, (rec,) = _session(tmp_path, fetal={}, infant={"i01": 200.0})
    report = validate_session(rec)
    assert report["status"] == "fail"
    assert "PMA 200.0 weeks" in report["errors"][0]


def test_discovery_errors_are_carried(tmp_path: Path) -> None:
    bids = make_bids(tmp_path / "bids", fetal={"f01": 25.0})
    (bids / "participants.tsv").write_text("participant_id\tsex\nsub-f01\tF\n")
    (rec,) = discover_sessions(bids, strict=False)
    report = validate_session(rec)
    assert report["status"] == "fail"
    assert "no gestational age" in report["errors"][0]


def test_slice_axis() -> None:
    assert slice_axis((100, 100, 20), np.array([1.0, 1.0, 4.0])) == 2
    assert slice_axis((20, 100, 100), np.array([4.0, 1.0, 1.0])) == 0
    assert slice_axis((50, 60, 40), np.array([1.0, 1.0, 1.0])) == 2  # fewest voxels
    assert slice_axis((50, 50, 50), np.array([1.0, 1.0, 1.0])) == 2  # last axis


def test_validate_step_always_writes_a_status(tmp_path: Path) -> None:
    """The workflow step never fails on bad input: it writes status "fail" and why."""
    from earlybrain.steps import validate_step

    bids = make_bids(tmp_path / "bids", fetal={"f01": 25.0})
    out = tmp_path / "v.json"
    assert validate_step(bids, "f09", None, out, (18, 45), (37, 160), 3) == 0
    report = json.loads(out.read_text())
    assert report["status"] == "fail"
    assert "validation could not run" in report["errors"][0]
    assert "subjects not found: sub-f09" in report["errors"][0]
    assert validate_step(bids, "f01", None, out, (18, 45), (37, 160), 3) == 0
    assert json.loads(out.read_text())["status"] == "pass"
