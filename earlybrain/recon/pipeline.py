"""SVR + SRR: alternate slice-to-volume registration and super-resolution reconstruction.

Order of work (SVRTK's scheme, on one torch device):
1. validate the stacks, choose the reference stack (least inter-slice inconsistency)
   whose axes define the output grid (isotropic, covering the masked brains + margin);
2. align the stacks, then alternate slice registration and volume reconstruction
   (`state`: the stages and what they carry from one to the next);
3. the result: the volume inside the observed region and its brain mask, QC metrics,
   the poses/weights table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from earlybrain.device import resolve_device
from earlybrain.recon.config import ReconConfig
from earlybrain.recon.metrics import largest_component, motion_summary, slice_corners, slice_ncc
from earlybrain.recon.stacks import Stack, check_stack_set, choose_reference
from earlybrain.recon.state import ReconState
from earlybrain.recon.transforms import pose_table_params, to_matrices

log = logging.getLogger("earlybrain.recon")

POSE_COLUMNS = (
    "stack",
    "stack_name",
    "slice",
    "packet",
    "rot_x_deg",
    "rot_y_deg",
    "rot_z_deg",
    "trans_x_mm",
    "trans_y_mm",
    "trans_z_mm",
    "weight",
    "scale",
    "ncc",
    "brain_pixels",
    "rejected",
)


@dataclass
class ReconResult:
    """A reconstruction and everything needed to audit it."""

    volume: np.ndarray  # float32 (X,Y,Z), 0 outside the observed region
    affine: np.ndarray  # voxel -> scanner mm (reference stack's axes)
    mask: np.ndarray  # uint8 brain mask of the reconstruction
    transforms: np.ndarray  # (K,4,4) T_k: slice scanner mm -> reconstruction world mm
    pose_centre: np.ndarray  # centre of the pose parameters in `slices`
    slices: list[dict[str, Any]]  # one row per slice (POSE_COLUMNS)
    metrics: dict[str, Any]
    log: list[str] = field(default_factory=list)
    reference: int = 0


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        line = f"[{time.perf_counter() - self.t0:7.1f}s] {msg}"
        self.lines.append(line)
        log.info(msg)


def reconstruct(
    stacks: list[Stack],
    config: ReconConfig | dict[str, Any] | None = None,
    device: str | torch.device = "auto",
    transforms: np.ndarray | None = None,
    monitor: Callable[[str, np.ndarray, torch.Tensor], None] | None = None,
    reference: int | None = None,
) -> ReconResult:
    """Motion-corrected super-resolution volume from 1..N thick-slice stacks with brain masks.

    `transforms` (K,4,4), optional: initial slice maps (scanner -> reconstruction world mm,
    slices in stack order); with `motion_correction=False` they are used as they are
    (e.g. known poses in tests). `monitor(stage, transforms, volume)` is called after
    each registration stage (benchmarks use it to trace the pose error). `reference`:
    index of the reference stack (the workflow passes stack QC's best); None chooses the
    stack with the least inter-slice inconsistency.
    """
    cfg = config if isinstance(config, ReconConfig) else ReconConfig.from_dict(config)
    cfg.check()
    dev = device if isinstance(device, torch.device) else resolve_device(device, False)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    say = _Log()
    t_start = time.perf_counter()
    check_stack_set(stacks)
    n_st = len(stacks)
    say(f"{n_st} stack(s) on {dev}; output {cfg.resolution_mm} mm isotropic")
    if n_st > 10:
        say(f"warning: {n_st} stacks; tested with 1..10")
    for st in stacks:
        for note in st.notes:
            say(note)
    ref, scores, why = choose_reference(stacks)
    if reference is not None:
        if not 0 <= reference < n_st:
            raise ValueError(f"reference stack {reference} out of range for {n_st} stacks")
        ref = reference
        why = f"{Path(stacks[ref].name).name}, ranked first by stack quality"
    say(f"reference stack {ref + 1} of {len(stacks)}: {why}")
    rc = ReconState(stacks, cfg, dev, say, ref, monitor)
    K = rc.K
    if transforms is not None and np.shape(transforms) != (K, 4, 4):
        raise ValueError(f"transforms must have shape ({K}, 4, 4), got {np.shape(transforms)}")
    say(f"grid {rc.grid.shape} at {rc.grid.voxel} mm; {K} slices, {rc.y.numel()} observed pixels")
    convergence = rc.run(transforms)
    seconds = time.perf_counter() - t_start
    grid, obs, fm = rc.grid, rc.obs, rc.fm
    R, t, x, y, brain = rc.R, rc.t, rc.x, rc.y, rc.brain
    factor, sim, weights = rc.factor, rc.sim, rc.weights
    slice_of, slice_stack, brain_px = obs.slice_of, obs.slice_stack, rc.brain_px

    # outputs
    T = to_matrices(R, t, grid.origin)
    in_brain, cov = fm.adjoint(torch.stack([brain.float(), torch.ones_like(y)]), R, t)
    mean_cov = cov[cov > 1e-6 * cov.max()].mean()
    observed = (cov > 0.05 * mean_cov).cpu().numpy()
    # share of the observations at each voxel that lie in a brain mask
    brain_frac = (in_brain / cov.clamp_min(1e-6)).cpu().numpy()
    bmask = largest_component(observed & (brain_frac >= 0.5))
    bmask = ndimage.binary_fill_holes(bmask)
    volume = np.where(observed, x.cpu().numpy(), 0.0).astype(np.float32)

    y_np, fit_np = y.cpu().numpy(), (sim * factor).cpu().numpy()
    b_np = brain.cpu().numpy()
    so_np = slice_of.cpu().numpy()
    ncc_k = slice_ncc(y_np[b_np], fit_np[b_np], so_np[b_np], K)
    params = pose_table_params(T, grid.origin)
    sw = weights.slices.cpu().numpy()
    scale = rc.scale.cpu().numpy()
    bp = brain_px.cpu().numpy()
    rejected = (sw < cfg.reject_weight) & (bp > 0)
    rows = []
    ss_np = slice_stack.cpu().numpy()
    si_np = obs.slice_index.cpu().numpy()
    pk_np = obs.slice_packet.cpu().numpy()
    for k in range(K):
        s = int(ss_np[k])
        rows.append(
            {
                "stack": s + 1,
                "stack_name": Path(stacks[s].name).name,
                "slice": int(si_np[k]),
                "packet": int(pk_np[k] - pk_np[ss_np == s].min()),
                **{c: float(v) for c, v in zip(POSE_COLUMNS[4:10], params[k], strict=True)},
                "weight": float(sw[k]),
                "scale": float(scale[k]),
                "ncc": float(ncc_k[k]),
                "brain_pixels": int(bp[k]),
                "rejected": bool(rejected[k]),
            }
        )
    per_stack = []
    for s, st in enumerate(stacks):
        ks = np.nonzero(ss_np == s)[0]
        corners = slice_corners(st.mask, st.affine)
        summ = motion_summary(T[ks], corners)
        with_brain = bp[ks] > 0
        per_stack.append(
            {
                "stack": s + 1,
                "name": Path(st.name).name,
                "slices": len(ks),
                "slices_with_brain": int(with_brain.sum()),
                "rejected_slices": int(rejected[ks].sum()),
                "rejected_fraction": float(rejected[ks].sum() / max(1, with_brain.sum())),
                "motion_score": scores[s],
                "ncc": float(np.nanmean(ncc_k[ks])) if np.isfinite(ncc_k[ks]).any() else None,
                **summ,
            }
        )
    fin = np.isfinite(ncc_k)
    inl = b_np & ~rejected[so_np]  # brain pixels of slices that were kept
    metrics = {
        "n_stacks": n_st,
        "reference_stack": ref + 1,
        "reference_reason": why,
        "grid_shape": list(grid.shape),
        "voxel_mm": grid.voxel,
        "slices": int(K),
        "slices_with_brain": int((bp > 0).sum()),
        "rejected_slices": int(rejected.sum()),
        "rejected_fraction": float(rejected.sum() / max(1, (bp > 0).sum())),
        "ncc_observed_simulated": float(np.corrcoef(y_np[inl], fit_np[inl])[0, 1]),
        "ncc_observed_simulated_all": float(np.corrcoef(y_np[b_np], fit_np[b_np])[0, 1]),
        "mean_slice_ncc": float(np.average(ncc_k[fin], weights=bp[fin])) if fin.any() else None,
        "per_stack": per_stack,
        "convergence": convergence,
        "residual_sigma": weights.sigma,
        "brain_volume_ml": float(bmask.sum() * grid.voxel**3 / 1000.0),
        "seconds": seconds,
        "device": str(dev),
        "motion_correction": cfg.motion_correction,
        "acquisition_notes": [n for st in stacks for n in st.notes],
        "slice_thickness_mm": [st.thickness for st in stacks],
    }
    say(
        f"done in {seconds:.1f} s: NCC(observed, simulated) "
        f"{metrics['ncc_observed_simulated']:.4f}, "
        f"{metrics['rejected_slices']} of {metrics['slices_with_brain']} slices rejected"
    )
    return ReconResult(
        volume=volume,
        affine=grid.affine,
        mask=bmask.astype(np.uint8),
        transforms=T,
        pose_centre=grid.origin.copy(),
        slices=rows,
        metrics=metrics,
        log=say.lines,
        reference=ref,
    )
