"""One subject's brain age and normative z-scores, from the files the workflow made.

Three estimates: the deep ensemble (primary), atlas similarity and regional volumes
(classical); the spread between them is a flag. The brain-age gap (predicted minus
chronological age) gets a z-score from the spread of the gap among healthy validation
subjects (the ensemble's card), and every volume a z-score and centile from the
normative growth curves (`norms`). Writes `<prefix>_desc-brainage.json` and
`<prefix>_desc-zscores.tsv`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import norm as normal

from earlybrain import __version__
from earlybrain.anatomy.labels import STRUCTURE_NAMES
from earlybrain.brainage import norms as norms_mod
from earlybrain.brainage.atlas_age import similarity_age, template_inputs
from earlybrain.brainage.ensemble import (
    BrainAgeError,
    extrapolation_weeks,
    load_ensemble,
    predict,
    predictive_sd,
)
from earlybrain.brainage.frame import GRID, Grid, network_input
from earlybrain.brainage.volume_age import volume_age
from earlybrain.io.atomic import write_json_atomic, write_text_atomic
from earlybrain.io.nifti import load_nifti
from earlybrain.io.provenance import source_references
from earlybrain.io.sidecar import write_sidecar
from earlybrain.register import antsio

PathLike = str | os.PathLike[str]

Z_LIMIT = 2.0  # |z| beyond this is flagged (about 1 in 20 healthy subjects per value)
SPREAD_LIMIT_WEEKS = 2.0  # the estimates disagree by more than this: flagged


def brainage_paths(out_anat: PathLike, prefix: str) -> dict[str, Path]:
    """Output files of one subject's brain-age step; the comment above each key says
    what its file holds (the outputs reference prints it)."""
    out = Path(out_anat)
    return {
        # predicted brain age with its uncertainty and 95 % interval, each method's
        # estimate, the brain-age gap (z-score, centile) and flags
        "brainage": out / f"{prefix}_desc-brainage.json",
        # z-score, centile and flag of every volume under the normative growth curves,
        # and of the brain-age gap
        "zscores": out / f"{prefix}_desc-zscores.tsv",
    }


def load_subject_input(
    volume: PathLike, mask: PathLike, affine_xfm: PathLike, grid: Grid = GRID
) -> np.ndarray:
    """The subject's reconstruction as the network sees it (see `frame`)."""
    vol = load_nifti(volume)
    data = np.asarray(vol.dataobj, dtype=np.float32)
    if data.ndim != 3:
        raise BrainAgeError(f"{volume}: expected a 3D volume, got shape {data.shape}")
    m = load_nifti(mask)
    if m.shape[:3] != data.shape or not np.allclose(m.affine, vol.affine, atol=1e-3):
        raise BrainAgeError(f"{mask}: mask grid differs from the volume {volume}")
    mask_data = np.asarray(m.dataobj) > 0
    if mask_data.sum() < 100:
        raise BrainAgeError(f"{mask}: brain mask is empty or tiny")
    matrix = antsio.read_matrix_transform(affine_xfm)
    return network_input(np.nan_to_num(data), vol.affine, mask_data, matrix, grid)


def gap_scores(gap: float, gap_sd: float) -> tuple[float, float]:
    """z-score and centile of a brain-age gap (healthy gaps ~ N(0, gap_sd))."""
    z = gap / gap_sd
    return float(z), float(100.0 * normal.cdf(z))


def volume_flags(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """A flag for every volume `norms.subject_zscores` flagged (|z| > `Z_LIMIT`), named as
    the reports' tables name it (`deep grey matter`, not `deep_GM`)."""
    return [
        f"{STRUCTURE_NAMES.get(r['structure'], r['structure'])} volume z = {r['z']:+.2f} "
        f"(|z| > {Z_LIMIT:g})"
        for r in rows
        if r["flag"]
    ]


def write_zscores(
    path: PathLike,
    rows: Iterable[Mapping[str, Any]],
    gap_z: float,
    gap_centile: float,
    gap_note: str,
) -> None:
    """The z-scores TSV: the volumes' rows (`norms.subject_zscores`), then the brain-age
    gap's, scored and flagged like a volume."""
    gap_row = {"structure": "brain_age_gap_weeks", "volume_ml": None, "expected_ml": None,
               "z": gap_z, "centile": gap_centile, "flag": abs(gap_z) > Z_LIMIT,
               "note": gap_note}  # fmt: skip
    write_text_atomic(path, norms_mod.zscores_tsv([*rows, gap_row]))


def _r(v: float, digits: int = 2) -> float:
    return round(float(v), digits)


def brain_age_to_files(
    volume: PathLike,
    mask: PathLike,
    affine_xfm: PathLike,
    volumes_tsv: PathLike,
    age_weeks: float,
    manifest: PathLike,
    out_anat: PathLike,
    prefix: str,
    *,
    weights: PathLike | None = None,
    norms_file: PathLike | None = None,
    device: str = "auto",
    allow_cpu_fallback: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """Estimate one subject's brain age, score its volumes; write both outputs."""
    t0 = time.perf_counter()
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    model = load_ensemble(weights, device, allow_cpu_fallback)
    norms_path = Path(norms_file) if norms_file else norms_mod.shipped_norms_path()
    norms = norms_mod.Norms.from_json(norms_path)
    x = load_subject_input(volume, mask, affine_xfm, model.grid)
    deep = predict(model, x[None])
    age, ensemble_sd = float(deep["age_weeks"][0]), float(deep["sd_weeks"][0])
    extrapolation = extrapolation_weeks(float(age_weeks), model.train_range)
    sd = predictive_sd(ensemble_sd, float(age_weeks), model.train_range)
    t_net = time.perf_counter() - t0
    atlas = similarity_age(x, template_inputs(manifest, grid=model.grid))
    vols = norms_mod.read_volumes_tsv(volumes_tsv)
    by_volume = volume_age(norms, vols)
    estimates = {
        "deep_ensemble": age,
        "atlas_similarity": float(atlas["age_weeks"]),
        "volumes": float(by_volume["age_weeks"]),
    }
    spread = max(estimates.values()) - min(estimates.values())
    gap = age - float(age_weeks)
    # healthy validation subjects' gap spread; beyond the training ages the gap is partly
    # the network's saturation, so the extrapolation distance widens it
    gap_sd = float(np.hypot(model.card.get("gap_sd_weeks") or ensemble_sd, extrapolation))
    gap_z, gap_centile = gap_scores(gap, gap_sd)
    lo, hi = model.train_range
    outside = extrapolation > 0 or not lo - 0.5 <= age <= hi + 0.5
    rows = norms_mod.subject_zscores(norms, float(age_weeks), vols, Z_LIMIT)
    flags = volume_flags(rows)
    if abs(gap_z) > Z_LIMIT:
        flags.append(f"brain-age gap {gap:+.1f} weeks, z = {gap_z:+.2f} (|z| > {Z_LIMIT:g})")
    if spread > SPREAD_LIMIT_WEEKS:
        flags.append(
            f"the age estimates disagree by {spread:.1f} weeks (> {SPREAD_LIMIT_WEEKS:g}): "
            + ", ".join(f"{k} {v:.1f}" for k, v in estimates.items())
        )
    if outside:
        flags.append(
            f"age {age_weeks:g} weeks (brain age {age:.1f}) is outside the network's training "
            f"range {lo:g}-{hi:g} weeks: an extrapolation, its uncertainty includes the distance"
        )
    paths = brainage_paths(out_anat, prefix)
    write_zscores(
        paths["zscores"], rows, gap_z, gap_centile,
        f"gap {gap:+.2f} weeks (brain age {age:.2f}, chronological {age_weeks:g}); "
        f"healthy gaps ~ N(0, {gap_sd:.2f})",
    )  # fmt: skip
    result = {
        "chronological_age_weeks": float(age_weeks),
        "age_kind": "GA",
        "predicted_age_weeks": _r(age),
        "uncertainty_sd_weeks": _r(sd),
        "interval_95_weeks": [_r(age - 1.96 * sd), _r(age + 1.96 * sd)],
        "brain_age_gap_weeks": _r(gap),
        "brain_age_gap_z": _r(gap_z),
        "brain_age_gap_centile": _r(gap_centile, 1),
        "primary_method": "deep_ensemble",
        "methods": {
            "deep_ensemble": {
                "age_weeks": _r(age),
                "sd_weeks": _r(ensemble_sd),
                "extrapolation_weeks": _r(extrapolation),
                "aleatoric_sd_weeks": _r(deep["aleatoric_sd_weeks"][0]),
                "epistemic_sd_weeks": _r(deep["epistemic_sd_weeks"][0]),
                "members": [
                    {"age_weeks": _r(a), "sd_weeks": _r(s)}
                    for a, s in zip(deep["member_ages"][0], deep["member_sds"][0], strict=True)
                ],
                "training_range_weeks": [lo, hi],
                "weights": model.path,
                "weights_sha256": model.sha256,
                "validation_mae_weeks": model.card.get("validation", {}).get("mae_weeks"),
            },
            "atlas_similarity": atlas | {"age_weeks": _r(atlas["age_weeks"])},
            "volumes": {k: _r(v) if isinstance(v, float) else v for k, v in by_volume.items()}
            | {"norms": norms.source},
        },
        "method_spread_weeks": _r(spread),
        "out_of_training_range": outside,
        "flags": flags,
        "gap_sd_weeks": _r(gap_sd, 3),
        "norms": {"file": str(norms_path), "source": norms.source},
        "device": str(model.device),
        "timings": {"network_s": _r(t_net), "total_s": _r(time.perf_counter() - t0)},
    }
    # a JSON output records its own provenance (its sidecar would be itself)
    result |= {
        "GeneratedBy": [{"Name": "earlybrain", "Version": __version__, "Step": "brainage"}],
        "Parameters": {"spread_limit_weeks": SPREAD_LIMIT_WEEKS, "z_limit": Z_LIMIT},
        "Sources": source_references([volume, mask, affine_xfm, volumes_tsv, manifest]),
    }
    write_json_atomic(paths["brainage"], result)
    write_sidecar(
        paths["zscores"], step="brainage",
        parameters={"z_limit": Z_LIMIT, "norms": result["norms"]["file"]},
        sources=[str(volumes_tsv)],
        extra={"Description": "z-scores and centiles of the volumes under the normative "
               "growth curves, and of the brain-age gap"},
    )  # fmt: skip
    return result
