"""The simulated infant reference cohort and the infant norms the pipeline ships.

The infant twin of `reference`: phantoms of term-born infants (`make_phantom(months,
seed, kind="infant")`), ages uniform over 0-24 months (stratified: one per interval of
24/n months), subject seeds derived from a cohort seed under their own split codes, so
they never coincide with the subjects that networks are trained or validated on
(masking 101/202, segmentation 303/404/313/414, fetal reference 505, brain-age ensemble
701/702/703/710, simulated cohorts 1/2):

- 515: the reference cohort the infant norms are fitted on;
- 525: the calibration cohort of the infant brain age (`earlybrain.brainage.infant`):
  its myelination curves and the SDs of its estimates;
- 535: held-out subjects of `bench/infant_brainage.py`; 545: those of the tests.

Volumes are measured with the pipeline's own `volume_rows` on the phantom's true labels,
ages are postmenstrual ages in weeks (PMA = 40 + months x 4.345), and the norms are
`fit_norms` with age_kind "PMA": log volume normal with a mean cubic in age and an SD
log-linear in age. The cubic is adequate over 40-145 weeks: the simulator's brain volume
(log-linear between published points, Knickmeyer et al. 2008) departs from its best
cubic by at most 0.027 in log (at 3 months), a quarter of the between-subject SD of log
volume (0.09-0.14); on the 100 reference subjects a quartic or quintic mean lowers no
residual SD and has a worse AIC (total brain: -430 cubic, -428 quartic, -429 quintic),
and the residuals binned by 1.5-3 months show no pattern beyond sampling noise. The
fitted median total brain volume is 0.89-0.95 x the biometry curve it was sized from
(380 mL at term, 904 mL at 24 months, against 400 and 980 mL): the phantom's sulci,
fissures and tentorium take ~9 % of the ellipsoid the curve sizes. One loose end: the
ventricles, the noisiest structure (SD of log volume 0.28: a subject's ventricle factor
enters their volume cubed), get a cubic that turns down after 18 months, 12 % (0.45 SD)
below brain-like growth at 24 months, within its sampling error there; a higher degree
would only loosen it.

Why 100 subjects at 1.2 mm: a 1 mm phantom of a two-year-old takes ~11 s, so only ~50
fit in 10 minutes, and with 50 subjects the ends of the cubic were off by up to 16 %
(few subjects near the ends, each 10 % from the mean). At 1.2 mm the thin cortex and the
white matter differ by a few % from 1 mm (either way, subject by subject), well within
their between-subject SD.

Rebuild the shipped norms with

    python -c "from earlybrain.brainage.infant_reference import *; \\
        from earlybrain.brainage.norms import shipped_infant_norms_path; \\
        build_infant_reference_norms(shipped_infant_norms_path())"

(100 phantoms at 1.2 mm: about 10 minutes on one core), and the calibration constants
of `earlybrain.brainage.infant` with `python bench/infant_brainage.py --calibrate`.
"""

from __future__ import annotations

import os

import numpy as np

from earlybrain.anatomy.biometry import months_to_pma_weeks
from earlybrain.brainage.norms import Norms
from earlybrain.brainage.norms_fit import fit_norms
from earlybrain.segment.volumes import volume_rows
from earlybrain.simulate.phantom import Phantom, make_phantom
from earlybrain.training import derived_seeds

INFANT_REFERENCE_SPLIT_CODE = 515
INFANT_CALIBRATION_SPLIT_CODE = 525
INFANT_BENCH_SPLIT_CODE = 535
INFANT_TEST_SPLIT_CODE = 545
INFANT_REFERENCE_N = 100
INFANT_REFERENCE_MONTHS = (0.0, 24.0)
INFANT_REFERENCE_VOXEL_MM = 1.2


def infant_months(
    n: int,
    seed: int,
    code: int = INFANT_REFERENCE_SPLIT_CODE,
    months: tuple[float, float] = INFANT_REFERENCE_MONTHS,
) -> np.ndarray:
    """Postnatal ages (months) uniform over `months`, stratified: one age drawn
    uniformly in each of `n` equal intervals, so that the ends of the range, where a
    cubic growth curve is least determined, are never left empty by chance (with 50
    purely random ages the fitted total brain volume at term came out 16 % low)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, code]))
    return months[0] + (months[1] - months[0]) * (np.arange(n) + rng.uniform(0.0, 1.0, n)) / n


def infant_subjects(
    n: int,
    seed: int,
    code: int = INFANT_REFERENCE_SPLIT_CODE,
    months: tuple[float, float] = INFANT_REFERENCE_MONTHS,
) -> list[tuple[float, int]]:
    """(months, subject seed) of the `n` subjects of a split."""
    ages = infant_months(n, seed, code, months)
    return [(float(a), s) for a, s in zip(ages, derived_seeds(seed, code, n), strict=True)]


def phantom_volumes(phantom: Phantom) -> dict[str, float]:
    """{structure: total_ml} of a phantom's true labels, as the pipeline measures them."""
    return {
        str(r["structure"]): float(r["total_ml"])
        for r in volume_rows(phantom.labels, phantom.affine)
    }


def infant_reference_cohort(
    n: int = INFANT_REFERENCE_N,
    seed: int = 0,
    months: tuple[float, float] = INFANT_REFERENCE_MONTHS,
    voxel_mm: float = INFANT_REFERENCE_VOXEL_MM,
) -> list[tuple[float, dict[str, float]]]:
    """(PMA weeks, {structure: total_ml}) of `n` simulated healthy term-born infants."""
    cohort = []
    for m, subject_seed in infant_subjects(n, seed, INFANT_REFERENCE_SPLIT_CODE, months):
        phantom = make_phantom(m, subject_seed, kind="infant", voxel_mm=voxel_mm)
        cohort.append((float(months_to_pma_weeks(m)), phantom_volumes(phantom)))
    return cohort


def build_infant_reference_norms(
    out_json: str | os.PathLike[str],
    n: int = INFANT_REFERENCE_N,
    seed: int = 0,
    months: tuple[float, float] = INFANT_REFERENCE_MONTHS,
    voxel_mm: float = INFANT_REFERENCE_VOXEL_MM,
    cohort: list[tuple[float, dict[str, float]]] | None = None,
) -> Norms:
    """Fit PMA norms on the infant reference cohort and write them (atomically).

    `cohort`: the cohort already measured (`infant_reference_cohort` with the same
    arguments), e.g. to keep its volumes for checks."""
    if cohort is None:
        cohort = infant_reference_cohort(n, seed, months, voxel_mm)
    source = (
        f"earlybrain simulated infant reference cohort: {n} healthy term-born infant "
        f"phantoms, postnatal age uniform {months[0]:g}-{months[1]:g} months (PMA "
        f"{months_to_pma_weeks(months[0]):g}-{months_to_pma_weeks(months[1]):g} weeks), "
        f"seed {seed}, true labels at {voxel_mm:g} mm"
    )
    code = INFANT_REFERENCE_SPLIT_CODE
    metadata = {
        "reference_cohort": {
            "n": n,
            "seed": seed,
            "kind": "infant",
            "months": list(months),
            "pma_weeks": "40 + months * 4.345 (anatomy.biometry.months_to_pma_weeks)",
            "voxel_mm": voxel_mm,
            "split_code": code,
            "subject_seeds": f"np.random.SeedSequence([seed, {code}, i])",
            "ages": f"months uniform from np.random.SeedSequence([seed, {code}])",
            "volumes": "segment.volumes.volume_rows of "
            "make_phantom(months, subject_seed, kind='infant').labels",
            "rebuild": "earlybrain.brainage.infant_reference.build_infant_reference_norms",
        }
    }
    norms = fit_norms(cohort, source, age_kind="PMA", metadata=metadata)
    norms.to_json(out_json)
    norms.origin = str(out_json)
    return norms


# --- calibration of the infant brain age ---------------------------------------------

INFANT_CALIBRATION_N = 60
INFANT_CALIBRATION_VOXEL_MM = 1.0
# nodes (months) of the age-dependent SD tables, and the kernel that smooths them
CALIBRATION_NODES_MONTHS = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 15.0, 18.0, 21.0, 24.0)
CALIBRATION_KERNEL_MONTHS = 2.0


def brain_labels(phantom: Phantom) -> np.ndarray:
    """The phantom's 12 brain labels (0 elsewhere) and its intracranial mask."""
    return np.where(phantom.labels <= 12, phantom.labels, 0).astype(np.uint8)


def measure_subject(
    phantom: Phantom,
    manifest: str | os.PathLike[str],
    contrasts: tuple[str, ...] = ("T1w", "T2w"),
    rotation: np.ndarray | None = None,
) -> dict[str, object]:
    """What the calibration needs of one simulated infant (true labels, atlas
    orientation unless a `rotation` 4x4 atlas -> subject is given): volumes, and per
    contrast the atlas-similarity age and the contrast indexes."""
    from earlybrain.brainage.atlas_age import similarity_age
    from earlybrain.brainage.frame import network_input
    from earlybrain.brainage.infant import INFANT_GRID, infant_templates
    from earlybrain.brainage.myelination import contrast_indexes
    from earlybrain.simulate.contrast import intensity_image

    labels = brain_labels(phantom)
    mask = labels > 0
    matrix = np.eye(4) if rotation is None else rotation
    out: dict[str, object] = {
        "pma_weeks": float(phantom.age_weeks),
        "volumes": phantom_volumes(phantom),
        "atlas_age_weeks": {},
        "indexes": {},
    }
    for c in contrasts:
        image = intensity_image(phantom, c)
        x = network_input(image, phantom.affine, mask, matrix, INFANT_GRID)
        out["atlas_age_weeks"][c] = float(
            similarity_age(x, infant_templates(manifest, c))["age_weeks"]
        )
        out["indexes"][c] = contrast_indexes(image, labels, phantom.affine, matrix)
    return out


def calibration_measurements(
    manifest: str | os.PathLike[str],
    n: int = INFANT_CALIBRATION_N,
    seed: int = 0,
    voxel_mm: float = INFANT_CALIBRATION_VOXEL_MM,
    log: bool = False,
) -> list[dict[str, object]]:
    """`measure_subject` of the calibration cohort (split code 525)."""
    rows = []
    for i, (m, s) in enumerate(infant_subjects(n, seed, INFANT_CALIBRATION_SPLIT_CODE)):
        phantom = make_phantom(m, s, kind="infant", voxel_mm=voxel_mm)
        rows.append(measure_subject(phantom, manifest) | {"months": m, "seed": s})
        if log:
            print(f"calibration subject {i + 1}/{n}: {m:.1f} months", flush=True)
    return rows


def _kernel_rms(at: np.ndarray, values: np.ndarray, nodes: np.ndarray, width: float) -> list[float]:
    """Gaussian-kernel RMS of `values` (indexed by `at`) at each node."""
    out = []
    for node in nodes:
        w = np.exp(-0.5 * ((at - node) / width) ** 2)
        out.append(float(np.sqrt(np.sum(w * values**2) / np.sum(w))))
    return out


def _kernel_mean(
    at: np.ndarray, values: np.ndarray, nodes: np.ndarray, width: float
) -> list[float]:
    out = []
    for node in nodes:
        w = np.exp(-0.5 * ((at - node) / width) ** 2)
        out.append(float(np.sum(w * values) / np.sum(w)))
    return out


def fit_calibration(
    rows: list[dict[str, object]], norms: Norms, source: str, atlas: str
) -> dict[str, object]:
    """Calibration of `earlybrain.brainage.infant` from `calibration_measurements` rows
    and the norms the volume ages are taken under (the shipped infant norms).

    - myelination, per set of contrasts (T1w, T2w, both): logistic curves and residual
      covariance of the indexes;
    - every method's SD as a kernel-smoothed RMS error by its estimated age (myelination:
      of the leave-one-out estimates; atlas similarity per contrast; volumes under
      `infant.volume_posterior`). Tables, not the methods' own posterior SDs: those are
      right on average but wrong by age (the volume posterior is overconfident near 2
      years, the myelination one where a zone saturates), and weighting by them made the
      combination worse than myelination alone (calibration cohort, T2w: MAE 3.7 against
      3.0 weeks; with the tables 2.8);
    - per configuration (session contrast | myelination contrasts, "" for none): the SD
      scale of the precision-weighted combination (RMS of its error / naive SD), and the
      healthy brain-age gap's mean and SD by chronological age (kernel-smoothed), from
      the leave-one-out myelination estimates.
    """
    from earlybrain.brainage.infant import CONTRASTS, combine, configuration_key
    from earlybrain.brainage.myelination import MyelinationModel, index_names, myelination_key

    ages = np.array([r["pma_weeks"] for r in rows], dtype=float)
    nodes = np.array([months_to_pma_weeks(m) for m in CALIBRATION_NODES_MONTHS])
    width = CALIBRATION_KERNEL_MONTHS * (months_to_pma_weeks(1.0) - months_to_pma_weeks(0.0))

    def table(values: list[float]) -> dict[str, list[float]]:
        return {"ages_weeks": [round(float(a), 3) for a in nodes], "values": values}

    from earlybrain.brainage.infant import volume_posterior

    by_volume = [volume_posterior(norms, r["volumes"]) for r in rows]
    vol_age = np.array([v["age_weeks"] for v in by_volume], dtype=float)
    vol_sd = _kernel_rms(vol_age, vol_age - ages, nodes, width)
    estimates: dict[str, list[tuple[float, float]]] = {
        "volumes": list(zip(vol_age, np.interp(vol_age, nodes, vol_sd), strict=True))
    }
    mae: dict[str, float] = {"volumes": float(np.mean(np.abs(vol_age - ages)))}
    atlas_sd = {}
    for c in CONTRASTS:
        at = np.array([r["atlas_age_weeks"][c] for r in rows], dtype=float)
        sd = _kernel_rms(at, at - ages, nodes, width)
        atlas_sd[c] = table(sd)
        estimates[f"atlas_{c}"] = list(zip(at, np.interp(at, nodes, sd), strict=True))
        mae[f"atlas_similarity {c}"] = float(np.mean(np.abs(at - ages)))
    myelination = {}
    for group in [(c,) for c in CONTRASTS] + [CONTRASTS]:
        key = myelination_key(group)
        names = tuple(f"{c}:{t}" for c in sorted(group) for t in index_names())
        idx = np.array(
            [[r["indexes"][n.split(":")[0]][n.split(":")[1]] for n in names] for r in rows],
            dtype=float,
        )
        model = MyelinationModel.fit(key, ages, idx, names)
        loo = []
        for i in range(len(rows)):  # leave-one-out fits start from the full fit
            keep = np.arange(len(rows)) != i
            fit_i = MyelinationModel.fit(key, ages[keep], idx[keep], names, start=model)
            loo.append(fit_i.estimate(dict(zip(names, idx[i], strict=True))))
        my_age = np.array([e["age_weeks"] for e in loo])
        my_sd = _kernel_rms(my_age, my_age - ages, nodes, width)
        myelination[key] = MyelinationModel(
            key, names, model.params, model.cov, model.age_range
        ).to_dict() | {"sd": table(my_sd)}
        estimates[f"myelination_{key}"] = list(
            zip(my_age, np.interp(my_age, nodes, my_sd), strict=True)
        )
        mae[f"myelination {key} (leave-one-out)"] = float(np.mean(np.abs(my_age - ages)))
    combined = {}
    for c in CONTRASTS:
        for key in ("", c, myelination_key(CONTRASTS)):
            parts = ["volumes", f"atlas_{c}"] + ([f"myelination_{key}"] if key else [])
            comb = [combine({p: estimates[p][i] for p in parts}) for i in range(len(rows))]
            age = np.array([a for a, _, _ in comb])
            sd = np.array([s for _, s, _ in comb])
            gap = age - ages
            bias = _kernel_mean(ages, gap, nodes, width)
            resid = gap - np.interp(ages, nodes, bias)
            config = configuration_key(c, key.split("+") if key else ())
            combined[config] = {
                "sd_scale": float(np.sqrt(np.mean((gap / sd) ** 2))),
                "gap_bias": table(bias),
                "gap_sd": table(_kernel_rms(ages, resid, nodes, width)),
            }
            mae[f"combined {config}"] = float(np.mean(np.abs(gap)))
    return {
        "source": source,
        "atlas": atlas,
        "norms": norms.source,
        "n": len(rows),
        "age_range_weeks": [float(ages.min()), float(ages.max())],
        "volumes_sd": table(vol_sd),
        "atlas_similarity_sd": atlas_sd,
        "myelination": myelination,
        "combined": combined,
        "in_sample_mae_weeks": {k: round(v, 2) for k, v in mae.items()},
    }
