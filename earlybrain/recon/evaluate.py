"""Compare a reconstruction with the simulator's ground truth (tests and benchmarks only).

The reconstruction's frame is arbitrary (any global rigid transform of all slice poses
explains the data equally), so both comparisons first find the rigid map G from
reconstruction world to truth world: pose error uses the least-squares G over all
slice corners; image NCC refines G by maximising the NCC itself (Powell on six
parameters), starting from the pose-derived G and from the identity, keeping the better.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage, optimize

from earlybrain.geometry import rigid_matrix
from earlybrain.recon.metrics import ncc, pose_error, slice_corners
from earlybrain.recon.stacks import Stack, make_stack
from earlybrain.simulate.volume_stacks import VolumeSession


def load_truth(truth_dir: str | Path, sub: str = "sub-f01") -> dict:
    d = Path(truth_dir) / sub
    img = nib.load(d / f"{sub}_desc-truth_T2w.nii.gz")
    lab = np.asanyarray(nib.load(d / f"{sub}_desc-truth_dseg.nii.gz").dataobj)
    info = json.loads((d / f"{sub}_truth.json").read_text())
    motion = pd.read_csv(d / f"{sub}_motion.tsv", sep="\t")
    return {
        "image": img.get_fdata(dtype=np.float32),
        "affine": img.affine,
        "brain": (lab >= 1) & (lab <= 12),
        "centre": np.array(info["head_centre_mm"]),
        "motion": motion,
        "dir": d,
        "sub": sub,
    }


def true_maps(truth: dict, run: int) -> np.ndarray:
    """(K,4,4) scanner -> truth world maps M_k^-1 of one run's slices."""
    m = truth["motion"]
    rows = m[m.run == run].sort_values("slice")
    cols = ["rot_x_deg", "rot_y_deg", "rot_z_deg", "trans_x_mm", "trans_y_mm", "trans_z_mm"]
    return np.stack(
        [np.linalg.inv(rigid_matrix(r, truth["centre"])) for r in rows[cols].to_numpy()]
    )


def slice_pose_error(
    T_est: np.ndarray, truth: dict, stack_affines: list[np.ndarray], n_runs: int
) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean corner displacement error (mm) of all slices with brain, after the best global G."""
    T_true, corners = [], []
    for run in range(1, n_runs + 1):
        T_true.append(true_maps(truth, run))
        mask = (
            np.asanyarray(
                nib.load(truth["dir"] / f"{truth['sub']}_run-{run}_desc-brain_mask.nii.gz").dataobj
            )
            > 0
        )
        corners += slice_corners(mask, stack_affines[run - 1])
    return pose_error(T_est, np.concatenate(T_true), corners)


def _sampler(volume: np.ndarray, affine: np.ndarray, order: int):
    coef = ndimage.spline_filter(volume.astype(np.float64), order=order) if order > 1 else volume
    inv = np.linalg.inv(affine)

    def sample(world: np.ndarray) -> np.ndarray:
        v = world @ inv[:3, :3].T + inv[:3, 3]
        return ndimage.map_coordinates(coef, v.T, order=order, prefilter=False, cval=0.0)

    return sample


def ncc_to_truth(
    volume: np.ndarray,
    affine: np.ndarray,
    truth: dict,
    G0: np.ndarray | None = None,
    optimise: bool = True,
) -> tuple[float, np.ndarray]:
    """NCC inside the true brain after rigid alignment; returns (ncc, G recon->truth).

    With `optimise=False`, G0 (or the identity) is used as it is (reconstructions made
    with known poses are already in the truth's frame).
    """
    idx = np.argwhere(truth["brain"]).astype(float)
    world = idx @ truth["affine"][:3, :3].T + truth["affine"][:3, 3]
    target = truth["image"][truth["brain"]].astype(np.float64)
    rng = np.random.default_rng(0)
    sub = rng.choice(len(world), min(60_000, len(world)), replace=False)
    lin = _sampler(volume, affine, 1)
    centre = world.mean(0)

    def g_of(p: np.ndarray, base: np.ndarray) -> np.ndarray:
        return rigid_matrix(p, centre) @ base

    def cost(p: np.ndarray, base: np.ndarray) -> float:
        Ginv = np.linalg.inv(g_of(p, base))
        vals = lin(world[sub] @ Ginv[:3, :3].T + Ginv[:3, 3])
        value = ncc(vals, target[sub])
        return -value if np.isfinite(value) else 1.0  # the volume is empty there: worst

    starts = [np.eye(4)]
    if G0 is not None and not np.allclose(G0, np.eye(4)):
        starts.append(G0)
    best = None
    if not optimise:
        starts = []
        best = (0.0, np.eye(4) if G0 is None else G0)
    for base in starts:
        res = optimize.minimize(
            cost,
            np.zeros(6),
            args=(base,),
            method="Powell",
            options={"xtol": 1e-3, "ftol": 1e-6, "maxfev": 1500},
        )
        if best is None or res.fun < best[0]:
            best = (res.fun, g_of(res.x, base))
    G = best[1]
    cub = _sampler(volume, affine, 3)
    Ginv = np.linalg.inv(G)
    vals = cub(world @ Ginv[:3, :3].T + Ginv[:3, 3])
    return ncc(vals, target), G


def session_stacks(session: VolumeSession) -> list[Stack]:
    """Recon stacks of a simulated session, with the true masks, SliceTiming and
    SliceThickness, as a BIDS sidecar would give them."""
    return [
        make_stack(
            f"run-{i + 1}",
            st.data,
            st.affine,
            st.mask,
            slice_timing=st.slice_times,
            slice_thickness=session.thickness_mm,
        )
        for i, st in enumerate(session.stacks)
    ]


def _true_maps_and_corners(session: VolumeSession) -> tuple[np.ndarray, list]:
    """(K,4,4) true scanner -> truth maps of every slice, and its brain-box corners."""
    T_true = np.concatenate([st.true_maps for st in session.stacks])
    corners = [c for st in session.stacks for c in slice_corners(st.mask, st.affine)]
    return T_true, corners


def oracle_maps(session: VolumeSession) -> tuple[np.ndarray, np.ndarray]:
    """The true slice maps, expressed near the scanner frame: (T (K,4,4), G recon->truth).

    The reconstruction grid covers the stacks' masks where they were acquired, so the
    true maps (into the truth's world) are composed with the inverse of their mean G:
    the best rigid map from the slices as acquired (identity poses) to the truth."""
    T_true, corners = _true_maps_and_corners(session)
    _, _, G = pose_error(np.tile(np.eye(4), (len(T_true), 1, 1)), T_true, corners)
    return np.linalg.inv(G)[None] @ T_true, G


def score_against_truth(
    T_est: np.ndarray, volume: np.ndarray, affine: np.ndarray, session: VolumeSession
) -> dict[str, float]:
    """NCC with the true volume (after the best rigid alignment) and slice pose errors
    (brain-box corners, after the best global rigid transform)."""
    _, per, G = pose_error(T_est, *_true_maps_and_corners(session))
    value, _ = ncc_to_truth(volume, affine, session.truth, G)
    fin = per[np.isfinite(per)]
    return {
        "ncc": value,
        "pose_error_median_mm": float(np.median(fin)),
        "pose_error_p90_mm": float(np.percentile(fin, 90)),
    }
