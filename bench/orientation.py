"""How often the registration starts from the right orientation: NCC against the network's vote.

Usage: python bench/orientation.py [--poses 4] [--seed 0] [--sim-ages 22 26 30 34]
                                   [--no-fidon]
Brains in random scanner poses (one of the 24 axis-aligned orientations, then a random
rotation; `register.synthetic.random_pose`) go through the registration's
initialisation against the age-matched template of the shipped fetal atlas, with the
segmentation network's vote (register.orientation). From the same refined starts, the
one NCC would choose and the one the vote chooses are compared with the true pose:
a start is right when its rotation is within 30 degrees of the truth.
Brains:
- `fidon`: the real T2w images of ../shared/data/fidon-sb-atlas (Fidon et al. 2021,
  spina bifida, 21-34 weeks; brain masks given), posed by changing their affine only.
  The network's training saw the label maps of weeks 21-31 (never these images); weeks
  32-34 are held out (`val`). The atlas images are taken as lying in atlas orientation:
  the unposed ones are checked first and printed.
- `sim`: simulator phantoms (`register.synthetic.posed_subject`), a development aid.
Prints one JSON line per brain and pose, then a summary per set: the share of right
starts with NCC and with the vote, and the seconds the vote adds per registration.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--poses", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sim-ages", type=float, nargs="*", default=[22.0, 26.0, 30.0, 34.0])
    ap.add_argument("--no-fidon", action="store_true")
    args = ap.parse_args()

    from earlybrain import shared_data
    from earlybrain.atlas.manifest import load_manifest, select_template
    from earlybrain.atlas.templates import load_template
    from earlybrain.register.register import RegistrationParams, find_start
    from earlybrain.register.stages import _angle_deg
    from earlybrain.register.synthetic import posed_subject, random_pose
    from earlybrain.segment.inference import load_model

    manifest = load_manifest(REPO / "atlases" / "earlybrain-fetal")
    p = RegistrationParams()
    model = load_model(None, "cpu")

    def choose(image, affine, mask, age, pose):  # -> dict
        tpl = load_template(manifest, select_template(manifest, age, "T2w", 10.0).template)
        voted = find_start(tpl, image, affine, mask, p, model).init
        refined = [c for c in voted.candidates if c.refined_score is not None]
        # NCC's choice among the same refined starts (what initialise does without a vote)
        by_ncc = max(refined, key=lambda c: c.refined_score) if refined else voted.chosen
        return {
            "ncc_error_deg": round(_angle_deg(by_ncc.best_matrix, pose), 1),
            "vote_error_deg": round(_angle_deg(voted.matrix, pose), 1),
            "refined": [c.summary() for c in refined],
            "vote_extra_s": round(voted.vote_s, 1),
        }

    rng = np.random.default_rng(args.seed)
    sets: dict[str, list[dict]] = {}
    if not args.no_fidon:
        root = shared_data.require(shared_data.FIDON)
        val = set(shared_data.fidon_split("val"))
        for name in shared_data.FIDON_TIMEPOINTS:
            image, atlas_affine, mask = shared_data.fidon_timepoint(root, name)
            week = shared_data.fidon_week(name)
            poses = [np.eye(4)] + [random_pose(rng) for _ in range(args.poses)]
            for k, pose in enumerate(poses):
                res = choose(image, pose @ atlas_affine, mask.astype(np.uint8), week, pose)
                row = {"set": "fidon-val" if name in val else "fidon-train", "brain": name,
                       "pose": k, **res}  # fmt: skip
                print(json.dumps(row), flush=True)
                if k > 0:
                    sets.setdefault(row["set"], []).append(row)
    for i, age in enumerate(args.sim_ages):
        for k in range(args.poses):
            pose = random_pose(rng)
            sub = posed_subject(age, 5000 + 10 * i + k, 0.8, pose)
            res = choose(sub.image, sub.affine, sub.mask, age, pose)
            row = {"set": "sim", "brain": f"phantom-{age:g}w", "pose": k + 1, **res}
            print(json.dumps(row), flush=True)
            sets.setdefault("sim", []).append(row)
    for name, rows in sets.items():
        print(json.dumps({
            "summary": name,
            "n": len(rows),
            "right_with_ncc": round(float(np.mean([r["ncc_error_deg"] < 30 for r in rows])), 3),
            "right_with_vote": round(float(np.mean([r["vote_error_deg"] < 30 for r in rows])), 3),
            "vote_extra_s_mean": round(float(np.mean([r["vote_extra_s"] for r in rows])), 1),
        }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
