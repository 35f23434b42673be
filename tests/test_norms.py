"""Normative growth models: refit accuracy, z-scores, ventriculomegaly, volume age, files."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from earlybrain.brainage.norms import (
    STRUCTURES,
    Norms,
    NormsError,
    read_volumes_tsv,
    shipped_norms_path,
    subject_zscores,
    zscores_tsv,
)
from earlybrain.brainage.norms_fit import fit_norms, fit_norms_files
from earlybrain.brainage.reference import REFERENCE_SPLIT_CODE, reference_cohort
from earlybrain.brainage.volume_age import volume_age
from earlybrain.segment.volumes import COLUMNS, volume_rows, volumes_tsv
from earlybrain.simulate.phantom import make_phantom
from earlybrain.training import derived_seeds

HELD_OUT_SEEDS = (11, 12, 13)  # small integers: never among the reference cohort's seeds


def known_mean_log(age: np.ndarray) -> np.ndarray:
    return 3.0 + 0.15 * (age - 29.0) - 0.004 * (age - 29.0) ** 2


def known_sd_log(age: np.ndarray) -> np.ndarray:
    return 0.05 * np.exp(0.03 * (age - 29.0))


@pytest.fixture(scope="module")
def shipped() -> Norms:
    return Norms.from_json(shipped_norms_path())


@cache
def truth_volumes(age: float, seed: int, ventricle_factor: float = 1.0) -> dict[str, float]:
    """Volumes of a phantom's true labels, measured as the pipeline measures them."""
    p = make_phantom(age, seed, voxel_mm=1.0, ventricle_factor=ventricle_factor)
    return {str(r["structure"]): float(r["total_ml"]) for r in volume_rows(p.labels, p.affine)}


def test_refit_reproduces_known_growth(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ages = rng.uniform(21.0, 38.0, 300)
    log_v = known_mean_log(ages) + known_sd_log(ages) * rng.normal(size=ages.size)
    norms = fit_norms([(a, {"x": float(np.exp(v))}) for a, v in zip(ages, log_v, strict=True)], "t")
    grid = np.linspace(ages.min(), ages.max(), 60)
    mean_err = np.abs(norms.expected_ml("x", grid) / np.exp(known_mean_log(grid)) - 1)
    sd_err = np.abs(norms.sd_log("x", grid) / known_sd_log(grid) - 1)
    assert mean_err.max() < 0.03, mean_err.max()
    assert sd_err.max() < 0.20, sd_err.max()
    assert norms.age_range == (ages.min(), ages.max())
    assert norms.volume_age_calibration is None  # no tissue volumes to calibrate on
    # the file gives the same curves
    norms.to_json(tmp_path / "n.json")
    again = Norms.from_json(tmp_path / "n.json")
    assert np.allclose(again.expected_ml("x", grid), norms.expected_ml("x", grid), rtol=1e-12)
    assert np.allclose(again.sd_log("x", grid), norms.sd_log("x", grid), rtol=1e-12)


def test_refit_on_simulated_cohort_reproduces_its_binned_means(tmp_path: Path) -> None:
    cohort = reference_cohort(32, seed=3, voxel_mm=2.0)
    # through the refit rule: volumes TSVs as the pipeline writes them, then the JSON
    tsvs = []
    for i, (_, vols) in enumerate(cohort):
        rows = [dict.fromkeys(COLUMNS) | {"structure": s, "total_ml": v} for s, v in vols.items()]
        tsvs.append(tmp_path / f"sub-{i:02d}_desc-volumes.tsv")
        tsvs[-1].write_text(volumes_tsv(rows))
    out = tmp_path / "norms" / "norms.json"
    fit_norms_files(tsvs, [a for a, _ in cohort], out, "lab controls")
    norms = Norms.from_json(out)
    assert norms.n_subjects == 32 and list(norms.structures) == list(STRUCTURES)
    assert norms.source == "lab controls" and norms.volume_age_calibration is not None
    ages = np.array([a for a, _ in cohort])
    for s in STRUCTURES:
        resid = np.log([v[s] for _, v in cohort]) - norms.model(s).mean_log(ages)
        for b in np.array_split(np.argsort(ages), 4):  # 4 age bins of 8 subjects
            tol = 3.0 * float(np.mean(norms.sd_log(s, ages[b]))) / np.sqrt(len(b))
            assert abs(resid[b].mean()) < tol, (s, ages[b].mean(), resid[b].mean(), tol)
        # about as many subjects above the median curve as below it
        assert 8 <= np.sum(resid > 0) <= 24, s


def test_zscores_centiles_and_flags(shipped: Norms) -> None:
    age = 30.0
    mean, sd = shipped.expected_ml("WM", age), shipped.sd_log("WM", age)
    assert shipped.zscore("WM", age, mean) == pytest.approx(0.0, abs=1e-9)
    assert shipped.centile("WM", age, mean) == pytest.approx(50.0)
    big = mean * np.exp(2.5 * sd)
    vols = {
        "WM": big,
        "cortical_GM": shipped.expected_ml("cortical_GM", age),
        "ventricles": float("nan"),
        "amygdala": 1.0,
    }
    rows = {r["structure"]: r for r in subject_zscores(shipped, age, vols)}
    assert rows["WM"]["z"] == pytest.approx(2.5) and rows["WM"]["flag"] is True
    assert rows["WM"]["centile"] == pytest.approx(99.379, abs=1e-3)
    assert rows["cortical_GM"]["flag"] is False and rows["cortical_GM"]["note"] is None
    assert rows["ventricles"]["z"] is None and rows["ventricles"]["note"] == "no volume"
    assert "no norms" in rows["amygdala"]["note"]
    late = subject_zscores(shipped, 40.5, {"WM": 200.0})[0]
    assert "extrapolated" in late["note"]
    tsv = zscores_tsv(subject_zscores(shipped, age, vols)).splitlines()
    assert tsv[0] == "structure\tvolume_ml\texpected_ml\tz\tcentile\tflag\tnote"
    assert tsv[1].split("\t")[3:6] == ["2.5000", "99.3790", "true"]
    assert tsv[3].split("\t")[2:] == ["n/a", "n/a", "n/a", "false", "no volume"]
    curves = shipped.centile_curves("WM", [25.0, 30.0])
    assert np.allclose(curves[50], shipped.expected_ml("WM", np.array([25.0, 30.0])))
    assert np.all(curves[3] < curves[10]) and np.all(curves[90] < curves[97])


def test_ventriculomegaly_is_flagged(shipped: Norms) -> None:
    reference_seeds = derived_seeds(
        shipped.metadata["reference_cohort"]["seed"],
        REFERENCE_SPLIT_CODE,
        shipped.metadata["reference_cohort"]["n"],
    )
    assert not set(HELD_OUT_SEEDS) & set(reference_seeds)
    seed, age = HELD_OUT_SEEDS[0], 30.0
    normal = subject_zscores(shipped, age, truth_volumes(age, seed))
    enlarged = subject_zscores(shipped, age, truth_volumes(age, seed, ventricle_factor=1.6))
    z_normal = {r["structure"]: r["z"] for r in normal}
    z_enlarged = {r["structure"]: r for r in enlarged}
    assert abs(z_normal["ventricles"]) < 2.0, z_normal
    assert z_enlarged["ventricles"]["z"] > 2.0 and z_enlarged["ventricles"]["flag"] is True
    assert all(abs(z) < 2.5 for z in z_normal.values()), z_normal


def test_volume_age_of_held_out_phantoms(shipped: Norms) -> None:
    cal = shipped.volume_age_calibration
    assert cal is not None and cal["sd_scale"] > 1.0  # correlated structures: naive SD too small
    for age, seed in zip((30.0, 24.0, 35.0), HELD_OUT_SEEDS, strict=True):
        est = volume_age(shipped, truth_volumes(age, seed))
        error = est["age_weeks"] - age
        assert abs(error) < 2.0 and abs(error) < 3.0 * est["sd_weeks"], (age, est)
        assert 0.3 < est["sd_weeks"] < 5.0 and est["calibrated"] is True, est
    # another set of structures has no calibration: the naive SD, and said so
    est = volume_age(shipped, truth_volumes(30.0, HELD_OUT_SEEDS[0]), structures=["WM"])
    assert est["calibrated"] is False and est["sd_weeks"] == est["sd_naive_weeks"]


def test_shipped_norms_record_their_origin(shipped: Norms) -> None:
    assert list(shipped.structures) == list(STRUCTURES) and shipped.age_kind == "GA"
    assert shipped.n_subjects == shipped.metadata["reference_cohort"]["n"] >= 100
    assert "simulated reference cohort" in shipped.source and "earlybrain" in shipped.fitted_with


def test_bad_files_name_themselves(tmp_path: Path, shipped: Norms) -> None:
    good = shipped.to_dict()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(NormsError, match=r"bad\.json"):
        Norms.from_json(bad)
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({**good, "format": "someone-else-1"}))
    with pytest.raises(NormsError, match=r"foreign\.json.*not an earlybrain norms file"):
        Norms.from_json(foreign)
    broken = json.loads(json.dumps(good))
    del broken["structures"]["WM"]["mean_coef"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(NormsError, match=r"broken\.json"):
        Norms.from_json(tmp_path / "broken.json")
    partial = json.loads(json.dumps(good))
    del partial["structures"]["ventricles"]
    (tmp_path / "partial.json").write_text(json.dumps(partial))
    norms = Norms.from_json(tmp_path / "partial.json")
    with pytest.raises(NormsError, match=r"partial\.json.*no norms for 'ventricles'"):
        norms.zscore("ventricles", 30.0, 3.0)
    with pytest.raises(NormsError, match=r"missing\.json"):
        Norms.from_json(tmp_path / "missing.json")


def test_bad_volumes_and_cohorts(tmp_path: Path) -> None:
    no_total = tmp_path / "a_volumes.tsv"
    no_total.write_text("structure\tleft_ml\nWM\t1.0\n")
    with pytest.raises(NormsError, match=r"a_volumes\.tsv.*total_ml"):
        read_volumes_tsv(no_total)
    bad_number = tmp_path / "b_volumes.tsv"
    bad_number.write_text("structure\ttotal_ml\nWM\t1.0\nventricles\tlots\n")
    with pytest.raises(NormsError, match=r"b_volumes\.tsv: line 3.*'lots'"):
        read_volumes_tsv(bad_number)
    ok = tmp_path / "c_volumes.tsv"
    ok.write_text("structure\ttotal_ml\nWM\t1.5\nventricles\tn/a\n")
    assert read_volumes_tsv(ok)["WM"] == 1.5 and np.isnan(read_volumes_tsv(ok)["ventricles"])
    with pytest.raises(NormsError, match="2 volumes files but 1 ages"):
        fit_norms_files([ok, ok], [30.0], tmp_path / "n.json", "x")
    rows = [(20.0 + 0.1 * i, {"WM": 10.0 + i}) for i in range(20)]
    with pytest.raises(NormsError, match=r"WM: ages span 1\.9 weeks"):
        fit_norms(rows, "x")
    rows = [(20.0 + i, {"WM": 10.0 + i, "eCSF": np.nan if i > 5 else 1.0}) for i in range(20)]
    with pytest.raises(NormsError, match="eCSF: 6 subjects with a volume, need at least 12"):
        fit_norms(rows, "x")


def test_volume_flags_name_structures_as_the_report_tables_do() -> None:
    from earlybrain.brainage.pipeline import volume_flags

    rows = [
        {"structure": "deep_GM", "z": 2.514, "flag": True},
        {"structure": "WM", "z": 0.3, "flag": False},
        {"structure": "eCSF", "z": -4.05, "flag": True},
    ]
    assert volume_flags(rows) == [
        "deep grey matter volume z = +2.51 (|z| > 2)",
        "external CSF volume z = -4.05 (|z| > 2)",
    ]
