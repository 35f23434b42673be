"""Benchmark tissue segmentation of a 0.8 mm fetal volume on the CPU (or CUDA).

Usage: python bench/segment.py [--ga 36] [--seed 9201] [--voxel 0.8] [--threads 2]
                               [--device cpu] [--tta] [--weights PATH] [--contrast t2|unseen]
       python bench/segment.py --real [--threads 2] [--device cpu] [--weights PATH]
A held-out simulated brain (seed never used in training) is segmented by
`segment_array` (resampling to the network grid, sliding-window inference, hemisphere
split, clean-up) in a child process, so its peak memory is its own. Prints one JSON line:
seconds of the network pass and of the whole segmentation, peak_mem_mb, voxels, Dice per
tissue against the simulator's labels, and the relative error of the total brain volume.
Target (issue #6): under 2 minutes on 2 CPU cores for a 0.8 mm volume.

`--real` measures real images instead (issue #25; ../shared/data): per-tissue Dice on
the held-out weeks of fidon-sb-atlas (real T2w templates against their parcellations),
seconds per subject and peak memory (target: under 30 s per subject on 2 cores); then
the workflow on mial-sub01 with its hand-drawn masks (reconstruction, registration,
segmentation, brain age) and the tissue volumes and brain age it reports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import resource
import sys
import time

import numpy as np


def _child(args: dict, queue: multiprocessing.Queue) -> None:
    import torch

    from earlybrain.segment.evaluate import simulated_volume
    from earlybrain.segment.inference import load_model
    from earlybrain.segment.metrics import tissue_dice
    from earlybrain.segment.pipeline import segment_array
    from earlybrain.segment.volumes import volume_rows

    torch.set_num_threads(args["threads"])
    vol = simulated_volume(args["ga"], args["seed"], args["voxel"], args["unseen"])
    model = load_model(args["weights"], device=args["device"])
    if model.device.type == "cuda":  # warm-up: CUDA context and kernels
        segment_array(vol.image, vol.affine, vol.image > 0, model, 0.0, False)
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    labels = segment_array(vol.image, vol.affine, vol.image > 0, model, 0.0, args["tta"])
    seconds = time.perf_counter() - t0
    rows = {r["structure"]: r for r in volume_rows(labels, vol.affine)}
    true_tbv = vol.phantom.brain_volume_ml()
    queue.put(
        {
            "seconds": seconds,
            "peak_mem_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "shape": list(vol.image.shape),
            "device": str(model.device),
            "dice": tissue_dice(labels, vol.labels),
            "tbv_rel_error": (float(rows["total_brain"]["total_ml"]) - true_tbv) / true_tbv,
        }
    )


def _real_child(args: dict, queue: multiprocessing.Queue) -> None:
    import torch

    from earlybrain.segment.evaluate import fidon_volumes
    from earlybrain.segment.inference import load_model
    from earlybrain.segment.metrics import tissue_dice
    from earlybrain.segment.pipeline import segment_array

    torch.set_num_threads(args["threads"])
    model = load_model(args["weights"], device=args["device"])
    rows, seconds = {}, []
    for vol in fidon_volumes("val"):
        t0 = time.perf_counter()
        labels = segment_array(vol.image, vol.affine, vol.image > 0, model, 0.0, args["tta"])
        seconds.append(time.perf_counter() - t0)
        rows[vol.name] = tissue_dice(labels, vol.labels)
    queue.put(
        {
            "seconds_per_subject": float(np.mean(seconds)),
            "peak_mem_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "device": str(model.device),
            "dice": rows,
        }
    )


def _mial_volumes(weights: str | None) -> dict:
    """The workflow on mial-sub01 with its manual masks, up to volumes and brain age."""
    import csv
    import tempfile
    from pathlib import Path

    from earlybrain import shared_data
    from earlybrain.runner import run_workflow

    with tempfile.TemporaryDirectory(prefix="earlybrain-bench-mial-") as tmp:
        bids = shared_data.mial_bids_copy(Path(tmp) / "bids")
        anat = Path(tmp) / "out" / "earlybrain" / "sub-01" / "anat"
        targets = [str(anat / f"sub-01_rec-svr_desc-{d}") for d in ("volumes.tsv", "brainage.json")]
        overrides = {
            "masks_dir": str(shared_data.mial_manual_masks(shared_data.require(shared_data.MIAL)))
        }
        if weights:
            overrides["segmentation"] = {"weights": weights}
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # stdout keeps the one JSON line
            rc = run_workflow(bids, Path(tmp) / "out", cores=2, extra=targets, overrides=overrides)
        if rc != 0:
            return {"rc": rc}
        with open(targets[0]) as f:
            volumes = {
                r["structure"]: float(r["total_ml"]) for r in csv.DictReader(f, delimiter="\t")
            }
        age = json.loads(Path(targets[1]).read_text())
        return {
            "workflow_seconds": round(time.perf_counter() - t0, 1),
            "volumes_ml": {k: round(v, 2) for k, v in volumes.items()},
            "brain_age_weeks": age["predicted_age_weeks"],
            "brain_age_sd_weeks": age["gap_sd_weeks"],
            "flags": age["flags"],
        }


def _run_child(target, call: dict) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(call, queue))
    proc.start()
    res = queue.get()
    proc.join()
    return res


def _main_real(a: argparse.Namespace) -> int:
    call = {"threads": a.threads, "device": a.device, "tta": a.tta, "weights": a.weights}
    res = _run_child(_real_child, call)
    dice = res.pop("dice")
    tissues = list(next(iter(dice.values())))
    per_tissue = {t: round(float(np.mean([d[t] for d in dice.values()])), 3) for t in tissues}
    print(
        json.dumps(
            {
                "bench": "segment-real",
                "data": "fidon-sb-atlas held-out weeks (real T2w), mial-sub01 (real stacks)",
                "threads": a.threads,
                "tta": a.tta,
                **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in res.items()},
                "target_seconds": 30,
                "ratio_to_target": round(res["seconds_per_subject"] / 30.0, 3),
                "dice_mean": round(float(np.mean(list(per_tissue.values()))), 4),
                "dice_per_tissue": per_tissue,
                "dice_per_time_point": {
                    k: round(float(np.mean(list(d.values()))), 3) for k, d in dice.items()
                },
                "mial_sub01": _mial_volumes(a.weights),
            }
        )
    )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ga", type=float, default=36.0)
    ap.add_argument("--seed", type=int, default=9201)
    ap.add_argument("--voxel", type=float, default=0.8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--tta", action="store_true")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--contrast", default="t2", choices=["t2", "unseen"])
    ap.add_argument("--real", action="store_true", help="real images (../shared/data)")
    a = ap.parse_args()
    if a.real:
        return _main_real(a)
    call = {
        "ga": a.ga, "seed": a.seed, "voxel": a.voxel, "threads": a.threads, "device": a.device,
        "tta": a.tta, "weights": a.weights, "unseen": a.contrast == "unseen",
    }  # fmt: skip
    res = _run_child(_child, call)
    dice = res.pop("dice")
    print(
        json.dumps(
            {
                "bench": "segment",
                "ga_weeks": a.ga,
                "voxel_mm": a.voxel,
                "threads": a.threads,
                "tta": a.tta,
                "contrast": a.contrast,
                **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in res.items()},
                "target_seconds": 120,
                "ratio_to_target": round(res["seconds"] / 120.0, 3),
                "dice_mean": round(float(np.mean(list(dice.values()))), 4),
                "dice_per_tissue": {k: round(v, 3) for k, v in dice.items()},
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
