"""Super-resolution reconstruction: weighted least squares with edge-preserving regularisation.

    minimise  sum_i W_i (y_i - f_i (A x)_i)^2 + lambda * sum_edges kappa_e (D_e x)^2

with kappa from the previous iterate (lagged diffusivity: a Huber-like penalty that
smooths noise but not tissue edges), solved by conjugate gradients on the normal
equations a few steps at a time, warm-started, then clamped to x >= 0. lambda is
relative to the data term's mean curvature so one value suits any number of stacks.
"""

from __future__ import annotations

import torch

from earlybrain.recon.forward import ForwardModel


def _diff(x: torch.Tensor, axis: int) -> torch.Tensor:
    """Forward difference along `axis`, zero at the far border (same shape)."""
    d = torch.zeros_like(x)
    n = x.shape[axis]
    src_hi = x.narrow(axis, 1, n - 1)
    src_lo = x.narrow(axis, 0, n - 1)
    d.narrow(axis, 0, n - 1).copy_(src_hi - src_lo)
    return d


def _diff_t(d: torch.Tensor, axis: int) -> torch.Tensor:
    """Adjoint of `_diff`."""
    out = torch.zeros_like(d)
    n = d.shape[axis]
    out.narrow(axis, 1, n - 1).add_(d.narrow(axis, 0, n - 1))
    out.narrow(axis, 0, n - 1).sub_(d.narrow(axis, 0, n - 1))
    return out


def edge_weights(x: torch.Tensor, delta: float) -> list[torch.Tensor]:
    return [1.0 / torch.sqrt(1.0 + (_diff(x, a) / delta) ** 2) for a in range(3)]


def regulariser(p: torch.Tensor, kappa: list[torch.Tensor]) -> torch.Tensor:
    return sum(_diff_t(k * _diff(p, a), a) for a, k in enumerate(kappa))


def _subset(weight: torch.Tensor, *arrays: torch.Tensor):
    """Pixels with weight > 0 when that saves work (leave-one-out, single stacks)."""
    keep = weight > 0
    if int(keep.sum()) > 0.9 * weight.numel():
        return None, arrays
    pix = torch.nonzero(keep)[:, 0]
    return pix, tuple(a[pix] for a in arrays)


def initial_volume(
    fm: ForwardModel,
    R: torch.Tensor,
    t: torch.Tensor,
    y: torch.Tensor,
    factor: torch.Tensor,
    weight: torch.Tensor,
) -> torch.Tensor:
    """PSF-weighted average of the observations: A^T(W f y) / A^T(W f^2)."""
    pix, (y, factor, weight) = _subset(weight, y, factor, weight)
    num, den = fm.adjoint(torch.stack([weight * factor * y, weight * factor * factor]), R, t, pix)
    thr = 1e-3 * den.max()
    return torch.where(den > thr, num / den.clamp_min(thr), torch.zeros_like(num))


def solve(
    fm: ForwardModel,
    x0: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    y: torch.Tensor,
    factor: torch.Tensor,
    weight: torch.Tensor,
    lam: float,
    delta: float,
    steps: int,
) -> tuple[torch.Tensor, list[float], torch.Tensor]:
    """`steps` CG iterations from x0.

    Returns (x >= 0, relative residual norms, coverage A^T(W f^2) = how strongly each
    voxel is observed, which callers use as the volume's support)."""
    pix, (y, factor, weight) = _subset(weight, y, factor, weight)
    d = weight * factor * factor
    rhs, cov = fm.adjoint(torch.stack([weight * factor * y, d]), R, t, pix)
    mean_cov = cov[cov > 1e-6 * cov.max()].mean()
    lam_eff = float(lam) * float(mean_cov)
    kappa = edge_weights(x0, delta)

    def op(p: torch.Tensor) -> torch.Tensor:
        return fm.normal(p, R, t, d, pix) + lam_eff * regulariser(p, kappa)

    x = x0.clone()
    r = rhs - op(x)
    p = r.clone()
    rr = (r * r).sum()
    r0 = float(torch.sqrt((rhs * rhs).sum()).clamp_min(1e-12))
    hist = [float(torch.sqrt(rr)) / r0]
    for _ in range(steps):
        Ap = op(p)
        alpha = rr / (p * Ap).sum().clamp_min(1e-30)
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = (r * r).sum()
        hist.append(float(torch.sqrt(rr_new)) / r0)
        p = r + (rr_new / rr.clamp_min(1e-30)) * p
        rr = rr_new
    return x.clamp_min(0.0), hist, cov
