"""Brain age in the reports: the normative chart, the subject report, salvage, the cohort.

The brain-age step's outputs are written here in its formats (the z-score TSV by the
norms module's own writer) from made-up normative curves whose medians at 27 weeks are
the volumes of `test_report.write_segmentation`, except the ventricles: those are twice
the median, so they are flagged (z = ln 2 / 0.1 = +6.93).
"""

from __future__ import annotations

import base64
import csv
import json
import math
import re
import shutil
import struct
from pathlib import Path

import pytest
from synth_fixtures import make_bids
from test_report import (
    IMG_RE,
    MIDLINE,
    SIDES,
    process_sessions,
    salvage_failed_job,
    write_segmentation,
)

from earlybrain.brainage.norms import (
    STRUCTURES,
    Norms,
    StructureNorm,
    shipped_infant_norms_path,
    subject_zscores,
    zscores_tsv,
)
from earlybrain.io.bids import discover_sessions
from earlybrain.io.validate import validate_session, write_validation
from earlybrain.preprocess.n4 import PreprocessParams, run_n4
from earlybrain.report.brainage import CHART_CAPTION, INFANT_CHART_CAPTION, brainage_figure_file
from earlybrain.report.cohort import COLUMNS, write_cohort
from earlybrain.report.html import esc
from earlybrain.report.outputs import SessionOutputs
from earlybrain.report.references import REFERENCES
from earlybrain.report.salvage import salvaged_stages
from earlybrain.report.subject import build_subject_report

AGE = 27.0  # sub-f01's GA in test_report's sessions
SD_LOG = 0.1
GROWTH = 0.1  # log volume per week
VOLUMES = {s: sum(SIDES[s]) if s in SIDES else MIDLINE[s] for s in STRUCTURES}
MEDIANS = VOLUMES | {"ventricles": VOLUMES["ventricles"] / 2}
NORMS_SOURCE = "made-up growth curves for the report tests"
ENSEMBLE_CARD = {
    "members": 3,
    "training_range_weeks": [21.0, 38.0],
    "training_data": {"simulated": {"n": 120}, "cohort": {"n": 0}},
    "validation": {"n": 24, "mae_weeks": 0.71, "coverage_95": 0.958},
    "config": {"seed": 5},
    "trained": "2025-01-02",
}


def make_norms(path: Path) -> Norms:
    """Norms over 22-38 weeks GA through the norms module's API, written to `path`."""
    centre, scale = 30.0, 8.0  # t = (age - 30) / 8
    structures = {
        s: StructureNorm(
            n=40,
            age_range=(22.0, 38.0),
            centre=centre,
            scale=scale,
            mean_coef=(math.log(v) + GROWTH * (centre - AGE), GROWTH * scale, 0.0, 0.0),
            log_sd_coef=(math.log(SD_LOG), 0.0),
        )
        for s, v in MEDIANS.items()
    }
    norms = Norms(structures, NORMS_SOURCE, 40, (22.0, 38.0), "GA", {"earlybrain": "test"})
    norms.to_json(path)
    norms.origin = str(path)
    return norms


def brainage_result(
    models: Path, norms_file: Path, age: float = AGE, gap: float = 0.8, flags=None
) -> dict:
    """A brain-age JSON in the format of earlybrain.brainage.pipeline."""
    pred, sd = age + gap, 0.9
    return {
        "chronological_age_weeks": age,
        "age_kind": "GA",
        "predicted_age_weeks": pred,
        "uncertainty_sd_weeks": sd,
        "interval_95_weeks": [round(pred - 1.96 * sd, 2), round(pred + 1.96 * sd, 2)],
        "brain_age_gap_weeks": gap,
        "brain_age_gap_z": round(gap / 1.1, 2),
        "brain_age_gap_centile": 76.1,
        "primary_method": "deep_ensemble",
        "methods": {
            "deep_ensemble": {
                "age_weeks": pred,
                "sd_weeks": sd,
                "aleatoric_sd_weeks": 0.7,
                "epistemic_sd_weeks": 0.5,
                "members": [
                    {"age_weeks": pred - 0.3, "sd_weeks": 0.7},
                    {"age_weeks": pred + 0.4, "sd_weeks": 0.8},
                    {"age_weeks": pred - 0.1, "sd_weeks": 0.6},
                ],
                "training_range_weeks": [21.0, 38.0],
                "weights": str(models / "ensemble_weights.pt"),
                "weights_sha256": "ab12cd34ef56" + "0" * 52,
                "validation_mae_weeks": 0.71,
            },
            "atlas_similarity": {
                "age_weeks": age + 0.4,
                "best_template_weeks": round(age),
                "at_range_edge": False,
                "ncc_by_template": {"26": 0.8, "27": 0.85, "28": 0.82},
                "atlas": "earlybrain-fetal",
            },
            "volumes": {"age_weeks": age - 0.4, "sd_weeks": 1.4, "norms": NORMS_SOURCE},
        },
        "method_spread_weeks": 1.2,
        "out_of_training_range": False,
        "flags": ["ventricles volume z = +6.93 (|z| > 2)"] if flags is None else flags,
        "gap_sd_weeks": 1.1,
        "norms": {"file": str(norms_file), "source": NORMS_SOURCE},
        "device": "cpu",
        "timings": {"network_s": 0.8, "total_s": 6.1},
        "GeneratedBy": [{"Name": "earlybrain", "Version": "0.x", "Step": "brainage"}],
        "Parameters": {"spread_limit_weeks": 2.0, "z_limit": 2.0},
        "Sources": ["volume", "mask"],
    }


def write_brainage(root: Path, flags=None) -> dict:
    """Norms, ensemble card, brain-age JSON, z-score TSV and chart of sub-f01 under `root`;
    returns the report keyword arguments, the norms and the chart's PNG."""
    models = root / "models" / "brainage"
    models.mkdir(parents=True, exist_ok=True)
    (models / "ensemble_weights.pt").write_bytes(b"not really weights")
    (models / "card.json").write_text(json.dumps(ENSEMBLE_CARD))
    norms = make_norms(models / "norms.json")
    result = brainage_result(models, models / "norms.json", flags=flags)
    anat = root / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    brainage = anat / "sub-f01_rec-svr_desc-brainage.json"
    brainage.write_text(json.dumps(result))
    rows = subject_zscores(norms, AGE, VOLUMES)
    gap = {"structure": "brain_age_gap_weeks", "volume_ml": None, "expected_ml": None}
    rows.append(gap | {"z": 0.73, "centile": 76.1, "flag": False, "note": None})
    zscores = anat / "sub-f01_rec-svr_desc-zscores.tsv"
    zscores.write_text(zscores_tsv(rows))
    figure = root / "figures" / "sub-f01_rec-svr_desc-brainage_chart.png"
    brainage_figure_file(brainage, zscores, figure)
    kwargs = {"brainage": brainage, "zscores": zscores, "brainage_figure": figure}
    return {"kwargs": kwargs, "norms": norms, "png": figure.read_bytes()}


def png_size(png: bytes) -> tuple[int, int]:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return struct.unpack(">II", png[16:24])


def subject_with_brainage(sessions: dict, root: Path, flags=None) -> dict:
    """sub-f01's report with segmentation and brain age; the written files and results."""
    seg = write_segmentation(root, agreement=0.8)
    age = write_brainage(root, flags)
    html, stages = root / "sub-f01.html", root / "stages" / "sub-f01_stages.json"
    outputs = SessionOutputs(*sessions["sub-f01 inputs"], **seg["kwargs"], **age["kwargs"])
    build_subject_report(outputs, html, stages)
    st = json.loads(stages.read_text())
    return {"html": html, "text": html.read_text(), "stages": stages, "st": st} | age


@pytest.fixture(scope="module")
def sessions(tmp_path_factory) -> dict:
    return process_sessions(tmp_path_factory.mktemp("brainage_report"))


def test_normative_chart_file(sessions, tmp_path: Path) -> None:
    """A PNG of 9 structure panels + brain age; the norms default to the JSON's file."""
    age = write_brainage(tmp_path)
    width, height = png_size(age["png"])
    assert width > 800 and height > 300, (width, height)
    again = tmp_path / "again.png"
    brainage_figure_file(
        age["kwargs"]["brainage"], age["kwargs"]["zscores"], again, tmp_path / "models" /
        "brainage" / "norms.json"
    )  # fmt: skip
    assert again.read_bytes() == age["png"]  # deterministic, same norms either way
    assert not list(again.parent.glob(".again.png*"))  # written atomically, nothing left
    broken = tmp_path / "no_norms.json"
    broken.write_text(json.dumps({"chronological_age_weeks": 27.0}))
    with pytest.raises(ValueError, match="names no norms file"):
        brainage_figure_file(broken, age["kwargs"]["zscores"], tmp_path / "x.png")


def test_subject_report_shows_brain_age(sessions, tmp_path: Path) -> None:
    r = subject_with_brainage(sessions, tmp_path)
    text, st = r["text"], r["st"]
    row = {s["key"]: s for s in st["stages"]}["brain_age"]
    assert row["status"] == "flagged", row
    assert "27.8 ± 0.9 weeks GA (95 % interval 26.0-29.6)" in row["detail"]
    assert "gap +0.8 weeks (z +0.73" in row["detail"] and "6.1 s on cpu" in row["detail"]
    assert "check: ventricles volume z = +6.93" in row["detail"]
    assert st["status"] == "ok"  # flagged for a person to check, not failed
    # the summary at the top
    top = text.split("<h2>", 1)[0]
    assert "<td>brain age</td><td>27.8 ± 0.9 weeks GA" in top

    section = text.split("<h2>Brain age</h2>", 1)[1].split("<h2", 1)[0]
    (png,) = IMG_RE.findall(section)
    assert base64.b64decode(png) == r["png"]
    assert f"<figcaption>{esc(CHART_CAPTION)}</figcaption>" in section
    assert "<li>Check: ventricles volume z = +6.93 (|z| &gt; 2)</li>" in section
    for cells in (
        ["deep ensemble (primary)", "27.8", "0.9"],
        [
            "atlas similarity",
            "27.4",
            "n/a",
            "most similar template: 27.0 weeks of earlybrain-fetal",
        ],
        ["regional volumes", "26.6", "1.4"],
        ["spread (largest - smallest)", "1.2", ""],
    ):
        assert "<tr><td>" + "</td><td>".join(cells) + "</td>" in section, cells
    assert "3 members (27.5, 28.2, 27.7 weeks)" in section
    assert "validation MAE 0.71 weeks" in section
    # z-scores: the flagged row is coloured, the others not; volumes as measured
    assert '<tr class="warn"><td>ventricles</td><td>5.00</td><td>2.50</td><td>+6.93</td>' in section
    assert "<tr><td>white matter</td><td>98.00</td><td>98.00</td><td>+0.00</td>" in section
    assert "<tr><td>brain-age gap</td><td>n/a</td><td>n/a</td><td>+0.73</td>" in section
    assert section.count('<tr class="warn">') == 1

    methods = text.split('<h2 id="methods">Methods</h2>', 1)[1]
    for used in (
        "deep ensemble (Lakshminarayanan et al. 2017) of 3 3D convolutional networks",
        "here SD 0.9 weeks (aleatoric 0.7, epistemic 0.5), on the CPU",
        "(ensemble_weights.pt, SHA-256 ab12cd34ef56) were trained 2025-01-02 with seed 5 on "
        "120 simulated volumes aged 21-38 weeks; on 24 simulated validation subjects their "
        "mean absolute error was 0.71 weeks and their 95 % intervals held the true age in 96%",
        "template of atlas earlybrain-fetal",
        "more than 2 weeks apart were flagged (here 1.2 weeks)",
        "healthy validation subjects (1.1 weeks)",
        f"fitted on 40 subjects aged 22-38 weeks GA ({NORMS_SOURCE})",
        "mean polynomial of degree 3 in age",
        "Values with |z| > 2 were flagged.",
        REFERENCES["deep_ensemble"][1],
        "scipy ",
    ):
        assert esc(used) in methods, used

    # what the cohort reads
    assert st["brain_age"] == {
        "predicted_weeks": 27.8,
        "sd_weeks": 0.9,
        "interval_95_weeks": [26.04, 29.56],
        "gap_weeks": 0.8,
        "gap_z": 0.73,
        "gap_sd_weeks": 1.1,
        "age_kind": "GA",
        "methods": {"deep_ensemble": 27.8, "atlas_similarity": 27.4, "volumes": 26.6},
        "flags": ["ventricles volume z = +6.93 (|z| > 2)"],
        "z_limit": 2.0,
    }
    assert set(st["zscores"]) == set(STRUCTURES)
    assert st["zscores"]["ventricles"] == pytest.approx(math.log(2) / SD_LOG, abs=1e-3)


def test_brain_age_without_flags_is_done(sessions, tmp_path: Path) -> None:
    r = subject_with_brainage(sessions, tmp_path, flags=[])
    row = {s["key"]: s for s in r["st"]["stages"]}["brain_age"]
    assert row["status"] == "done" and "check" not in row["detail"]
    assert "No flags: every volume and the brain-age gap are within the limits." in r["text"]


def test_a_failed_brainage_job_says_what_failed(sessions, tmp_path: Path) -> None:
    """The brainage job failed: its outputs are missing; the salvaged report says so."""
    seg = write_segmentation(tmp_path, agreement=0.8)["kwargs"]
    age = write_brainage(tmp_path)["kwargs"]
    error = "BrainAgeError: weights not found: models/x.pt"
    session = salvage_failed_job(tmp_path, sessions, "brainage", error, dict(age), seg | age)
    tsv = session["tsv"]
    st = json.loads(salvaged_stages(session["stages"]).read_text())
    assert st["status"] == "failed" and st["failed_stage"] == "Brain age estimation"
    row = {s["key"]: s for s in st["stages"]}["brain_age"]
    assert row["status"] == "failed"
    assert row["detail"] == "no output (sub-f01_rec-svr_desc-brainage.json); see logs/brainage"
    assert st["brain_age"] == {} and st["zscores"] == {}
    text = session["html"].read_text()
    assert "rule brainage failed: BrainAgeError: weights not found: models/x.pt" in text
    assert re.search(r"<td>Brain age estimation</td><td class=\"bad\">failed<", text)
    assert "<h2>Brain age</h2>" not in text  # nothing made up
    (cohort_row,) = csv.DictReader(tsv.open(), delimiter="\t")
    assert cohort_row["predicted_age_weeks"] == "n/a" and cohort_row["flags"] == "n/a"


# sessions added to the cohort beside sub-f01: (subject, GA, brain-age gap, flagged)
OTHERS = (("f03", 24.0, -0.5, False), ("f04", 33.0, 3.1, True))


def brainage_cohort(sessions: dict, root: Path) -> dict:
    """sub-f01 (flagged ventricles), sub-f02 (failed validation) and, from sub-f01's stage
    JSON and report, sub-f03 and sub-f04 at other ages; then the cohort report."""
    r = subject_with_brainage(sessions, root)
    norms = r["norms"]
    stages, reports = [r["stages"], sessions["sub-f02"][1]], [r["html"], sessions["sub-f02"][0]]
    for sub, ga, gap, flagged in OTHERS:
        volumes = {s: v * math.exp(GROWTH * (ga - AGE)) for s, v in MEDIANS.items()}
        st = dict(r["st"], subject=sub, age_weeks=ga, report=f"sub-{sub}.html")
        st["volumes_ml"] = volumes
        st["zscores"] = {s: float(norms.zscore(s, ga, v)) for s, v in volumes.items()}
        flags = [f"brain-age gap {gap:+.1f} weeks, z = {gap / 1.1:+.2f} (|z| > 2)"] * flagged
        st["brain_age"] = st["brain_age"] | {
            "predicted_weeks": ga + gap,
            "interval_95_weeks": [ga + gap - 1.8, ga + gap + 1.8],
            "gap_weeks": gap,
            "gap_z": gap / 1.1,
            "flags": flags,
        }
        stages.append(root / "stages" / f"sub-{sub}_stages.json")
        stages[-1].write_text(json.dumps(st))
        reports.append(shutil.copy(r["html"], root / f"sub-{sub}.html"))
    group = root / "group"
    tsv, html = group / "cohort.tsv", group / "cohort.html"
    write_cohort(stages, reports, tsv, html, norms=Path(norms.origin))
    return {"tsv": tsv, "html": html, "stages": stages, "reports": reports}


def test_cohort_has_brain_age_growth_charts_and_outliers(sessions, tmp_path: Path) -> None:
    c = brainage_cohort(sessions, tmp_path)
    rows = {r["participant_id"]: r for r in csv.DictReader(c["tsv"].open(), delimiter="\t")}
    assert list(next(iter(rows.values()))) == list(COLUMNS)
    assert [rows[s]["predicted_age_weeks"] for s in ("sub-f01", "sub-f03", "sub-f04")] == [
        "27.80",
        "23.50",
        "36.10",
    ]
    assert rows["sub-f01"]["brain_age_gap_weeks"] == "+0.80"
    assert rows["sub-f01"]["brain_age_gap_z"] == "+0.73" and rows["sub-f01"]["flags"] == "1"
    assert rows["sub-f03"]["flags"] == "0" and rows["sub-f04"]["flags"] == "1"
    # every flagged stage reaches the table, not only the brain age's flag count
    assert "brain_age" in rows["sub-f01"]["flagged_stages"].split(",")
    assert rows["sub-f02"]["flagged_stages"] in ("none", "n/a")  # failed validation
    assert rows["sub-f02"]["predicted_age_weeks"] == rows["sub-f02"]["flags"] == "n/a"

    text = c["html"].read_text()
    assert 'The table as TSV: <a href="cohort.tsv">cohort.tsv</a>' in text
    growth = text.split('<h2 id="growth">Growth charts</h2>', 1)[1].split("<h2", 1)[0]
    assert growth.count('<svg class="chart"') == len(STRUCTURES)
    # every session with volumes is a point linking to its report, on each chart
    for sub in ("f01", "f03", "f04"):
        assert growth.count(f'<a href="../sub-{sub}.html">') == len(STRUCTURES), sub
    assert "sub-f02" not in growth  # failed validation: no volumes, no point
    assert "sub-f01: 5.0 mL at 27.0 weeks, z +6.93" in growth
    assert growth.count('fill="#d62728"') == 1  # only sub-f01's ventricles are flagged
    age = text.split('<h2 id="brain-age">Brain age</h2>', 1)[1].split("<h2", 1)[0]
    assert age.count("<circle") == 3 and age.count("<a href=") == 3
    assert "±2 SD (1.10 weeks)" in age
    outliers = text.split('<h2 id="outliers">Flagged outliers</h2>', 1)[1].split("<h2", 1)[0]
    assert '<a href="../sub-f01.html">sub-f01</a>: ventricles volume z = +6.93' in outliers
    assert '<a href="../sub-f04.html">sub-f04</a>: brain-age gap +3.1 weeks' in outliers
    assert "sub-f03" not in outliers
    assert "http://" not in text and "https://" not in text


def test_cohort_without_norms_or_brain_age_says_why(sessions, tmp_path: Path) -> None:
    stages = [sessions[p][1] for p in ("sub-f01", "sub-f02")]
    reports = [sessions[p][0] for p in ("sub-f01", "sub-f02")]
    tsv, html = tmp_path / "c.tsv", tmp_path / "c.html"
    write_cohort(stages, reports, tsv, html)
    text = html.read_text()
    assert "<svg" not in text
    assert "No normative curves were given, so there are no growth charts." in text
    assert "No session has a brain age (the brain-age step did not run or failed)" in text
    assert "None: no session has a flag" in text
    bad = tmp_path / "norms.json"
    bad.write_text("{}")
    write_cohort(stages, reports, tsv, html, norms=bad)
    assert "No growth charts: the normative curves cannot be used" in html.read_text()
    assert "not an earlybrain norms file" in html.read_text()
    make_norms(bad)
    write_cohort(stages, reports, tsv, html, norms=bad)
    assert "No session has volumes at a GA age" in html.read_text()


# --- infants: the infant brain-age step's JSON (earlybrain.brainage.infant), infant norms

INFANT_AGE = 66.07  # weeks PMA: 6 months after term
INFANT_GAP = 4.5
INFANT_NORMS = shipped_infant_norms_path()


def months(weeks: float) -> float:
    return round((weeks - 40.0) / 4.345, 2)


def infant_result(age: float = INFANT_AGE, gap: float = INFANT_GAP) -> dict:
    """A brain-age JSON in the format of earlybrain.brainage.infant (made-up values)."""
    pred, sd = age + gap, 3.2

    def method(age_weeks: float, sd_weeks: float, **rest) -> dict:
        return {
            "age_weeks": age_weeks,
            "sd_weeks": sd_weeks,
            "age_months": months(age_weeks),
        } | rest

    norms = Norms.from_json(INFANT_NORMS)
    return {
        "chronological_age_weeks": age,
        "chronological_age_months": months(age),
        "age_kind": "PMA",
        "population": "infant",
        "contrast": "T2w",
        "predicted_age_weeks": pred,
        "predicted_age_months": months(pred),
        "uncertainty_sd_weeks": sd,
        "interval_95_weeks": [round(pred - 1.96 * sd, 2), round(pred + 1.96 * sd, 2)],
        "brain_age_gap_weeks": gap,
        "brain_age_gap_z": 0.9,
        "brain_age_gap_centile": 81.6,
        "primary_method": "combined",
        "primary_method_description": "posterior over age given the classical estimates "
        "(atlas_similarity, volumes, myelination) at once, calibrated on simulated infants "
        "processed end to end",
        "methods": {
            "combined": method(
                pred,
                sd,
                sd_posterior_weeks=2.6,
                sd_scale=1.23,
                features=["atlas_similarity", "volumes", "T2w:WM_deep_anterior", "T2w:brainstem"],
            ),
            "atlas_similarity": method(
                age + 8.0,
                9.5,
                best_template_weeks=74.76,
                at_range_edge=False,
                atlas="earlybrain-infant",
                contrast="T2w",
            ),
            "volumes": method(
                age + 2.0, 6.0, norms=norms.source, note=None, structures=list(norms.structures)
            ),
            "myelination": method(
                age + 5.0,
                4.0,
                contrasts=["T2w"],
                indexes={"T2w:WM_deep_posterior": -0.2, "T2w:cerebellum": 0.1},
            ),
        },
        "method_spread_weeks": 6.0,
        "out_of_training_range": False,
        "flags": ["ventricles volume z = +2.41 (|z| > 2)"],
        "gap_sd_weeks": 4.1,
        "gap_bias_weeks": 0.8,
        "norms": {"file": str(INFANT_NORMS), "source": norms.source},
        "calibration": {
            "source": "made-up calibration",
            "atlas": "earlybrain-infant",
            "configuration": "T2w|T2w",
        },
        "device": "cpu",
        "timings": {"network_s": None, "total_s": 4.2},
        "GeneratedBy": [{"Name": "earlybrain", "Version": "0.x", "Step": "brainage"}],
        "Parameters": {"spread_limit_weeks": 20.0, "z_limit": 2.0},
        "Sources": ["volume", "mask"],
    }


@pytest.fixture(scope="module")
def infant_session(tmp_path_factory) -> dict:
    """An infant session (T1w + T2w, 66 weeks PMA) validated and N4-corrected, with an
    intracranial mask, its brain-age files and chart, and its report."""
    root = tmp_path_factory.mktemp("infant_report")
    bids = make_bids(root / "bids", fetal={}, infant={"i01": INFANT_AGE}, volume_shape=(32,) * 3)
    (rec,) = discover_sessions(bids, strict=False)
    deriv = root / "out" / "earlybrain"
    anat = deriv / rec.reldir / "anat"
    val = write_validation(validate_session(rec), deriv / rec.reldir / "qc" / "v.json")
    n4, bias, mask = [], [], []
    for im in rec.images:
        stem = anat / im.stem
        n4.append(Path(f"{stem}_desc-n4_{im.suffix}.nii.gz"))
        bias.append(Path(f"{stem}_desc-biasfield_{im.suffix}.nii.gz"))
        mask.append(Path(f"{stem}_desc-foreground{im.suffix}_mask.nii.gz"))
        run_n4(im.path, n4[-1], bias[-1], mask[-1], PreprocessParams(), threads=1)
    prefix = "sub-i01_mod-T2w"
    brain = anat / f"{prefix}_desc-brain_mask.nii.gz"  # the T2w's foreground stands in
    shutil.copy(mask[[im.suffix for im in rec.images].index("T2w")], brain)
    brain.with_name(f"{prefix}_desc-brain_mask.json").write_text(json.dumps({
        "Contrast": "T2w", "BrainVolume_ml": 700.0,
        "GeneratedBy": [{"Name": "earlybrain", "Step": "infant_prep"}],
    }))  # fmt: skip
    result = infant_result()
    brainage = anat / f"{prefix}_desc-brainage.json"
    brainage.write_text(json.dumps(result))
    norms = Norms.from_json(INFANT_NORMS)
    volumes = {s: float(norms.expected_ml(s, INFANT_AGE)) for s in norms.structures}
    volumes["ventricles"] *= 2.0  # flagged
    rows = subject_zscores(norms, INFANT_AGE, volumes)
    rows.append({"structure": "brain_age_gap_weeks", "volume_ml": None, "expected_ml": None,
                 "z": 0.9, "centile": 81.6, "flag": False, "note": None})  # fmt: skip
    zscores = anat / f"{prefix}_desc-zscores.tsv"
    zscores.write_text(zscores_tsv(rows))
    figure = deriv / rec.reldir / "figures" / f"{prefix}_desc-brainage_chart.png"
    brainage_figure_file(brainage, zscores, figure)
    html, stages = deriv / "sub-i01.html", deriv / "group" / "stages" / "sub-i01_stages.json"
    outputs = SessionOutputs(val, n4, bias, mask, brain_masks=[brain], brainage=brainage,
                             zscores=zscores, brainage_figure=figure)  # fmt: skip
    build_subject_report(outputs, html, stages)
    st = json.loads(stages.read_text())
    return {"html": html, "text": html.read_text(), "stages": stages, "st": st,
            "volumes": volumes, "png": figure.read_bytes()}  # fmt: skip


def test_infant_report_shows_brain_age(infant_session) -> None:
    text, st = infant_session["text"], infant_session["st"]
    assert st["kind"] == "infant"
    row = {s["key"]: s for s in st["stages"]}["brain_age"]
    assert row["status"] == "flagged", row
    assert "check: ventricles volume z = +2.41" in row["detail"]
    assert "not in this version" not in text
    assert "70.6 ± 3.2 weeks PMA (7.0 months; 95 % interval 64.3-76.8)" in row["detail"]
    assert "at a chronological age of 66.1 weeks (6.0 months)" in row["detail"]
    top = text.split("<h2>", 1)[0]
    assert "<td>brain age</td><td>70.6 ± 3.2 weeks PMA (7.0 months;" in top
    section = text.split("<h2>Brain age</h2>", 1)[1].split("<h2", 1)[0]
    (png,) = IMG_RE.findall(section)
    assert base64.b64decode(png) == infant_session["png"]
    assert f"<figcaption>{esc(INFANT_CHART_CAPTION)}</figcaption>" in section
    assert "<th>age (months)</th>" in section
    for cells in (
        ["combined (primary)", "70.6", "3.2", "7.0"],
        ["atlas similarity", "74.1", "9.5", "7.8", "most similar T2w template: 74.8 weeks of "
         "earlybrain-infant"],
        ["regional volumes", "68.1", "6.0", "6.5"],
        ["myelination (contrast indexes)", "71.1", "4.0", "7.2"],
    ):  # fmt: skip
        assert "<tr><td>" + "</td><td>".join(cells) + "</td>" in section, cells
    assert '<tr class="warn"><td>ventricles</td>' in section  # scored on the infant norms
    assert "healthy simulated calibration infants at this age" in section
    methods = text.split('<h2 id="methods">Methods</h2>', 1)[1]
    for used in (
        "each bias-corrected and with an SD calibrated on simulated infants processed by "
        "this pipeline (made-up calibration)",
        "the posterior over age given all of them at once",
        "T2w template of atlas earlybrain-infant",
        "under the infant normative growth curves",
        "as white matter myelinates (Barkovich et al. 1988; Dubois et al. 2014)",
        "the myelination estimate used 2 indexes of the T2w image(s)",
        "scaled by 1.23",
        "(7.04 months after term",
        "healthy calibration infants at this age (mean 0.8, SD 4.1 weeks)",
        "fitted on 100 subjects aged",
        REFERENCES["myelination_mri"][1],
    ):
        assert esc(used) in methods, used
    assert "deep ensemble" not in methods
    assert st["brain_age"]["population"] == "infant"
    assert st["brain_age"]["predicted_months"] == 7.04
    assert st["brain_age"]["age_kind"] == "PMA"


def test_cohort_puts_infants_on_infant_charts(sessions, infant_session, tmp_path) -> None:
    """A fetal and an infant session: the infant's row has its brain age, and it is on the
    infant norms' charts and brain-age chart, never on the fetal ones."""
    fetal = subject_with_brainage(sessions, tmp_path)
    st = dict(infant_session["st"], volumes_ml=infant_session["volumes"])
    infant_stages = tmp_path / "stages" / "sub-i01_stages.json"
    infant_stages.write_text(json.dumps(st))
    reports = [fetal["html"], shutil.copy(infant_session["html"], tmp_path / "sub-i01.html")]
    tsv, html = tmp_path / "group" / "cohort.tsv", tmp_path / "group" / "cohort.html"
    write_cohort([fetal["stages"], infant_stages], reports, tsv, html,
                 norms=Path(fetal["norms"].origin), infant_norms=INFANT_NORMS)  # fmt: skip
    rows = {r["participant_id"]: r for r in csv.DictReader(tsv.open(), delimiter="\t")}
    assert list(rows["sub-i01"]) == list(COLUMNS)
    assert rows["sub-i01"]["kind"] == "infant" and rows["sub-i01"]["age_measure"] == "PMA"
    assert rows["sub-i01"]["predicted_age_weeks"] == "70.57"
    assert rows["sub-i01"]["brain_age_gap_weeks"] == "+4.50"
    assert rows["sub-i01"]["brain_age_gap_z"] == "+0.90" and rows["sub-i01"]["flags"] == "1"
    assert rows["sub-f01"]["predicted_age_weeks"] == "27.80"
    text = html.read_text()
    growth = text.split('<h2 id="growth">Growth charts</h2>', 1)[1].split("<h2", 1)[0]
    fetal_charts, infant_charts = growth.split("<h3>Infants</h3>")
    assert fetal_charts.count('<svg class="chart"') == len(STRUCTURES)
    assert "sub-i01" not in fetal_charts and "sub-f01" not in infant_charts
    n_infant = len(Norms.from_json(INFANT_NORMS).structures)
    assert infant_charts.count('<svg class="chart"') == n_infant
    assert infant_charts.count('<a href="../sub-i01.html">') == n_infant
    assert "age (weeks PMA)" in infant_charts and "age (weeks GA)" in fetal_charts
    assert esc(Norms.from_json(INFANT_NORMS).source) in infant_charts
    age = text.split('<h2 id="brain-age">Brain age</h2>', 1)[1].split("<h2", 1)[0]
    fetal_age, infant_age = age.split("<h3>Infants</h3>")
    assert fetal_age.count("<circle") == 1 and "sub-i01" not in fetal_age
    assert infant_age.count("<circle") == 1 and '<a href="../sub-i01.html">' in infant_age
    assert "infant brain age vs age" in infant_age and "7.0 months" in infant_age
    outliers = text.split('<h2 id="outliers">Flagged outliers</h2>', 1)[1].split("<h2", 1)[0]
    assert '<a href="../sub-i01.html">sub-i01</a>: ventricles volume z = +2.41' in outliers
    # a cohort of infants only: no fetal charts at all
    write_cohort([infant_stages], reports[1:], tsv, html, norms=Path(fetal["norms"].origin),
                 infant_norms=INFANT_NORMS)  # fmt: skip
    text = html.read_text()
    assert "<h3>Infants</h3>" not in text and "age (weeks GA)" not in text
    assert text.count('<a href="../sub-i01.html">') >= n_infant + 1
