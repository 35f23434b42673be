"""Simulated infant sessions through the workflow's infant steps, truth handed over nowhere.

Why this exists: the infant brain age must be calibrated on, and checked against, what
the workflow measures, not on the simulator's truth. Calibrated on true labels, its 95 %
intervals held the true age in only a third to two thirds of sessions run end to end
(bench d123574): the network's labels shift the contrast indexes and the volumes, and
registration shifts the atlas match. So the calibration cohort, the benchmark and the
tests all run each simulated session as the workflow would (`run_session`): the scan
(`simulate.acquisition.simulate_volume`: random head pose, bias field, noise; one
contrast, as a session that has only it), skull-stripped by zeroing outside the
intracranial mask or left as a whole head, then the steps of `workflow/rules/infant.smk`
with the shipped configuration's settings: N4, the brain mask (`preprocess.infant`: the
image's own support when skull-stripped, else the network), registration to the infant
atlas, the infant segmentation network, and the brain age's measurements
(`infant.measure_files`) or the brain-age step itself (`infant.infant_brain_age_to_files`).
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from earlybrain import REPO_ROOT
from earlybrain.anatomy.biometry import months_to_pma_weeks
from earlybrain.brainage.infant import CONTRASTS
from earlybrain.io.nifti import save_nifti
from earlybrain.segment.inference import SegmentationModel

KINDS = ("whole", "stripped")  # a whole head, or the brain as skull-stripped datasets share it


def workflow_settings(threads: int) -> dict[str, Any]:
    """The infant atlas and the registration and segmentation settings the workflow's
    infant rules use with the shipped configuration (`workflow/rules/infant.smk`)."""
    from earlybrain.atlas.workflow import resolve_manifest
    from earlybrain.config_schema import shipped_config
    from earlybrain.segment.workflow import infant_settings

    config = shipped_config()
    manifest = resolve_manifest(config["atlas"]["infant_manifest"], REPO_ROOT)
    registration = dict(config["register"]) | {
        "max_age_distance_weeks": config["infant"]["max_template_distance_weeks"],
        "threads": threads,
    }
    return {
        "manifest": manifest,
        "register": registration,
        "segment": infant_settings(config["segmentation"]),
    }


def run_session(
    months: float,
    seed: int,
    contrast: str,
    kind: str,
    voxel_mm: float,
    work: Path,
    model: SegmentationModel,
    threads: int = 2,
) -> dict[str, Any]:
    """Simulate one infant's session (`contrast`, `kind` of `KINDS`) and run the infant
    steps up to the segmentation in `work`. Returns the true age, the mask's method and
    volume, the registration's NCC and the files the brain-age step reads. Exceptions of
    the steps propagate (the caller counts failures)."""
    from earlybrain.atlas.manifest import load_manifest
    from earlybrain.preprocess.infant import prepare_infant_to_files
    from earlybrain.preprocess.n4 import run_n4
    from earlybrain.register.register import register_to_atlas, registration_paths
    from earlybrain.segment.pipeline import segment_to_files
    from earlybrain.simulate.acquisition import simulate_volume
    from earlybrain.simulate.phantom import make_phantom

    if contrast not in CONTRASTS or kind not in KINDS:
        raise ValueError(f"no infant session of contrast {contrast!r} and kind {kind!r}")
    settings = workflow_settings(threads)
    phantom = make_phantom(months, seed, kind="infant", voxel_mm=1.0)
    images, affine, truth, _, _ = simulate_volume(phantom, (contrast,), voxel_mm, seed + 1)
    image = images[contrast]
    if kind == "stripped":
        image = np.where(truth > 0, image, 0.0).astype(np.float32)
    pma = float(months_to_pma_weeks(months))
    raw = save_nifti(image, affine, work / f"raw_{contrast}.nii.gz")
    n4, mask = work / f"n4_{contrast}.nii.gz", work / "mask.nii.gz"
    run_n4(raw, n4, work / "bias.nii.gz", work / "foreground.nii.gz", threads=threads)
    masked = prepare_infant_to_files(
        n4, contrast, pma, mask, work / "mask_qc.json", lambda: model, raw_path=raw
    )
    prefix = f"sub-x_mod-{contrast}"
    manifest = settings["manifest"]
    reg = register_to_atlas(
        n4, mask, pma, manifest, work, prefix, params=settings["register"], contrast=contrast
    )
    paths = registration_paths(work, prefix, load_manifest(manifest).space, contrast)
    seg = settings["segment"]
    segment_to_files(
        paths["volume"], paths["volume_mask"], n4, paths["affine"], paths["inverse_warp"],
        manifest, work, prefix, weights=seg["weights"], tta=seg["tta"],
        keep_fraction=seg["keep_fraction"], device="cpu", threads=threads,
    )  # fmt: skip
    return {
        "months": float(months),
        "seed": int(seed),
        "pma_weeks": pma,
        "contrast": contrast,
        "kind": kind,
        "mask": masked["method"],
        "mask_ml": float(masked["volume_ml"]),
        "ncc": float(reg["ncc"]),
        "files": {
            "volume": n4,
            "mask": mask,
            "affine": paths["affine"],
            "volumes_tsv": work / f"{prefix}_desc-volumes.tsv",
            "dseg": work / f"{prefix}_dseg.nii.gz",
            "mask_qc": work / "mask_qc.json",
        },
        "prefix": prefix,
        "manifest": manifest,
    }


def session_measurement(session: dict[str, Any], norms: Any) -> dict[str, Any]:
    """A `run_session`'s calibration record (JSON-able; an unmeasurable index is None):
    the atlas-similarity age, the network's volumes, the contrast indexes."""
    from earlybrain.brainage.infant import measure_files

    f = session["files"]
    measured = measure_files(
        f["volume"], f["mask"], session["contrast"], f["affine"], f["volumes_tsv"],
        session["manifest"], norms, dseg=f["dseg"], mask_method=session["mask"],
    )  # fmt: skip

    def num(v: float) -> float | None:
        return round(float(v), 6) if math.isfinite(v) else None

    return {
        "kind": session["kind"],
        "mask": session["mask"],
        "ncc": round(session["ncc"], 4),
        "atlas_age_weeks": num(measured["atlas_similarity"]["age_weeks"]),
        "volumes_ml": {k: num(v) for k, v in measured["volumes_ml"].items()},
        "indexes": {k: num(v) for k, v in (measured["indexes"] or {}).items()},
    }


def session_brain_age(session: dict[str, Any], out: Path) -> dict[str, Any]:
    """The workflow's brain-age step on a `run_session` (shipped calibration and norms)."""
    from earlybrain.brainage.infant import infant_brain_age_to_files

    f = session["files"]
    return infant_brain_age_to_files(
        f["volume"], f["mask"], session["contrast"], f["affine"], f["volumes_tsv"],
        session["pma_weeks"], session["manifest"], out, session["prefix"], dseg=f["dseg"],
        mask_qc=f["mask_qc"],
    )  # fmt: skip


def evaluate_session(
    months: float,
    seed: int,
    contrast: str,
    kind: str,
    voxel_mm: float,
    model: SegmentationModel,
    threads: int = 2,
) -> dict[str, Any]:
    """One session end to end through the brain-age step, in a temporary folder: its true
    and predicted ages, SD, whether the 95 % interval holds the truth, each method's
    (age, SD), the flags; or the error that stopped it."""
    import tempfile
    import time

    t0 = time.perf_counter()
    row: dict[str, Any] = {
        "cell": f"{kind}:{contrast}",
        "months": round(float(months), 3),
        "seed": int(seed),
        "true_weeks": round(float(months_to_pma_weeks(months)), 3),
    }
    with tempfile.TemporaryDirectory(prefix="infant-session-") as tmp:
        try:
            session = run_session(months, seed, contrast, kind, voxel_mm, Path(tmp), model, threads)
            age = session_brain_age(session, Path(tmp) / "anat")
        except Exception as exc:  # counted as a failure of the session, not of the run
            return row | {"error": f"{type(exc).__name__}: {exc}"}
    predicted, sd = float(age["predicted_age_weeks"]), float(age["uncertainty_sd_weeks"])
    error = predicted - session["pma_weeks"]
    return row | {
        "mask": session["mask"],
        "ncc": round(session["ncc"], 3),
        "predicted_weeks": round(predicted, 2),
        "sd_weeks": round(sd, 2),
        "error_weeks": round(error, 2),
        "covered_95": bool(abs(error) <= 1.96 * sd),
        "methods": {
            k: [round(float(m["age_weeks"]), 1), round(float(m["sd_weeks"]), 1)]
            for k, m in age["methods"].items()
        },
        "flags": age["flags"],
        "seconds": round(time.perf_counter() - t0, 1),
    }


@functools.cache
def shipped_infant_model() -> SegmentationModel:
    """The shipped infant segmentation network on the CPU, loaded once per process."""
    from earlybrain.segment.inference import default_infant_weights_path, load_model

    return load_model(default_infant_weights_path(), device="cpu")


def _evaluate(job: tuple[float, int, str, str, float, int]) -> dict[str, Any]:
    months, seed, contrast, kind, voxel_mm, threads = job
    return evaluate_session(months, seed, contrast, kind, voxel_mm, shipped_infant_model(), threads)


def evaluate_sessions(
    sessions: list[tuple[float, int, str, str]], voxel_mm: float, workers: int = 1
) -> list[dict[str, Any]]:
    """`evaluate_session` of each (months, seed, contrast, kind) with the shipped infant
    network, in `workers` processes sharing the CPU cores (in order). Several sessions at
    once use two cores better than one session on two threads: the simulation, N4 and
    parts of the registration run on one core."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // max(workers, 1))
    jobs = [(m, s, c, k, voxel_mm, threads) for m, s, c, k in sessions]
    if workers <= 1:
        return [_evaluate(job) for job in jobs]
    context = multiprocessing.get_context("spawn")  # torch and OpenMP do not survive fork
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        return list(pool.map(_evaluate, jobs))


BANDS_MONTHS = ((0.0, 6.0), (6.0, 12.0), (12.0, 18.0), (18.0, 24.01))


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per cell: sessions, failures, MAE (weeks) overall and per age band (months), and the
    share of 95 % intervals that hold the true age."""
    out: dict[str, Any] = {}
    for cell in dict.fromkeys(r["cell"] for r in rows):
        mine = [r for r in rows if r["cell"] == cell]
        done = [r for r in mine if "error_weeks" in r]
        entry: dict[str, Any] = {"n": len(mine), "failed": len(mine) - len(done)}
        if done:
            entry["mae_weeks"] = round(float(np.mean([abs(r["error_weeks"]) for r in done])), 2)
            entry["coverage_95"] = round(float(np.mean([r["covered_95"] for r in done])), 3)
            for lo, hi in BANDS_MONTHS:
                band = [abs(r["error_weeks"]) for r in done if lo <= r["months"] < hi]
                key = f"mae {lo:g}-{min(hi, 24.0):g} months (n={len(band)})"
                entry[key] = round(float(np.mean(band)), 2) if band else None
        out[cell] = entry
    return out
