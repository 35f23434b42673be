"""Shared fixtures: simulated cohorts are cached per session because every module uses them."""

from __future__ import annotations

from pathlib import Path

import pytest

from earlybrain.simulate.cohort import CohortSpec, simulate_cohort

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two fetuses (moderate motion) and one infant, preset tiny; (bids_dir, truth_dir)."""
    out = tmp_path_factory.mktemp("tiny_cohort")
    return simulate_cohort(out, CohortSpec(n_fetal=2, n_infant=1, seed=11, preset="tiny"))
