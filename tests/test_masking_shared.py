"""Masks of the shipped network on ../shared/data/fetpype-simu001 against its provided masks.

The data are read where they lie, never copied into the repository. Without them the
test is skipped on a developer machine but fails on CI (CI=true), where they must be.
The stacks there are already skull-stripped (zero outside the brain), a form the
training's "blank outside the brain" randomisation covers.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from shared_data import fetpype_or_skip, fetpype_pairs

from earlybrain.preprocess.masking import default_weights_path, load_model, predict_mask
from earlybrain.preprocess.train_masking import dice

pytestmark = pytest.mark.shared_data


def test_masks_agree_with_provided_masks() -> None:
    fetpype_or_skip()
    model = load_model(default_weights_path(), "cpu")
    scores = {}
    for stack, ref in fetpype_pairs():
        pred = predict_mask(nib.load(str(stack)), weights=model)
        truth = np.asanyarray(nib.load(str(ref)).dataobj) > 0
        scores[stack.name] = dice(pred, truth)
    print("Dice vs provided masks:", {k: round(v, 4) for k, v in scores.items()})
    assert min(scores.values()) >= 0.85, scores
