"""Infant brain age end to end on simulated infants: whole-head / skull-stripped x T1w / T2w.

Unlike bench/infant_brainage.py (true labels as the segmentation, images masked to the
brain), every subject here goes through what the workflow's infant rules run, with no
truth handed over: the simulated scan (`simulate.acquisition.simulate_volume`: random
head pose, bias, noise; one contrast, as a session that has only it), skull-stripped by
zeroing outside the true intracranial mask or left as a whole head, then N4, the brain
mask (`preprocess.infant`: the image's own support when skull-stripped, else the
network), registration to the infant atlas, the infant segmentation network, and the
infant brain age with the network's labels. Subjects come from their own split code
(555), ages stratified over 0-24 months.

Prints each subject and, per cell, the MAE (weeks) overall and per age band, the share of
95 % intervals that hold the true age, and the failures.

    python bench/infant_end_to_end.py [--n 8] [--voxel 1.5] [--cells stripped:T1w ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from earlybrain.anatomy.biometry import months_to_pma_weeks
from earlybrain.brainage.infant import infant_brain_age_to_files
from earlybrain.io.nifti import save_nifti
from earlybrain.preprocess.infant import prepare_infant_to_files
from earlybrain.preprocess.n4 import run_n4
from earlybrain.register.register import register_to_atlas, registration_paths
from earlybrain.segment.inference import (
    SegmentationModel,
    default_infant_weights_path,
    load_model,
)
from earlybrain.segment.pipeline import segment_to_files
from earlybrain.simulate.acquisition import simulate_volume
from earlybrain.simulate.phantom import make_phantom
from earlybrain.training import derived_seeds

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "atlases" / "earlybrain-infant" / "manifest.json"
SPLIT_CODE = 555  # used by no training, reference, calibration, benchmark or test split
CELLS = ("whole:T1w", "whole:T2w", "stripped:T1w", "stripped:T2w")
BANDS_MONTHS = ((0, 6), (6, 12), (12, 18), (18, 24.01))
# as the workflow's config: infant.max_template_distance_weeks
REGISTRATION = {"max_age_distance_weeks": 7.0, "threads": 2}


def subjects(n: int, seed: int) -> list[tuple[float, int]]:
    """(months, seed) of `n` infants, ages stratified over 0-24 months."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLIT_CODE]))
    months = 24.0 * (np.arange(n) + rng.uniform(0.0, 1.0, n)) / n
    return [(float(m), s) for m, s in zip(months, derived_seeds(seed, SPLIT_CODE, n), strict=True)]


def run_subject(
    months: float, seed: int, cell: str, voxel_mm: float, work: Path, model: SegmentationModel
) -> dict[str, object]:
    """One infant of one cell through the infant steps; its brain age or its error."""
    kind, contrast = cell.split(":")
    t0 = time.perf_counter()
    phantom = make_phantom(months, seed, kind="infant", voxel_mm=1.0)
    images, affine, truth, _, _ = simulate_volume(phantom, (contrast,), voxel_mm, seed + 1)
    image = images[contrast]
    if kind == "stripped":
        image = np.where(truth > 0, image, 0.0).astype(np.float32)
    pma = months_to_pma_weeks(months)
    row: dict[str, object] = {"cell": cell, "months": round(months, 2), "true_weeks": pma}
    raw = save_nifti(image, affine, work / f"raw_{contrast}.nii.gz")
    n4 = work / f"n4_{contrast}.nii.gz"
    try:
        run_n4(raw, n4, work / "bias.nii.gz", work / "foreground.nii.gz", threads=2)
        mask = work / "mask.nii.gz"
        masked = prepare_infant_to_files(
            n4, contrast, pma, mask, work / "mask_qc.json", lambda: model, raw_path=raw
        )
        prefix = f"sub-x_mod-{contrast}"
        reg = register_to_atlas(
            n4, mask, pma, MANIFEST, work, prefix, params=REGISTRATION, contrast=contrast
        )
        paths = registration_paths(work, prefix, "earlybrainInfant", contrast)
        segment_to_files(
            paths["volume"], paths["volume_mask"], n4, paths["affine"], paths["inverse_warp"],
            MANIFEST, work, prefix, weights=model.path, device="cpu", threads=2,
        )  # fmt: skip
        age = infant_brain_age_to_files(
            n4, mask, contrast, paths["affine"], work / f"{prefix}_desc-volumes.tsv", pma,
            MANIFEST, work, prefix, dseg=work / f"{prefix}_dseg.nii.gz",
        )  # fmt: skip
    except Exception as exc:  # a bench reports failures, it does not stop at one
        return row | {"error": f"{type(exc).__name__}: {exc}"}
    predicted, sd = float(age["predicted_age_weeks"]), float(age["uncertainty_sd_weeks"])
    return row | {
        "mask": masked["method"],
        "mask_ml": masked["volume_ml"],
        "ncc": round(float(reg["ncc"]), 3),
        "predicted_weeks": round(predicted, 1),
        "sd_weeks": round(sd, 1),
        "error_weeks": round(predicted - pma, 1),
        "covered_95": bool(abs(predicted - pma) <= 1.96 * sd),
        "methods": {
            k: [round(float(m["age_weeks"]), 1), round(float(m["sd_weeks"]), 1)]
            for k, m in age["methods"].items()
        },
        "seconds": round(time.perf_counter() - t0, 1),
    }


def summary(rows: list[dict[str, object]]) -> dict[str, object]:
    """Per cell: MAE overall and per age band, 95 % coverage, failures."""
    out: dict[str, object] = {}
    for cell in dict.fromkeys(r["cell"] for r in rows):
        done = [r for r in rows if r["cell"] == cell and "error_weeks" in r]
        entry: dict[str, object] = {
            "n": sum(r["cell"] == cell for r in rows),
            "failed": sum(r["cell"] == cell and "error" in r for r in rows),
        }
        if done:
            entry["mae_weeks"] = round(float(np.mean([abs(r["error_weeks"]) for r in done])), 2)
            entry["coverage_95"] = round(float(np.mean([r["covered_95"] for r in done])), 2)
            for lo, hi in BANDS_MONTHS:
                band = [abs(r["error_weeks"]) for r in done if lo <= r["months"] < hi]
                key = f"mae {lo:g}-{min(hi, 24):g} months (n={len(band)})"
                entry[key] = round(float(np.mean(band)), 2) if band else None
        out[cell] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=8, help="infants per cell")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--voxel", type=float, default=1.5)
    ap.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)
    model = load_model(default_infant_weights_path(), device="cpu")
    rows = []
    for cell in args.cells:
        for months, seed in subjects(args.n, args.seed):
            with tempfile.TemporaryDirectory(prefix="infant-e2e-") as tmp:
                r = run_subject(months, seed, cell, args.voxel, Path(tmp), model)
            rows.append(r)
            print(json.dumps(r), flush=True)
    s = summary(rows)
    print(json.dumps(s, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": s}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
