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
import tempfile
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

    from earlybrain.atlas.manifest import load_manifest, select_template
    from earlybrain.atlas.templates import load_template
    from earlybrain.register.register import RegistrationParams, register_images
    from earlybrain.register.synthetic import posed_subject, random_pose
    from earlybrain.segment.evaluate import UNSEEN_CONTRAST, tissue_dice
    from earlybrain.segment.inference import load_model
    from earlybrain.segment.pipeline import segment_array, to_subject_space

    torch.set_num_threads(args.threads)
    manifest = load_manifest(Path(args.atlas) / "manifest.json")
    model = load_model(args.weights, device="cpu")
    params = RegistrationParams(threads=args.threads)
    net_all, atlas_all = [], []
    for age, seed in _subjects(args.subjects):
        sub = posed_subject(
            age, seed, 0.8, random_pose(np.random.default_rng(seed)),
            values=UNSEEN_CONTRAST if args.contrast == "unseen" else None,
            ventricle_factor=args.ventricles,
        )  # fmt: skip
        choice = select_template(manifest, age, "T2w", params.max_age_distance_weeks)
        template = load_template(manifest, choice.template, "T2w")
        with tempfile.TemporaryDirectory(prefix="bench-seg-atlas-") as tmp:
            reg = register_images(template, sub.image, sub.affine, sub.mask, tmp, params)
            atlas_labels = segment_array(
                reg.atlas_image, reg.atlas_affine, reg.atlas_mask, model,
                manifest.midsagittal_plane_x_mm,
            )  # fmt: skip
            net = to_subject_space(
                atlas_labels, reg.atlas_affine, sub.image.shape, sub.affine,
                list(reg.invtransforms), [True, False],
            )  # fmt: skip
        d_net = tissue_dice(net, sub.labels)
        d_atlas = tissue_dice(reg.subject_dseg, sub.labels)
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
