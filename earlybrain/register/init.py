"""Robust initial alignment of a brain in any pose to an atlas template.

Why: a fetal head can lie in any orientation in the scanner, and reconstructions keep
that pose. Gradient-based registration only converges from within some tens of
degrees, so the start must already be right. We match centres of mass and principal
axes of the brain masks, which leaves the axis order and signs ambiguous, and resolve
the ambiguity by trying every proper rotation of the cube (24) on top of the principal
axes, plus the 24 axis-aligned rotations of the image axes themselves (for nearly
spherical brains whose principal axes are unstable). Each candidate is scored by the
correlation of the smoothed images on a coarse grid (cheap), and the best few are
refined by a quick low-resolution rigid ANTs registration and scored again. Every
score and the winner are returned for the log.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from earlybrain.geometry import apply
from earlybrain.io.nifti import voxel_sizes
from earlybrain.register import antsio
from earlybrain.register.metrics import ncc


def check_seed(seed: int) -> None:
    """ANTs seeds its sampler only with a positive seed; 0 means a new random start each run."""
    if int(seed) < 1:
        raise ValueError(f"random_seed must be >= 1 (ANTs treats {seed} as unseeded)")


@dataclass(frozen=True)
class InitParams:
    step_mm: float = 3.0  # spacing of the scoring grid
    smooth_mm: float = 2.0  # Gaussian sigma applied to both images before scoring
    use_scale: bool = True  # isotropic scale from the ratio of mask volumes
    refine_top: int = 3  # at most this many candidates are refined by a quick rigid registration,
    refine_margin: float = 0.1  # those whose coarse NCC is within this of the best
    refine_voxel_mm: float = 2.0  # resolution of the refinement images
    refine_iterations: tuple[int, ...] = (100, 50)  # per level (shrink 2, 1 of the above)
    metric: str = "GC"  # of the refinement; deterministic with several ITK threads
    # a vote (register.orientation) overrides NCC's choice only when its winner is at
    # least this much more confident: on a blurry 1.6 mm simulated reconstruction the
    # network's confidence spread 0.001 over three starts (no information), on the real
    # Fidon images the right start led by 0.03-0.08
    vote_margin: float = 0.005
    random_seed: int = 1  # ANTs treats 0 as "unseeded" (a different result every run)

    def __post_init__(self) -> None:
        check_seed(self.random_seed)


@dataclass(frozen=True)
class Moments:
    """Centre (RAS mm), principal axes (columns, largest spread first, det +1), spread."""

    centre: np.ndarray
    axes: np.ndarray
    sd_mm: np.ndarray
    volume_ml: float


@dataclass
class Candidate:
    name: str
    matrix: np.ndarray  # 4x4 RAS point map: fixed (atlas) point -> moving (subject) point
    score: float
    refined_matrix: np.ndarray | None = None  # after the quick rigid refinement
    refined_score: float | None = None
    vote: float | None = None  # network confidence (register.orientation), when voted on

    @property
    def best_matrix(self) -> np.ndarray:
        return self.matrix if self.refined_matrix is None else self.refined_matrix

    def summary(self) -> dict[str, Any]:
        """Name, rotation (axis-angle, atlas->subject) and scores, for the log."""
        lin = self.best_matrix[:3, :3]
        scale = float(np.cbrt(abs(np.linalg.det(lin))))
        rotvec = Rotation.from_matrix(lin / scale).as_rotvec(degrees=True)
        angle = float(np.linalg.norm(rotvec))
        axis = rotvec / angle if angle > 0 else np.array([0.0, 0.0, 1.0])
        out: dict[str, Any] = {
            "name": self.name,
            "rotation_angle_deg": round(angle, 1),
            "rotation_axis": [round(float(a), 3) for a in axis],
            "scale": round(scale, 4),
            "ncc": round(self.score, 4),
        }
        if self.refined_score is not None:
            out["ncc_refined"] = round(self.refined_score, 4)
        if self.vote is not None:
            out["network_confidence"] = round(self.vote, 4)
        return out


@dataclass
class InitResult:
    matrix: np.ndarray  # chosen fixed -> moving point map (RAS)
    chosen: Candidate
    candidates: list[Candidate] = field(default_factory=list)
    fixed_moments: Moments | None = None
    moving_moments: Moments | None = None
    voted: bool = False  # a network voted on the refined starts (register.orientation)
    vote_s: float = 0.0  # seconds the vote took

    def log(self, top: int = 8) -> dict[str, Any]:
        """What was tried and what won (JSON-ready)."""
        ranked = sorted(self.candidates, key=lambda c: -c.score)[:top]
        refined = [c for c in self.candidates if c.refined_score is not None]
        ranking = "NCC among the refined"
        if self.voted:
            ranking += ", unless the segmentation network is clearly surer of another"
        return {
            "method": "centre of mass + principal axes; 24 cube rotations on principal axes "
            f"and on image axes; coarse NCC ranking; rigid refinement of the best; {ranking}",
            "n_candidates": len(self.candidates),
            "chosen": self.chosen.summary(),
            "best_by_coarse_ncc": [c.summary() for c in ranked],
            "refined": [c.summary() for c in refined],
        }


def mask_moments(mask: np.ndarray, affine: np.ndarray) -> Moments:
    """Moments of a binary mask in world millimetres."""
    idx = np.argwhere(np.asarray(mask, dtype=bool))
    if idx.shape[0] < 10:
        raise ValueError("mask has fewer than 10 voxels: cannot compute its orientation")
    pts = apply(np.asarray(affine, dtype=np.float64), idx.astype(np.float64))
    centre = pts.mean(axis=0)
    cov = np.cov((pts - centre).T)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order]
    if np.linalg.det(evecs) < 0:
        evecs[:, 2] *= -1
    voxel_ml = abs(np.linalg.det(np.asarray(affine)[:3, :3])) / 1000.0
    return Moments(centre, evecs, np.sqrt(np.maximum(evals, 0)), float(idx.shape[0] * voxel_ml))


def cube_rotations() -> list[np.ndarray]:
    """The 24 proper rotations that map coordinate axes onto coordinate axes."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            G = np.zeros((3, 3))
            for row, (col, s) in enumerate(zip(perm, signs, strict=True)):
                G[row, col] = s
            if np.linalg.det(G) > 0:
                out.append(G)
    return out


def candidate_transforms(fixed: Moments, moving: Moments, use_scale: bool) -> list[Candidate]:
    """Fixed->moving maps that match centres and map axes onto axes (duplicates dropped)."""
    s = float(np.cbrt(moving.volume_ml / fixed.volume_ml)) if use_scale else 1.0
    families = {"pca": (fixed.axes, moving.axes), "image": (np.eye(3), np.eye(3))}
    out: list[Candidate] = []
    for family, (Ef, Em) in families.items():
        for k, G in enumerate(cube_rotations()):
            R = Ef @ G @ Em.T  # moving direction -> fixed direction
            if any(np.allclose(R.T * s, c.matrix[:3, :3], atol=1e-6) for c in out):
                continue
            M = np.eye(4)
            M[:3, :3] = s * R.T
            M[:3, 3] = moving.centre - s * R.T @ fixed.centre
            out.append(Candidate(f"{family}-{k:02d}", M, float("nan")))
    return out


class CoarseScorer:
    """NCC of smoothed images on a coarse grid of fixed-space points inside the fixed mask."""

    def __init__(
        self,
        fixed: np.ndarray,
        fixed_affine: np.ndarray,
        fixed_mask: np.ndarray,
        moving: np.ndarray,
        moving_affine: np.ndarray,
        params: InitParams,
    ) -> None:
        f_vox = voxel_sizes(fixed_affine)
        m_vox = voxel_sizes(moving_affine)
        f_s = ndimage.gaussian_filter(fixed.astype(np.float32), params.smooth_mm / f_vox)
        self.moving = ndimage.gaussian_filter(moving.astype(np.float32), params.smooth_mm / m_vox)
        self.moving_inv = np.linalg.inv(moving_affine)
        # fixed-space points: a regular grid over the mask, kept where the mask is
        stride = max(1, round(params.step_mm / float(np.min(f_vox))))
        grid_mask = np.zeros(fixed_mask.shape, dtype=bool)
        grid_mask[::stride, ::stride, ::stride] = True
        sel = grid_mask & ndimage.binary_dilation(fixed_mask > 0, iterations=stride)
        idx = np.argwhere(sel).astype(np.float64)
        self.points = apply(fixed_affine, idx)
        self.fixed_values = f_s[sel].astype(np.float64)

    def __call__(self, M: np.ndarray) -> float:
        vox = apply(self.moving_inv @ M, self.points).T
        vals = ndimage.map_coordinates(self.moving, vox, order=1, mode="constant", cval=0.0)
        return ncc(self.fixed_values, vals)


def _refine(
    M: np.ndarray, fixed_lr: Any, moving_lr: Any, params: InitParams, workdir: Path, tag: str
) -> np.ndarray:
    """Quick rigid ANTs registration at low resolution starting from M; returns the map."""
    ants = antsio.ants_module()
    start = antsio.write_matrix_transform(M, workdir / f"{tag}_start.mat")
    levels = len(params.refine_iterations)
    reg = ants.registration(
        fixed_lr,
        moving_lr,
        type_of_transform="Rigid",
        initial_transform=[str(start)],
        aff_metric=params.metric,
        aff_iterations=tuple(params.refine_iterations),
        aff_shrink_factors=tuple(2**k for k in reversed(range(levels))),
        aff_smoothing_sigmas=tuple(reversed(range(levels))),
        random_seed=params.random_seed,
        outprefix=str(workdir / f"{tag}_"),
    )
    return antsio.read_matrix_transform(reg["fwdtransforms"][0])


def initialise(
    fixed: np.ndarray,
    fixed_affine: np.ndarray,
    fixed_mask: np.ndarray,
    moving: np.ndarray,
    moving_affine: np.ndarray,
    moving_mask: np.ndarray,
    params: InitParams = InitParams(),
    vote: Callable[[np.ndarray], float] | None = None,
) -> InitResult:
    """Choose the starting fixed->moving transform for a brain in an unknown pose.

    Images should be brain-only (masked) and on comparable intensity scales. With a
    `vote` (register.orientation), its most confident refined start replaces NCC's
    choice when it leads that one by params.vote_margin.
    """
    fm = mask_moments(fixed_mask, fixed_affine)
    mm = mask_moments(moving_mask, moving_affine)
    cands = candidate_transforms(fm, mm, params.use_scale)
    scorer = CoarseScorer(fixed, fixed_affine, fixed_mask, moving, moving_affine, params)
    for c in cands:
        c.score = scorer(c.matrix)
    ranked = sorted(cands, key=lambda c: -np.nan_to_num(c.score, nan=-2.0))
    best = ranked[0]
    top = np.nan_to_num(best.score, nan=-2.0)
    contenders = [c for c in ranked[: params.refine_top] if c.score >= top - params.refine_margin]
    if contenders:
        ants = antsio.ants_module()
        res = (params.refine_voxel_mm,) * 3
        fixed_lr = ants.resample_image(antsio.to_ants(fixed, fixed_affine), res, False, 0)
        moving_lr = ants.resample_image(antsio.to_ants(moving, moving_affine), res, False, 0)
        with tempfile.TemporaryDirectory(prefix="earlybrain-init-") as tmp:
            for c in contenders:
                try:
                    c.refined_matrix = _refine(
                        c.matrix, fixed_lr, moving_lr, params, Path(tmp), c.name
                    )
                except RuntimeError:  # ANTs gave up from this start: keep it unrefined
                    continue
                c.refined_score = scorer(c.refined_matrix)
        refined = [c for c in contenders if c.refined_score is not None]
        if refined:
            best = max(refined, key=lambda c: np.nan_to_num(c.refined_score, nan=-2.0))
        if vote is not None and len(refined) > 1:
            t = time.perf_counter()
            for c in refined:
                c.vote = vote(c.best_matrix)
            surest = max(refined, key=lambda c: np.nan_to_num(c.vote, nan=-1.0))
            if np.nan_to_num(surest.vote - best.vote, nan=0.0) >= params.vote_margin:
                best = surest
            seconds = time.perf_counter() - t
            return InitResult(best.best_matrix, best, cands, fm, mm, voted=True, vote_s=seconds)
    return InitResult(best.best_matrix, best, cands, fm, mm)
