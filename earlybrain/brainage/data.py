"""Training and validation volumes for the brain-age network, and their augmentation.

Simulated fetuses of known age (seeds derived from the training seed, ages uniform over
the range), rendered with the simulator's T2w contrast and noise, blanked outside the
intracranial space as a masked reconstruction is, and put on the network grid
(`frame.GRID`) in the atlas orientation at their own size, exactly as `frame` prepares a
subject. A lab's own volumes join through `network_input` on their registration.
Augmentation (torch, per batch) covers what differs between a reconstruction and a
rendered phantom: residual pose error, blur, bias, noise and contrast (gamma).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional

from earlybrain.brainage.frame import GRID, Grid, mask_centroid_mm, normalise, sample_on_grid
from earlybrain.segment.synth import gaussian_blur
from earlybrain.simulate.contrast import intensity_image
from earlybrain.simulate.phantom import make_phantom

log = logging.getLogger(__name__)

DATA_VERSION = 1


@dataclass(frozen=True)
class Augment:
    """Ranges of the random changes applied to every training volume."""

    rotation_deg: float = 6.0
    shift_mm: float = 3.0
    blur_max_vox: float = 0.7
    bias_max: float = 0.25
    noise_max: float = 0.04
    gamma_range: tuple[float, float] = (0.75, 1.35)


def simulated_input(
    age_weeks: float,
    seed: int,
    voxel_mm: float = 1.5,
    grid: Grid = GRID,
    noise: float = 0.02,
    ventricle_factor: float = 1.0,
) -> np.ndarray:
    """One simulated fetus (seeded) as the network sees it: atlas orientation, own size."""
    ph = make_phantom(age_weeks, seed, voxel_mm=voxel_mm, ventricle_factor=ventricle_factor)
    img = intensity_image(ph)
    rng = np.random.default_rng([seed, 8])
    img = img + noise * float(np.percentile(img, 99)) * rng.standard_normal(img.shape)
    brain = (ph.labels >= 1) & (ph.labels <= 12)
    keep = ndimage.binary_dilation(brain, iterations=1)
    img = np.where(keep, np.clip(img, 0, None), 0.0).astype(np.float32)
    sampled = sample_on_grid(img, ph.affine, np.eye(3), mask_centroid_mm(keep, ph.affine), grid)
    return normalise(sampled)


def _simulated_job(args: tuple[float, int, float, Grid]) -> np.ndarray:
    return simulated_input(*args)


def simulated_bank(
    ages: list[float],
    seeds: list[int],
    voxel_mm: float = 1.5,
    grid: Grid = GRID,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int = 1,
) -> np.ndarray:
    """float16 (n, *grid.shape) inputs of simulated fetuses, cached (minutes to make);
    `workers` processes simulate them (the result does not depend on how many)."""
    jobs = [(round(float(a), 4), int(s)) for a, s in zip(ages, seeds, strict=True)]
    key = repr((DATA_VERSION, voxel_mm, grid, jobs)).encode()
    cache = (
        Path(cache_dir) / f"brainage-bank-{hashlib.sha256(key).hexdigest()[:16]}.pkl"
        if cache_dir
        else None
    )
    if cache is not None and cache.is_file():
        log.info("simulated volumes from cache %s", cache)
        return pickle.loads(cache.read_bytes())
    bank = np.empty((len(jobs), *grid.shape), dtype=np.float16)
    args = [(age, seed, voxel_mm, grid) for age, seed in jobs]
    with ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
        results = pool.map(_simulated_job, args) if pool else map(_simulated_job, args)
        for i, x in enumerate(results):
            bank[i] = x
            if (i + 1) % 50 == 0:
                log.info("simulated %d/%d volumes", i + 1, len(jobs))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps(bank))
        os.replace(tmp, cache)
    return bank


def _rotations(rng: np.random.Generator, n: int, max_deg: float) -> np.ndarray:
    from earlybrain.geometry import rotation_matrix

    return np.stack([rotation_matrix(*rng.uniform(-max_deg, max_deg, 3)) for _ in range(n)])


def augment(
    x: torch.Tensor, rng: np.random.Generator, cfg: Augment = Augment(), grid: Grid = GRID
) -> torch.Tensor:
    """Random pose, blur, bias, gamma and noise for a batch (n, 1, *grid.shape) in [0, ~1].

    Runs on the batch's device (the GPU keeps up with training only when it augments
    too); the random draws come from `rng` and CPU generators, so they do not depend on it.
    """
    n, dev = x.shape[0], x.device
    half = torch.tensor([(s - 1) / 2.0 * grid.voxel_mm for s in grid.shape], dtype=torch.float32)
    # affine_grid works in (x=w, y=h, z=d) normalised coordinates: reverse the axes
    d = torch.diag(half.flip(0))
    theta = torch.zeros((n, 3, 4))
    for i, rot in enumerate(_rotations(rng, n, cfg.rotation_deg)):
        r = torch.from_numpy(rot[::-1, ::-1].copy()).float()
        t = torch.from_numpy(rng.uniform(-cfg.shift_mm, cfg.shift_mm, 3)[::-1].copy()).float()
        theta[i, :, :3] = torch.linalg.inv(d) @ r @ d
        theta[i, :, 3] = t / half.flip(0)
    coords = functional.affine_grid(theta.to(dev), list(x.shape), align_corners=True)
    x = functional.grid_sample(x, coords, mode="bilinear", align_corners=True)
    out = []
    for i in range(n):
        xi = gaussian_blur(x[i : i + 1], [float(rng.uniform(0, cfg.blur_max_vox))] * 3)
        coarse = torch.from_numpy(rng.standard_normal((1, 1, 3, 3, 3)).astype("f4"))
        bias = functional.interpolate(coarse.to(dev), size=x.shape[-3:], mode="trilinear")
        xi = xi * torch.exp(cfg.bias_max / 2 * bias)
        xi = xi.clamp_min(0) ** float(rng.uniform(*cfg.gamma_range))
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        noise = float(rng.uniform(0, cfg.noise_max)) * torch.randn(xi.shape, generator=gen).to(dev)
        xi = xi + noise * (xi > 0.02)
        out.append(xi.clamp_min(0))
    return torch.cat(out)
