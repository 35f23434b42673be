"""Benchmark brain-age estimation: accuracy on held-out simulated fetuses, uncertainty
inside and outside the training ages, and the time of one subject on the CPU (or CUDA).

Usage: python bench/brainage.py [--n 15] [--voxel 1.0] [--threads 2] [--device cpu]
                                [--weights PATH] [--rims 1.0 2.0]
Held-out subjects (seeds never used in training, 22-36 weeks, random scanner pose) go
through `frame.network_input` and the deep ensemble; the atlas-similarity and
volume-based estimates are computed too (the latter from the true volumes). Prints one
JSON line: MAE, bias and 95 % interval coverage per method (masks as tight as the
reconstruction's, `evaluate.PIPELINE_RIM_MM`; the ensemble also with masks --rims mm
looser); mean predictive SD inside and outside (18-19, 41-42 w) the training range,
the latter also as reported (with the extrapolation distance of the chronological age);
seconds per subject (input preparation, ensemble) and peak memory. Target (issue #7):
ensemble MAE <= 1.0 week (simulated). With ../shared/data present, the ensemble is also
run on the 15 real T2w templates of fidon-sb-atlas (real contrast, spina bifida anatomy;
never trained on): "real_fidon" gives its MAE, bias and 95 % coverage there.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=15)
    ap.add_argument("--voxel", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--weights", default=None)
    ap.add_argument("--rims", type=float, nargs="*", default=[1.0, 2.0],
                    help="also: the ensemble's error with masks this much looser (mm)")  # fmt: skip
    a = ap.parse_args()
    import torch

    from earlybrain import shared_data
    from earlybrain.brainage.atlas_age import similarity_age, template_inputs
    from earlybrain.brainage.ensemble import load_ensemble, predict, predictive_sd
    from earlybrain.brainage.evaluate import fidon_ensemble_ages, posed_subject
    from earlybrain.brainage.norms import Norms, shipped_norms_path
    from earlybrain.brainage.volume_age import volume_age
    from earlybrain.segment.volumes import volume_rows

    torch.set_num_threads(a.threads)
    model = load_ensemble(a.weights, device=a.device)
    norms = Norms.from_json(shipped_norms_path())
    templates = template_inputs(REPO / "atlases" / "earlybrain-fetal" / "manifest.json")
    ages = np.linspace(22.0, 36.0, a.n)
    inside, t_input, t_net, by_atlas, by_volume = [], [], [], [], []
    for i, age in enumerate(ages):
        s = posed_subject(float(age), 9401 + i, voxel_mm=a.voxel)
        t0 = time.perf_counter()
        x = s.network_input()
        t1 = time.perf_counter()
        p = predict(model, x[None])
        t2 = time.perf_counter()
        t_input.append(t1 - t0)
        t_net.append(t2 - t1)
        inside.append((p["age_weeks"][0], p["sd_weeks"][0]))
        by_atlas.append(similarity_age(x, templates)["age_weeks"])
        vols = {
            r["structure"]: r["total_ml"] for r in volume_rows(s.volume.labels, s.volume.affine)
        }
        by_volume.append(volume_age(norms, vols)["age_weeks"])
    outside_ages = [18.0, 18.5, 19.0, 41.0, 41.5, 42.0]
    x_out = np.stack([posed_subject(g, 9451 + i, a.voxel).network_input()
                      for i, g in enumerate(outside_ages)])  # fmt: skip
    out = predict(model, x_out)
    pairs = zip(out["sd_weeks"], outside_ages, strict=True)
    reported_sd = [predictive_sd(v, g, model.train_range) for v, g in pairs]
    pred, sd = np.array(inside).T
    by_rim = {}
    for rim in a.rims:
        x_rim = np.stack([posed_subject(float(g), 9401 + i, a.voxel, rim_mm=rim).network_input()
                          for i, g in enumerate(ages)])  # fmt: skip
        p_rim = predict(model, x_rim)
        by_rim[f"{rim:g}"] = (p_rim["age_weeks"], p_rim["sd_weeks"])

    def summary(est: np.ndarray, sds: np.ndarray | None = None, truth=ages) -> dict:
        err = np.asarray(est) - truth
        s = {"mae_weeks": round(float(np.mean(np.abs(err))), 3),
             "bias_weeks": round(float(np.mean(err)), 3)}  # fmt: skip
        if sds is not None:
            s["coverage_95"] = round(float(np.mean(np.abs(err) <= 1.96 * sds)), 3)
        return s

    real = None
    if shared_data.dataset(shared_data.FIDON):
        rows = fidon_ensemble_ages(model)
        real = {"time_points": len(rows)} | summary(
            np.array([r["predicted_weeks"] for r in rows]),
            np.array([r["sd_weeks"] for r in rows]),
            np.array([r["age_weeks"] for r in rows]),
        )
    print(
        json.dumps(
            {
                "subjects": a.n,
                "voxel_mm": a.voxel,
                "device": str(model.device),
                "members": len(model.members),
                "deep_ensemble": summary(pred, sd),
                "deep_ensemble_looser_mask_mm": {
                    rim: summary(est, sds) for rim, (est, sds) in by_rim.items()
                },
                "real_fidon": real,
                "atlas_similarity": summary(np.array(by_atlas)),
                "volumes_true_labels": summary(np.array(by_volume)),
                "mean_sd_inside_weeks": round(float(np.mean(sd)), 3),
                "mean_sd_outside_weeks": round(float(np.mean(out["sd_weeks"])), 3),
                "mean_reported_sd_outside_weeks": round(float(np.mean(reported_sd)), 3),
                "outside": [
                    {"age": g, "predicted": round(float(m), 2), "sd": round(float(v), 2)}
                    for g, m, v in zip(outside_ages, out["age_weeks"], out["sd_weeks"], strict=True)
                ],
                "seconds_input": round(float(np.median(t_input)), 3),
                "seconds_ensemble": round(float(np.median(t_net)), 3),
                "peak_mem_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
