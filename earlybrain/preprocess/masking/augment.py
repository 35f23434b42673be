"""Domain randomisation of training slices: what real scans vary in and the simulator does not.

Every training sample is a slice with its neighbours (channels) and the brain masks
of those slices, drawn from a simulated stack and changed at random:
- geometry: any in-plane rotation, flips, scale (head sizes beyond the simulated
  range), crop position (brain anywhere in the patch, or not in it at all);
- contrast: gamma, a random monotone intensity curve, global gain;
- scanner: smooth bias field, noise, blur and lost resolution, a dark neighbour slice;
- surroundings: extra maternal/fetal tissue blobs of any brightness that never touch
  the brain, or the opposite: everything outside the brain already blanked, as in
  stacks handed over skull-stripped.
The random parameters come from a numpy generator (a seed fixes the samples); the
image operations run batched in torch, which keeps augmentation cheaper than the
training step on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional


@dataclass(frozen=True)
class AugmentConfig:
    patch: int = 128  # 192 mm at the network's 1.5 mm
    crop: int = 216  # region cut around the chosen centre before rotation and scaling
    scale_range: tuple[float, float] = (0.6, 1.35)  # >1: the head looks larger
    centre_jitter: float = 0.15  # of the patch size
    p_brain_centred: float = 0.85
    p_fill_outside: float = 0.5
    gamma_range: tuple[float, float] = (0.6, 1.7)
    p_curve: float = 0.3
    p_bias: float = 0.7
    bias_strength: float = 0.5
    noise_max: float = 0.08
    p_blur: float = 0.3
    p_lowres: float = 0.2
    p_clutter: float = 0.5
    max_blobs: int = 4
    p_blank_outside: float = 0.2
    p_dark_channel: float = 0.08


def crop_around(
    arr: np.ndarray, centre: np.ndarray, size: int, fill: np.ndarray | None = None
) -> np.ndarray:
    """(c, h, w) -> (c, size, size) centred on `centre` (pixels).

    Beyond the stack's field of view: zeros, or `fill` (c, size, size), e.g. tissue-like
    texture. Simulated stacks have a small field of view; real ones often show tissue
    to the patch edge, and a zero frame around every stack would be a cue.
    """
    c, h, w = arr.shape
    top = np.round(centre - (size - 1) / 2.0).astype(int)
    out = np.zeros((c, size, size), dtype=arr.dtype) if fill is None else fill.astype(arr.dtype)
    y0, x0 = max(top[0], 0), max(top[1], 0)
    y1, x1 = min(top[0] + size, h), min(top[1] + size, w)
    if y1 > y0 and x1 > x0:
        out[:, y0 - top[0] : y1 - top[0], x0 - top[1] : x1 - top[1]] = arr[:, y0:y1, x0:x1]
    return out


def surroundings(x: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Tissue-like fill outside the field of view: the stack's border level, smoothly varied."""
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)
    level = np.median(border, axis=1)[:, None, None]
    coarse = rng.standard_normal((6, 6))
    zoom = np.kron(coarse, np.ones((size // 6 + 1, size // 6 + 1)))[:size, :size]
    tex = ndimage.gaussian_filter(zoom, size / 12)
    tex = 1 + 0.4 * tex / max(float(tex.std()), 1e-6)
    return (level * np.clip(tex, 0.2, None)[None]).astype(np.float32)


def choose_centre(masks: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Crop centre: near the brain of the centre slice mostly, anywhere otherwise."""
    centre_mask = masks[masks.shape[0] // 2]
    h, w = centre_mask.shape
    if centre_mask.any() and rng.random() < cfg.p_brain_centred:
        ii, jj = np.nonzero(centre_mask)
        com = np.array([ii.mean(), jj.mean()])
        return com + rng.normal(0, cfg.centre_jitter * cfg.patch, 2)
    return np.array([rng.uniform(0, h), rng.uniform(0, w)])


def _theta(rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """affine_grid matrix: rotation, optional flip, scale, from the patch into the crop."""
    angle = rng.uniform(0, 2 * np.pi)
    scale = np.exp(rng.uniform(*np.log(cfg.scale_range)))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    flip = np.diag([1.0, -1.0 if rng.random() < 0.5 else 1.0])
    theta = np.zeros((2, 3))
    theta[:, :2] = rot @ flip * (cfg.patch / cfg.crop) / scale
    return theta


def _coords(p: int) -> tuple[torch.Tensor, torch.Tensor]:
    v = torch.linspace(-1, 1, p)
    return torch.meshgrid(v, v, indexing="ij")


def _bias(rng: np.random.Generator, p: int, strength: float) -> torch.Tensor:
    """exp of a random quadratic polynomial over the patch: coil shading."""
    u, v = _coords(p)
    coef = torch.from_numpy(rng.normal(0, strength / 2, 5).astype(np.float32))
    log_b = coef[0] * u + coef[1] * v + coef[2] * u * u + coef[3] * v * v + coef[4] * u * v
    return torch.exp(log_b)


def _clutter(
    x: torch.Tensor, brain: torch.Tensor, rng: np.random.Generator, max_blobs: int
) -> torch.Tensor:
    """Soft-edged blobs of other tissue (maternal organs, limbs, placenta) off the brain."""
    p = x.shape[-1]
    u, v = _coords(p)
    keep_out = functional.max_pool2d(brain[None, None].float(), 7, 1, 3)[0, 0]
    for _ in range(int(rng.integers(1, max_blobs + 1))):
        c = torch.from_numpy(rng.uniform(-1, 1, 2).astype(np.float32))
        ax = rng.uniform(0.08, 0.7, 2)
        t = rng.uniform(0, np.pi)
        du, dv = u - c[0], v - c[1]
        a = (du * np.cos(t) + dv * np.sin(t)) / ax[0]
        b = (-du * np.sin(t) + dv * np.cos(t)) / ax[1]
        r = torch.sqrt(a * a + b * b)
        edge = torch.sigmoid((1 - r) / rng.uniform(0.02, 0.15))
        if float((edge * keep_out).max()) > 0.05:  # would touch the brain: leave it out
            continue
        tex = torch.from_numpy(rng.standard_normal((1, 1, 8, 8)).astype(np.float32))
        tex = 1 + 0.15 * functional.interpolate(tex, (p, p), mode="bilinear")[0, 0]
        value = float(rng.uniform(0.0, 1.3))
        x = x * (1 - edge) + edge * value * tex
    return x


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(np.ceil(2.5 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[0]
    y = functional.conv2d(x[None], k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), padding=(0, r), groups=c)
    y = functional.conv2d(y, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), padding=(r, 0), groups=c)
    return y[0]


def _curve(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A random monotone piecewise-linear intensity map of [0, 2] onto itself."""
    knots_y = np.concatenate([[0], np.cumsum(rng.uniform(0.2, 1.8, 5))])
    knots_y = torch.from_numpy((2 * knots_y / knots_y[-1]).astype(np.float32))
    pos = torch.clamp(x, 0, 2 - 1e-6) / 0.4  # 5 segments of width 0.4
    i = pos.floor().long()
    f = pos - i
    return knots_y[i] * (1 - f) + knots_y[i + 1] * f


def intensity(
    x: torch.Tensor, masks: torch.Tensor, cfg: AugmentConfig, rng: np.random.Generator
) -> torch.Tensor:
    """Contrast, surroundings and scanner effects on one geometric-augmented sample (c, p, p)."""
    p = x.shape[-1]
    x = torch.clamp(x, min=0)
    if rng.random() < cfg.p_clutter:
        x = _clutter(x, masks.any(dim=0), rng, cfg.max_blobs)
    zero = None
    if rng.random() < cfg.p_blank_outside:
        r = int(rng.integers(0, 3))
        grown = functional.max_pool2d(masks[:, None].float(), 2 * r + 1, 1, r)[:, 0] if r else masks
        x = torch.where(grown > 0, x, torch.zeros_like(x))
        zero = x <= 0  # stays exactly zero, as in stacks handed over skull-stripped
    if rng.random() < cfg.p_curve:
        x = _curve(x, rng)
    x = torch.clamp(x, min=0) ** float(rng.uniform(*cfg.gamma_range))
    if rng.random() < cfg.p_bias:
        x = x * _bias(rng, p, cfg.bias_strength)
    if rng.random() < cfg.p_dark_channel:
        c = int(rng.integers(0, x.shape[0]))
        x[c] = x[c] * float(rng.uniform(0.2, 0.6))
    if rng.random() < cfg.p_lowres:
        small = max(8, round(p / rng.uniform(1.3, 2.0)))
        x = functional.interpolate(x[None], (small, small), mode="area")
        x = functional.interpolate(x, (p, p), mode="bilinear")[0]
    if rng.random() < cfg.p_blur:
        x = _blur(x, float(rng.uniform(0.3, 1.2)))
    sigma = float(rng.uniform(0, cfg.noise_max))
    if sigma > 0:
        n1 = torch.from_numpy(rng.normal(0, sigma, x.shape).astype(np.float32))
        n2 = torch.from_numpy(rng.normal(0, sigma, x.shape).astype(np.float32))
        x = torch.sqrt((x + n1) ** 2 + n2**2)
    x = x * float(rng.uniform(0.7, 1.3))
    if zero is not None:
        x = torch.where(zero, torch.zeros_like(x), x)
    return torch.clamp(x, 0, 3)


def augment_batch(
    samples: list[tuple[np.ndarray, np.ndarray]], cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training batch from (channels (c, h, w) float32, masks (c, h, w) bool) samples.

    Returns (x (b, c, p, p), centre-slice mask (b, 1, p, p)) as float32 tensors.
    """
    crops_x, crops_m, thetas = [], [], []
    for x, m in samples:
        centre = choose_centre(m, cfg, rng)
        fill = surroundings(x, cfg.crop, rng) if rng.random() < cfg.p_fill_outside else None
        crops_x.append(crop_around(x, centre, cfg.crop, fill))
        crops_m.append(crop_around(m.astype(np.float32), centre, cfg.crop))
        thetas.append(_theta(rng, cfg))
    xt = torch.from_numpy(np.stack(crops_x))
    mt = torch.from_numpy(np.stack(crops_m))
    b, c = xt.shape[:2]
    theta = torch.from_numpy(np.stack(thetas).astype(np.float32))
    grid = functional.affine_grid(theta, [b, c, cfg.patch, cfg.patch], align_corners=False)
    xg = functional.grid_sample(xt, grid, mode="bilinear", align_corners=False)
    mg = functional.grid_sample(mt, grid, mode="bilinear", align_corners=False) >= 0.5
    out = torch.stack([intensity(xg[i], mg[i], cfg, rng) for i in range(b)])
    return out.float(), mg[:, c // 2 : c // 2 + 1].float()
