"""Input validation: every bad input gives a failing status whose message names the file."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from synth_fixtures import corrupt_gzip, make_bids, make_stack, oblique_affine, write_nifti

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
    from earlybrain.io.steps import validate_step

    bids = make_bids(tmp_path / "bids", fetal={"f01": 25.0})
    out = tmp_path / "v.json"
    assert validate_step(bids, "f09", out, None, (18, 45), (37, 160), 3) == 0
    report = json.loads(out.read_text())
    assert report["status"] == "fail"
    assert "validation could not run" in report["errors"][0]
    assert "subjects not found: sub-f09" in report["errors"][0]
    assert validate_step(bids, "f01", out, None, (18, 45), (37, 160), 3) == 0
    assert json.loads(out.read_text())["status"] == "pass"


# --- issue 11: every kind of bad input gives one clear message naming the file ---------


def _write_stack(path: Path, shape=(40, 40, 10), affine=None, data=None, **kw) -> Path:
    """Replace a stack by a readable image with the given geometry or data."""
    path.unlink(missing_ok=True)
    if data is None:
        data = np.random.default_rng(1).uniform(50, 200, shape)
    return write_nifti(path, data, oblique_affine() if affine is None else affine, **kw)


def _write_sform(path: Path, sform: np.ndarray) -> Path:
    """A stack whose sform is `sform` as stored (nibabel would refuse to build one)."""
    img = nib.Nifti1Image(np.random.default_rng(3).uniform(50, 200, (40, 40, 10)), np.eye(4))
    img.header.set_sform(sform, code=1)
    img.header.set_qform(None, code=0)
    nib.save(nib.Nifti1Image(img.get_fdata(), None, img.header), path)
    return path


def _dangling(stack: Path) -> Path:
    stack.unlink()
    stack.symlink_to(stack.parent / ".git" / "annex" / "objects" / "XX" / "SHA256E-s1--0")
    return stack


def _directory(stack: Path) -> Path:
    stack.unlink()
    stack.mkdir()
    return stack


def _empty(stack: Path) -> Path:
    stack.write_bytes(b"")
    return stack


def _not_gzip(stack: Path) -> Path:
    stack.write_bytes(gzip.decompress(stack.read_bytes()))  # plain .nii under a .gz name
    return stack


def _qform_sform_disagree(stack: Path) -> Path:
    """A qform that is the sform's mirror image: which side is left depends on the tool.
    (A shift between the two is only a note: tests/test_nifti_conventions.py.)"""
    img = nib.load(stack)
    qform = img.affine.copy()
    qform[:3, 0] *= -1  # first axis reversed
    qform[:3, 3] -= qform[:3, 0] * (img.shape[0] - 1)  # over the same box of voxels
    header = img.header.copy()
    header.set_qform(qform, code=1)
    header.set_sform(img.affine, code=1)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), None, header), stack)
    return stack


def _participants(bids: Path, *rows: str) -> Path:
    path = bids / "participants.tsv"
    path.write_text("participant_id\tga_weeks\n" + "".join(r + "\n" for r in rows))
    return path


def _case_twin(bids: Path) -> Path:
    twin = bids / "sub-F01" / "anat" / "sub-F01_run-1_T2w.nii.gz"
    twin.parent.mkdir(parents=True)
    shutil.copy(bids / "sub-f01" / "anat" / "sub-f01_run-1_T2w.nii.gz", twin)
    return bids


def _non_bids_name(bids: Path) -> Path:
    stray = bids / "sub-f01" / "anat" / "stack3 final.nii.gz"
    shutil.copy(bids / "sub-f01" / "anat" / "sub-f01_run-1_T2w.nii.gz", stray)
    return stray


def _sessions_tsv_duplicate(bids: Path) -> Path:
    anat = bids / "sub-f01" / "anat"
    ses = bids / "sub-f01" / "ses-1" / "anat"
    ses.mkdir(parents=True)
    for k in (1, 2):
        (anat / f"sub-f01_run-{k}_T2w.nii.gz").rename(ses / f"sub-f01_ses-1_run-{k}_T2w.nii.gz")
    anat.rmdir()
    path = bids / "sub-f01" / "sub-f01_sessions.tsv"
    path.write_text("session_id\tga_weeks\nses-1\t25\n1\t26\n")
    return path


_NAN_DATA = np.random.default_rng(2).uniform(50, 200, (40, 40, 10))
_NAN_DATA[5, 5, 5] = np.nan
_FAR_AFFINE = oblique_affine()
_FAR_AFFINE[:3, 3] += 900.0  # a stack 1.5 m from the others: not the same head
_STACK = ("sub-f01", "anat", "sub-f01_run-2_T2w.nii.gz")
# (case, how to break sub-f01 given (bids, its run-2 stack) -> the file the message names,
#  the problem the message states); the list, one entry per way of breaking it
BAD_INPUTS = {
    "missing file (dangling DataLad symlink)": (
        lambda b, s: _dangling(s),
        "broken symbolic link to",
    ),
    "unreadable (a directory)": (lambda b, s: _directory(s), "is a directory"),
    "empty file": (lambda b, s: _empty(s), "file is empty"),
    "corrupt gzip": (lambda b, s: corrupt_gzip(s) or s, "gzip stream is truncated"),
    "not gzip despite .gz": (lambda b, s: _not_gzip(s), "not a gzip file"),
    "2D image": (lambda b, s: _write_stack(s, data=np.ones((40, 40))), "image is 2D"),
    "4D image": (lambda b, s: _write_stack(s, shape=(40, 40, 10, 2)), "image is 4D"),
    "NaN voxels": (lambda b, s: _write_stack(s, data=_NAN_DATA, dtype=np.float32), "NaN or Inf"),
    "zero-size dimension": (lambda b, s: _write_stack(s, shape=(40, 0, 10)), "zero size"),
    "singular affine": (
        lambda b, s: _write_sform(s, np.diag([2.0, 0.0, 4.0, 1.0])),
        "affine is singular or non-finite",
    ),
    "non-finite affine": (
        lambda b, s: _write_sform(s, np.diag([2.0, np.nan, 4.0, 1.0])),
        "affine is singular or non-finite",
    ),
    "qform and sform disagree on left/right": (
        lambda b, s: _qform_sform_disagree(s),
        "point the image axes in different directions",
    ),
    "voxel sizes in metres": (
        lambda b, s: _write_stack(s, affine=np.diag([0.002, 0.002, 0.004, 1.0])),
        "implausible for MRI",
    ),
    "stack far from the others": (
        lambda b, s: _write_stack(s, affine=_FAR_AFFINE),
        "does not overlap any other image of this session",
    ),
    "too few slices": (lambda b, s: _write_stack(s, shape=(40, 40, 2)), "stack has 2 slice(s)"),
    "missing age": (
        lambda b, s: _participants(b, "sub-f01\tn/a", "sub-f02\t30"),
        "no gestational age",
    ),
    "age out of range": (
        lambda b, s: _participants(b, "sub-f01\t60", "sub-f02\t30"),
        "outside the supported fetal range",
    ),
    "duplicate participant rows": (
        lambda b, s: _participants(b, "sub-f01\t25", "sub-f02\t30", "sub-f01\t26"),
        "2 rows for sub-f01 (line 2: 'sub-f01', line 4: 'sub-f01')",
    ),
    "one subject, two spellings": (
        lambda b, s: _participants(b, "sub-f01\t25", "sub-f02\t30", "f01\t25"),
        "2 rows for sub-f01 (line 2: 'sub-f01', line 4: 'f01')",
    ),
    "folders differing only in case": (
        lambda b, s: _case_twin(b),
        "folders sub-F01 and sub-f01 differ only in letter case",
    ),
    "duplicate session rows": (
        lambda b, s: _sessions_tsv_duplicate(b),
        "2 rows for ses-1",
    ),
    "non-BIDS name under anat/": (lambda b, s: _non_bids_name(b), "not a BIDS image name"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_only_its_session_with_a_clear_message(tmp_path: Path, case: str) -> None:
    """The failing session names file + problem in one line; the other subject passes."""
    bids = make_bids(tmp_path / "bids", fetal={"f01": 25.0, "f02": 30.0}, n_stacks=2)
    breaks, problem = BAD_INPUTS[case]
    named = breaks(bids, bids.joinpath(*_STACK))
    reports = [validate_session(r) for r in discover_sessions(bids, strict=False)]
    by_subject = {r["subject"]: r for r in reports}
    assert by_subject["f02"]["status"] == "pass", by_subject["f02"]["errors"]
    failed = [r for r in reports if r["subject"].lower() == "f01"]
    assert failed and all(r["status"] == "fail" for r in failed)
    errors = [e for r in failed for e in r["errors"]]
    assert any(str(named) in e and problem in e for e in errors), errors
    assert all("\n" not in e and "Traceback" not in e for e in errors)


def test_unreadable_file_names_the_permission_problem(tmp_path: Path) -> None:
    """A file this user may not read (checked as an unprivileged user when run as root)."""
    folder = Path(tempfile.mkdtemp(dir="/tmp"))  # tmp_path's parents are private to root
    try:
        folder.chmod(0o755)
        path = make_stack(folder / "sub-x_run-1_T2w.nii.gz", shape=(20, 20, 6))
        path.chmod(0o000)
        # as root, drop to "nobody" after start-up: the interpreter lives under /root
        code = (
            "import os, sys; from earlybrain.io.validate import ValidationSettings, check_image\n"
            "if os.geteuid() == 0: os.setgid(65534); os.setuid(65534)\n"
            "print(check_image(sys.argv[1], 'fetal', ValidationSettings())['problems'][0])"
        )
        res = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60
        )
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith(f"{path}: permission denied: this user cannot read the file")
    finally:
        shutil.rmtree(folder)


def test_validation_settings_are_recorded(tmp_path: Path) -> None:
    _, (rec,) = _session(tmp_path, fetal={"f01": 25.0})
    settings = validate_session(rec)["settings"]
    assert settings["voxel_size_range_mm"] == [0.1, 12.0]
    assert settings["qform_sform_note_mm"] == 0.1
