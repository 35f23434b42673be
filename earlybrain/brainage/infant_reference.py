"""The simulated infant reference cohort and the infant norms the pipeline ships.

The infant twin of `reference`: phantoms of term-born infants (`make_phantom(months,
seed, kind="infant")`), ages uniform over 0-24 months (stratified: one per interval of
24/n months), subject seeds derived from a cohort seed under their own split codes, so
they never coincide with the subjects that networks are trained or validated on
(masking 101/202, segmentation 303/404/313/414, fetal reference 505, brain-age ensemble
701/702/703/710, simulated cohorts 1/2):

- 515: the reference cohort the infant norms are fitted on;
- 525: the calibration cohort of the infant brain age (`earlybrain.brainage.infant`),
  processed end to end (`infant_end_to_end`): its curves, bias corrections and SDs;
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

(100 phantoms at 1.2 mm: about 10 minutes on one core), and the calibration of
`earlybrain.brainage.infant` with `python bench/infant_brainage.py --calibrate` (or
`--refit` from the shipped measurements after the norms changed).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from earlybrain.anatomy.biometry import months_to_pma_weeks
from earlybrain.brainage.age_curves import LogisticAgeModel
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


def brain_labels(phantom: Phantom) -> np.ndarray:
    """The phantom's 12 brain labels (0 elsewhere): its brain as a segmentation gives it."""
    return np.where(phantom.labels <= 12, phantom.labels, 0).astype(np.uint8)


# --- calibration of the infant brain age ---------------------------------------------

INFANT_CALIBRATION_N = 60
# the simulated sessions' voxel size: the coarse end of what infant scans have (0.5-1.5 mm)
INFANT_CALIBRATION_VOXEL_MM = 1.5
# order of the calibration subjects: a fixed permutation, so that a run stopped early
# still spans the ages
CALIBRATION_ORDER_SEED = 7
# nodes (months) of the age-dependent SD tables, and the kernel that smooths them
CALIBRATION_NODES_MONTHS = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 15.0, 18.0, 21.0, 24.0)
CALIBRATION_KERNEL_MONTHS = 2.0
# the combination: Student t residuals with these degrees of freedom, and its SD scale
# smoothed over this many months (4-fold cross-validation on the calibration sessions:
# 95 % coverage 0.97, 0.97, 1.00, 0.93 for stripped T1w, stripped T2w, whole T1w, whole
# T2w, against 0.90, 0.97, 1.00, 0.90 with normal residuals and a 2-month kernel)
COMBINATION_DOF = 8.0
COMBINATION_SCALE_KERNEL_MONTHS = 4.0
MEASUREMENTS_FILE = "calibration_infant_measurements.json"  # beside the calibration


def calibration_sessions(
    n: int = INFANT_CALIBRATION_N, seed: int = 0
) -> list[tuple[float, int, str, str]]:
    """(months, subject seed, contrast, kind) of the calibration sessions (split code
    525): every subject once in each contrast, as a session with that contrast only.
    Kinds alternate along the subjects' order, whole head and skull-stripped, and a
    subject's two contrasts get different kinds, so each contrast x kind has a quarter
    of the sessions, spread over the ages."""
    from earlybrain.brainage.infant_end_to_end import KINDS

    subjects = infant_subjects(n, seed, INFANT_CALIBRATION_SPLIT_CODE)
    order = np.random.default_rng(CALIBRATION_ORDER_SEED).permutation(len(subjects))
    return [
        (*subjects[i], contrast, KINDS[(k + j) % 2])
        for k, i in enumerate(order)
        for j, contrast in enumerate(("T2w", "T1w"))
    ]


def calibration_measurements(
    n: int = INFANT_CALIBRATION_N,
    seed: int = 0,
    voxel_mm: float = INFANT_CALIBRATION_VOXEL_MM,
    threads: int = 2,
    done: list[dict[str, object]] | None = None,
    on_record: Callable[[list[dict[str, object]]], None] | None = None,
    log: bool = False,
) -> list[dict[str, object]]:
    """Each calibration session run end to end (`infant_end_to_end.run_session`) and
    measured (`session_measurement`, under the shipped infant norms): about 40 s a
    session on two cores, 80 minutes for the 120. `done`: records of an interrupted run,
    kept and not run again; `on_record(records)` after each session (to save them). A
    session whose steps fail is recorded with its error."""
    import tempfile

    from earlybrain.brainage.infant_end_to_end import (
        run_session,
        session_measurement,
        shipped_infant_model,
    )
    from earlybrain.brainage.norms import shipped_infant_norms_path

    norms = Norms.from_json(shipped_infant_norms_path())
    model = shipped_infant_model()
    records = list(done or [])
    have = {(r["seed"], r["contrast"]) for r in records}
    for months, s, contrast, kind in calibration_sessions(n, seed):
        if (s, contrast) in have:
            continue
        record: dict[str, object] = {
            "months": round(months, 4), "seed": s, "contrast": contrast,
            "pma_weeks": round(float(months_to_pma_weeks(months)), 4), "kind": kind,
        }  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="infant-calibration-") as tmp:
            try:
                session = run_session(
                    months, s, contrast, kind, voxel_mm, Path(tmp), model, threads
                )
                record |= session_measurement(session, norms)
            except Exception as exc:  # recorded: a calibration run goes on
                record["error"] = f"{type(exc).__name__}: {exc}"
        records.append(record)
        if on_record is not None:
            on_record(records)
        if log:
            print(f"calibration session {len(records)}: {months:.1f} months {contrast} {kind}",
                  flush=True)  # fmt: skip
    return records


def _kernel(at: np.ndarray, nodes: np.ndarray, width: float) -> np.ndarray:
    """Gaussian kernel weights, (len(nodes), len(at))."""
    return np.exp(-0.5 * ((np.asarray(nodes)[:, None] - np.asarray(at)[None, :]) / width) ** 2)


def _kernel_mean(at: np.ndarray, values: np.ndarray, nodes: np.ndarray, width: float) -> np.ndarray:
    """Gaussian-kernel mean of `values` (indexed by `at`) at each node."""
    w = _kernel(at, nodes, width)
    return (w @ values) / w.sum(axis=1)


def _kernel_rms(at: np.ndarray, values: np.ndarray, nodes: np.ndarray, width: float) -> np.ndarray:
    """Gaussian-kernel RMS of `values` (indexed by `at`) at each node."""
    return np.sqrt(_kernel_mean(at, np.square(values), nodes, width))


def _leave_one_out(at: np.ndarray, values: np.ndarray, width: float) -> np.ndarray:
    """Kernel mean of `values` at each point of `at` from the other points."""
    w = _kernel(at, at, width)
    np.fill_diagonal(w, 0.0)
    return (w @ values) / np.maximum(w.sum(axis=1), 1e-12)


def method_calibration(
    est: np.ndarray, truth: np.ndarray, nodes: np.ndarray, width: float
) -> tuple[dict[str, list[float]], np.ndarray]:
    """One method's calibration by its estimated age: the mean error to add to an
    estimate (`bias`) and the RMS error left (`sd`), kernel-smoothed tables at `nodes`;
    and each calibration subject's estimate corrected from the others' errors
    (leave-one-out, for an honest MAE).

    Why correct: an estimate is drawn towards the middle of 0-24 months at both ends
    (a posterior cut at term; T1w contrast that stops changing after a year), so the
    true ages behind an estimate of 20 months run from 20 to 24 and beyond; the mean
    true age given the estimate, as in the calibration cohort (ages uniform over 0-24
    months), removes that bias, and what is left is the SD."""
    err = truth - est
    bias = _kernel_mean(est, err, nodes, width)
    resid = err - np.interp(est, nodes, bias)
    sd = _kernel_rms(est, resid, nodes, width)
    table = {
        "ages_weeks": [round(float(a), 3) for a in nodes],
        "bias": [float(v) for v in bias],
        "sd": [float(v) for v in sd],
    }
    return table, est + _leave_one_out(est, err, width)


def _subjects_with(
    records: list[dict[str, object]], contrasts: tuple[str, ...]
) -> list[tuple[float, dict[str, object]]]:
    """(PMA weeks, {contrast: record}) of the subjects measured in every one of `contrasts`."""
    by_subject: dict[int, dict[str, dict[str, object]]] = {}
    ages: dict[int, float] = {}
    for r in records:
        if "error" not in r:
            by_subject.setdefault(int(r["seed"]), {})[str(r["contrast"])] = r
            ages[int(r["seed"])] = float(r["pma_weeks"])
    return [
        (ages[s], {c: sessions[c] for c in contrasts})
        for s, sessions in sorted(by_subject.items())
        if all(c in sessions for c in contrasts)
    ]


def _fit_leave_one_out(
    key: str, ages: np.ndarray, x: np.ndarray, names: tuple[str, ...], dof: float | None
) -> tuple[LogisticAgeModel, np.ndarray, np.ndarray]:
    """A `LogisticAgeModel` of features `x` on all subjects, and each subject's estimate
    (age, posterior SD) by the model fitted without it (started from the full fit)."""
    model = LogisticAgeModel.fit(key, ages, x, names, dof=dof)
    age, sd = np.empty(len(ages)), np.empty(len(ages))
    for i in range(len(ages)):
        keep = np.arange(len(ages)) != i
        fit_i = LogisticAgeModel.fit(key, ages[keep], x[keep], names, start=model, dof=dof)
        est = fit_i.estimate(dict(zip(names, x[i], strict=True)))
        age[i], sd[i] = est["age_weeks"], est["sd_posterior_weeks"]
    return model, age, sd


def fit_calibration(
    records: list[dict[str, object]], norms: Norms, source: str, atlas: str
) -> dict[str, object]:
    """Calibration of `earlybrain.brainage.infant` from `calibration_measurements` records
    (sessions run end to end) and the norms the volume ages are taken under (the shipped
    infant norms).

    - myelination, per set of contrasts (T1w, T2w, both): logistic curves and residual
      covariance of the indexes the workflow measures (the network's labels); for both
      contrasts, each contrast's indexes come from the subject's session in it;
    - every method, per session contrast, a bias correction and an SD by its estimated
      age (`method_calibration`; myelination: of leave-one-out estimates). Tables, not
      the methods' own posterior SDs: those are right on average but wrong by age (the
      volume posterior is overconfident near 2 years, the myelination one where a zone
      saturates);
    - per configuration (session contrast | myelination contrasts, "" for none): the
      combination, a `LogisticAgeModel` of the atlas and volume ages with the indexes
      (Student t residuals, `COMBINATION_DOF`); its SD scale by its estimate and the
      brain mask's method (kernel RMS of the leave-one-out errors over posterior SDs:
      the posterior of one covariance for all ages is too sharp where errors are
      larger); and the healthy brain-age gap's mean and SD by chronological age.
    """
    from earlybrain.brainage.infant import (
        CONTRASTS,
        combination_features,
        configuration_key,
        volume_posterior,
    )
    from earlybrain.brainage.myelination import index_names, myelination_key

    nodes = np.array([months_to_pma_weeks(m) for m in CALIBRATION_NODES_MONTHS])
    width = CALIBRATION_KERNEL_MONTHS * (months_to_pma_weeks(1.0) - months_to_pma_weeks(0.0))
    scale_width = width * COMBINATION_SCALE_KERNEL_MONTHS / CALIBRATION_KERNEL_MONTHS
    truth = {int(r["seed"]): float(r["pma_weeks"]) for r in records}
    # each session's volume age, used by the volume method and by every combination
    volume_age = {
        (int(r["seed"]), str(r["contrast"])): volume_posterior(norms, r["volumes_ml"])["age_weeks"]
        for r in records
        if "error" not in r
    }
    mae: dict[str, float] = {}

    def table(values: np.ndarray) -> dict[str, list[float]]:
        return {
            "ages_weeks": [round(float(a), 3) for a in nodes],
            "values": list(map(float, values)),
        }

    def calibrate(name: str, seeds: list[int], est: np.ndarray) -> dict[str, list[float]]:
        ages = np.array([truth[s] for s in seeds])
        tables, age = method_calibration(est, ages, nodes, width)
        mae[name] = float(np.mean(np.abs(age - ages)))
        return tables

    volumes, atlas_similarity = {}, {}
    for c in CONTRASTS:
        sessions = [s[c] for _, s in _subjects_with(records, (c,))]
        seeds = [int(s["seed"]) for s in sessions]
        vol = [volume_age[int(s["seed"]), c] for s in sessions]
        volumes[c] = calibrate(f"volumes {c}", seeds, np.array(vol))
        at = np.array([s["atlas_age_weeks"] for s in sessions], dtype=float)
        atlas_similarity[c] = calibrate(f"atlas_similarity {c}", seeds, at)

    def features(sessions: dict[str, dict], contrast: str, key: str) -> dict[str, float]:
        """The session's measured ages and the indexes of `key`'s contrasts."""
        indexes = {n: v for k in key.split("+") if k for n, v in sessions[k]["indexes"].items()}
        return combination_features(
            {
                "atlas_similarity": {"age_weeks": sessions[contrast]["atlas_age_weeks"]},
                "volumes": {"age_weeks": volume_age[int(sessions[contrast]["seed"]), contrast]},
                "indexes": {n: np.nan if v is None else v for n, v in indexes.items()},
            }
        )

    def fit(
        model_key: str, key: str, contrast: str, names: tuple[str, ...], dof: float | None = None
    ):
        """`_fit_leave_one_out` on the subjects with sessions in `contrast` and `key`'s."""
        group = tuple(sorted({contrast, *key.split("+")} - {""}))
        subjects = _subjects_with(records, group)
        ages = np.array([a for a, _ in subjects])
        rows = [features(s, contrast, key) for _, s in subjects]
        x = np.array([[r.get(n, np.nan) for n in names] for r in rows], dtype=float)
        model, age, sd = _fit_leave_one_out(model_key, ages, x, names, dof)
        masks = [str(s[contrast]["mask"]) for _, s in subjects]
        return model, [int(s[contrast]["seed"]) for _, s in subjects], ages, age, sd, masks

    myelination = {}
    for group in [(c,) for c in CONTRASTS] + [CONTRASTS]:
        key = myelination_key(group)
        names = tuple(f"{c}:{t}" for c in group for t in index_names())
        model, seeds, _, loo, _, _ = fit(key, key, group[0], names)
        myelination[key] = model.to_dict() | calibrate(f"myelination {key}", seeds, loo)
    combined = {}
    for c in CONTRASTS:
        for key in ("", c, myelination_key(CONTRASTS)):
            config = configuration_key(c, key.split("+") if key else ())
            names = ("atlas_similarity", "volumes")
            names += tuple(f"{k}:{t}" for k in key.split("+") if k for t in index_names())
            model, _, ages, age, sd, masks = fit(config, key, c, names, COMBINATION_DOF)
            gap = age - ages
            bias = _kernel_mean(ages, gap, nodes, width)
            resid = gap - np.interp(ages, nodes, bias)
            combined[config] = {
                "model": model.to_dict(),
                "sd_scale": {
                    m: table(_kernel_rms(age[sel], (gap / sd)[sel], nodes, scale_width))
                    for m in sorted(set(masks))
                    for sel in [np.array(masks) == m]
                },
                "gap_bias": table(bias),
                "gap_sd": table(_kernel_rms(ages, resid, nodes, width)),
            }
            mae[f"combined {config}"] = float(np.mean(np.abs(gap)))
    measured = [r for r in records if "error" not in r]
    ages = np.array([float(r["pma_weeks"]) for r in measured])
    return {
        "source": source,
        "atlas": atlas,
        "norms": norms.source,
        "n": len({r["seed"] for r in measured}),
        "sessions": len(measured),
        "failed_sessions": len(records) - len(measured),
        "age_range_weeks": [float(ages.min()), float(ages.max())],
        "volumes": volumes,
        "atlas_similarity": atlas_similarity,
        "myelination": myelination,
        "combined": combined,
        "leave_one_out_mae_weeks": {k: round(v, 2) for k, v in mae.items()},
    }
