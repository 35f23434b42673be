"""Output writing: atomic, reproducible, readable by the lab."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from earlybrain.io.atomic import write_text_atomic
from earlybrain.io.nifti import load_nifti, save_nifti


def test_outputs_are_readable_by_the_group(tmp_path: Path) -> None:
    p = write_text_atomic(tmp_path / "x.txt", "hi")
    assert p.stat().st_mode & 0o044  # not the 0600 of a bare temporary file
    assert not list(tmp_path.glob("*.part"))


def test_nifti_round_trip_is_byte_reproducible(tmp_path: Path) -> None:
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    affine = np.diag([1.0, 2.0, 3.0, 1.0])
    a = save_nifti(data, affine, tmp_path / "a.nii.gz")
    b = save_nifti(data, affine, tmp_path / "b.nii.gz")
    assert a.read_bytes() == b.read_bytes()
    img = load_nifti(a)
    assert np.array_equal(np.asanyarray(img.dataobj), data) and np.allclose(img.affine, affine)
