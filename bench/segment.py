"""Benchmark tissue segmentation of a 0.8 mm fetal volume on the CPU (or CUDA).

Usage: python bench/segment.py [--ga 36] [--seed 9201] [--voxel 0.8] [--threads 2]
                               [--device cpu] [--tta] [--weights PATH] [--contrast t2|unseen]
A held-out simulated brain (seed never used in training) is segmented by
`segment_array` (resampling to the network grid, sliding-window inference, hemisphere
split, clean-up) in a child process, so its peak memory is its own. Prints one JSON line:
seconds of the network pass and of the whole segmentation, peak_mem_mb, voxels, Dice per
tissue against the simulator's labels, and the relative error of the total brain volume.
Target (issue #6): under 2 minutes on 2 CPU cores for a 0.8 mm volume.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import time

import numpy as np


def _child(args: dict, queue: multiprocessing.Queue) -> None:
    import torch

    from earlybrain.segment.evaluate import simulated_volume, tissue_dice
    from earlybrain.segment.inference import load_model
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
    a = ap.parse_args()
    call = {
        "ga": a.ga, "seed": a.seed, "voxel": a.voxel, "threads": a.threads, "device": a.device,
        "tta": a.tta, "weights": a.weights, "unseen": a.contrast == "unseen",
    }  # fmt: skip
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(call, queue))
    proc.start()
    res = queue.get()
    proc.join()
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
