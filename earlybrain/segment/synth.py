"""Synthetic training images from label maps (the SynthSeg idea, Billot et al. 2023).

A training sample is a patch of a label map, deformed at random (rotation, scaling,
shear, smooth elastic warp), turned into an image by drawing an intensity and a
spread per label, then degraded like a real reconstruction (blur from a coarser
resolution, smooth bias field, noise, gamma), and finally intensity-normalised the way
inference normalises a volume. Because the intensities are random, the network must
learn tissue from shape and context, not from one contrast: it never sees the
simulator's own contrast unless `p_t2_prior` draws a jittered fetal-T2-like one.

Random parameters come from a numpy generator (a seed fixes every sample); the image
operations run batched in torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional

from earlybrain.anatomy.labels import BODY, FLUID, LABELS, SCALP, SKULL
from earlybrain.geometry import rotation_matrix

# detailed label (0..16) -> class of the network (0 background, 1..7 FeTA tissues)
N_LABELS = 17
TISSUE_OF = np.zeros(256, dtype=np.int64)
for _lab, (_name, _tissue, _hemi) in LABELS.items():
    TISSUE_OF[_lab] = _tissue
# intensity groups: left/right of one tissue share their intensity (as in any real scan);
# the scene classes around the brain (skull, scalp, body, fluid) get one group each
SCENE_LABELS = (SKULL, SCALP, BODY, FLUID)
GROUP_OF = np.zeros(N_LABELS, dtype=np.int64)
for _lab, (_name, _tissue, _hemi) in LABELS.items():
    GROUP_OF[_lab] = _tissue
for _i, _lab in enumerate(SCENE_LABELS):
    GROUP_OF[_lab] = 8 + _i
N_GROUPS = 8 + len(SCENE_LABELS)
# a fetal-T2-like ordering (CSF bright, cortex dark) by group, to be jittered
T2_PRIOR = np.array([0.0, 1.0, 0.38, 0.62, 0.95, 0.48, 0.45, 0.42, 0.12, 0.55, 0.5, 1.05])
# neighbouring tissue groups whose contrast vanishes in some scans: grey and white matter
# in the infant isointense phase (6-8 months) and on early T1w, deep grey vs white matter,
# cerebellum vs brainstem, the two CSF spaces. Made equal in some samples, so the network
# learns to place the cortical ribbon and the nuclei from shape when intensity is silent.
ISOINTENSE_PAIRS = ((2, 3), (3, 6), (5, 7), (1, 4))


@dataclass(frozen=True)
class SynthConfig:
    patch: int = 64
    rotation_deg: float = 15.0  # atlas-space inputs: the head is already upright
    scale_range: tuple[float, float] = (0.85, 1.2)
    shear: float = 0.05
    elastic_mm: float = 2.5  # max displacement of the smooth warp (working-grid voxels)
    elastic_grid: int = 5
    p_t2_prior: float = 0.7  # else: uniform random intensity per label group
    p_isointense: float = 0.3  # share of samples with one ISOINTENSE_PAIRS pair made equal
    t2_jitter: float = 0.3
    spread_max: float = 0.08  # within-label standard deviation (fraction of range)
    p_blank_outside: float = 0.6  # zero outside the intracranial space, like a masked recon
    mask_dilate_max: int = 4
    # of the blanked samples, the share cut exactly at the intracranial border: a masked
    # reconstruction usually is, and the outermost eCSF was otherwise called background
    p_tight_mask: float = 0.5
    blur_max_vox: float = 1.2
    # what a reconstruction keeps of its thick slices: extra blur along one axis, slice
    # stripes (a gain per slice), and a ghost of residual motion (a shifted copy)
    p_thick_slice: float = 0.3
    thick_slice_vox: tuple[float, float] = (0.6, 1.6)
    p_stripes: float = 0.25
    stripe_gain: float = 0.08
    p_motion_ghost: float = 0.2
    ghost_weight: float = 0.3
    p_bias: float = 0.6
    bias_strength: float = 0.35
    noise_max: float = 0.06
    gamma_range: tuple[float, float] = (0.7, 1.5)


def _smooth_field(rng: np.random.Generator, n: int, grid: int, size: int, channels: int):
    """`channels` smooth random fields of shape (size,)*3, values ~N(0, 1) at `grid` nodes."""
    coarse = torch.from_numpy(rng.standard_normal((n, channels, grid, grid, grid)).astype("f4"))
    return functional.interpolate(coarse, size=(size,) * 3, mode="trilinear", align_corners=True)


def gaussian_blur(x: torch.Tensor, sigmas: np.ndarray) -> torch.Tensor:
    """Separable Gaussian blur of (1, 1, d, h, w) with one sigma (voxels) per axis."""
    for axis, s in enumerate(sigmas):
        if s < 0.2:
            continue
        r = int(np.ceil(3 * s))
        k = torch.arange(-r, r + 1, dtype=torch.float32, device=x.device)
        k = torch.exp(-0.5 * (k / float(s)) ** 2)
        k = (k / k.sum()).view(1, 1, *[-1 if a == axis else 1 for a in range(3)])
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = r
        x = functional.conv3d(functional.pad(x, pad, mode="replicate"), k)
    return x


def deform_labels(
    label_crops: torch.Tensor, rng: np.random.Generator, cfg: SynthConfig
) -> torch.Tensor:
    """(n, 1, c, c, c) label crops -> (n, patch, patch, patch) deformed label patches.

    The patch samples the centre of the crop through a random affine (rotation, scale,
    shear) and a smooth elastic displacement; nearest-neighbour keeps labels labels.
    """
    n, crop = label_crops.shape[0], label_crops.shape[-1]
    p = cfg.patch
    theta = np.zeros((n, 3, 4), dtype=np.float32)
    for i in range(n):
        rot = rotation_matrix(*rng.uniform(-cfg.rotation_deg, cfg.rotation_deg, 3))
        scale = np.diag(1.0 / rng.uniform(*cfg.scale_range, 3))
        shear = np.eye(3) + rng.uniform(-cfg.shear, cfg.shear, (3, 3)) * (1 - np.eye(3))
        # grid coordinates are normalised to the crop: the patch spans p / crop of it
        theta[i, :, :3] = (rot @ scale @ shear) * (p / crop)
    grid = functional.affine_grid(torch.from_numpy(theta), (n, 1, p, p, p), align_corners=False)
    disp = _smooth_field(rng, n, cfg.elastic_grid, p, 3).permute(0, 2, 3, 4, 1)
    amp = torch.from_numpy(rng.uniform(0, cfg.elastic_mm, (n, 1, 1, 1, 1)).astype("f4"))
    grid = grid + disp * amp * (2.0 / crop)
    out = functional.grid_sample(
        label_crops.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
    )
    return out[:, 0].round().long()


def _intensities(rng: np.random.Generator, cfg: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread of every detailed label (0..16) for one sample."""
    if rng.random() < cfg.p_t2_prior:
        group_mean = T2_PRIOR * rng.uniform(1 - cfg.t2_jitter, 1 + cfg.t2_jitter, N_GROUPS)
    else:
        group_mean = rng.uniform(0.0, 1.0, N_GROUPS)
    if rng.random() < cfg.p_isointense:
        a, b = ISOINTENSE_PAIRS[int(rng.integers(len(ISOINTENSE_PAIRS)))]
        group_mean[b] = group_mean[a]
    group_mean[0] = rng.uniform(0.0, 0.3) if rng.random() < 0.5 else 0.0
    mean = group_mean[GROUP_OF] * rng.uniform(0.97, 1.03, N_LABELS)
    spread = rng.uniform(0.0, cfg.spread_max, N_LABELS)
    return mean.astype(np.float32), spread.astype(np.float32)


def reconstruction_artefacts(
    x: torch.Tensor, rng: np.random.Generator, cfg: SynthConfig
) -> torch.Tensor:
    """Thick-slice blur, slice stripes and a residual-motion ghost along the axis the
    stacks were acquired through, each in a share of samples; (1, 1, d, h, w)."""
    axis = int(rng.integers(3))
    if rng.random() < cfg.p_thick_slice:
        sigmas = np.zeros(3)
        sigmas[axis] = rng.uniform(*cfg.thick_slice_vox)
        x = gaussian_blur(x, sigmas)
    if rng.random() < cfg.p_stripes:
        n = x.shape[2 + axis]
        gain = 1.0 + rng.uniform(0, cfg.stripe_gain) * rng.standard_normal(n)
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = n
        x = x * torch.from_numpy(gain.astype("f4")).view(shape)
    if rng.random() < cfg.p_motion_ghost:
        shift = [int(v) for v in rng.integers(-2, 3, 3)]
        w = cfg.ghost_weight * rng.random()
        x = (1 - w) * x + w * torch.roll(x, shift, dims=(2, 3, 4))
    return x


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    if radius <= 0:
        return mask
    k = 2 * radius + 1
    return functional.max_pool3d(mask[None, None].float(), k, stride=1, padding=radius)[0, 0] > 0


def synthesize(
    labels: torch.Tensor, rng: np.random.Generator, cfg: SynthConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, p, p, p) detailed labels -> images (n, 1, p, p, p), tissue targets (n, p, p, p)."""
    images = []
    for lab in labels:
        mean, spread = _intensities(rng, cfg)
        idx = lab.clamp(0, N_LABELS - 1)
        img = torch.from_numpy(mean)[idx]
        img = img + torch.from_numpy(spread)[idx] * torch.from_numpy(
            rng.standard_normal(lab.shape).astype("f4")
        )
        x = gaussian_blur(img[None, None], rng.uniform(0, cfg.blur_max_vox, 3))
        x = reconstruction_artefacts(x, rng, cfg)
        if rng.random() < cfg.p_bias:
            field = _smooth_field(rng, 1, 4, lab.shape[-1], 1)
            x = x * torch.exp(cfg.bias_strength * field / 2.0)
        x = x + float(rng.uniform(0, cfg.noise_max)) * torch.from_numpy(
            rng.standard_normal(x.shape).astype("f4")
        )
        if rng.random() < cfg.p_blank_outside:  # a masked reconstruction: zero outside
            inside = (lab >= 1) & (lab <= 12)
            tight = rng.random() < cfg.p_tight_mask
            radius = 0 if tight else int(rng.integers(1, cfg.mask_dilate_max + 1))
            x = x * _dilate(inside, radius)
        x = normalise(x.clamp_min(0))
        x = x.clamp(0, 2) ** float(rng.uniform(*cfg.gamma_range))
        images.append(x[0])
    targets = torch.from_numpy(TISSUE_OF)[labels.clamp(0, 255)]
    return torch.stack(images), targets


def normalise(x: torch.Tensor, percentile: float = 99.0) -> torch.Tensor:
    """Divide by a high percentile of the positive voxels (the same at training and
    inference), clip to [0, 2]."""
    pos = x[x > 0]
    if pos.numel() < 10:
        return x
    sample = pos[:: max(1, pos.numel() // 200_000)]
    return (x / torch.quantile(sample, percentile / 100.0).clamp_min(1e-6)).clamp(0, 2)
