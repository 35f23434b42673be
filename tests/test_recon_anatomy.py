"""Reconstruction of real fetal anatomy moving as fetuses do (CI: shared data).

The true volume is a real T2w anatomy (the CC0 Fidon atlas in ../shared/data: real
folding and real contrast, not the earlybrain phantom the reconstruction was tuned on),
acquired by `earlybrain.simulate.volume_stacks` with a box slice profile the
reconstruction does not model exactly: three interleaved stacks, motion drifting and
jumping within +-10 mm / +-10 degrees. The masks are the true ones (the masking network
is other tests' business). The oracle is the same reconstruction given the true poses.
"""

from __future__ import annotations

import pytest
from shared_data import fidon_or_skip

from earlybrain.preprocess.stack_quality import QualityRules, measure_stack, score_and_rank
from earlybrain.recon import ReconConfig, reconstruct
from earlybrain.recon.evaluate import (
    ncc_to_truth,
    oracle_maps,
    score_against_truth,
    session_stacks,
)
from earlybrain.shared_data import fidon_anatomy
from earlybrain.simulate.volume_stacks import simulate_volume_stacks

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]


def _session(week: int, motion: str, seed: int):
    _, image, affine, brain = fidon_anatomy(fidon_or_skip(), week)
    return simulate_volume_stacks(image, affine, brain, 3, motion, seed)


@pytest.mark.parametrize("week", [23])
def test_moderate_motion_on_real_anatomy(week: int) -> None:
    session = _session(week, "moderate", 1000 + week)
    qs = [
        measure_stack(st.data, st.mask, st.affine, f"run-{i}")
        for i, st in enumerate(session.stacks, start=1)
    ]
    score_and_rank(qs, QualityRules())
    assert all(q.kept for q in qs), [(q.stack, q.reason) for q in qs]  # never for motion
    stacks = session_stacks(session)
    res = reconstruct(stacks, ReconConfig(), "cpu")
    got = score_against_truth(res.transforms, res.volume, res.affine, session)
    T_oracle, G = oracle_maps(session)
    oracle = reconstruct(stacks, ReconConfig(motion_correction=False), "cpu", T_oracle)
    ncc_oracle, _ = ncc_to_truth(oracle.volume, oracle.affine, session.truth, G, optimise=False)
    print(week, got, ncc_oracle)
    assert got["ncc"] >= 0.93 and got["ncc"] >= ncc_oracle - 0.02, (got, ncc_oracle)
    assert got["pose_error_median_mm"] <= 1.0, got
