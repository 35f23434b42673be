"""Brain masks of fetal stacks as they come off the scanner: localise, then segment.

1. The localiser network looks at every slice whole at 3 mm and finds the fetal head
   (`localise`): one brain per stack, the one nearest the stack centre with twins.
2. The segmenter network masks a crop around that head at (about) the stack's own
   in-plane resolution: the native spacing, kept within `MaskingGeometry.fine_mm`
   (the range it was trained on), in windows of its training size.
3. A 3D clean-up keeps one brain without holes (`postprocess`).
The mask is the intracranial volume: brain and CSF up to the inner table of the skull.

`mask_stack` works on arrays; `mask_stack_file` reads a stack and writes a uint8 mask
on the stack's grid with a JSON sidecar naming the weights, their card, the parameters
and, when the stack shows no fetal head, why its mask is empty. Nothing is downloaded:
the weights are a file in the repository (`models/masking/`) or one the user names.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.inferers import sliding_window_inference

from earlybrain.device import resolve_device
from earlybrain.io.nifti import load_input_image, load_nifti, save_nifti, voxel_sizes
from earlybrain.io.sidecar import write_sidecar
from earlybrain.preprocess.masking.localise import (
    MIN_BRAIN_ML,
    Localisation,
    candidates,
    choose,
    pad_to_canvas,
)
from earlybrain.preprocess.masking.network import build_network, divisor, in_channels
from earlybrain.preprocess.masking.postprocess import clean_mask
from earlybrain.preprocess.masking.slices import (
    CropGrid,
    SliceGrid,
    crop_slices,
    inplane_mm,
    normalise_stack,
    to_slices,
    uncrop,
    with_context,
)
from earlybrain.weights import (
    float_state,
    half_state,
    load_payload,
    read_card,
    save_payload,
    shipped_path,
)

log = logging.getLogger(__name__)

WEIGHTS_NAME = "unet2d_weights.pt"
FORMAT = "earlybrain-masking-2"
MASK_DEFINITION = "intracranial volume: brain and CSF up to the inner table of the skull"


class MaskingError(ValueError):
    """The masking network could not be used; the message says why."""


@dataclass(frozen=True)
class MaskingGeometry:
    """How stacks are shown to the two networks (training and inference share it)."""

    coarse_mm: float = 3.0  # localiser in-plane spacing
    canvas: int = 160  # localiser input: whole slices zero-padded to 160 x 160 (480 mm)
    percentile: float = 99.0  # intensity scale: this percentile of the positive voxels
    fine_mm: tuple[float, float] = (0.8, 1.3)  # segmenter spacing: native, within this
    window: int = 192  # segmenter input window (pixels), as in training
    margin_mm: float = 20.0  # crop beyond the localised head, in plane
    reach_mm: float = 75.0  # the segmenter sees slices this close to the head's centre
    localiser_threshold: float = 0.5
    min_candidate_ml: float = 1.0

    def fine_spacing(self, inplane: tuple[float, float]) -> float:
        return float(np.clip(min(inplane), *self.fine_mm))


@dataclass
class MaskingModel:
    """The two loaded networks and how their inputs are prepared."""

    localiser: torch.nn.Module
    segmenter: torch.nn.Module
    localiser_arch: dict[str, Any]
    segmenter_arch: dict[str, Any]
    geometry: MaskingGeometry
    threshold: float
    device: torch.device
    path: str = ""
    sha256: str = ""
    card: dict[str, Any] = field(default_factory=dict)


@dataclass
class MaskResult:
    """A stack's brain mask and how it was found."""

    mask: np.ndarray  # uint8 on the stack's grid
    localisation: Localisation
    volume_ml: float
    reason: str = ""  # why the mask is empty, if it is


def default_weights_path() -> Path:
    """The weights that ship with earlybrain (`models/masking/` of the checkout)."""
    return shipped_path("masking", WEIGHTS_NAME)


def save_weights(path: str | os.PathLike[str], model: MaskingModel) -> Path:
    """Both networks and everything inference needs to prepare inputs, in one file."""
    return save_payload(
        path,
        {
            "format": FORMAT,
            "localiser": {"arch": model.localiser_arch, "state_dict": half_state(model.localiser)},
            "segmenter": {"arch": model.segmenter_arch, "state_dict": half_state(model.segmenter)},
            "geometry": asdict(model.geometry),
            "threshold": float(model.threshold),
        },
    )


# geometry fields of earlier weights that later versions replaced (slice_margin: the
# segmenter now sees every slice within reach_mm of the head's centre)
_RETIRED = ("slice_margin",)


def _geometry(d: dict[str, Any]) -> MaskingGeometry:
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return MaskingGeometry(**{k: v for k, v in fields.items() if k not in _RETIRED})


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
        nets = {}
        for stage in ("localiser", "segmenter"):
            arch = dict(payload[stage]["arch"])
            net = build_network(arch)
            net.load_state_dict(float_state(payload[stage]["state_dict"]))
            nets[stage] = (net.eval().to(dev), arch)
        geometry = _geometry(payload["geometry"])
        threshold = float(payload["threshold"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise MaskingError(f"{path}: not usable masking weights ({exc})") from None
    return MaskingModel(
        localiser=nets["localiser"][0],
        segmenter=nets["segmenter"][0],
        localiser_arch=nets["localiser"][1],
        segmenter_arch=nets["segmenter"][1],
        geometry=geometry,
        threshold=threshold,
        device=dev,
        path=str(path),
        sha256=sha,
        card=read_card(path),
    )


# ------------------------------------------------------------ network inputs --
def coarse_input(
    data: np.ndarray, affine: np.ndarray, geo: MaskingGeometry
) -> tuple[np.ndarray, SliceGrid]:
    """Whole slices at the localiser's spacing, intensity-normalised."""
    slices, grid = to_slices(data, affine, geo.coarse_mm)
    return normalise_stack(slices, geo.percentile), grid


def crop_shape(
    box_mm: tuple[float, float], spacing: float, geo: MaskingGeometry
) -> tuple[int, int]:
    """Pixels of a crop that holds the head's in-plane box plus the margin, at least
    one window."""
    return tuple(max(geo.window, int(np.ceil((b + 2 * geo.margin_mm) / spacing))) for b in box_mm)


def fine_input(
    data: np.ndarray,
    affine: np.ndarray,
    centre_px: tuple[float, float],
    shape: tuple[int, int],
    slices: tuple[int, int],
    geo: MaskingGeometry,
) -> tuple[np.ndarray, CropGrid]:
    """The head's crop at the segmenter's spacing, normalised within the crop."""
    _, inplane = inplane_mm(affine)
    crop, grid = crop_slices(data, affine, centre_px, shape, geo.fine_spacing(inplane), slices)
    return normalise_stack(crop, geo.percentile), grid


# ----------------------------------------------------------------- networks --
@torch.no_grad()
def _probabilities(
    net: torch.nn.Module,
    arch: dict[str, Any],
    slices: np.ndarray,
    device: torch.device,
    window: int,
    tta: bool,
    batch_size: int = 8,
) -> np.ndarray:
    """Probability of every pixel of normalised (n, h, w) slices, in windows of the
    training size (instance normalisation takes its statistics over the window);
    with `tta` averaged over the four flips of each slice."""
    x_all = with_context(slices, int(arch["context"]))
    assert x_all.shape[1] == in_channels(arch)
    out = np.empty(slices.shape, dtype=np.float32)
    flips = [(), (-1,), (-2,), (-2, -1)] if tta else [()]
    for start in range(0, slices.shape[0], batch_size):
        x = torch.from_numpy(np.ascontiguousarray(x_all[start : start + batch_size])).to(device)
        acc = torch.zeros((x.shape[0], 1, *x.shape[-2:]), device=device)
        for dims in flips:
            xi = torch.flip(x, dims) if dims else x
            if window and max(xi.shape[-2:]) > window:
                y = sliding_window_inference(
                    xi, (window, window), sw_batch_size=8, predictor=net, overlap=0.25,
                    mode="gaussian",
                )  # fmt: skip
            else:
                y = net(xi)
            p = torch.sigmoid(y)
            acc += torch.flip(p, dims) if dims else p
        out[start : start + batch_size] = (acc / len(flips))[:, 0].cpu().numpy()
    return out


def localise(
    data: np.ndarray, affine: np.ndarray, model: MaskingModel, tta: bool = True
) -> Localisation:
    """Where the fetal head is in the stack (see `localise.choose`)."""
    geo = model.geometry
    slices, grid = coarse_input(data, affine, geo)
    padded, (top, left) = pad_to_canvas(slices, geo.canvas, divisor(model.localiser_arch))
    prob = _probabilities(model.localiser, model.localiser_arch, padded, model.device, 0, tta)
    prob = prob[:, top : top + slices.shape[1], left : left + slices.shape[2]]
    cands = candidates(prob, grid, affine, geo.localiser_threshold, geo.min_candidate_ml)
    return choose(cands)


def predict_probability(
    data: np.ndarray, affine: np.ndarray, model: MaskingModel, tta: bool = True
) -> tuple[np.ndarray, Localisation]:
    """Brain probability on the stack's own grid (zero away from the localised head)."""
    data = np.asarray(data, dtype=np.float32)
    loc = localise(data, affine, model, tta)
    prob = np.zeros(data.shape, np.float32)
    if loc.chosen is None:
        return prob, loc
    geo = model.geometry
    axis, inplane = inplane_mm(affine)
    lo0, hi0, lo1, hi1 = loc.chosen.inplane_box_px
    box_mm = ((hi0 - lo0) * inplane[0], (hi1 - lo1) * inplane[1])
    shape = crop_shape(box_mm, geo.fine_spacing(inplane), geo)
    # the localiser's candidate may cover only the middle of the head (its poles are
    # small at 3 mm): the segmenter sees every slice within reach of the head's centre
    reach = int(np.ceil(geo.reach_mm / float(voxel_sizes(affine)[axis])))
    centre = round(float(loc.chosen.centre_px[axis]))
    first = max(0, min(loc.chosen.slices[0], centre - reach))
    last = min(data.shape[axis], max(loc.chosen.slices[1], centre + reach + 1))
    crop, grid = fine_input(
        data, affine, ((lo0 + hi0) / 2, (lo1 + hi1) / 2), shape, (first, last), geo
    )
    p = _probabilities(model.segmenter, model.segmenter_arch, crop, model.device, geo.window, tta)
    return uncrop(p, grid), loc


def mask_stack(
    image: nib.Nifti1Image | np.ndarray,
    affine: np.ndarray | None = None,
    weights: str | os.PathLike[str] | MaskingModel | None = None,
    device: str = "auto",
    threshold: float | None = None,
    tta: bool = True,
    min_volume_ml: float = MIN_BRAIN_ML,
) -> MaskResult:
    """The brain mask of a stack (a NIfTI image, or an array with its affine) and how it
    was found; an empty mask with the reason when the stack shows no fetal head."""
    if isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        data, affine = np.asanyarray(image.dataobj), image.affine
    else:
        data = np.asarray(image)
        if affine is None:
            raise ValueError("mask_stack needs the affine of an array input")
    data = np.squeeze(data)
    if data.ndim != 3:
        raise MaskingError(f"expected a 3D stack, got shape {data.shape}")
    model = weights if isinstance(weights, MaskingModel) else load_model(weights, device)
    prob, loc = predict_probability(data, affine, model, tta=tta)
    thr = model.threshold if threshold is None else float(threshold)
    mask = clean_mask(prob >= thr, inplane_mm(affine)[0])
    vol = float(mask.sum() * np.prod(voxel_sizes(affine)) / 1000.0)
    reason = ""
    if loc.chosen is None:
        reason = "no fetal head found in the stack (localiser)"
    elif vol < min_volume_ml:
        reason = f"no brain found around the fetal head ({vol:.2f} mL < {min_volume_ml} mL)"
    if reason:
        mask[:] = 0
        vol = 0.0
    return MaskResult(mask, loc, vol, reason)


def predict_mask(
    image: nib.Nifti1Image | np.ndarray,
    affine: np.ndarray | None = None,
    weights: str | os.PathLike[str] | MaskingModel | None = None,
    device: str = "auto",
    threshold: float | None = None,
    tta: bool = True,
) -> np.ndarray:
    """uint8 brain mask of a stack (empty when it shows no fetal head)."""
    return mask_stack(image, affine, weights, device, threshold, tta, min_volume_ml=0.0).mask


def mask_stack_file(
    in_path: str | os.PathLike[str],
    out_mask_path: str | os.PathLike[str],
    weights_path: str | os.PathLike[str] | MaskingModel | None = None,
    device: str = "auto",
    allow_cpu_fallback: bool = True,
    threshold: float | None = None,
    min_volume_ml: float = MIN_BRAIN_ML,
    extra: dict[str, Any] | None = None,
) -> MaskResult:
    """Mask one stack file: uint8 mask on its grid + JSON sidecar (with `extra` fields).

    A stack without a fetal head (maternal abdomen only, a localiser) gets an empty
    mask whose sidecar says why (`NoBrainReason`); stack QC excludes it by name and
    the session goes on with its other stacks.
    """
    in_path = Path(in_path)
    img, _ = load_input_image(in_path)  # a raw stack: read as validation read it
    model = (
        weights_path
        if isinstance(weights_path, MaskingModel)
        else load_model(weights_path, device, allow_cpu_fallback)
    )
    res = mask_stack(img, weights=model, threshold=threshold, min_volume_ml=min_volume_ml)
    out = save_nifti(res.mask, img.affine, out_mask_path, dtype=np.uint8)
    card = model.card
    fields: dict[str, Any] = {
        **(extra or {}),
        "Type": "Brain",
        "MaskDefinition": MASK_DEFINITION,
        "BrainVolume_ml": round(res.volume_ml, 3),
        "ModelCard": {
            **{k: card[k] for k in ("trained", "seed", "steps") if k in card},
            "validation_dice_mean": card.get("validation", {}).get("dice_mean"),
        },
    }
    if res.reason:
        fields["NoBrainReason"] = res.reason
    if res.localisation.note:
        fields["LocalisationNote"] = res.localisation.note
    write_sidecar(
        out,
        step="brain_mask",
        parameters={
            "method": "localise (2D U-Net, whole slices at 3 mm), then segment (2D U-Net, "
            "crop at native in-plane resolution) + 3D clean-up",
            "weights": model.path,
            "weights_sha256": model.sha256,
            "geometry": asdict(model.geometry),
            "threshold": model.threshold if threshold is None else float(threshold),
            "device": str(model.device),
        },
        sources=[in_path],
        extra=fields,
    )
    if res.reason:
        log.warning("%s: empty brain mask: %s", in_path.name, res.reason)
    else:
        log.info("%s: brain mask %.1f mL -> %s", in_path.name, res.volume_ml, out)
    if res.localisation.note:
        log.warning("%s: %s", in_path.name, res.localisation.note)
    return res


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
    img, msk = load_input_image(in_path)[0], load_nifti(mask_path)
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
