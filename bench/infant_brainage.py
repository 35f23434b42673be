"""Infant brain age end to end on simulated held-out infants: whole or stripped, T1w or T2w.

Every session goes through what the workflow's infant rules run, with no truth handed
over (`earlybrain.brainage.infant_end_to_end`): the simulated scan in one contrast
(random head pose, bias, noise), skull-stripped or a whole head, N4, the brain mask,
registration to the infant atlas, the infant segmentation network, and the brain-age
step with the shipped calibration. Subjects come from the benchmark's split code (535,
`infant_reference.INFANT_BENCH_SPLIT_CODE`), ages stratified over 0-24 months; every
cell sees the same subjects.

Prints each session and, per cell, the MAE (weeks) overall and per age band, the share
of 95 % intervals that hold the true age, and the failures (about 40 s a session on two
cores).

    python bench/infant_brainage.py [--n 10] [--workers 2] [--cells stripped:T1w ...]
    python bench/infant_brainage.py --calibrate   # re-measure and refit (~80 minutes)
    python bench/infant_brainage.py --refit       # refit from the shipped measurements

`--calibrate` runs the 120 calibration sessions end to end
(`infant_reference.calibration_measurements`, split code 525), writes their
measurements to `models/brainage/calibration_infant_measurements.json` (after each
session, so an interrupted run resumes with `--calibrate --resume`), fits
`infant_reference.fit_calibration` and writes `models/brainage/calibration_infant.json`.
`--refit` does the fit alone, e.g. after the infant norms changed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from earlybrain.atlas.manifest import load_manifest
from earlybrain.brainage.infant import CALIBRATION_FILE
from earlybrain.brainage.infant_end_to_end import (
    KINDS,
    evaluate_sessions,
    summary,
    workflow_settings,
)
from earlybrain.brainage.infant_reference import (
    INFANT_BENCH_SPLIT_CODE,
    INFANT_CALIBRATION_N,
    INFANT_CALIBRATION_VOXEL_MM,
    MEASUREMENTS_FILE,
    calibration_measurements,
    fit_calibration,
    infant_subjects,
)
from earlybrain.brainage.norms import Norms, shipped_infant_norms_path, shipped_norms_path

CELLS = tuple(f"{k}:{c}" for k in KINDS for c in ("T1w", "T2w"))


def _rounded(obj: object, digits: int = 6) -> object:
    """Floats to `digits` significant digits, recursively (a readable calibration)."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: _rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_rounded(v, digits) for v in obj]
    return obj


def write_json(path: Path, content: object) -> Path:
    path.write_text(json.dumps(_rounded(content), indent=1) + "\n")
    return path


def calibrate(measure: bool, resume: bool, voxel_mm: float) -> int:
    """Measure the calibration sessions (or reuse the shipped measurements) and refit."""
    measurements = shipped_norms_path(MEASUREMENTS_FILE)
    source = (
        f"earlybrain infant calibration cohort: {INFANT_CALIBRATION_N} simulated infants "
        "(split code 525, seed 0, ages stratified over 0-24 months), each once in T2w and "
        f"once in T1w, whole head or skull-stripped, {voxel_mm:g} mm, run end to end "
        "(earlybrain.brainage.infant_end_to_end)"
    )
    if measure:
        done = json.loads(measurements.read_text())["sessions"] if resume else []
        records = calibration_measurements(
            voxel_mm=voxel_mm,
            done=done,
            on_record=lambda r: write_json(measurements, {"source": source, "sessions": r}),
            log=True,
        )
    else:
        content = json.loads(measurements.read_text())
        records, source = content["sessions"], content["source"]
    cal = fit_calibration(
        records,
        Norms.from_json(shipped_infant_norms_path()),
        source=source,
        atlas=load_manifest(workflow_settings(1)["manifest"]).name,
    )
    print(json.dumps(cal["leave_one_out_mae_weeks"], indent=1))
    print("wrote", write_json(shipped_norms_path(CALIBRATION_FILE), cal))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10, help="infants per cell")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--voxel", type=float, default=INFANT_CALIBRATION_VOXEL_MM)
    ap.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    ap.add_argument("--workers", type=int, default=1, help="sessions at once")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--calibrate", action="store_true", help="re-measure and refit")
    ap.add_argument("--resume", action="store_true", help="--calibrate: keep what is measured")
    ap.add_argument("--refit", action="store_true", help="refit from the shipped measurements")
    args = ap.parse_args(argv)
    if args.calibrate or args.refit:
        return calibrate(args.calibrate, args.resume, args.voxel)
    subjects = infant_subjects(args.n, args.seed, INFANT_BENCH_SPLIT_CODE)
    sessions = [
        (months, seed, cell.split(":")[1], cell.split(":")[0])
        for cell in args.cells
        for months, seed in subjects
    ]
    rows = evaluate_sessions(sessions, args.voxel, args.workers)
    for r in rows:
        print(json.dumps(r))
    s = summary(rows)
    seconds = [r["seconds"] for r in rows if "seconds" in r]
    s["seconds_per_session"] = round(float(np.mean(seconds)), 1) if seconds else None
    print(json.dumps(s, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": s}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
