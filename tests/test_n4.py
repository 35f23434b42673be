"""N4 + normalisation: recovers a known smooth bias, writes images with sidecars."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from synth_fixtures import oblique_affine, phantom, smooth_bias, write_nifti

from earlybrain.preprocess.n4 import (
    NormaliseParams,
    effective_shrink,
    foreground_mask,
    n4_correct,
    normalise,
    run_n4,
)

SHAPE = (56, 56, 14)
SPACING = np.array([2.0, 2.0, 4.0])
STRENGTH = 0.5


@pytest.fixture(scope="module")
def biased():
    img, truth = phantom(SHAPE, SPACING, seed=3)
    bias = smooth_bias(SHAPE, SPACING, strength=STRENGTH)
    return img * bias, truth, bias


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_foreground_mask_is_the_object(biased) -> None:
    data, truth, _ = biased
    fg = foreground_mask(data, SPACING)
    inside = truth > 0
    assert fg[inside].mean() > 0.95  # covers the object despite a ~2x bias across it
    assert fg[~inside].mean() < 0.1  # and little of the background


def test_foreground_keeps_tissue_when_a_stack_has_almost_no_air() -> None:
    """Fluid-filled field of view (a stack planned inside the uterus): tissue darker than
    the fluid is foreground too, not split off by Otsu as if it were background."""
    rng = np.random.default_rng(0)
    data = np.full((60, 60, 12), 1000.0)  # amniotic fluid everywhere
    data[15:45, 15:45, 2:10] = 550.0  # a fetal head, darker than the fluid
    data[:, :3] = 20.0  # a sliver of air at the edge
    data += rng.normal(0, 15, data.shape)
    fg = foreground_mask(data, np.array([1.25, 1.25, 3.5]))
    assert fg[15:45, 15:45, 2:10].mean() > 0.99
    assert fg[:, :2].mean() < 0.05


def test_n4_recovers_a_known_bias(biased) -> None:
    data, truth, bias = biased
    fg = foreground_mask(data, SPACING)
    corrected, est_bias, used = n4_correct(data, SPACING, fg, threads=1)
    inside = truth > 0
    before = _corr(data[inside], truth[inside])
    after = _corr(corrected[inside], truth[inside])
    assert after > 0.98 and after - before > 0.05, (before, after)
    # the estimated field has the shape of the true one (up to N4's arbitrary scale)
    assert _corr(np.log(est_bias[inside]), np.log(bias[inside])) > 0.95
    np.testing.assert_allclose(corrected, np.clip(data, 0, None) / est_bias, rtol=1e-5)
    assert used["shrink_factor_used"] == 3  # 14 slices / 4 would leave 3 < 4 voxels


def test_n4_recovers_a_strong_bias() -> None:
    """+/-40 %: needs the default 100 iterations per level (50 recovered half of it)."""
    img, truth = phantom(SHAPE, SPACING, seed=5)
    data = img * smooth_bias(SHAPE, SPACING, strength=1.0)
    corrected, _, _ = n4_correct(data, SPACING, foreground_mask(data, SPACING), threads=1)
    inside = truth > 0
    before = _corr(data[inside], truth[inside])
    after = _corr(corrected[inside], truth[inside])
    assert before < 0.85 and after > 0.93, (before, after)


def test_n4_on_unbiased_image_changes_little(biased) -> None:
    _, truth, _ = biased
    img, _ = phantom(SHAPE, SPACING, seed=4)
    fg = foreground_mask(img, SPACING)
    _, est_bias, _ = n4_correct(img, SPACING, fg, threads=1)
    rel = est_bias[truth > 0] / np.median(est_bias[truth > 0])
    assert np.percentile(np.abs(np.log(rel)), 95) < 0.05


def test_normalise_maps_percentiles() -> None:
    data = np.linspace(0, 100, 1001, dtype=np.float32).reshape(7, 11, 13)
    mask = np.ones(data.shape, bool)
    out, scale = normalise(data, mask, NormaliseParams(10, 90))
    assert scale == pytest.approx({"lower_value": 10.0, "upper_value": 90.0})
    assert out.min() == 0.0  # values below the lower percentile are clipped to 0
    assert np.percentile(out, 90) == pytest.approx(1.0)
    assert out.max() == pytest.approx(90 / 80)  # the top is not clipped


def test_effective_shrink() -> None:
    assert effective_shrink((128, 128, 25), 4) == 4
    assert effective_shrink((64, 64, 12), 4) == 3
    assert effective_shrink((64, 64, 3), 4) == 1


def test_run_n4_writes_outputs_and_sidecars(tmp_path: Path, biased) -> None:
    data, _, _ = biased
    src = write_nifti(tmp_path / "sub-x_run-1_T2w.nii.gz", data, oblique_affine(tuple(SPACING)))
    out = tmp_path / "d" / "sub-x_run-1_desc-n4_T2w.nii.gz"
    bias = tmp_path / "d" / "sub-x_run-1_desc-biasfield_T2w.nii.gz"
    mask = tmp_path / "d" / "sub-x_run-1_desc-foregroundT2w_mask.nii.gz"
    summary = run_n4(src, out, bias, mask, threads=1)
    for p in (out, bias, mask):
        img = nib.load(p)
        assert img.shape == SHAPE
        np.testing.assert_allclose(img.affine, nib.load(src).affine, atol=1e-5)
        side = json.loads(p.with_name(p.name.replace(".nii.gz", ".json")).read_text())
        assert side["Sources"] == [str(src)]
        assert side["GeneratedBy"][0]["Name"] == "earlybrain"
    side = json.loads(out.with_name("sub-x_run-1_desc-n4_T2w.json").read_text())
    assert side["Parameters"]["n4"]["spline_distance_mm"] == 200.0
    assert side["Parameters"]["n4"]["iterations"] == [100, 100]
    assert "not a brain mask" in side["Description"]
    normed = nib.load(out).get_fdata()
    fg = nib.load(mask).get_fdata() > 0
    assert np.percentile(normed[fg], 99) == pytest.approx(1.0, abs=0.02)
    assert 0.2 < summary["foreground_fraction"] < 0.9
    # the input is not modified
    np.testing.assert_array_equal(nib.load(src).get_fdata(), np.round(data))
