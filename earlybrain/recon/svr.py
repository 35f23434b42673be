"""Slice-to-volume registration: rigid poses of groups of slices against the current volume.

Levenberg-Marquardt on the sum of squared residuals after a per-slice affine intensity
fit (equivalent to maximising each slice's correlation with its simulated slice). The
Jacobian is analytic: a left update E(q) = q + w x (q - c) + v of the slice's map T_k
changes a PSF sample at q by grad x(q) . (w x (q - c) + v), so one grid_sample of the
volume and its gradient gives every slice's 6x6 normal equations at once, summed per
group with index_add. Groups are whole stacks (initial stack-to-stack alignment),
packets (slices acquired in one interleaved sweep) or single slices; the intensity
parameters are projected out of the Jacobian (variable projection, Kaufman's form).
Coarse levels smooth both the volume and the observed slices.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from earlybrain.recon.forward import ForwardModel
from earlybrain.recon.transforms import axis_angle_matrix


@dataclass
class SVRResult:
    R: torch.Tensor
    t: torch.Tensor
    cost: torch.Tensor  # (G,) final group cost (1 - R^2 of the intensity fit)
    steps: int


def volume_channels(x: torch.Tensor, support: torch.Tensor, rot: torch.Tensor, voxel: float):
    """(5,X,Y,Z): value, world-mm gradient (3) and support of the volume."""
    gx, gy, gz = torch.gradient(x, spacing=voxel)
    g = torch.stack([gx, gy, gz])  # along grid axes
    gw = torch.einsum("ca,axyz->cxyz", rot, g)
    return torch.cat([x[None], gw, support[None].to(x.dtype)])


def _segment_sum(values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    out = torch.zeros((n, *values.shape[1:]), dtype=values.dtype, device=values.device)
    return out.index_add_(0, index, values)


def _group_move(R, t, R0, t0, c, groups, n_groups) -> torch.Tensor:
    """Largest displacement (mm) of each group's centre +- 30 mm since the level started.

    c is the group centre in reconstruction space; the points are mapped back through the
    start pose (T0^-1 c + offsets) and compared under both poses."""
    k_first = torch.full((n_groups,), -1, dtype=torch.long, device=R.device)
    k_first.scatter_(0, groups.flip(0), torch.arange(groups.numel() - 1, -1, -1, device=R.device))
    k_first = k_first.clamp_min(0)
    Rk0, tk0, Rk, tk = R0[k_first], t0[k_first], R[k_first], t[k_first]
    p0 = torch.einsum("gji,gj->gi", Rk0, c - tk0)  # T0^-1 c (scanner, centred)
    offs = torch.tensor(
        [[0, 0, 0], [30, 0, 0], [-30, 0, 0], [0, 30, 0], [0, -30, 0], [0, 0, 30], [0, 0, -30]],
        dtype=R.dtype,
        device=R.device,
    )
    p = p0[:, None, :] + offs[None]
    a = torch.einsum("gij,gnj->gni", Rk0, p) + tk0[:, None]
    b = torch.einsum("gij,gnj->gni", Rk, p) + tk[:, None]
    return torch.linalg.norm(a - b, dim=2).amax(1)


def register_groups(
    fm: ForwardModel,
    x: torch.Tensor,
    support: torch.Tensor,
    y: torch.Tensor,
    factor: torch.Tensor,
    weight: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    groups: torch.Tensor,
    active: torch.Tensor,
    sigma_mm: float,
    steps: int,
    min_pixels: int = 40,
    pixels: torch.Tensor | None = None,
    psf_step: float | None = None,
    max_move_mm: float = 8.0,
) -> SVRResult:
    """Optimise one rigid update per group (groups: (K,) group id of each slice).

    y, factor, weight: (N,) observed values, intensity factors (bias x scale) and pixel
    weights; `active` (K,) marks slices allowed to move; `pixels` optionally restricts
    to a subset of pixel indices (coarse levels). Returns the new (R, t).
    """
    dev = x.device
    obs = fm.obs
    rot = torch.as_tensor(fm.grid.rot, dtype=torch.float32, device=dev)
    chans = volume_channels(x, support, rot, fm.grid.voxel)
    vols = fm.stack_volumes(chans, extra_sigma_mm=sigma_mm)
    if pixels is not None:
        y, factor, weight = y[pixels], factor[pixels], weight[pixels]
        slice_of = obs.slice_of[pixels]
    else:
        slice_of = obs.slice_of
    K = obs.n_slices
    n_groups = int(groups.max()) + 1
    gid = groups[slice_of]
    R = R.clone().double()
    t = t.clone().double()
    R_start, t_start = R.clone(), t.clone()
    best_R, best_t = R.clone(), t.clone()
    best_cost = torch.full((n_groups,), float("inf"), dtype=torch.float64, device=dev)
    best_H = torch.zeros((n_groups, 6, 6), dtype=torch.float64, device=dev)
    best_b = torch.zeros((n_groups, 6), dtype=torch.float64, device=dev)
    best_c = torch.zeros((n_groups, 3), dtype=torch.float64, device=dev)
    mu = torch.full((n_groups,), 1e-2, dtype=torch.float64, device=dev)
    movable = torch.zeros(n_groups, dtype=torch.bool, device=dev)
    movable[groups[active]] = True
    done = 0
    for step in range(steps + 1):
        vals, mom, q0, m = fm.sample(vols, R, t, moments=True, pixels=pixels, psf_step=psf_step)
        sim = (factor * vals[0]).double()
        G = (factor[:, None] * vals[1:4].T).double()
        Hm = (factor[:, None] * mom[1:4].T).double()
        w = (weight * ((vals[4] - 0.5) * 2.0).clamp(0.0, 1.0)).double()
        yd = y.double()
        # per-slice weighted affine intensity fit y ~ a sim + d
        S = _segment_sum(
            torch.stack([w, w * sim, w * sim * sim, w * yd, w * sim * yd, w * yd * yd], 1),
            slice_of,
            K,
        )
        sw = S[:, 0].clamp_min(1e-9)
        ms, my = S[:, 1] / sw, S[:, 3] / sw
        vs = (S[:, 2] / sw - ms * ms).clamp_min(1e-9)
        cov = S[:, 4] / sw - ms * my
        vy = (S[:, 5] / sw - my * my).clamp_min(1e-9)
        a = cov / vs
        d = my - a * ms
        r = yd - a[slice_of] * sim - d[slice_of]
        # group centres and costs
        gw = _segment_sum(w, gid, n_groups).clamp_min(1e-9)
        c = _segment_sum(w[:, None] * q0.double(), gid, n_groups) / gw[:, None]
        num = _segment_sum(w * r * r, gid, n_groups)
        den = _segment_sum(vy * sw, groups, n_groups).clamp_min(1e-9)
        cost = num / den
        n_pix = _segment_sum((w > 0.5).double(), gid, n_groups)
        # Jacobian of sim wrt the left update (rotation about c, translation)
        J = torch.cat(
            [torch.cross(q0.double() - c[gid], G, dim=1) + torch.cross(m.double(), Hm, dim=1), G], 1
        )
        SJ = _segment_sum(w[:, None] * J, slice_of, K) / sw[:, None]
        SsJ = _segment_sum((w * (sim - ms[slice_of]))[:, None] * J, slice_of, K) / sw[:, None]
        beta = SsJ / vs[:, None]
        Jt = J - SJ[slice_of] - beta[slice_of] * (sim - ms[slice_of])[:, None]
        aJ = a[slice_of][:, None] * Jt
        # per-pixel outer products in float32 (half the memory traffic), summed in float64
        v = (torch.sqrt(w)[:, None] * aJ).float()
        H = _segment_sum((v[:, :, None] * v[:, None, :]).reshape(-1, 36), gid, n_groups)
        H = H.reshape(n_groups, 6, 6).double()
        b = _segment_sum(w[:, None] * aJ * r[:, None], gid, n_groups)
        # LM bookkeeping per group: accept improvements, else revert and damp harder;
        # a group that wandered beyond the trust region counts as not improved
        if step > 0:
            moved = _group_move(R, t, R_start, t_start, c, groups, n_groups)
            cost = torch.where(moved > max_move_mm, torch.full_like(cost, float("inf")), cost)
        improved = cost < best_cost
        best_cost = torch.where(improved, cost, best_cost)
        best_H = torch.where(improved[:, None, None], H, best_H)
        best_b = torch.where(improved[:, None], b, best_b)
        best_c = torch.where(improved[:, None], c, best_c)
        mu = torch.where(improved, mu * 0.3, mu * 4.0).clamp(1e-6, 1e6)
        acc_slice = improved[groups]
        best_R = torch.where(acc_slice[:, None, None], R, best_R)
        best_t = torch.where(acc_slice[:, None], t, best_t)
        if step == steps:
            break
        done = step + 1
        ok = movable & (n_pix >= min_pixels)
        diag = torch.diagonal(best_H, dim1=1, dim2=2)
        ridge = 1e-9 * diag.sum(1, keepdim=True) + 1e-12
        A = best_H + torch.diag_embed(mu[:, None] * diag + ridge)
        delta = torch.linalg.solve(A, best_b[..., None])[..., 0]
        delta = torch.where(ok[:, None], delta, torch.zeros_like(delta))
        # cap a single step: 10 degrees, 10 mm
        ang = torch.linalg.norm(delta[:, :3], dim=1, keepdim=True)
        delta[:, :3] *= (0.17 / ang.clamp_min(1e-12)).clamp(max=1.0)
        tr = torch.linalg.norm(delta[:, 3:], dim=1, keepdim=True)
        delta[:, 3:] *= (10.0 / tr.clamp_min(1e-12)).clamp(max=1.0)
        Rg = axis_angle_matrix(delta[:, :3])
        Rs, cs, vs_ = Rg[groups], best_c[groups], delta[groups, 3:]
        R = Rs @ best_R
        t = torch.einsum("kij,kj->ki", Rs, best_t - cs) + cs + vs_
        if (ang.max() * 50.0 + tr.max()) < 1e-3:
            break
    return SVRResult(R=best_R, t=best_t, cost=best_cost, steps=done)
