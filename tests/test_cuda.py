"""The CUDA path of every torch stage gives what the CPU path gives (skipped without a GPU).

CI has no GPU; these run where one is lent (`bench/cuda.sh`). The reconstruction's own
CUDA check is in test_recon.py. Tolerances allow float32 reduction-order differences.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from earlybrain.brainage.data import augment
from earlybrain.brainage.ensemble import load_ensemble, predict
from earlybrain.brainage.evaluate import posed_subject
from earlybrain.brainage.train import TrainConfig, train_member
from earlybrain.preprocess.masking import load_model as load_masking
from earlybrain.preprocess.masking import predict_mask
from earlybrain.preprocess.train_masking import dice
from earlybrain.segment.evaluate import simulated_volume
from earlybrain.segment.inference import load_model as load_segmentation
from earlybrain.segment.pipeline import segment_array
from earlybrain.simulate.acquisition import simulate_stacks
from earlybrain.simulate.cohort import PRESETS
from earlybrain.simulate.phantom import make_phantom

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_masking_on_cuda_matches_cpu() -> None:
    preset = PRESETS["demo"]
    phantom = make_phantom(26.0, 920026, kind="fetal", voxel_mm=preset.truth_voxel_mm)
    stack = simulate_stacks(phantom, 1, "moderate", 920027, preset.protocol).stacks[0]
    masks = {
        dev: predict_mask(stack.data, stack.affine, weights=load_masking(None, dev))
        for dev in ("cpu", "cuda")
    }
    assert dice(masks["cuda"], masks["cpu"]) > 0.995
    assert dice(masks["cuda"], stack.mask) > 0.9


def test_segmentation_on_cuda_matches_cpu() -> None:
    vol = simulated_volume(28.0, 920028, voxel_mm=0.8)
    labels = {
        dev: segment_array(vol.image, vol.affine, None, load_segmentation(device=dev), 0.0)
        for dev in ("cpu", "cuda")
    }
    assert load_segmentation(device="cuda").device.type == "cuda"
    assert np.mean(labels["cuda"] == labels["cpu"]) > 0.999


def test_brain_age_on_cuda_matches_cpu() -> None:
    x = np.stack([posed_subject(a, s).network_input() for a, s in ((24.0, 920124), (33.0, 920133))])
    out = {dev: predict(load_ensemble(device=dev), x) for dev in ("cpu", "cuda")}
    np.testing.assert_allclose(out["cuda"]["age_weeks"], out["cpu"]["age_weeks"], atol=0.02)
    np.testing.assert_allclose(out["cuda"]["sd_weeks"], out["cpu"]["sd_weeks"], atol=0.02)


def test_brain_age_augmentation_and_training_step_run_on_cuda() -> None:
    """Training augments on the GPU: same random draws, same images as on the CPU."""
    x = torch.from_numpy(posed_subject(30.0, 920130).network_input()[None, None])
    a = augment(x, np.random.default_rng(5))
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # TF32 blurs differ by ~1e-3
    try:
        b = augment(x.cuda(), np.random.default_rng(5))
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    assert b.device.type == "cuda"
    diff = (b.cpu() - a).abs()
    off = float((diff > 1e-4).float().mean())
    print(f"augmentation CPU vs CUDA: max {float(diff.max()):.2e}, > 1e-4 at {off:.2e}")
    # the noise goes where the image exceeds 0.02: a voxel at that edge may flip
    assert off < 1e-3
    data = np.repeat(x.numpy()[:, 0].astype(np.float16), 4, axis=0)
    cfg = TrainConfig(steps=3, batch_size=2)
    net, history = train_member(
        data, np.array([28.0, 29.0, 30.0, 31.0]), None, cfg, 0, torch.device("cuda"), 29.5, 5.0
    )
    assert next(net.parameters()).device.type == "cuda"
    assert np.isfinite(history[-1]["loss"])
