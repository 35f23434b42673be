"""Robust statistics and intensity matching between the observed and simulated slices.

Voxel level (Kuklisova-Murgasova et al. 2012): each residual e = y - f A x is an inlier
N(0, sigma^2) with probability c or an outlier with uniform density m over the
intensity range; the E-step gives each pixel its posterior inlier probability.
Slice level: each slice's potential sqrt(mean (1 - w)^2) (grows with the share of
outlying pixels) follows a mixture of an inlier Gaussian near 0 and a uniform outlier
density; the inlier posterior is the slice weight. So a slice with signal drop-out, or one that
could not be registered, stops pulling the volume.

Intensity: every stack gets a smooth multiplicative bias, the exponential of a
polynomial in scanner coordinates (coil sensitivity does not move with the fetus),
fitted to log(y / A x), plus a per-slice scale clamped to a narrow range. The clamp
matters: with a free scale a drop-out slice would be explained away instead of being
rejected. The bias polynomials are centred across stacks (their common part is
indistinguishable from the volume's own intensity).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def _segment_sum(values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    out = torch.zeros((n, *values.shape[1:]), dtype=values.dtype, device=values.device)
    return out.index_add_(0, index, values)


@dataclass
class Weights:
    voxel: torch.Tensor  # (N,) posterior inlier probability per pixel
    slices: torch.Tensor  # (K,) slice weights
    potential: torch.Tensor  # (K,) slice potentials (share of outlying pixels)
    sigma: float
    mix: float
    outlier_density: float

    def pixel(self, slice_of: torch.Tensor) -> torch.Tensor:
        return self.voxel * self.slices[slice_of]


def initial_weights(y: torch.Tensor, brain: torch.Tensor, n_slices: int) -> Weights:
    yb = y[brain]
    lo, hi = torch.quantile(
        yb[:: max(1, yb.numel() // 200_000)], torch.tensor([0.005, 0.995], device=y.device)
    )
    rng = float(hi - lo) if float(hi - lo) > 0 else float(yb.max() - yb.min() + 1)
    return Weights(
        voxel=torch.ones_like(y),
        slices=torch.ones(n_slices, device=y.device),
        potential=torch.zeros(n_slices, device=y.device),
        sigma=0.0,
        mix=0.9,
        outlier_density=1.0 / rng,
    )


def em_update(
    e: torch.Tensor,
    w: Weights,
    brain: torch.Tensor,
    slice_of: torch.Tensor,
    n_slices: int,
    min_pixels: int,
    iterations: int = 3,
) -> Weights:
    """A few EM iterations of the voxel mixture, then the slice mixture."""
    eb = e[brain].double()
    sl = slice_of[brain]
    sigma, mix, m = w.sigma, w.mix, w.outlier_density
    if sigma <= 0:
        mad = float((eb - eb.median()).abs().median())
        sigma = max(1.4826 * mad, 1e-6)
    sw = w.slices.double()[sl]
    for _ in range(iterations):
        g = torch.exp(-0.5 * (eb / sigma) ** 2) / (np.sqrt(2 * np.pi) * sigma)
        post = mix * g / (mix * g + (1 - mix) * m)
        ws = post * sw
        sigma = float(torch.sqrt((ws * eb * eb).sum() / ws.sum().clamp_min(1e-12)))
        sigma = max(sigma, 1e-6)
        mix = float(ws.sum() / sw.sum().clamp_min(1e-12))
        mix = min(max(mix, 0.05), 0.999)
    g = torch.exp(-0.5 * (eb / sigma) ** 2) / (np.sqrt(2 * np.pi) * sigma)
    post = mix * g / (mix * g + (1 - mix) * m)
    voxel = torch.ones_like(e)
    voxel[brain] = post.to(e.dtype)
    # outside the brain (dilation ring) keep the weights of the same mixture, but gentler
    eo = e[~brain].double()
    go = torch.exp(-0.5 * (eo / sigma) ** 2) / (np.sqrt(2 * np.pi) * sigma)
    voxel[~brain] = (mix * go / (mix * go + (1 - mix) * m)).to(e.dtype)
    # slice potentials
    cnt = _segment_sum(torch.ones_like(post), sl, n_slices)
    pot = torch.sqrt(_segment_sum((1 - post) ** 2, sl, n_slices) / cnt.clamp_min(1))
    slice_w = slice_mixture(pot, cnt >= min_pixels)
    return Weights(
        voxel=voxel,
        slices=slice_w.to(e.dtype),
        potential=pot.to(e.dtype),
        sigma=sigma,
        mix=mix,
        outlier_density=m,
    )


def slice_mixture(
    pot: torch.Tensor, valid: torch.Tensor, iterations: int = 20, min_sd: float = 0.05
) -> torch.Tensor:
    """Posterior inlier probability of each slice from its potential.

    Inliers: a Gaussian (mean and sd by EM, sd at least `min_sd`, because potentials of
    good slices are all near 0 and a free fit would split noise into two classes);
    outliers: uniform on [0, 1], the potential's range. Slices with few pixels (not
    `valid`) do not shape the fit. Potentials at or below the inlier mean keep weight 1.
    """
    p = pot[valid].double()
    out = torch.ones_like(pot)
    if p.numel() < 4:
        return out
    m1 = float(p.median())
    s1 = max(float(1.4826 * (p - m1).abs().median()), min_sd)
    c = 0.9
    for _ in range(iterations):
        g1 = torch.exp(-0.5 * ((p - m1) / s1) ** 2) / (np.sqrt(2 * np.pi) * s1)
        r = c * g1 / (c * g1 + (1 - c) * 1.0)
        c = float(r.mean().clamp(0.5, 0.999))
        m1 = float((r * p).sum() / r.sum().clamp_min(1e-12))
        s1 = max(float(torch.sqrt((r * (p - m1) ** 2).sum() / r.sum().clamp_min(1e-12))), min_sd)
    pd = pot.double()
    g1 = torch.exp(-0.5 * ((pd - m1) / s1) ** 2) / (np.sqrt(2 * np.pi) * s1)
    r = c * g1 / (c * g1 + (1 - c) * 1.0)
    r = torch.where(pd <= m1, torch.ones_like(r), r)
    return r.to(pot.dtype)


def poly_basis(pos: torch.Tensor, order: int, scale: float = 100.0) -> torch.Tensor:
    """Polynomial terms of centred coordinates / scale, up to `order` (constant first)."""
    u = pos.double() / scale
    cols = [torch.ones_like(u[:, 0])]
    if order >= 1:
        cols += [u[:, 0], u[:, 1], u[:, 2]]
    if order >= 2:
        cols += [
            u[:, 0] ** 2,
            u[:, 1] ** 2,
            u[:, 2] ** 2,
            u[:, 0] * u[:, 1],
            u[:, 0] * u[:, 2],
            u[:, 1] * u[:, 2],
        ]
    return torch.stack(cols, 1)


def fit_intensity(
    y: torch.Tensor,
    sim: torch.Tensor,
    weight: torch.Tensor,
    brain: torch.Tensor,
    pos: torch.Tensor,
    slice_of: torch.Tensor,
    slice_stack: torch.Tensor,
    stack_ranges: list[tuple[int, int]],
    order: int,
    scale_range: tuple[float, float],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pixel intensity factor f (N,), per-slice scale (K,), and unclamped scale (K,)."""
    K = slice_stack.numel()
    ref = float(sim[brain].median()) if brain.any() else 1.0
    use = brain & (sim > 0.2 * ref) & (y > 0) & (weight > 0.1)
    logr = torch.zeros_like(y, dtype=torch.float64)
    logr[use] = torch.log(y[use].double() / sim[use].double())
    w = torch.where(use, weight.double(), torch.zeros_like(logr))
    basis = poly_basis(pos, order)
    coefs = []
    for a, b in stack_ranges:
        B, L, ww = basis[a:b], logr[a:b], w[a:b]
        if float(ww.sum()) < 10 * B.shape[1]:
            coefs.append(torch.zeros(B.shape[1], dtype=torch.float64, device=y.device))
            continue
        BtW = B.T * ww
        A = BtW @ B + 1e-6 * torch.eye(B.shape[1], dtype=B.dtype, device=B.device)
        coefs.append(torch.linalg.solve(A, BtW @ L))
    C = torch.stack(coefs)
    if C.shape[0] > 1 and C.shape[1] > 1:
        C[:, 1:] -= C[:, 1:].mean(0, keepdim=True)  # common smooth part belongs to the volume
    smooth = torch.zeros_like(logr)
    for s, (a, b) in enumerate(stack_ranges):
        smooth[a:b] = basis[a:b] @ C[s]
    # per-slice scale from what the smooth field leaves
    resid = torch.where(use, logr - smooth, torch.zeros_like(logr))
    sw = _segment_sum(w, slice_of, K)
    u = _segment_sum(w * resid, slice_of, K) / sw.clamp_min(1e-9)
    u = torch.where(sw > 1e-6, u, torch.zeros_like(u))
    lo, hi = np.log(scale_range[0]), np.log(scale_range[1])
    u_clamped = u.clamp(lo, hi)
    logf = smooth + u_clamped[slice_of]
    # gauge: the volume carries the overall intensity (mean log factor over the brain is 0)
    shift = (logf[use] * w[use]).sum() / w[use].sum().clamp_min(1e-9) if use.any() else 0.0
    logf = logf - shift
    f = torch.exp(logf).to(y.dtype)
    return f, torch.exp(u_clamped).to(y.dtype), torch.exp(u).to(y.dtype)
