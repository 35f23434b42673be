"""Parameters of slice-to-volume reconstruction, with their defaults and why.

Defaults follow SVRTK's calibration where the method is the same (Gaussian PSF,
0.8 mm output, EM outlier model) and were tuned on the earlybrain simulator
(preset "full", 28 weeks, 3 stacks) for the rest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class ReconConfig:
    resolution_mm: float = 0.8  # isotropic output voxel size
    outer_iterations: int = 4  # alternations of SVR and SRR
    margin_mm: float = 2.0  # grid beyond the dilated masks
    mask_dilation_mm: float = 6.0  # observed pixels: brain mask dilated in-plane (skull moves too)
    svr_dilation_mm: float = 2.0  # SVR compares pixels this close to the brain
    max_step_mm: float = 8.0  # SVR trust region: one level moves a slice at most this far
    interleave: int = 2  # packets per stack when no slice timing is given
    psf_inplane_fwhm_factor: float = 1.2  # in-plane FWHM = factor x pixel spacing
    psf_step_factor: float = 0.9  # through-plane PSF samples every factor x voxel size
    # SVR: Gaussian smoothing (mm) of each pyramid level, and Gauss-Newton steps per level
    stack_sigmas_mm: tuple[float, ...] = (4.0, 2.0)
    packet_sigmas_mm: tuple[float, ...] = (2.0,)
    chunk_slices: int = 4  # then runs of this many consecutively acquired slices (1 = off)
    # per outer iteration (the last entry repeats); finer levels against an early, still
    # inconsistent volume make poses worse, so each iteration refines one step further
    slice_sigmas_mm: tuple[tuple[float, ...], ...] = ((1.5,), (0.75,), (0.0,))
    svr_steps: int = 10
    svr_psf_step_mm: float = 1.5  # through-plane PSF sampling for SVR (SRR: psf_step_factor)
    leave_one_out: bool = True  # register each stack to a volume made from the others
    loo_cg_steps: int = 4
    min_slice_pixels: int = 40  # slices seeing less brain keep their packet's pose
    # SRR: CG steps per inner solve, inner solves per outer iteration, final polishing steps
    cg_steps: int = 6
    inner_iterations: int = 2
    final_cg_steps: int = 12
    regularisation: float = 0.04  # lambda, relative to the data term's mean curvature
    edge_delta: float = 0.12  # edge-preserving threshold, relative to median brain intensity
    # robust statistics and intensity matching
    robust: bool = True
    slice_scale_range: tuple[float, float] = (0.85, 1.18)  # per-slice scale clamp
    bias_order: int = 2  # polynomial order of each stack's smooth bias field (0 = scale only)
    reject_weight: float = 0.5  # slices with weight below this are reported as rejected
    motion_correction: bool = True  # False: stacks as acquired (baseline)
    seed: int = 0
    threads: int | None = None  # torch CPU threads; None leaves torch's default
    log_level: str = "info"

    @classmethod
    def from_dict(cls, params: dict[str, Any] | None) -> ReconConfig:
        """Build from a (Snakemake) config mapping; unknown keys are an error, not ignored."""
        params = dict(params or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown recon parameter(s) {unknown}; known: {sorted(known)}")
        for key in ("stack_sigmas_mm", "packet_sigmas_mm", "slice_scale_range"):
            if key in params:
                params[key] = tuple(float(v) for v in params[key])
        if "slice_sigmas_mm" in params:
            params["slice_sigmas_mm"] = tuple(
                tuple(float(v) for v in level) for level in params["slice_sigmas_mm"]
            )
        cfg = cls(**params)
        cfg.check()
        return cfg

    def check(self) -> None:
        if not 0.2 <= self.resolution_mm <= 5.0:
            raise ValueError(f"resolution_mm={self.resolution_mm} outside 0.2..5 mm")
        if self.outer_iterations < 0 or self.svr_steps < 0 or self.cg_steps < 1:
            raise ValueError("iteration counts must be non-negative (cg_steps >= 1)")
        if self.interleave < 1:
            raise ValueError("interleave must be >= 1")
        lo, hi = self.slice_scale_range
        if not 0 < lo <= 1 <= hi:
            raise ValueError("slice_scale_range must bracket 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
