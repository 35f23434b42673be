"""Benchmark atlas registration of a 0.8 mm fetal volume in an arbitrary pose.

Usage: python bench/register.py [--ga 28] [--seed 0] [--voxel 0.8] [--threads 2]
                                [--atlas atlases/earlybrain-fetal] [--params JSON]
A simulated brain-only volume (phantom of age GA, seed SEED, rotated by one of the 24
axis-aligned orientations and a random angle, shifted) is written to a temporary
folder and registered with `register_to_atlas` in a child process (so that its peak
memory is its own). Prints one JSON line: seconds (wall, file entry included),
peak_mem_mb, mean Dice of the warped atlas labels against the true labels (12 labels
and 7 tissues), atlas-space NCC, warped-mask Dice, and the template used.
Target: under 2 minutes with 2 threads.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _child(args: dict, queue: multiprocessing.Queue) -> None:
    from earlybrain.register.register import register_to_atlas

    t0 = time.perf_counter()
    qc = register_to_atlas(**args)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({"qc": qc, "seconds": seconds, "peak_mem_mb": peak})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ga", type=float, default=28.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--voxel", type=float, default=0.8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--atlas", default=str(REPO / "atlases" / "earlybrain-fetal"))
    ap.add_argument("--params", default="{}", help="JSON object of RegistrationParams fields")
    args = ap.parse_args()

    from earlybrain.anatomy.labels import to_tissues
    from earlybrain.io.nifti import load_nifti, save_nifti
    from earlybrain.register.metrics import label_dice, mean_dice
    from earlybrain.register.synthetic import posed_subject, random_pose

    rng = np.random.default_rng(args.seed)
    sub = posed_subject(args.ga, 1000 + args.seed, args.voxel, random_pose(rng))
    params = json.loads(args.params) | {"threads": args.threads}
    with tempfile.TemporaryDirectory(prefix="bench-register-") as tmp:
        vol = save_nifti(sub.image, sub.affine, Path(tmp) / "sub_T2w.nii.gz", dtype=np.float32)
        msk = save_nifti(sub.mask, sub.affine, Path(tmp) / "sub_mask.nii.gz", dtype=np.uint8)
        call = {
            "volume_path": str(vol),
            "mask_path": str(msk),
            "age_weeks": args.ga,
            "manifest_path": args.atlas,
            "out_dir": str(Path(tmp) / "out"),
            "prefix": "sub-bench",
            "params": params,
        }
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(call, queue))
        t0 = time.perf_counter()
        proc.start()
        res = queue.get()
        proc.join()
        wall = time.perf_counter() - t0
        dseg_path = next((Path(tmp) / "out").glob("*_desc-atlas_dseg.nii.gz"))
        dseg = np.asarray(load_nifti(dseg_path).dataobj).astype(np.uint8)
    d12 = label_dice(dseg, sub.labels, range(1, 13))
    d7 = label_dice(to_tissues(dseg), to_tissues(sub.labels), range(1, 8))
    qc = res["qc"]
    print(
        json.dumps(
            {
                "bench": "register",
                "ga_weeks": args.ga,
                "voxel_mm": args.voxel,
                "shape": list(sub.image.shape),
                "threads": args.threads,
                "seconds": round(wall, 1),
                "seconds_register": round(res["seconds"], 1),
                "stage_seconds": {k: round(v, 1) for k, v in qc["timings"].items()},
                "peak_mem_mb": round(res["peak_mem_mb"], 0),
                "dice_mean_12": round(mean_dice(d12), 4),
                "dice_mean_7": round(mean_dice(d7), 4),
                "dice_per_tissue": {k: round(v, 3) for k, v in d7.items()},
                "ncc": round(qc["ncc"], 4),
                "mask_dice": round(qc["mask_dice"], 4),
                "template_week": qc["template"]["age_weeks"],
                "init": qc["initialisation"]["chosen"]["name"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
