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


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _or_skip(name: str) -> Path:
    try:
        return shared_data.require(name)
    except FileNotFoundError as exc:
        if in_ci():
            pytest.fail(f"shared data missing on CI: {exc}")
        pytest.skip(str(exc))


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
    """(stack, provided brain mask) for the three runs (call `fetpype_or_skip` first)."""
    return shared_data.fetpype_pairs(FETPYPE)


def mial_pairs() -> list[tuple[Path, Path]]:
    """(real stack, its hand-drawn brain mask) for the six runs of mial-sub01."""
    return shared_data.mial_pairs(mial_or_skip())
