"""Subject and cohort reports: self-contained HTML, honest stage table, relative links."""

from __future__ import annotations

import base64
import csv
import json
import re
from pathlib import Path

import pytest
from synth_fixtures import corrupt_gzip, make_bids

from earlybrain.io.bids import discover_sessions
from earlybrain.io.validate import validate_session, write_validation
from earlybrain.preprocess.n4 import run_n4
from earlybrain.report.cohort import write_cohort
from earlybrain.report.html import esc
from earlybrain.report.subject import NOT_YET, build_subject_report

IMG_RE = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """One passing fetal session (2 stacks, N4 done) and one failing one (corrupt stack)."""
    root = tmp_path_factory.mktemp("report")
    bids = make_bids(
        root / "bids", fetal={"f01": 27.0, "f02": 30.0}, n_stacks=2, stack_shape=(32, 32, 8)
    )
    bad = bids / "sub-f02" / "anat" / "sub-f02_run-2_T2w.nii.gz"
    corrupt_gzip(bad)
    deriv = root / "out" / "earlybrain"
    result = {"root": root, "deriv": deriv, "bad": bad}
    for rec in discover_sessions(bids, strict=False):
        val = write_validation(validate_session(rec), deriv / rec.reldir / "qc" / "v.json")
        n4, bias, mask = [], [], []
        if rec.prefix == "sub-f01":
            for im in rec.images:
                stem = deriv / rec.reldir / "anat" / im.stem
                n4.append(Path(f"{stem}_desc-n4_T2w.nii.gz"))
                bias.append(Path(f"{stem}_desc-biasfield_T2w.nii.gz"))
                mask.append(Path(f"{stem}_desc-foregroundT2w_mask.nii.gz"))
                run_n4(im.path, n4[-1], bias[-1], mask[-1], threads=1)
        html = deriv / f"{rec.prefix}.html"
        stages = deriv / "group" / "stages" / f"{rec.prefix}_stages.json"
        build_subject_report(val, n4, bias, mask, html, stages)
        result[rec.prefix] = (html, stages)
    return result


def test_subject_report_is_self_contained(processed) -> None:
    html_path, _ = processed["sub-f01"]
    text = html_path.read_text()
    pngs = IMG_RE.findall(text)
    assert len(pngs) == 2  # one figure (input / N4 / bias) per stack
    assert text.count("<img") == 2  # and no other images
    for b64 in pngs:
        assert base64.b64decode(b64).startswith(b"\x89PNG\r\n\x1a\n")
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text
    assert "27.0 weeks GA" in text and "fetal" in text


def test_stage_table_is_honest(processed) -> None:
    _, stages_path = processed["sub-f01"]
    stages = {s["key"]: s["status"] for s in json.loads(stages_path.read_text())["stages"]}
    assert stages["inputs"] == "done" and stages["n4"] == "done"
    assert stages["svr_srr"] == "skipped"  # no brain masks given
    for key in ("atlas_registration", "segmentation", "brain_age", "brain_mask"):
        assert stages[key] == NOT_YET
    text = processed["sub-f01"][0].read_text()
    for label in ("Atlas registration", "segmentation", "Brain age"):
        row = re.search(rf"<tr><td>[^<]*{label}[^<]*</td><td[^>]*>([^<]*)</td>", text)
        assert row and row.group(1) == NOT_YET, label


def test_failed_session_report_names_the_problem(processed) -> None:
    html_path, stages_path = processed["sub-f02"]
    text = html_path.read_text()
    assert esc(f"{processed['bad']}: cannot read as NIfTI") in text
    st = json.loads(stages_path.read_text())
    assert st["status"] == "failed"
    assert st["failed_stage"] == "Input discovery and validation"
    assert {s["key"]: s["status"] for s in st["stages"]}["n4"] == "skipped"
    # the readable stack is still shown, marked as not processed
    assert len(IMG_RE.findall(text)) == 1
    assert "not processed" in text


def test_cohort_tsv_and_html(processed) -> None:
    deriv = processed["deriv"]
    stages = [processed[p][1] for p in ("sub-f02", "sub-f01")]
    reports = [processed[p][0] for p in ("sub-f02", "sub-f01")]
    tsv, html = deriv / "group" / "cohort.tsv", deriv / "group" / "cohort.html"
    write_cohort(stages, reports, tsv, html)
    rows = list(csv.DictReader(tsv.open(), delimiter="\t"))
    assert [r["participant_id"] for r in rows] == ["sub-f01", "sub-f02"]
    assert [r["status"] for r in rows] == ["ok", "failed"]
    assert rows[0]["n_images"] == "2" and rows[0]["age_weeks"] == "27.00"
    assert rows[0]["age_column"] == "ga_weeks" and rows[0]["kind"] == "fetal"
    assert "cannot read as NIfTI" in rows[1]["reason"]
    text = html.read_text()
    for r in rows:
        assert f'href="../{r["participant_id"]}.html"' in text
        assert (html.parent / f"../{r['participant_id']}.html").resolve().is_file()
    assert "http://" not in text and "https://" not in text
