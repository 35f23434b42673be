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
    subject_zscores,
    zscores_tsv,
)
from earlybrain.report.brainage import CHART_CAPTION, brainage_figure_file
from earlybrain.report.cohort import COLUMNS, write_cohort
from earlybrain.report.html import esc
from earlybrain.report.methods import REFERENCES
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
    build_subject_report(
        *sessions["sub-f01 inputs"], html, stages, **seg["kwargs"], **age["kwargs"]
    )
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
