"""One infant's brain age (term to 2 years) and normative z-scores, from the workflow's files.

The fetal deep ensemble does not apply to infants (it was trained on 21-38 weeks GA, and
its 2 mm grid is smaller than an infant head), so an infant's brain age rests on three
classical estimates:

- atlas similarity: the template of the infant atlas (the session's contrast) that the
  brain resembles most, as in the fetal path (`atlas_age`) but on a grid large enough
  for a two-year-old head (`INFANT_GRID`). Templates differ a lot in size and contrast
  over the first year and hardly at all in the second;
- volumes: the age that makes the tissue volumes most likely under the infant norms
  (`volume_age.volume_age`, norms fitted on the simulated infant reference cohort);
- myelination: the contrast of white-matter zones, cerebellum and brainstem against
  deep grey matter, which changes zone after zone as the white matter myelinates
  (`myelination`). Needs `dseg`. With the session's other contrast on the same grid
  (`other_contrasts`), the indexes of both contrasts are modelled jointly.

Each is reported bias-corrected with an SD by its own value (`corrected`). The primary
estimate is not an average of them: it is the posterior over age given the atlas and
volume ages and the contrast indexes at once (`combined_estimate`, an
`age_curves.LogisticAgeModel`), so that two estimates sharing an error (brain size,
seen by both the volumes and the template match) count once and a saturated one (the
oldest template, a T1w contrast that stopped changing) widens the posterior instead of
pulling it. Its SD is scaled to the errors of the calibration cohort at that age and
for that way of masking the brain (skull-stripped input or the network). The
brain-age gap gets a z-score from the spread of healthy calibration subjects' gaps at
that chronological age.

All calibration numbers (`models/brainage/calibration_infant.json`) come from 60
simulated infants of their own split code
(`infant_reference.INFANT_CALIBRATION_SPLIT_CODE`), each processed end to end by the
workflow's infant steps once in T2w and once in T1w (`infant_end_to_end`; whole heads
and skull-stripped), so they describe the errors of what the workflow measures, the
network's labels included: never the norms' reference subjects, nor the held-out
subjects of the benchmark and the tests. They depend on the simulator, the infant
atlas, the infant network and the shipped infant norms; rebuild them with
`python bench/infant_brainage.py --calibrate` when one of them changes, or `--refit`
from the shipped measurements when only the norms changed (a lab's own norms,
`norms_file`, change the volumes' errors too).

What to expect on simulated infants is in docs/validation.md (`bench/infant_brainage.py`,
held-out infants end to end): T1w-only sessions after a year cannot be aged to better
than a few months, and their intervals say so.

Writes `<prefix>_desc-brainage.json` and `<prefix>_desc-zscores.tsv` with the schema of
the fetal step (`pipeline.brain_age_to_files`), so the reports render both.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from earlybrain import __version__
from earlybrain.anatomy.biometry import TERM_WEEKS, WEEKS_PER_MONTH
from earlybrain.atlas.manifest import load_manifest
from earlybrain.brainage import norms as norms_mod
from earlybrain.brainage.age_curves import AGE_MARGIN_WEEKS, AGE_STEP_WEEKS, LogisticAgeModel
from earlybrain.brainage.atlas_age import TemplateInputs, similarity_age, template_inputs
from earlybrain.brainage.ensemble import BrainAgeError
from earlybrain.brainage.frame import Grid, network_input
from earlybrain.brainage.myelination import myelination_key, subject_indexes
from earlybrain.brainage.pipeline import (
    Z_LIMIT,
    brainage_paths,
    gap_scores,
    volume_flags,
    write_zscores,
)
from earlybrain.brainage.volume_age import volume_age
from earlybrain.io.atomic import write_json_atomic
from earlybrain.io.nifti import load_nifti
from earlybrain.io.provenance import source_references
from earlybrain.io.sidecar import write_sidecar
from earlybrain.register import antsio

PathLike = str | os.PathLike[str]

CONTRASTS = ("T1w", "T2w")
# holds the intracranial volume of a two-year-old 3 SD above the mean size (about
# 147 x 183 x 129 mm) around its centroid, at the 2 mm of the fetal grid
INFANT_GRID = Grid(shape=(78, 96, 72), voxel_mm=2.0)
# estimates further apart than this many SDs of their difference are flagged
SPREAD_Z = 2.0
METHOD_ORDER = ("atlas_similarity", "volumes", "myelination")

CALIBRATION_FILE = "calibration_infant.json"  # beside the norms in models/brainage/


@functools.cache
def shipped_calibration() -> dict[str, Any]:
    """The shipped calibration (`models/brainage/calibration_infant.json`, written by
    `bench/infant_brainage.py --calibrate`)."""
    return json.loads(norms_mod.shipped_norms_path(CALIBRATION_FILE).read_text())


def weeks_to_months(pma_weeks: float) -> float:
    """Postnatal months of a term-born infant from its postmenstrual age (weeks)."""
    return (float(pma_weeks) - TERM_WEEKS) / WEEKS_PER_MONTH


def _r(v: float | None, digits: int = 2) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), digits)


# --- calibrated SDs and the combination ----------------------------------------------


def _table(table: Mapping[str, Any], age: float) -> float:
    """Piecewise-linear value of a {ages_weeks, values} table, flat beyond its ends."""
    return float(np.interp(age, table["ages_weeks"], table["values"]))


def configuration_key(contrast: str, myelination: Iterable[str]) -> str:
    """Calibration key of the session contrast and the myelination contrasts, e.g.
    "T1w|T1w+T2w", or "T1w|" without a myelination estimate."""
    return f"{contrast}|{myelination_key(myelination)}"


def _need(calibration: Mapping[str, Any], section: str, key: str) -> Any:
    try:
        return calibration[section][key]
    except KeyError:
        have = ", ".join(calibration.get(section, {})) or "none"
        raise BrainAgeError(
            f"no infant brain-age calibration {section}[{key!r}] (has {have}): run "
            "bench/infant_brainage.py --calibrate"
        ) from None


@functools.lru_cache(maxsize=8)
def _templates(manifest: str, contrast: str, mtime: float) -> TemplateInputs:
    return template_inputs(manifest, contrast, INFANT_GRID)


def infant_templates(manifest: PathLike, contrast: str) -> TemplateInputs:
    """The atlas' templates of `contrast` on `INFANT_GRID` (cached per manifest version)."""
    path = Path(load_manifest(manifest).path).resolve()
    return _templates(str(path), contrast, path.stat().st_mtime)


def volume_posterior(norms: norms_mod.Norms, volumes: Mapping[str, float]) -> dict[str, Any]:
    """Posterior mean and SD of age given the tissue volumes, flat prior over the norms'
    ages (+- `AGE_MARGIN_WEEKS`).

    `volume_age.volume_age` gives the most likely age and an SD scaled by the norms'
    leave-one-out factor (the structures all scale with head size, so treating them as
    independent makes the likelihood too sharp). Near the ends of the infant range,
    where a large one-year-old's volumes are most likely at or beyond 24 months, that
    most likely age sits on the edge and the SD of a posterior cut by the edge is small:
    an overconfident estimate. Here the likelihood is tempered by the same factor (its
    log divided by the factor squared, as if every SD were that much larger), and the
    estimate is the posterior mean, whose SD stays honest at the edges.
    """
    ml = volume_age(norms, volumes)
    used = list(ml["structures"])
    cal = norms.volume_age_calibration
    scale = float(cal["sd_scale"]) if ml["calibrated"] and cal else 1.0
    lo, hi = norms.age_range
    grid = np.arange(lo - AGE_MARGIN_WEEKS, hi + AGE_MARGIN_WEEKS + 1e-9, AGE_STEP_WEEKS)
    ll = np.zeros_like(grid)
    for s in used:
        m = norms.model(s)
        sd = m.sd_log(grid)
        ll -= np.log(sd) + 0.5 * ((np.log(float(volumes[s])) - m.mean_log(grid)) / sd) ** 2
    w = np.exp((ll - ll.max()) / scale**2)
    w /= w.sum()
    mean = float(np.sum(w * grid))
    return {
        "age_weeks": mean,
        "sd_posterior_weeks": float(np.sqrt(np.sum(w * (grid - mean) ** 2))),
        "most_likely_age_weeks": float(ml["age_weeks"]),
        "likelihood_tempering": scale,
        "structures": used,
        "note": ml["note"],
    }


def corrected(estimate: Mapping[str, Any], table: Mapping[str, Any]) -> dict[str, Any]:
    """A method's estimate with the calibration's bias correction and SD at its age
    (`infant_reference.method_calibration`); the raw estimate stays as `uncorrected`."""
    raw = float(estimate["age_weeks"])
    ages = table["ages_weeks"]
    return dict(estimate) | {
        "age_weeks": raw + float(np.interp(raw, ages, table["bias"])),
        "sd_weeks": float(np.interp(raw, ages, table["sd"])),
        "uncorrected_age_weeks": raw,
    }


def estimates(
    measured: Mapping[str, Any], calibration: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Each method's estimate of a `measure_files`d session, bias-corrected, with its
    calibrated SD (tables by the estimate, per session contrast)."""
    contrast = measured["contrast"]
    out = {
        method: corrected(measured[method], _need(calibration, method, contrast))
        for method in ("atlas_similarity", "volumes")
    }
    indexes = measured["indexes"]
    if indexes:
        key = myelination_key(k.split(":")[0] for k in indexes)
        fitted = _need(calibration, "myelination", key)
        est = LogisticAgeModel.from_dict(key, fitted).estimate(indexes)
        out["myelination"] = corrected(est, fitted) | {"contrasts": key.split("+")}
    return out


def combination_features(measured: Mapping[str, Any]) -> dict[str, float]:
    """The features of the combination: the atlas-similarity and volume ages as measured
    (uncorrected) and the contrast indexes."""
    return {
        "atlas_similarity": float(measured["atlas_similarity"]["age_weeks"]),
        "volumes": float(measured["volumes"]["age_weeks"]),
    } | dict(measured["indexes"] or {})


def combined_estimate(
    measured: Mapping[str, Any], key: str, configuration: Mapping[str, Any]
) -> dict[str, Any]:
    """The primary estimate: the posterior over age given every feature at once
    (`combination_features` under the configuration's `LogisticAgeModel`), its SD scaled
    by the calibration's factor at that age for the way the brain was masked (the
    posterior of a model with constant covariance is too sharp where the errors are
    larger: T1w after a year, whole heads masked by the network). A mask method the
    calibration does not know gets the larger factor."""
    model = LogisticAgeModel.from_dict(key, configuration["model"])
    est = model.estimate(combination_features(measured))
    age, sd = float(est["age_weeks"]), float(est["sd_posterior_weeks"])
    tables = configuration["sd_scale"]
    method = measured.get("mask_method")
    if method in tables:
        scale = _table(tables[method], age)
    else:
        scale = max(_table(t, age) for t in tables.values())
    return {
        "age_weeks": age,
        "sd_weeks": sd * scale,
        "sd_posterior_weeks": sd,
        "sd_scale": scale,
        "features": est["structures"],
        "rule": "posterior mean over ages (flat prior) of the features = logistic curves "
        "of age + jointly Student-t residuals; sd = sd_scale x posterior SD",
    }


# --- files ---------------------------------------------------------------------------


def _load_like(path: PathLike, ref: Any, what: str) -> np.ndarray:
    img = load_nifti(path)
    if img.shape[:3] != ref.shape[:3] or not np.allclose(img.affine, ref.affine, atol=1e-3):
        raise BrainAgeError(f"{path}: {what} grid differs from the volume's")
    return np.asarray(img.dataobj)


def measure_files(
    volume: PathLike,
    mask: PathLike,
    contrast: str,
    affine_xfm: PathLike,
    volumes_tsv: PathLike,
    manifest: PathLike,
    norms: norms_mod.Norms,
    *,
    dseg: PathLike | None = None,
    other_contrasts: Mapping[str, PathLike] | None = None,
    mask_method: str | None = None,
) -> dict[str, Any]:
    """What the estimates (and their calibration) need of one session, before any
    calibration: the atlas-similarity age, the volumes and their posterior age under
    `norms`, the contrast indexes (None without a usable `dseg`: `left_out` says why),
    and how the brain was masked (`mask_method` of `preprocess.infant`: "support" for a
    skull-stripped input, "network"; None when unknown). Arguments as
    `infant_brain_age_to_files`'. Raises BrainAgeError on unusable inputs."""
    other_contrasts = dict(other_contrasts or {})
    for c in (contrast, *other_contrasts):
        if c not in CONTRASTS:
            raise BrainAgeError(f"infant brain age works on T1w and T2w images, got {c!r}")
    vol = load_nifti(volume)
    image = np.nan_to_num(np.asarray(vol.dataobj, dtype=np.float32))
    if image.ndim != 3:
        raise BrainAgeError(f"{volume}: expected a 3D volume, got shape {image.shape}")
    brain = _load_like(mask, vol, "mask") > 0
    if brain.sum() < 100:
        raise BrainAgeError(f"{mask}: brain mask is empty or tiny")
    matrix = antsio.read_matrix_transform(affine_xfm)
    x = network_input(image, vol.affine, brain, matrix, INFANT_GRID)
    indexes, left_out = None, []
    if dseg is not None:
        labels = np.rint(_load_like(dseg, vol, "dseg")).astype(np.int16)
        images = {contrast: image} | {
            c: np.nan_to_num(_load_like(p, vol, f"{c} image").astype(np.float32))
            for c, p in other_contrasts.items()
            if c != contrast
        }
        indexes = subject_indexes(images, labels, vol.affine, matrix)
        if not any(np.isfinite(v) for v in indexes.values()):
            indexes, left_out = None, ["myelination (no tissue of the dseg could be measured)"]
    else:
        left_out = ["myelination (no dseg given)"]
    volumes_ml = norms_mod.read_volumes_tsv(volumes_tsv)
    return {
        "contrast": contrast,
        "atlas_similarity": similarity_age(x, infant_templates(manifest, contrast))
        | {"contrast": contrast},
        "volumes": volume_posterior(norms, volumes_ml),
        "volumes_ml": volumes_ml,
        "indexes": indexes,
        "left_out": left_out,
        "mask_method": mask_method,
    }


def _mask_method(mask_qc: PathLike | None) -> str | None:
    """The "method" of a brain mask's QC JSON (None without one)."""
    if mask_qc is None:
        return None
    try:
        method = json.loads(Path(mask_qc).read_text(encoding="utf-8")).get("method")
    except (OSError, ValueError, AttributeError) as exc:
        raise BrainAgeError(f"{mask_qc}: cannot read the brain mask's QC ({exc})") from None
    return None if method is None else str(method)


def infant_brain_age_to_files(
    volume: PathLike,
    mask: PathLike,
    contrast: str,
    affine_xfm: PathLike,
    volumes_tsv: PathLike,
    age_weeks: float,
    manifest: PathLike,
    out_anat: PathLike,
    prefix: str,
    norms_file: PathLike | None = None,
    *,
    dseg: PathLike | None = None,
    other_contrasts: Mapping[str, PathLike] | None = None,
    mask_qc: PathLike | None = None,
    calibration: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Estimate an infant's brain age, score its volumes; write both outputs.

    volume: the session's N4-corrected 3D image in `contrast` ("T1w" or "T2w"), the
        one registered and segmented; mask: its intracranial mask (same grid);
    affine_xfm: the registration's affine .mat to the infant atlas (atlas -> subject;
        only its rotation is used);
    volumes_tsv: the segmentation's volumes (`segment.volumes`);
    age_weeks: postmenstrual age (40 + months x 4.345 for a term-born infant);
    manifest: the infant atlas (templates of `contrast`);
    out_anat, prefix: where `<prefix>_desc-brainage.json` and `<prefix>_desc-zscores.tsv`
        (+ its sidecar) go;
    norms_file: infant norms (default: the shipped `models/brainage/norms_infant.json`);
    dseg: the segmentation (earlybrain's 12 labels, the volume's grid); enables the
        myelination estimate, which is left out (and said so) without it;
    other_contrasts: {contrast: image} of the session's other contrast resampled onto
        the volume's grid (e.g. the T2w of a T1w session): its indexes join the
        myelination estimate (T2w keeps changing until ~15 months, T1w until ~10);
    mask_qc: the brain mask's QC JSON (`preprocess.infant`): its method (the image's
        own support or the network) selects the calibrated SD; without it the wider;
    calibration: the calibration (default `shipped_calibration()`; for tests).
    Returns the JSON's content. Raises BrainAgeError on unusable inputs.
    """
    t0 = time.perf_counter()
    calibration = shipped_calibration() if calibration is None else calibration
    if not calibration:
        raise BrainAgeError(
            f"{CALIBRATION_FILE} is empty: run bench/infant_brainage.py --calibrate"
        )
    if not np.isfinite(float(age_weeks)):
        raise BrainAgeError(f"age {age_weeks!r} is not a number")
    norms_path = Path(norms_file) if norms_file else norms_mod.shipped_infant_norms_path()
    norms = norms_mod.Norms.from_json(norms_path)
    measured = measure_files(
        volume, mask, contrast, affine_xfm, volumes_tsv, manifest, norms,
        dseg=dseg, other_contrasts=other_contrasts, mask_method=_mask_method(mask_qc),
    )  # fmt: skip
    vols, left_out = measured["volumes_ml"], measured["left_out"]
    methods = estimates(measured, calibration)
    config_key = configuration_key(
        contrast, methods["myelination"]["contrasts"] if "myelination" in methods else ()
    )
    config = _need(calibration, "combined", config_key)
    primary = combined_estimate(measured, config_key, config)
    age, sd = float(primary["age_weeks"]), float(primary["sd_weeks"])
    chrono = float(age_weeks)

    # do the estimates agree: the largest and smallest, against the SD of their difference
    hi_k = max(methods, key=lambda k: methods[k]["age_weeks"])
    lo_k = min(methods, key=lambda k: methods[k]["age_weeks"])
    spread = float(methods[hi_k]["age_weeks"] - methods[lo_k]["age_weeks"])
    spread_limit = SPREAD_Z * float(np.hypot(methods[hi_k]["sd_weeks"], methods[lo_k]["sd_weeks"]))
    gap = age - chrono
    # healthy gaps at this age ~ N(bias, sd): the combination leans towards the middle
    # of the calibrated ages (a bounded range), and its cues fade after ~10-15 months
    gap_bias, gap_sd = _table(config["gap_bias"], chrono), _table(config["gap_sd"], chrono)
    gap_z, gap_centile = gap_scores(gap - gap_bias, gap_sd)
    cal_lo, cal_hi = calibration["age_range_weeks"]
    outside = not (cal_lo - AGE_MARGIN_WEEKS <= chrono <= cal_hi + AGE_MARGIN_WEEKS)
    rows = norms_mod.subject_zscores(norms, chrono, vols, Z_LIMIT)
    flags = volume_flags(rows)
    if abs(gap_z) > Z_LIMIT:
        flags.append(
            f"brain-age gap {gap:+.1f} weeks, z = {gap_z:+.2f} (|z| > {Z_LIMIT:g}; healthy "
            f"gaps at this age {gap_bias:+.1f} ± {gap_sd:.1f} weeks)"
        )
    if spread > spread_limit:
        flags.append(
            f"the age estimates disagree by {spread:.1f} weeks (> {spread_limit:.1f}, "
            f"{SPREAD_Z:g} SD of their difference): "
            + ", ".join(
                f"{k} {m['age_weeks']:.1f} ± {m['sd_weeks']:.1f}" for k, m in methods.items()
            )
        )
    if outside:
        flags.append(
            f"age {chrono:g} weeks PMA is outside the calibrated infant ages "
            f"{cal_lo:g}-{cal_hi:g} weeks: an extrapolation"
        )
    atlas_name = methods["atlas_similarity"]["atlas"]
    if calibration.get("atlas") and calibration["atlas"] != atlas_name:
        flags.append(
            f"atlas {atlas_name} is not the one the SDs were calibrated with "
            f"({calibration['atlas']}): the atlas-similarity SD may be off"
        )
    paths = brainage_paths(out_anat, prefix)
    write_zscores(
        paths["zscores"], rows, gap_z, gap_centile,
        f"gap {gap:+.2f} weeks (brain age {age:.2f}, chronological {chrono:g} PMA); "
        f"healthy gaps at this age ~ N({gap_bias:+.2f}, {gap_sd:.2f})",
    )  # fmt: skip

    def months(v: float) -> float | None:
        return _r(weeks_to_months(v))

    def method_entry(m: Mapping[str, Any]) -> dict[str, Any]:
        rest = {
            k: (_r(v) if isinstance(v, float) else v)
            for k, v in m.items()
            if k not in ("age_weeks", "sd_weeks")
        }
        return {"age_weeks": _r(m["age_weeks"]), "sd_weeks": _r(m["sd_weeks"]),
                "age_months": months(m["age_weeks"])} | rest  # fmt: skip

    method_json = {"combined": method_entry(primary)}
    method_json |= {k: method_entry(methods[k]) for k in METHOD_ORDER if k in methods}
    method_json["volumes"]["norms"] = norms.source
    if "myelination" in methods:
        method_json["myelination"]["indexes"] = {
            k: round(v, 4) for k, v in methods["myelination"]["indexes"].items()
        }
    used = [k for k in METHOD_ORDER if k in methods]
    result = {
        "chronological_age_weeks": chrono,
        "chronological_age_months": months(chrono),
        "age_kind": "PMA",
        "population": "infant",
        "contrast": contrast,
        "predicted_age_weeks": _r(age),
        "predicted_age_months": months(age),
        "uncertainty_sd_weeks": _r(sd),
        "interval_95_weeks": [_r(age - 1.96 * sd), _r(age + 1.96 * sd)],
        "brain_age_gap_weeks": _r(gap),
        "brain_age_gap_z": _r(gap_z),
        "brain_age_gap_centile": _r(gap_centile, 1),
        "primary_method": "combined",
        "primary_method_description": (
            f"posterior over age given the classical estimates ({', '.join(used)}) at "
            "once, calibrated on simulated infants processed end to end"
            + (f"; left out: {', '.join(left_out)}" if left_out else "")
        ),
        "methods": method_json,
        "method_spread_weeks": _r(spread),
        "out_of_training_range": outside,
        "flags": flags,
        "gap_sd_weeks": _r(gap_sd, 3),
        "gap_bias_weeks": _r(gap_bias, 3),
        "norms": {"file": str(norms_path), "source": norms.source},
        "calibration": {
            "source": calibration.get("source"),
            "atlas": calibration.get("atlas"),
            "configuration": config_key,
            "mask_method": measured["mask_method"],
        },
        "device": "cpu",
        "timings": {"network_s": None, "total_s": _r(time.perf_counter() - t0)},
    }
    # a JSON output records its own provenance (its sidecar would be itself)
    others = (other_contrasts or {}).values()
    sources = [volume, mask, affine_xfm, volumes_tsv, manifest, dseg, mask_qc, *others]
    result |= {
        "GeneratedBy": [{"Name": "earlybrain", "Version": __version__, "Step": "brainage"}],
        "Parameters": {
            "spread_limit_weeks": _r(spread_limit),
            "spread_limit_rule": f"{SPREAD_Z:g} x the SD of the difference between the "
            "largest and the smallest estimate",
            "z_limit": Z_LIMIT,
            "grid": {"shape": list(INFANT_GRID.shape), "voxel_mm": INFANT_GRID.voxel_mm},
        },
        "Sources": source_references(sources),
    }
    write_json_atomic(paths["brainage"], result)
    write_sidecar(
        paths["zscores"], step="brainage",
        parameters={"z_limit": Z_LIMIT, "norms": result["norms"]["file"]},
        sources=[str(volumes_tsv)],
        extra={"Description": "z-scores and centiles of the volumes under the infant "
               "normative growth curves, and of the brain-age gap"},
    )  # fmt: skip
    return result
