"""The development data in ../shared/data (never copied into the repository).

Looked up by `earlybrain.shared_data` (beside the checkout, then /work/shared/data, or
EARLYBRAIN_SHARED_DATA). Tests that need a dataset call its `..._or_skip()`: on CI
(CI=true) missing data is a failure, not a skip, so CI cannot go green without them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from earlybrain import shared_data

FETPYPE = shared_data.dataset(shared_data.FETPYPE) or Path("missing") / shared_data.FETPYPE
ANAT = FETPYPE / "sub-simu001" / "ses-01" / "anat"
MASKS = FETPYPE / "derivatives" / "masks" / "sub-simu001" / "ses-01" / "anat"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _or_skip(name: str) -> Path:
    path = shared_data.dataset(name)
    if path is None:
        where = ", ".join(str(c / name) for c in shared_data.candidates())
        if in_ci():
            pytest.fail(f"shared data missing on CI: looked in {where}")
        pytest.skip(f"{name} not available (looked in {where})")
    return path


def fetpype_or_skip() -> Path:
    """The fetpype-simu001 folder; skip (fail on CI) when it is not there."""
    return _or_skip(shared_data.FETPYPE)


def mial_or_skip() -> Path:
    """The mial-sub01 folder (real clinical stacks, validation only)."""
    return _or_skip(shared_data.MIAL)


def fidon_or_skip() -> Path:
    """The fidon-sb-atlas folder (real fetal anatomies)."""
    return _or_skip(shared_data.FIDON)


def fetpype_pairs() -> list[tuple[Path, Path]]:
    """(stack, provided brain mask) for the three runs."""
    return [
        (
            ANAT / f"sub-simu001_ses-01_run-{r}_T2w.nii.gz",
            MASKS / f"sub-simu001_ses-01_run-{r}_mask.nii.gz",
        )
        for r in (1, 2, 3)
    ]


def mial_pairs() -> list[tuple[Path, Path]]:
    """(real stack, its hand-drawn brain mask) for the six runs of mial-sub01."""
    root = mial_or_skip()
    return [
        (
            root / "sub-01" / "anat" / f"sub-01_run-{r}_T2w.nii.gz",
            root / "derivatives" / "manual_masks" / "sub-01" / "anat"
            / f"sub-01_run-{r}_T2w_desc-brain_mask.nii.gz",
        )
        for r in range(1, 7)
    ]  # fmt: skip
