"""Reconstruction of the real-format stacks in ../shared/data/fetpype-simu001 (CI only).

The data are read where they lie (never copied into the repository); the test is
skipped when they are absent. Without a ground truth, the checks are: the motion-
corrected volume explains the observed stacks (re-sliced NCC) far better than a
reconstruction without motion correction, it is sharper on the same brain region,
and its brain volume agrees with the input masks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from shared_data import fetpype_or_skip, fetpype_pairs

from earlybrain.recon import load_stacks, reconstruct
from earlybrain.recon.metrics import sharpness

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]


def _paths() -> tuple[list[Path], list[Path]]:
    fetpype_or_skip()
    pairs = fetpype_pairs()
    return [s for s, _ in pairs], [m for _, m in pairs]


def test_shared_stacks_reconstruct_sharp_and_consistent() -> None:
    stacks = load_stacks(*_paths())
    params = {"resolution_mm": 1.0}
    mc = reconstruct(stacks, params, "auto")
    nomc = reconstruct(stacks, {**params, "motion_correction": False}, "auto")
    assert mc.volume.shape == nomc.volume.shape
    assert np.isfinite(mc.volume).all() and mc.volume.max() > 0
    ncc_mc = mc.metrics["ncc_observed_simulated"]
    ncc_nomc = nomc.metrics["ncc_observed_simulated_all"]
    assert ncc_mc > 0.95, ncc_mc
    assert ncc_mc > ncc_nomc + 0.1, (ncc_mc, ncc_nomc)
    assert mc.metrics["rejected_fraction"] < 0.25
    # sharper on the region both reconstructions cover
    common = ndimage.binary_erosion((mc.mask > 0) & (nomc.mask > 0), iterations=3)
    s_mc = sharpness(mc.volume, common, 1.0)
    s_nomc = sharpness(nomc.volume, common, 1.0)
    assert s_mc > 1.03 * s_nomc, (s_mc, s_nomc)
    # plausible: the brain volume agrees with the masks drawn on the stacks
    mask_ml = np.mean([s.mask.sum() * np.prod(s.spacing) / 1000.0 for s in stacks])
    assert mc.metrics["brain_volume_ml"] == pytest.approx(mask_ml, rel=0.2)
