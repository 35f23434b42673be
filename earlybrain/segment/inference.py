"""Tissue segmentation of a volume with the shipped (or a user's) network weights.

The volume is resampled to the network's working grid, normalised, segmented in
overlapping windows of the training patch size (sliding-window inference, Gaussian
blending), optionally averaged with its left-right mirror image (test-time
augmentation), and the class probabilities are resampled back to the volume's own grid.
Nothing is downloaded: the weights are a file in the repository (`models/segmentation/`)
or one the user points the config at.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch.nn import functional

from earlybrain.device import resolve_device
from earlybrain.io.nifti import voxel_sizes
from earlybrain.segment.network import build_network
from earlybrain.segment.synth import normalise
from earlybrain.weights import (
    float_state,
    half_state,
    load_payload,
    read_card,
    save_payload,
    shipped_path,
)

WEIGHTS_NAME = "unet3d_weights.pt"
FORMAT = "earlybrain-segmentation-1"


class SegmentationError(ValueError):
    """The segmentation network could not be used; the message says why."""


def default_weights_path() -> Path:
    """The weights that ship with earlybrain (`models/segmentation/` of the checkout)."""
    return shipped_path("segmentation", WEIGHTS_NAME)


def default_infant_weights_path() -> Path:
    """The infant network (`models/segmentation-infant/`): the fetal weights fine-tuned
    with infant heads (0-24 months) among the label maps (its card says how)."""
    return shipped_path("segmentation-infant", WEIGHTS_NAME)


@dataclass
class SegmentationModel:
    """A loaded network and how its inputs must be prepared."""

    net: torch.nn.Module
    arch: dict[str, Any]
    target_mm: float
    percentile: float
    device: torch.device
    path: str = ""
    sha256: str = ""
    card: dict[str, Any] = field(default_factory=dict)


def save_weights(
    path: str | os.PathLike[str],
    net: torch.nn.Module,
    arch: dict[str, Any],
    target_mm: float,
    percentile: float,
) -> Path:
    """Weights (float16: half the size, no measurable change in the labels) + what
    inference needs to prepare inputs, in one torch file."""
    return save_payload(
        path,
        {
            "format": FORMAT,
            "arch": arch,
            "target_mm": float(target_mm),
            "percentile": float(percentile),
            "state_dict": half_state(net),
        },
    )


def load_model(
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device = "auto",
    allow_cpu_fallback: bool = True,
) -> SegmentationModel:
    """Load weights written by `save_weights` (default: the shipped ones)."""
    path = Path(weights) if weights else default_weights_path()
    payload, sha = load_payload(
        path, FORMAT, SegmentationError,
        "Use the weights shipped in models/segmentation/ (install earlybrain from its "
        "repository with `pip install -e`), train your own with `snakemake "
        "train_segmentation`, or point segmentation.weights at a weights file",
    )  # fmt: skip
    dev = device if isinstance(device, torch.device) else resolve_device(device, allow_cpu_fallback)
    try:
        arch = dict(payload["arch"])
        net = build_network(arch)
        net.load_state_dict(float_state(payload["state_dict"]))
    except (KeyError, RuntimeError, ValueError) as exc:
        raise SegmentationError(f"{path}: not usable segmentation weights ({exc})") from None
    net.eval().to(dev)
    return SegmentationModel(
        net=net,
        arch=arch,
        target_mm=float(payload["target_mm"]),
        percentile=float(payload["percentile"]),
        device=dev,
        path=str(path),
        sha256=sha,
        card=read_card(path),
    )


def _working_shape(shape: tuple[int, ...], affine: np.ndarray, target_mm: float) -> tuple:
    """Shape of the same field of view on the isotropic working grid (corner-aligned)."""
    vox = voxel_sizes(affine)
    return tuple(
        max(2, round((n - 1) * v / target_mm) + 1) for n, v in zip(shape, vox, strict=True)
    )


def _resize(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    if tuple(x.shape[-3:]) == tuple(size):
        return x
    return functional.interpolate(x, size=size, mode="trilinear", align_corners=True)


@torch.no_grad()
def predict_probabilities(
    data: np.ndarray,
    affine: np.ndarray,
    model: SegmentationModel,
    tta: bool = False,
    overlap: float = 0.5,
) -> np.ndarray:
    """Class probabilities (n_classes, *data.shape) on the volume's own grid."""
    if data.ndim != 3 or min(data.shape) < 2:
        raise SegmentationError(f"expected a 3D volume, got shape {data.shape}")
    x = torch.from_numpy(np.nan_to_num(np.asarray(data, dtype=np.float32)))[None, None]
    x = _resize(x.clamp_min(0), _working_shape(data.shape, affine, model.target_mm))
    x = normalise(x, model.percentile).to(model.device)
    patch = int(model.arch["patch"])
    # pad small volumes to one window: instance norm must see windows of training size
    pads = [(0, 0)] * 3
    if min(x.shape[-3:]) < patch:
        pads = [((patch - n) // 2, patch - n - (patch - n) // 2) if n < patch else (0, 0)
                for n in x.shape[-3:]]  # fmt: skip
        x = functional.pad(x, [p for pair in reversed(pads) for p in pair])

    def run(v: torch.Tensor) -> torch.Tensor:
        logits = sliding_window_inference(
            v, (patch,) * 3, sw_batch_size=2, predictor=model.net, overlap=overlap,
            mode="gaussian",
        )  # fmt: skip
        return torch.softmax(logits, dim=1)

    prob = run(x)
    if tta:  # the left-right mirror image: the brain is nearly symmetric, its errors are not
        prob = 0.5 * (prob + torch.flip(run(torch.flip(x, (2,))), (2,)))
    d, h, w = prob.shape[-3:]
    (a0, a1), (b0, b1), (c0, c1) = pads
    prob = prob[..., a0 : d - a1, b0 : h - b1, c0 : w - c1]
    prob = _resize(prob.float().cpu(), data.shape)
    return prob[0].numpy()


def predict_tissues(
    data: np.ndarray, affine: np.ndarray, model: SegmentationModel, tta: bool = False
) -> np.ndarray:
    """uint8 tissue classes (0 background, 1..7 FeTA tissues) on the volume's grid."""
    return np.argmax(predict_probabilities(data, affine, model, tta), axis=0).astype(np.uint8)
