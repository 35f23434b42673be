"""Brain masks of fetal stacks with the shipped (or a user's) network weights.

`predict_mask` works on arrays; `mask_stack_file` reads a stack, writes a uint8 mask
on the stack's grid and a JSON sidecar naming the weights, their card and the
parameters. Nothing is downloaded: the weights are a file in the repository
(`models/masking/`) or one the user points the config at.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch.nn import functional

from earlybrain.device import resolve_device
from earlybrain.io.nifti import load_nifti, save_nifti, voxel_sizes
from earlybrain.io.sidecar import write_sidecar
from earlybrain.preprocess.masking.network import build_network, divisor, in_channels
from earlybrain.preprocess.masking.postprocess import clean_mask
from earlybrain.preprocess.masking.slices import (
    from_slices,
    normalise_stack,
    slice_axis,
    to_slices,
    with_context,
)
from earlybrain.weights import load_payload, read_card, save_payload, shipped_path

log = logging.getLogger(__name__)

WEIGHTS_NAME = "unet2d_weights.pt"
FORMAT = "earlybrain-masking-1"


class MaskingError(ValueError):
    """The masking network could not be used or found no brain; the message says why."""


def default_weights_path() -> Path:
    """The weights that ship with earlybrain (`models/masking/` of the checkout)."""
    return shipped_path("masking", WEIGHTS_NAME)


@dataclass
class MaskingModel:
    """A loaded network and how its inputs must be prepared."""

    net: torch.nn.Module
    arch: dict[str, Any]
    target_mm: float
    percentile: float
    threshold: float
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
    threshold: float = 0.5,
) -> Path:
    """Weights + everything inference needs to prepare inputs, in one torch file."""
    return save_payload(
        path,
        {
            "format": FORMAT,
            "arch": arch,
            "target_mm": float(target_mm),
            "percentile": float(percentile),
            "threshold": float(threshold),
            "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        },
    )


def load_model(
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device = "auto",
    allow_cpu_fallback: bool = True,
) -> MaskingModel:
    """Load weights written by `save_weights` (default: the shipped ones)."""
    path = Path(weights) if weights else default_weights_path()
    payload, sha = load_payload(
        path, FORMAT, MaskingError,
        "Use the weights shipped in models/masking/ (install earlybrain from its repository "
        "with `pip install -e`), train your own with `snakemake train_masking`, or point "
        "masking.weights at a weights file",
    )  # fmt: skip
    dev = device if isinstance(device, torch.device) else resolve_device(device, allow_cpu_fallback)
    try:
        arch = dict(payload["arch"])
        net = build_network(arch)
        net.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise MaskingError(f"{path}: not usable masking weights ({exc})") from None
    net.eval().to(dev)
    return MaskingModel(
        net=net,
        arch=arch,
        target_mm=float(payload["target_mm"]),
        percentile=float(payload["percentile"]),
        threshold=float(payload["threshold"]),
        device=dev,
        path=str(path),
        sha256=sha,
        card=read_card(path),
    )


def _pad_to(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Zero-pad (centred) to a multiple of `multiple`."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    pads = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    return functional.pad(x, pads), pads


def _run(model: MaskingModel, x: torch.Tensor, patch: int) -> torch.Tensor:
    """Logits of a batch of slices.

    The network is applied in windows of its training patch size (overlapping, blended
    with Gaussian weights; small slices zero-padded to one window): instance
    normalisation computes its statistics over the window, so a window of another size,
    or with another amount of zero frame, would shift them away from training.
    """
    if patch <= 0:
        padded, (left, right, top, bottom) = _pad_to(x, divisor(model.arch))
        y = model.net(padded)
        h, w = padded.shape[-2:]
        return y[..., top : h - bottom, left : w - right]
    return sliding_window_inference(
        x, (patch, patch), sw_batch_size=32, predictor=model.net, overlap=0.5, mode="gaussian"
    )


@torch.no_grad()
def slice_probabilities(
    model: MaskingModel, slices: np.ndarray, batch_size: int = 16, tta: bool = True
) -> np.ndarray:
    """Brain probability of every pixel of normalised (n, h, w) slices.

    With `tta` the prediction is averaged over the four flips of each slice, which
    evens out the network's small orientation preferences.
    """
    ctx = int(model.arch["context"])
    x_all = with_context(slices, ctx)
    assert x_all.shape[1] == in_channels(model.arch)
    out = np.empty(slices.shape, dtype=np.float32)
    flips = [(), (-1,), (-2,), (-2, -1)] if tta else [()]
    patch = int(model.arch.get("patch", 0))
    for start in range(0, slices.shape[0], batch_size):
        x = torch.from_numpy(np.ascontiguousarray(x_all[start : start + batch_size]))
        x = x.to(model.device)
        acc = torch.zeros((x.shape[0], 1, *x.shape[-2:]), device=model.device)
        for dims in flips:
            xi = torch.flip(x, dims) if dims else x
            p = torch.sigmoid(_run(model, xi, patch))
            acc += torch.flip(p, dims) if dims else p
        out[start : start + batch_size] = (acc / len(flips))[:, 0].cpu().numpy()
    return out


def predict_probability(
    data: np.ndarray, affine: np.ndarray, model: MaskingModel, tta: bool = True
) -> np.ndarray:
    """Brain probability on the stack's own grid."""
    slices, grid = to_slices(data, affine, model.target_mm)
    slices = normalise_stack(slices, model.percentile)
    prob = slice_probabilities(model, slices, tta=tta)
    return from_slices(prob, grid)


def predict_mask(
    image: nib.Nifti1Image | np.ndarray,
    affine: np.ndarray | None = None,
    weights: str | os.PathLike[str] | MaskingModel | None = None,
    device: str = "auto",
    threshold: float | None = None,
    postprocess: bool = True,
    tta: bool = True,
) -> np.ndarray:
    """uint8 brain mask of a stack (a NIfTI image, or an array with its affine)."""
    if isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        data, affine = np.asanyarray(image.dataobj), image.affine
    else:
        data = np.asarray(image)
        if affine is None:
            raise ValueError("predict_mask needs the affine of an array input")
    data = np.squeeze(data)
    if data.ndim != 3:
        raise MaskingError(f"expected a 3D stack, got shape {data.shape}")
    model = weights if isinstance(weights, MaskingModel) else load_model(weights, device)
    prob = predict_probability(data, affine, model, tta=tta)
    thr = model.threshold if threshold is None else float(threshold)
    mask = prob >= thr
    if postprocess:
        return clean_mask(mask, slice_axis(affine))
    return mask.astype(np.uint8)


def mask_stack_file(
    in_path: str | os.PathLike[str],
    out_mask_path: str | os.PathLike[str],
    weights_path: str | os.PathLike[str] | None = None,
    device: str = "auto",
    allow_cpu_fallback: bool = True,
    threshold: float | None = None,
    min_volume_ml: float = 1.0,
) -> Path:
    """Mask one stack file: uint8 mask on its grid + JSON sidecar.

    A mask smaller than `min_volume_ml` means the network found no brain (wrong
    contrast, a localiser, an empty stack): that is an error naming the file, not an
    empty mask that would fail later in reconstruction with a vaguer message.
    """
    in_path = Path(in_path)
    img = load_nifti(in_path)
    model = load_model(weights_path, device, allow_cpu_fallback)
    mask = predict_mask(img, weights=model, threshold=threshold)
    vol_ml = float(mask.sum() * np.prod(voxel_sizes(img.affine)) / 1000.0)
    if vol_ml < min_volume_ml:
        raise MaskingError(
            f"{in_path}: the masking network found no brain ({vol_ml:.2f} ml < "
            f"{min_volume_ml} ml). Is this a fetal T2w stack? Provide a mask in masks_dir "
            "to bypass automatic masking"
        )
    out = save_nifti(mask, img.affine, out_mask_path, dtype=np.uint8)
    card = model.card
    write_sidecar(
        out,
        step="brain_mask",
        parameters={
            "method": "2D U-Net slice-wise + 3D clean-up (largest component, holes)",
            "weights": model.path,
            "weights_sha256": model.sha256,
            "target_inplane_mm": model.target_mm,
            "threshold": model.threshold if threshold is None else float(threshold),
            "device": str(model.device),
        },
        sources=[in_path],
        extra={
            "Type": "Brain",
            "BrainVolume_ml": round(vol_ml, 3),
            "ModelCard": {
                **{k: card[k] for k in ("trained", "seed", "epochs") if k in card},
                "validation_dice_mean": card.get("validation", {}).get("dice_mean"),
            },
        },
    )
    log.info("%s: brain mask %.1f ml -> %s", in_path.name, vol_ml, out)
    return out


def copy_precomputed_mask(
    in_path: str | os.PathLike[str],
    mask_path: str | os.PathLike[str],
    out_mask_path: str | os.PathLike[str],
    atol_mm: float = 1e-3,
) -> Path:
    """Use a mask from a derivatives folder (`masks_dir`) instead of the network.

    The mask must lie on the stack's grid (same shape and affine): a mask drawn on
    another run or a resampled copy would silently mask the wrong voxels. It is
    binarised (> 0) and written like a network mask, with a sidecar naming its source.
    """
    in_path, mask_path = Path(in_path), Path(mask_path)
    img, msk = load_nifti(in_path), load_nifti(mask_path)
    data = np.squeeze(np.asanyarray(msk.dataobj))
    shape = np.squeeze(np.asanyarray(img.dataobj)).shape
    if data.shape != shape:
        raise MaskingError(
            f"{mask_path}: mask shape {data.shape} differs from its stack {in_path} {shape}"
        )
    if not np.allclose(msk.affine, img.affine, atol=atol_mm):
        raise MaskingError(
            f"{mask_path}: mask affine differs from its stack {in_path}: "
            "was it drawn on another run or resampled?"
        )
    mask = (data > 0).astype(np.uint8)
    vol_ml = float(mask.sum() * np.prod(voxel_sizes(img.affine)) / 1000.0)
    out = save_nifti(mask, img.affine, out_mask_path, dtype=np.uint8)
    write_sidecar(
        out,
        step="brain_mask",
        parameters={"method": "precomputed (masks_dir)"},
        sources=[in_path, mask_path],
        extra={"Type": "Brain", "BrainVolume_ml": round(vol_ml, 3)},
    )
    return out
