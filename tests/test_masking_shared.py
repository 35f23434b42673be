"""The shipped masking networks on real data and on data simulated by others, with the
shipped weights, against masks the pipeline never computed.

- mial-sub01: six real clinical HASTE stacks (1.5 T, 36 cm field of view over the
  maternal abdomen) with hand-drawn intracranial masks. Validation only: never trained
  on, no threshold or parameter chosen on it. Issue 23 asks for Dice >= 0.90 on every
  stack; the shipped weights reach 0.77-0.84 (mean 0.79), so that is what is asserted
  (>= 0.75 every stack, a regression guard), not the target.
- fetpype-simu001: FaBiAN-simulated, skull-stripped stacks (their "masks" are
  image > 0). The localiser finds heads by their surroundings and does not find these
  bare brains (a known limitation, README): what is asserted is that no stack gets a
  wrong mask: either Dice >= 0.85 or an empty mask with its reason.
The data are read where they lie; without them the tests skip on a developer machine
and fail on CI (CI=true).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from shared_data import fetpype_or_skip, fetpype_pairs, mial_pairs

from earlybrain.preprocess.masking import default_weights_path, load_model, mask_stack
from earlybrain.preprocess.train_masking import dice

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def model():
    return load_model(default_weights_path(), "cpu")


@pytest.mark.parametrize("run", range(1, 7))
def test_real_clinical_stacks_against_manual_masks(model, run: int) -> None:
    stack, manual = mial_pairs()[run - 1]
    res = mask_stack(nib.load(str(stack)), weights=model)
    truth = np.asanyarray(nib.load(str(manual)).dataobj) > 0
    d = dice(res.mask, truth)
    print(
        f"mial-sub01 run-{run}: Dice {d:.4f}, {res.volume_ml:.1f} mL (manual "
        f"{truth.sum() * np.prod(nib.load(str(stack)).header.get_zooms()) / 1000:.1f} mL)"
    )
    assert not res.localisation.note  # one fetus
    assert d >= 0.75  # issue 23's target, 0.90, is not reached (see the module docstring)


def test_skull_stripped_simulated_stacks(model) -> None:
    fetpype_or_skip()
    for stack, ref in fetpype_pairs():
        res = mask_stack(nib.load(str(stack)), weights=model)
        truth = np.asanyarray(nib.load(str(ref)).dataobj) > 0
        d = dice(res.mask, truth)
        print(f"{stack.name}: Dice {d:.4f} vs provided mask; reason {res.reason!r}")
        assert d >= 0.85 or (not res.mask.any() and "no fetal head" in res.reason), d
