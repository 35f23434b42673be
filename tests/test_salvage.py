"""A failed job still leaves its session a report that says what failed, and a cohort table."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from synth_fixtures import make_bids

from earlybrain.io.bids import discover_sessions
from earlybrain.io.validate import validate_session, write_validation
from earlybrain.report.outputs import SessionOutputs
from earlybrain.report.salvage import (
    belongs_to,
    failed_jobs,
    salvage_reports,
    salvaged_stages,
)

# the shape of Snakemake 9's error report for a failed shell job (paths shortened)
ERROR_BLOCK = """\
[Mon Nov 23 20:15:50 2026]
Error in rule n4:
    message: None
    jobid: 13
    input: {bids}/sub-f01/anat/sub-f01_run-2_T2w.nii.gz
    output: {deriv}/sub-f01/anat/sub-f01_run-2_desc-n4_T2w.nii.gz, {deriv}/sub-f01/anat/{json}
    log: {log} (check log file(s) for error details)
    shell:
        earlybrain step n4 --input ... > {log} 2>&1
        (command exited with non-zero exit code)
Exiting because a job execution failed. Look above for error messages
"""

JSON = "sub-f01_run-2_desc-n4_T2w.json"


def test_failed_jobs_are_read_from_the_log() -> None:
    text = ERROR_BLOCK.format(bids="/b", deriv="/d", log="/l/n4.log", json=JSON)
    (job,) = failed_jobs("rule n4:\n    jobid: 13\n" + text)  # the announcement is not an error
    assert job.rule == "n4" and job.logs == ["/l/n4.log"]
    assert job.outputs == [
        "/d/sub-f01/anat/sub-f01_run-2_desc-n4_T2w.nii.gz",
        "/d/sub-f01/anat/sub-f01_run-2_desc-n4_T2w.json",
    ]
    assert failed_jobs("Finished jobid: 3 (Rule: n4)\nKeyboardInterrupt\n") == []


def test_outputs_are_traced_to_their_session() -> None:
    assert belongs_to("/d/sub-f01/anat/sub-f01_run-2_desc-n4_T2w.nii.gz", "sub-f01")
    assert belongs_to("/d/sub-f01.html", "sub-f01")
    assert not belongs_to("/d/sub-f011/anat/sub-f011_run-2_desc-n4_T2w.nii.gz", "sub-f01")
    assert belongs_to("/d/sub-a/ses-1/anat/sub-a_ses-1_rec-svr_T2w.nii.gz", "sub-a_ses-1")
    assert not belongs_to("/d/sub-a/ses-2/anat/sub-a_ses-2_rec-svr_T2w.nii.gz", "sub-a_ses-1")


@pytest.fixture
def cohort(tmp_path: Path) -> dict:
    bids = make_bids(tmp_path / "bids", fetal={"f01": 27.0, "f02": 30.0}, n_stacks=2)
    deriv = tmp_path / "out" / "earlybrain"
    sessions = []
    for rec in discover_sessions(bids, strict=False):
        validation = deriv / rec.reldir / "qc" / f"{rec.prefix}_validation.json"
        write_validation(validate_session(rec), validation)
        n4 = [deriv / rec.reldir / "anat" / f"{im.stem}_desc-n4_T2w.nii.gz" for im in rec.images]
        sessions.append(
            {
                "prefix": rec.prefix,
                "html": deriv / f"{rec.prefix}.html",
                "stages": deriv / "group" / "stages" / f"{rec.prefix}_stages.json",
                "outputs": SessionOutputs(
                    validation,
                    n4,
                    bias=[p.with_name(p.name.replace("n4", "bias")) for p in n4],
                    mask=[p.with_name(p.name.replace("n4", "fg")) for p in n4],
                ),
            }
        )
    return {"bids": bids, "deriv": deriv, "sessions": sessions, "root": tmp_path}


def test_a_failed_job_gets_its_session_a_report_and_the_cohort_a_table(cohort: dict) -> None:
    root, deriv = cohort["root"], cohort["deriv"]
    job_log = root / "logs" / "n4.log"
    job_log.parent.mkdir()
    job_log.write_text("reading\nerror: sub-f01_run-2_T2w.nii.gz: ANTs could not fit\n")
    run_log = root / "snakemake.log"
    run_log.write_text(ERROR_BLOCK.format(bids=cohort["bids"], deriv=deriv, log=job_log, json=JSON))
    # sub-f02 finished normally: it has its report already; sub-f01 has none
    f02 = cohort["sessions"][1]
    salvage_reports(run_log, [f02], deriv / "group" / "c.tsv", deriv / "group" / "c.html")
    assert not f02["html"].exists()  # not hit by the failed job: left to Snakemake

    done = salvage_reports(
        [run_log], cohort["sessions"], deriv / "group" / "cohort.tsv", deriv / "group" / "c.html"
    )
    assert done == ["sub-f01"]
    text = cohort["sessions"][0]["html"].read_text()
    assert "Failed steps" in text and "rule n4 failed" in text and "ANTs could not fit" in text
    rows = list(csv.DictReader((deriv / "group" / "cohort.tsv").open(), delimiter="\t"))
    assert [r["participant_id"] for r in rows] == ["sub-f01"]
    assert rows[0]["status"] == "failed"
    assert (
        "rule n4 failed: error: sub-f01_run-2_T2w.nii.gz: ANTs could not fit" in rows[0]["reason"]
    )
    assert rows[0]["report"] == "../sub-f01.html"
    # the report rule's stage JSON stays missing: for Snakemake the report is incomplete
    # and the next run rebuilds it
    assert not cohort["sessions"][0]["stages"].exists()
    assert salvaged_stages(cohort["sessions"][0]["stages"]).is_file()


def test_an_interrupted_run_salvages_nothing(cohort: dict) -> None:
    """Ctrl-C: Snakemake reports the jobs it stopped as errors, but nothing failed."""
    run_log = cohort["root"] / "snakemake.log"
    job_log = cohort["root"] / "n4.log"
    run_log.write_text(
        "Terminating processes on user request, this might take some time.\n"
        + ERROR_BLOCK.format(bids="/b", deriv=cohort["deriv"], log=job_log, json=JSON)
    )
    tsv = cohort["deriv"] / "group" / "cohort.tsv"
    assert salvage_reports(run_log, cohort["sessions"], tsv, tsv.with_suffix(".html")) == []
    assert not tsv.exists() and not cohort["sessions"][0]["html"].exists()
