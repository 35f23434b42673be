"""Infant sessions: the working contrast by age, and the whole-head brain mask clean-up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from earlybrain.anatomy.biometry import months_to_pma_weeks
from earlybrain.preprocess.infant import (
    InfantError,
    brain_mask_from_probabilities,
    months_from_pma,
    primary_contrast,
)


def test_working_contrast() -> None:
    both = ["T1w", "T2w"]
    # T2w whenever present (its CSF outlines the intracranial space at every age)...
    assert primary_contrast(both, months_to_pma_weeks(1.0)) == "T2w"
    assert primary_contrast(both, months_to_pma_weeks(20.0)) == "T2w"
    # ...unless T1w is asked for from some age on
    assert primary_contrast(both, months_to_pma_weeks(5.9), t1w_from_months=6) == "T2w"
    assert primary_contrast(both, months_to_pma_weeks(6.1), t1w_from_months=6) == "T1w"
    # one contrast: that one, whatever the age
    assert primary_contrast(["T2w"], months_to_pma_weeks(20.0)) == "T2w"
    assert primary_contrast(["T1w", "T1w"], months_to_pma_weeks(1.0)) == "T1w"
    with pytest.raises(InfantError, match="needs a T1w or T2w"):
        primary_contrast(["FLAIR"], 50.0)
    assert months_from_pma(months_to_pma_weeks(7.5)) == pytest.approx(7.5)


def test_mask_is_one_filled_component() -> None:
    """Tissue probability of a ball with a background-labelled cavity (a ventricle the
    network missed) and a stray tissue-like blob outside: one component, no hole."""
    n = 40
    z, y, x = np.mgrid[:n, :n, :n]
    ball = (x - 20) ** 2 + (y - 20) ** 2 + (z - 20) ** 2 <= 12**2
    cavity = (x - 20) ** 2 + (y - 20) ** 2 + (z - 20) ** 2 <= 4**2
    blob = (x - 3) ** 2 + (y - 3) ** 2 + (z - 3) ** 2 <= 2**2
    tissue = (ball & ~cavity) | blob
    prob = np.stack([np.where(tissue, 0.1, 0.9), np.where(tissue, 0.9, 0.1)]).astype(np.float32)
    mask = brain_mask_from_probabilities(prob, np.diag([1.0, 1.0, 1.0, 1.0]))
    assert mask[cavity].all() and not mask[blob].any()
    assert mask.sum() == pytest.approx(ball.sum(), rel=0.02)
    empty = brain_mask_from_probabilities(np.stack([np.ones((8, 8, 8))] * 2), np.eye(4))
    assert not empty.any()


def test_every_infant_age_has_a_template_within_the_configured_distance() -> None:
    """An infant half way between two templates must still be registered."""
    from earlybrain.atlas.manifest import load_manifest, select_template
    from earlybrain.config_schema import shipped_config

    repo = Path(__file__).resolve().parents[1]
    config = shipped_config()
    limit = config["infant"]["max_template_distance_weeks"]
    manifest = load_manifest(repo / config["atlas"]["infant_manifest"])
    for months in np.arange(0.0, 24.01, 0.25):
        select_template(manifest, months_to_pma_weeks(months), "T2w", limit)
