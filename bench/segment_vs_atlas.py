"""Network segmentation against the atlas-propagation baseline, on the same subjects.

Usage: python bench/segment_vs_atlas.py [--subjects 22:9101,28:9103,34:9105]
                                        [--threads 2] [--weights PATH] [--contrast t2|unseen]
                                        [--ventricles 1.0]
Each held-out simulated subject (age:seed, seeds never used in training) is a brain-masked
0.8 mm volume in a random scanner pose. The registration stage (`register_images`: rigid,
affine, SyN to the age-matched template) gives the baseline: the template's labels pulled
back to the subject. The network segments the registered atlas-space volume and its
labels are pulled back through the same inverse transforms, as the `segment` rule does.
Both are scored against the simulator's labels (Dice per tissue). Prints one JSON line
per subject and a summary line with the means and the network minus baseline difference.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _subjects(text: str) -> list[tuple[float, int]]:
    return [(float(a), int(s)) for a, s in (item.split(":") for item in text.split(","))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--subjects", default="22:9101,28:9103,34:9105", help="age:seed,...")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weights", default=None, help="segmentation weights (default: shipped)")
    ap.add_argument("--atlas", default=str(REPO / "atlases" / "earlybrain-fetal"))
    ap.add_argument("--contrast", choices=["t2", "unseen"], default="t2")
    ap.add_argument("--ventricles", type=float, default=1.0, help="ventricle size factor")
    args = ap.parse_args()

    import torch

    from earlybrain.segment.evaluate import network_vs_atlas
    from earlybrain.segment.inference import load_model

    torch.set_num_threads(args.threads)
    model = load_model(args.weights, device="cpu")
    net_all, atlas_all = [], []
    for age, seed in _subjects(args.subjects):
        d_net, d_atlas = network_vs_atlas(
            age, seed, model, args.atlas, args.threads, args.contrast == "unseen", args.ventricles
        )
        net_all.append(d_net)
        atlas_all.append(d_atlas)
        print(
            json.dumps(
                {
                    "age_weeks": age,
                    "seed": seed,
                    "network": {k: round(v, 3) for k, v in d_net.items()},
                    "atlas_propagation": {k: round(v, 3) for k, v in d_atlas.items()},
                    "network_mean": round(float(np.mean(list(d_net.values()))), 4),
                    "atlas_mean": round(float(np.mean(list(d_atlas.values()))), 4),
                }
            ),
            flush=True,
        )

    def means(rows: list[dict[str, float]]) -> dict[str, float]:
        return {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]}

    net_m, atlas_m = means(net_all), means(atlas_all)
    summary = {
        "contrast": args.contrast,
        "ventricle_factor": args.ventricles,
        "network_mean": round(float(np.mean(list(net_m.values()))), 4),
        "atlas_mean": round(float(np.mean(list(atlas_m.values()))), 4),
        "network_per_tissue": net_m,
        "atlas_per_tissue": atlas_m,
    }
    summary["network_minus_atlas"] = round(summary["network_mean"] - summary["atlas_mean"], 4)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
