"""The development data in ../shared/data (never copied into the repository).

Looked up beside the checkout (`<clone>/../shared`), then at /work/shared. Tests that need
it call `fetpype_or_skip()`: on CI (CI=true) missing data is a failure, not a skip, so CI
cannot go green without running them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NAME = "fetpype-simu001"
CANDIDATES = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / NAME,
    Path("/work/shared/data") / NAME,
)
FETPYPE = next((p for p in CANDIDATES if p.is_dir()), CANDIDATES[0])
ANAT = FETPYPE / "sub-simu001" / "ses-01" / "anat"
MASKS = FETPYPE / "derivatives" / "masks" / "sub-simu001" / "ses-01" / "anat"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def fetpype_or_skip() -> Path:
    """The dataset folder; skip (fail on CI) when it is not there."""
    if not FETPYPE.is_dir():
        if in_ci():
            pytest.fail(f"shared data missing on CI: looked in {', '.join(map(str, CANDIDATES))}")
        pytest.skip(f"{NAME} not available")
    return FETPYPE


def fetpype_pairs() -> list[tuple[Path, Path]]:
    """(stack, provided brain mask) for the three runs."""
    return [
        (
            ANAT / f"sub-simu001_ses-01_run-{r}_T2w.nii.gz",
            MASKS / f"sub-simu001_ses-01_run-{r}_mask.nii.gz",
        )
        for r in (1, 2, 3)
    ]
