"""Infant brain age end to end on held-out simulated infants, and its calibration.

The sessions run the workflow's infant steps (`brainage.infant_end_to_end`: simulated
scan, N4, brain mask, registration, the infant network, the brain-age step), with no
truth handed over; the calibration was fitted on other subjects (split code 525) run the
same way.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from earlybrain.brainage.infant import shipped_calibration
from earlybrain.brainage.infant_end_to_end import evaluate_sessions, summary
from earlybrain.brainage.infant_reference import (
    INFANT_CALIBRATION_VOXEL_MM,
    INFANT_TEST_SPLIT_CODE,
    MEASUREMENTS_FILE,
    fit_calibration,
    infant_subjects,
)
from earlybrain.brainage.norms import Norms, shipped_infant_norms_path, shipped_norms_path

HELD_OUT_N = 20  # issue 30: at least 20 held-out infants
COVERAGE_MIN = 0.90
# a guard against a broken path, not a target: 4-fold cross-validation on the calibration
# sessions gave a skull-stripped T1w MAE of 9.8 weeks (T1w says little after a year)
MAE_MAX_WEEKS = 14.0
WORKERS = 2  # sessions at once on the 2 cores


def test_shipped_calibration_is_the_fit_of_the_shipped_measurements() -> None:
    """The calibration in models/brainage is what `fit_calibration` makes of the shipped
    end-to-end measurements under the shipped norms (so neither went stale alone)."""
    content = json.loads(shipped_norms_path(MEASUREMENTS_FILE).read_text())
    shipped = shipped_calibration()
    assert content["source"] == shipped["source"]
    refit = fit_calibration(
        content["sessions"],
        Norms.from_json(shipped_infant_norms_path()),
        content["source"],
        shipped["atlas"],
    )
    assert refit["norms"] == shipped["norms"]
    assert refit["sessions"] >= 110 and refit["failed_sessions"] == shipped["failed_sessions"]
    for key, config in shipped["combined"].items():
        mine = refit["combined"][key]
        params = mine["model"]["params"]
        np.testing.assert_allclose(params, config["model"]["params"], rtol=1e-4, atol=1e-6)
        for method, table in config["sd_scale"].items():
            values = mine["sd_scale"][method]["values"]
            np.testing.assert_allclose(values, table["values"], rtol=1e-4)
    assert {m["mask"] for m in content["sessions"] if "mask" in m} == {"network", "support"}


@pytest.mark.slow
def test_skull_stripped_t1w_infants_get_intervals_that_hold_their_age() -> None:
    """Issue 30: 20 held-out infants (test split, 0-24 months), skull-stripped T1w only,
    end to end: the 95 % interval holds the true age in at least 90 % of them."""
    subjects = infant_subjects(HELD_OUT_N, 0, INFANT_TEST_SPLIT_CODE)
    sessions = [(months, seed, "T1w", "stripped") for months, seed in subjects]
    rows = evaluate_sessions(sessions, INFANT_CALIBRATION_VOXEL_MM, workers=WORKERS)
    keys = ("months", "true_weeks", "predicted_weeks", "sd_weeks", "error")
    for r in rows:
        print(json.dumps({k: r.get(k) for k in keys}))
    result = summary(rows)["stripped:T1w"]
    print(json.dumps(result, indent=1))
    assert result["failed"] == 0, [r["error"] for r in rows if "error" in r]
    assert {r["mask"] for r in rows} == {"support"}  # skull-stripped inputs keep their support
    assert result["coverage_95"] >= COVERAGE_MIN, result
    assert result["mae_weeks"] <= MAE_MAX_WEEKS, result
