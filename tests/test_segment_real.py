"""Segmentation and brain age on real images (../shared/data; CI only).

fidon-sb-atlas's T2w templates are real MRI contrast and real (spina bifida) anatomy.
Its weeks 32-34 are held out of the segmentation network's training (a contiguous
block: neighbouring weeks are near copies); the brain-age ensemble never saw any of
its 15 time points. The figures in the docstrings are the shipped weights' on these
data (models/segmentation/card.json, `python bench/segment.py --real`).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from shared_data import fidon_or_skip

from earlybrain import shared_data
from earlybrain.brainage.ensemble import load_ensemble
from earlybrain.brainage.evaluate import fidon_ensemble_ages
from earlybrain.segment.evaluate import fidon_volumes
from earlybrain.segment.inference import default_weights_path, load_model
from earlybrain.segment.metrics import tissue_dice
from earlybrain.segment.pipeline import segment_array

pytestmark = pytest.mark.shared_data


def test_training_never_saw_the_held_out_weeks() -> None:
    card = json.loads((default_weights_path().parent / "card.json").read_text())
    trained = card["training_data"]["real_anatomy"]["time_points"]
    assert trained, "the shipped weights were not trained on real anatomy"
    held_out = set(shared_data.fidon_split("val"))
    assert held_out and not held_out & set(trained)
    assert {shared_data.fidon_week(t) for t in held_out} == set(shared_data.FIDON_VALIDATION_WEEKS)


def test_shipped_network_on_real_held_out_images() -> None:
    """Issue check: on the held-out weeks' real T2w images, mean 7-tissue Dice >= 0.80
    and every tissue >= 0.65 (the masked template is segmented as a masked reconstruction
    would be; FeTA 2024's best mean on real data is about 0.82)."""
    fidon_or_skip()
    model = load_model(device="cpu")
    per_tissue: dict[str, list[float]] = {}
    for vol in fidon_volumes("val"):
        d = tissue_dice(segment_array(vol.image, vol.affine, vol.image > 0, model, 0.0), vol.labels)
        print(
            vol.name,
            f"mean {np.mean(list(d.values())):.3f}",
            {k: round(v, 3) for k, v in d.items()},
        )
        for k, v in d.items():
            per_tissue.setdefault(k, []).append(v)
    means = {k: float(np.mean(v)) for k, v in per_tissue.items()}
    print("mean per tissue:", {k: round(v, 3) for k, v in means.items()})
    assert np.mean(list(means.values())) >= 0.80
    assert min(means.values()) >= 0.65, means


def test_brain_age_ensemble_on_real_images() -> None:
    """The deep ensemble on the 15 real templates (21-34 weeks, none trained on): MAE
    1.16 weeks, reading 0.70 weeks young on average (spina bifida brains are small;
    reported, not tuned). Asserted: MAE <= 1.5 weeks, no error beyond 3 weeks."""
    fidon_or_skip()
    rows = fidon_ensemble_ages(load_ensemble(device="cpu"))
    err = np.array([r["predicted_weeks"] - r["age_weeks"] for r in rows])
    print({r["time_point"]: round(float(e), 2) for r, e in zip(rows, err, strict=True)})
    assert len(rows) == 15
    assert len({r["predicted_weeks"] for r in rows}) == 15  # each time point its own image
    assert np.mean(np.abs(err)) <= 1.5 and np.max(np.abs(err)) <= 3.0
