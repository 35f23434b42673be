"""Benchmark SVR + SRR on a simulated fetus against its ground truth.

Usage: python bench/recon.py [--motion moderate] [--stacks 3] [--ga 28] [--preset full]
                             [--seed 0] [--device auto] [--dropout 0.0] [--data DIR]
       python bench/recon.py --anatomy fidon [--motion moderate] [--timepoints 23 29 33]

With `--anatomy fidon` the true volumes are real anatomies (the CC0 Fidon atlas's T2w
templates in ../shared/data/fidon-sb-atlas: real folding and real contrast), acquired
by `earlybrain.simulate.volume_stacks` (box slice profile, motion bounded at +-10 mm /
+-10 deg for moderate, +-20 / +-20 for severe). One JSON line per time point: NCC with
the truth of the motion-corrected reconstruction, of the oracle (the same
reconstruction given the true slice poses) and without motion correction; slice pose
error (median, 90th percentile, mm); rejected slices; seconds; peak memory.

With the phantom anatomy (default) it prints one JSON line: ncc_brain (reconstruction vs
truth inside the brain after rigid alignment), ncc_brain_nomc (same pipeline without
motion correction), pose_error_mm
(mean displacement error of the brain-box corners of every slice after the best global
rigid transform), rejected_fraction, seconds and peak_mem_mb of the motion-corrected
reconstruction, and the device.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from earlybrain.recon import ReconConfig, reconstruct
from earlybrain.recon.evaluate import load_truth, ncc_to_truth, slice_pose_error
from earlybrain.recon.stacks import make_stack
from earlybrain.simulate.cohort import PRESETS, CohortSpec, simulate_cohort


def load_case(bids: Path, truth: Path, n: int, sub: str = "sub-f01"):
    stacks = []
    for run in range(1, n + 1):
        img = nib.load(bids / sub / "anat" / f"{sub}_run-{run}_T2w.nii.gz")
        msk = nib.load(truth / sub / f"{sub}_run-{run}_desc-brain_mask.nii.gz")
        side = json.loads((bids / sub / "anat" / f"{sub}_run-{run}_T2w.json").read_text())
        stacks.append(
            make_stack(
                f"{sub}_run-{run}_T2w.nii.gz",
                np.asanyarray(img.dataobj),
                img.affine,
                np.asanyarray(msk.dataobj),
                msk.affine,
                slice_timing=side.get("SliceTiming"),
            )
        )
    return stacks


def simulate(out: Path, args: argparse.Namespace) -> None:
    if args.dropout > 0:
        p = PRESETS[args.preset]
        proto = dataclasses.replace(p.protocol, dropout_fraction=args.dropout)
        PRESETS[args.preset] = dataclasses.replace(p, protocol=proto)
    spec = CohortSpec(
        n_fetal=1,
        n_infant=0,
        seed=args.seed,
        motion=args.motion,
        n_stacks=args.stacks,
        preset=args.preset,
        fetal_ages=(args.ga,),
    )
    simulate_cohort(out, spec)


def bench_fidon(args: argparse.Namespace) -> int:
    """Real-anatomy bench (see the module docstring)."""
    from earlybrain.recon.evaluate import oracle_maps, score_against_truth, session_stacks
    from earlybrain.shared_data import fidon_anatomy, require
    from earlybrain.simulate.volume_stacks import simulate_volume_stacks

    root = require("fidon-sb-atlas")
    params = json.loads(args.params)
    for week in args.timepoints:
        name, image, affine, brain = fidon_anatomy(root, week)
        session = simulate_volume_stacks(
            image, affine, brain, args.stacks, args.motion, args.seed + week
        )
        stacks = session_stacks(session)
        cfg = ReconConfig.from_dict(params)
        mem0 = peak_mem_mb()
        t0 = time.perf_counter()
        res = reconstruct(stacks, cfg, device=args.device)
        seconds = time.perf_counter() - t0
        mem = peak_mem_mb()
        for line in res.log:
            print(line, file=sys.stderr)
        mc = score_against_truth(res.transforms, res.volume, res.affine, session)
        T_oracle, G = oracle_maps(session)
        nomc_cfg = ReconConfig.from_dict({**params, "motion_correction": False})
        oracle = reconstruct(stacks, nomc_cfg, args.device, transforms=T_oracle)
        ncc_oracle, _ = ncc_to_truth(oracle.volume, oracle.affine, session.truth, G, False)
        base = reconstruct(stacks, nomc_cfg, args.device)
        nomc = score_against_truth(base.transforms, base.volume, base.affine, session)
        per_stack_rejected = [s["rejected_slices"] for s in res.metrics["per_stack"]]
        print(
            json.dumps(
                {
                    "bench": "recon",
                    "anatomy": name,
                    "motion": args.motion,
                    "stacks": args.stacks,
                    "seed": args.seed + week,
                    "ncc": round(mc["ncc"], 4),
                    "ncc_oracle": round(ncc_oracle, 4),
                    "ncc_nomc": round(nomc["ncc"], 4),
                    "pose_error_median_mm": round(mc["pose_error_median_mm"], 3),
                    "pose_error_p90_mm": round(mc["pose_error_p90_mm"], 3),
                    "rejected_slices": per_stack_rejected,
                    "slices_with_brain": res.metrics["slices_with_brain"],
                    "seconds": round(seconds, 1),
                    "peak_mem_mb": round(max(mem, mem0), 1),
                    "device": res.metrics["device"],
                    "threads": torch.get_num_threads(),
                }
            ),
            flush=True,
        )
    return 0


def peak_mem_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--motion", default="moderate", choices=["none", "moderate", "severe"])
    ap.add_argument("--stacks", type=int, default=3)
    ap.add_argument("--ga", type=float, default=28.0)
    ap.add_argument("--preset", default="full", choices=sorted(PRESETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dropout", type=float, default=0.0, help="fraction of drop-out slices")
    ap.add_argument("--data", type=Path, default=None, help="reuse/keep the simulation here")
    ap.add_argument("--params", default="{}", help="JSON recon parameters")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--anatomy", default="phantom", choices=["phantom", "fidon"])
    ap.add_argument("--timepoints", type=int, nargs="+", default=[23, 29, 33], help="Fidon weeks")
    args = ap.parse_args()
    if args.anatomy == "fidon":
        return bench_fidon(args)

    torch.manual_seed(args.seed)
    tmp = None
    out = args.data
    if out is None:
        tmp = tempfile.TemporaryDirectory()
        out = Path(tmp.name)
    bids, truth_dir = out / "bids", out / "groundtruth"
    if not (truth_dir / "sub-f01").exists():
        # in a child process, so peak_mem_mb measures the reconstruction, not the simulator
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(target=simulate, args=(out, args))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError("simulation failed")
    stacks = load_case(bids, truth_dir, args.stacks)
    truth = load_truth(truth_dir)
    params = json.loads(args.params)

    mem0 = peak_mem_mb()
    t0 = time.perf_counter()
    res = reconstruct(stacks, ReconConfig.from_dict(params), device=args.device)
    seconds = time.perf_counter() - t0
    mem = peak_mem_mb()
    for line in res.log:
        print(line, file=sys.stderr)
    affines = [s.affine for s in stacks]
    perr, per_slice, G = slice_pose_error(res.transforms, truth, affines, args.stacks)
    inl = np.array([not r["rejected"] for r in res.slices])
    fin = np.isfinite(per_slice)
    ncc_mc, _ = ncc_to_truth(res.volume, res.affine, truth, G)
    result = {
        "bench": "recon",
        "preset": args.preset,
        "ga": args.ga,
        "motion": args.motion,
        "stacks": args.stacks,
        "seed": args.seed,
        "dropout": args.dropout,
        "ncc_brain": round(ncc_mc, 4),
    }
    if not args.no_baseline:
        base = reconstruct(
            stacks, ReconConfig.from_dict({**params, "motion_correction": False}), args.device
        )
        Tb = base.transforms
        _, _, Gb = slice_pose_error(Tb, truth, affines, args.stacks)
        ncc_nomc, _ = ncc_to_truth(base.volume, base.affine, truth, Gb)
        result["ncc_brain_nomc"] = round(ncc_nomc, 4)
    result |= {
        "pose_error_mm": round(perr, 3),
        "pose_error_median_mm": round(float(np.nanmedian(per_slice)), 3),
        "pose_error_inliers_mm": round(float(np.nanmean(per_slice[fin & inl])), 3),
        "rejected_fraction": round(res.metrics["rejected_fraction"], 4),
        "ncc_observed_simulated": round(res.metrics["ncc_observed_simulated"], 4),
        "seconds": round(seconds, 1),
        "peak_mem_mb": round(max(mem, mem0), 1),
        "device": res.metrics["device"],
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
