"""The alternation of slice-to-volume registration and volume reconstruction.

One reconstruction carries its state from stage to stage (slice poses, volume, intensity
factors, robust weights) and the stages update it, on one torch device (SVRTK's scheme):
reconstruct from the reference stack alone and register every other stack to it as a
rigid whole (coarse to fine); reconstruct from all stacks, then for each outer
iteration: register packets and then runs of a few consecutively acquired slices (first
iteration only: slices acquired close in time share a pose, which is robust for a
start), then single slices, each stack against a volume solved from the other stacks
(leave-one-out); slices that still fit poorly restart from their acquisition
neighbours' poses; re-solve the volume by CG, re-fit bias and slice scales, re-estimate
the EM outlier weights; log convergence; and a final CG polish. `pipeline` sets it up
and turns the final state into the result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from earlybrain.recon import robust, srr, svr
from earlybrain.recon.config import ReconConfig
from earlybrain.recon.forward import ForwardModel, build_observations, smoothed_observations
from earlybrain.recon.stacks import ReconInputError, Stack, dark_slices
from earlybrain.recon.transforms import from_matrices, interpolate_in_time, make_grid, to_matrices


def _coarse_pixels(obs, stride: int) -> torch.Tensor | None:
    """Every `stride`-th pixel in both in-plane directions (coarse pyramid levels)."""
    if stride <= 1:
        return None
    v = obs.vox
    keep = ((v[:, 0] % stride) == 0) & ((v[:, 1] % stride) == 0)
    return torch.as_tensor(np.nonzero(keep)[0], dtype=torch.long, device=obs.pos.device)


def _support(cov: torch.Tensor) -> torch.Tensor:
    """0..1 map of where the volume is determined by data (SVR ignores pixels outside)."""
    mean_cov = cov[cov > 1e-6 * cov.max()].mean()
    return (cov / (0.2 * mean_cov)).clamp(0, 1)


def _displacement(obs, R0, t0, R1, t1, brain_idx) -> float:
    """Mean displacement (mm) of brain pixels between two sets of slice poses."""
    p = obs.pos[brain_idx].double()
    s = obs.slice_of[brain_idx]
    a = torch.einsum("nij,nj->ni", R0[s], p) + t0[s]
    b = torch.einsum("nij,nj->ni", R1[s], p) + t1[s]
    return float(torch.linalg.norm(a - b, dim=1).mean())


class ReconState:
    """State of one reconstruction: slice poses, volume, intensity factors, robust weights."""

    def __init__(
        self,
        stacks: list[Stack],
        cfg: ReconConfig,
        dev: torch.device,
        say: Callable[[str], None],
        ref: int,
        monitor=None,
    ) -> None:
        self.stacks, self.cfg, self.dev, self.say, self.ref = stacks, cfg, dev, say, ref
        self.monitor = monitor
        pts = []
        for st in stacks:
            idx = np.argwhere(st.mask).astype(float)
            pts.append(idx @ st.affine[:3, :3].T + st.affine[:3, 3])
        ref_st = stacks[ref]
        rot = ref_st.affine[:3, :3] / ref_st.spacing
        margin = cfg.margin_mm + cfg.mask_dilation_mm + 0.5 * max(s.thickness for s in stacks)
        self.grid = make_grid(np.concatenate(pts), rot, cfg.resolution_mm, margin)
        self.obs = build_observations(
            stacks,
            self.grid.origin,
            cfg.mask_dilation_mm,
            cfg.psf_inplane_fwhm_factor,
            dev,
            near_mm=cfg.svr_dilation_mm,
        )
        self.fm = ForwardModel(self.obs, self.grid, cfg.psf_step_factor)
        obs = self.obs
        self.K = obs.n_slices
        self.y = obs.y
        self.brain = obs.brain
        self.brain_idx = torch.nonzero(self.brain)[:, 0]
        self.R = torch.eye(3, dtype=torch.float64, device=dev).repeat(self.K, 1, 1)
        self.t = torch.zeros((self.K, 3), dtype=torch.float64, device=dev)
        med = [float(self.y[a:b][self.brain[a:b]].median()) for a, b in obs.stack_ranges]
        dark_stacks = [st.name for st, m in zip(stacks, med, strict=True) if not m > 0]
        if dark_stacks:  # e.g. a failed intensity normalisation: no scale to match
            raise ReconInputError(
                f"{', '.join(dark_stacks)}: median intensity in the brain mask is 0 "
                "(check the bias correction / normalisation and the mask)"
            )
        self.factor = torch.ones_like(self.y)
        for s, (a, b) in enumerate(obs.stack_ranges):
            self.factor[a:b] = med[s] / med[ref]
        self.scale = torch.ones(self.K, device=dev)
        self.weights = robust.initial_weights(self.y, self.brain, self.K)
        dark = np.concatenate([dark_slices(st.data, st.mask) for st in stacks])
        self.weights.slices = torch.as_tensor(~dark, dtype=torch.float32, device=dev)
        self.pix_w = self.weights.pixel(obs.slice_of)
        if dark.any():
            say(
                f"{int(dark.sum())} slice(s) much darker than their neighbours (signal drop-out): "
                "excluded from the start"
            )
        self.pix_stack = obs.slice_stack[obs.slice_of]
        self.brain_px = torch.zeros(self.K, dtype=torch.long, device=dev).index_add_(
            0, obs.slice_of, self.brain.long()
        )
        self.delta = cfg.edge_delta * (med[ref] if med[ref] > 0 else 1.0)
        self.x = torch.zeros(self.grid.shape, device=dev)
        self.sim = torch.zeros_like(self.y)
        self._smoothed: dict[float, torch.Tensor] = {}
        self._loo: dict[int, torch.Tensor] = {}
        self.last_support = torch.ones(self.grid.shape, device=dev)

    # --- helpers
    def observed(self, sigma: float) -> torch.Tensor:
        key = round(float(sigma), 3)
        if key not in self._smoothed:
            self._smoothed[key] = smoothed_observations(self.obs, self.stacks, key)
        return self._smoothed[key]

    def trace(self, stage: str) -> None:
        if self.monitor:
            self.monitor(stage, to_matrices(self.R, self.t, self.grid.origin), self.x)

    def solve(self, w_pix: torch.Tensor, steps: int, restart: bool = False) -> torch.Tensor:
        """Update the volume; returns its support (0..1 from the data coverage)."""
        if restart:
            self.x = srr.initial_volume(self.fm, self.R, self.t, self.y, self.factor, w_pix)
        self.x, hist, cov = srr.solve(
            self.fm,
            self.x,
            self.R,
            self.t,
            self.y,
            self.factor,
            w_pix,
            self.cfg.regularisation,
            self.delta,
            steps,
        )
        self.say(f"  SRR {steps} CG steps: residual {hist[0]:.3g} -> {hist[-1]:.3g}")
        self.last_support = _support(cov)
        return self.last_support

    def update_intensity_and_weights(self) -> None:
        cfg, obs = self.cfg, self.obs
        self.sim = self.fm.apply(self.x, self.R, self.t)
        self.factor, self.scale, _ = robust.fit_intensity(
            self.y,
            self.sim,
            self.weights.pixel(obs.slice_of),
            self.brain,
            obs.pos,
            obs.slice_of,
            obs.slice_stack,
            obs.stack_ranges,
            cfg.bias_order,
            cfg.slice_scale_range,
        )
        if cfg.robust:
            e = self.y - self.factor * self.sim
            self.weights = robust.em_update(
                e, self.weights, self.brain, obs.slice_of, self.K, cfg.min_slice_pixels
            )
            self.pix_w = self.weights.pixel(obs.slice_of)

    def register(
        self,
        x: torch.Tensor,
        support: torch.Tensor,
        groups: torch.Tensor,
        active: torch.Tensor,
        sigma: float,
        weight: torch.Tensor,
        steps: int,
        pixels: torch.Tensor | None = None,
    ) -> svr.SVRResult:
        coarse = _coarse_pixels(self.obs, 2 if sigma >= 1.5 else 1)
        if pixels is None:
            pixels = coarse
        elif coarse is not None:
            keep = torch.zeros(self.y.numel(), dtype=torch.bool, device=self.dev)
            keep[coarse] = True
            pixels = pixels[keep[pixels]]
        res = svr.register_groups(
            self.fm,
            x,
            support,
            self.observed(sigma),
            self.factor,
            weight,
            self.R,
            self.t,
            groups,
            active,
            sigma,
            steps,
            min_pixels=self.cfg.min_slice_pixels,
            pixels=pixels,
            max_move_mm=self.cfg.max_step_mm,
            psf_step=self.cfg.svr_psf_step_mm,
        )
        self.R, self.t = res.R, res.t
        return res

    def targets(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(volume, support, pixel indices, slice mask) to register each group of slices to.

        Leave-one-stack-out: a volume solved from the other stacks only. A volume that
        includes a slice has adapted to that slice's current pose (it has more unknowns
        than there are pixels), which pins the slice where it is; without it, the
        slice is pulled to where the other stacks put the anatomy.
        """
        obs, cfg = self.obs, self.cfg
        if not cfg.leave_one_out or obs.n_stacks < 2:
            pix = torch.arange(self.y.numel(), device=self.dev)
            allk = torch.ones(self.K, dtype=torch.bool, device=self.dev)
            return [(self.x, self.last_support, pix, allk)]
        out = []
        for s, (a, b) in enumerate(obs.stack_ranges):
            w_s = self.pix_w * (self.pix_stack != s).float()
            x_s = self._loo.get(s)
            if x_s is None:  # later calls warm-start from the previous leave-one-out volume
                x_s = srr.initial_volume(self.fm, self.R, self.t, self.y, self.factor, w_s)
            x_s, _, cov = srr.solve(
                self.fm,
                x_s,
                self.R,
                self.t,
                self.y,
                self.factor,
                w_s,
                cfg.regularisation,
                self.delta,
                cfg.loo_cg_steps,
            )
            self._loo[s] = x_s
            pix = torch.arange(a, b, device=self.dev)
            out.append((x_s, _support(cov), pix, obs.slice_stack == s))
        return out

    # --- stages
    def align_stacks(self) -> None:
        """Register each stack, as a rigid whole, to a volume made from the reference alone."""
        cfg, obs = self.cfg, self.obs
        w_ref = (self.pix_stack == self.ref).float() * self.pix_w
        sup = self.solve(w_ref, cfg.cg_steps, restart=True)
        active = obs.slice_stack != self.ref
        w_reg = self.obs.near.float() * (self.pix_stack != self.ref).float()
        pix = torch.nonzero(self.pix_stack != self.ref)[:, 0]
        for sigma in cfg.stack_sigmas_mm:
            self.register(
                self.x, sup, obs.slice_stack, active, sigma, w_reg, cfg.svr_steps + 4, pix
            )
            self.trace(f"stack sigma {sigma}")
        for s in range(obs.n_stacks):
            if s != self.ref:
                k = int(torch.nonzero(obs.slice_stack == s)[0, 0])
                cos = (float(torch.trace(self.R[k])) - 1) / 2
                ang = float(np.degrees(np.arccos(np.clip(cos, -1, 1))))
                self.say(
                    f"stack {s + 1} aligned to the reference: rotation {ang:.1f} deg, "
                    f"translation {float(torch.linalg.norm(self.t[k])):.1f} mm "
                    "(about the brain centre)"
                )

    def chunk_groups(self, size: int) -> torch.Tensor:
        """Group id per slice: runs of `size` slices acquired one after another (same packet)."""
        obs = self.obs
        st = obs.slice_stack.cpu().numpy()
        pk = obs.slice_packet.cpu().numpy()
        rank = obs.slice_rank
        gid = np.zeros(self.K, dtype=np.int64)
        nxt = 0
        for p in np.unique(pk):
            ks = np.nonzero(pk == p)[0]
            ks = ks[np.argsort(rank[ks])]
            for i in range(0, len(ks), size):
                gid[ks[i : i + size]] = nxt
                nxt += 1
        del st
        return torch.as_tensor(gid, device=self.dev)

    def align_groups(self, targets, groups: torch.Tensor, sigmas, label: str) -> None:
        cfg = self.cfg
        w_reg = self.obs.near.float() * self.weights.voxel
        for sigma in sigmas:
            for x_s, sup_s, pix, act in targets:
                self.register(x_s, sup_s, groups, act, sigma, w_reg, cfg.svr_steps, pix)
            self.trace(f"{label} sigma {sigma}")

    def align_slices(self, sigmas: tuple[float, ...], targets, label: str) -> None:
        """Slice-level SVR, then a second chance for slices that failed: restart them from
        their acquisition-time neighbours' poses and keep whichever start fits better."""
        cfg, obs = self.cfg, self.obs
        w_reg = self.obs.near.float() * self.weights.voxel
        ids = torch.arange(self.K, device=self.dev)
        cost = torch.full((self.K,), float("inf"), dtype=torch.float64, device=self.dev)
        for i, sigma in enumerate(sigmas):
            for x_s, sup_s, pix, act in targets:
                res = self.register(x_s, sup_s, ids, act, sigma, w_reg, cfg.svr_steps, pix)
                if i == len(sigmas) - 1:
                    cost = torch.where(act, res.cost, cost)
            self.trace(f"{label} slice sigma {sigma}")
        if not sigmas:
            return
        enough = self.brain_px >= cfg.min_slice_pixels
        c_ok = cost[enough & torch.isfinite(cost)]
        if c_ok.numel() < 3:
            return
        med = c_ok.median()
        mad = (c_ok - med).abs().median()
        bad = (cost > med + 4.0 * 1.4826 * mad) | ~torch.isfinite(cost)
        good = (enough & ~bad).cpu().numpy()
        Ri, ti = interpolate_in_time(
            self.R, self.t, obs.slice_stack.cpu().numpy(), obs.slice_rank, good
        )
        few = ~enough
        self.R = torch.where(few[:, None, None], Ri, self.R)
        self.t = torch.where(few[:, None], ti, self.t)
        retry = enough & bad
        if not bool(retry.any()):
            return
        R_keep, t_keep = self.R.clone(), self.t.clone()
        self.R = torch.where(retry[:, None, None], Ri, self.R)
        self.t = torch.where(retry[:, None], ti, self.t)
        new_cost = torch.full_like(cost, float("inf"))
        for x_s, sup_s, pix, act in targets:
            act_r = act & retry
            if not bool(act_r.any()):
                continue
            pix_r = pix[retry[obs.slice_of[pix]]]
            for sigma in (max(sigmas[0], 1.0), sigmas[-1]):
                res = self.register(x_s, sup_s, ids, act_r, sigma, w_reg, cfg.svr_steps, pix_r)
            new_cost = torch.where(act_r, res.cost, new_cost)
        better = retry & (new_cost < cost)
        # no fit at all either way (R^2 < 0.5): the neighbours' interpolated pose is the
        # best guess for where the slice was; its weight will say it explains nothing
        hopeless = retry & ~better & (cost > 0.5)
        self.R = torch.where(better[:, None, None], self.R, R_keep)
        self.t = torch.where(better[:, None], self.t, t_keep)
        self.R = torch.where(hopeless[:, None, None], Ri, self.R)
        self.t = torch.where(hopeless[:, None], ti, self.t)
        self.say(
            f"  {int(retry.sum())} slice(s) fitted poorly; {int(better.sum())} improved when "
            f"restarted from their acquisition neighbours' poses, {int(hopeless.sum())} fit "
            "nowhere and take the interpolated pose"
        )
        self.trace(f"{label} retry")

    def run(self, initial: np.ndarray | None) -> list[dict[str, Any]]:
        cfg, obs = self.cfg, self.obs
        if initial is not None:
            self.R, self.t = from_matrices(initial, self.grid.origin, self.dev)
        elif cfg.motion_correction and obs.n_stacks > 1:
            self.align_stacks()
        self.solve(self.pix_w, cfg.cg_steps, restart=True)
        self.update_intensity_and_weights()
        convergence = []
        for it in range(cfg.outer_iterations):
            R_prev, t_prev = self.R.clone(), self.t.clone()
            if cfg.motion_correction:
                targets = self.targets()
                if it == 0 and initial is None:
                    self.align_groups(targets, obs.slice_packet, cfg.packet_sigmas_mm, "packet")
                    targets = self.targets()
                    if cfg.chunk_slices > 1:
                        chunks = self.chunk_groups(cfg.chunk_slices)
                        self.align_groups(targets, chunks, cfg.packet_sigmas_mm, "chunk")
                        targets = self.targets()
                sigmas = cfg.slice_sigmas_mm[min(it, len(cfg.slice_sigmas_mm) - 1)]
                self.align_slices(sigmas, targets, f"outer {it + 1}")
            for _ in range(cfg.inner_iterations):
                self.solve(self.pix_w, cfg.cg_steps)
                self.update_intensity_and_weights()
            moved = _displacement(obs, R_prev, t_prev, self.R, self.t, self.brain_idx)
            with_brain = self.brain_px > 0
            rej = float(((self.weights.slices < cfg.reject_weight) & with_brain).sum()) / max(
                1, int(with_brain.sum())
            )
            kept = self.brain & (self.weights.slices >= cfg.reject_weight)[obs.slice_of]
            fit = (self.sim * self.factor)[kept].cpu().numpy()
            cc = float(np.corrcoef(self.y[kept].cpu().numpy(), fit)[0, 1])
            convergence.append(
                {
                    "iteration": it + 1,
                    "pose_change_mm": moved,
                    "ncc": cc,
                    "rejected_fraction": rej,
                    "residual_sigma": self.weights.sigma,
                }
            )
            self.say(
                f"outer {it + 1}/{cfg.outer_iterations}: slices moved {moved:.3f} mm, "
                f"NCC(observed, simulated) {cc:.4f}, rejected {100 * rej:.1f}% of slices, "
                f"residual sigma {self.weights.sigma:.2f}"
            )
        self.solve(self.pix_w, cfg.final_cg_steps)
        self.update_intensity_and_weights()
        return convergence
