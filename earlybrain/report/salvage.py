"""After a failed job: a report for each session it hit, and the cohort table anyway.

With --keep-going Snakemake finishes every job it can, but a session whose N4 or
reconstruction job failed gets no report (the report rule needs that stage's outputs), and
the cohort table, which needs every report, is never written. Snakemake's `onerror`
handler calls `salvage_reports` with the run's log: each failed job is traced to its
session, which gets the report it would have had, with the failed stage marked and the
end of the job's log; the cohort table is written from all the reports there are. A later
run rebuilds both: the salvaged stage-status JSON is written beside, not at, the report
rule's second output (``stages/salvaged/``), so for Snakemake that rule's outputs are
incomplete and it re-runs it (and the failed job it needs), then the cohort table.

An interrupted run (Ctrl-C / SIGTERM) salvages nothing: its jobs did not fail, and the
next run simply resumes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from earlybrain.report.cohort import write_cohort
from earlybrain.report.subject import build_subject_report

PathLike = str | os.PathLike[str]


@dataclass
class FailedJob:
    rule: str
    outputs: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    message: str = ""


INTERRUPTED = "Terminating processes on user request"
_ERROR = re.compile(r"^Error in rule (\w+):\s*$")
_FIELD = re.compile(r"^\s+(\w+): (.*)$")


def failed_jobs(snakemake_log: str) -> list[FailedJob]:
    """The failed jobs named in a Snakemake log ("Error in rule X:" blocks)."""
    jobs: list[FailedJob] = []
    current: FailedJob | None = None
    for line in snakemake_log.splitlines():
        if m := _ERROR.match(line):
            current = FailedJob(m[1])
            jobs.append(current)
        elif current is not None and (m := _FIELD.match(line)):
            key, value = m[1], m[2]
            if key == "output":
                current.outputs = [v.strip() for v in value.split(",") if v.strip()]
            elif key == "log":
                value = value.split(" (check log file")[0]
                current.logs = [v.strip() for v in value.split(",") if v.strip()]
            elif key == "message":
                current.message = value.strip()
        elif current is not None and not line.startswith(" "):
            current = None
    return jobs


def log_tail(path: PathLike, lines: int = 6) -> str:
    """The last lines of a job log: where the error message is."""
    try:
        text = Path(path).read_text(errors="replace").rstrip().splitlines()
    except OSError:
        return "(no log file)"
    return "\n".join(text[-lines:]) if text else "(empty log file)"


def belongs_to(output: PathLike, prefix: str) -> bool:
    """Whether a derivative file is a session's (its name starts with the session prefix)."""
    name = Path(output).name
    return name == f"{prefix}.html" or name.startswith(f"{prefix}_")


def describe(job: FailedJob) -> str:
    """First line: the rule and the last line of its log (usually the error message)."""
    tails = [log_tail(log) for log in job.logs]
    last = next((t.splitlines()[-1] for t in tails if t), "no log file")
    text = f"rule {job.rule} failed: {last}"
    for log, tail in zip(job.logs, tails, strict=True):
        text += f"\nlog {log}, last lines:\n{tail}"
    return text


def salvage_reports(
    snakemake_log: PathLike | list[PathLike],
    sessions: list[dict[str, Any]],
    cohort_tsv: PathLike,
    cohort_html: PathLike,
    norms: PathLike | None = None,
    infant_norms: PathLike | None = None,
) -> list[str]:
    """Write the missing reports of sessions hit by a failed job, then the cohort table.

    `snakemake_log`: the run's log file(s) (Snakemake hands `onerror` a list).
    `sessions`: per session {"prefix", "html", "stages", "outputs"}, "outputs" being the
    SessionOutputs its report reads, as the report step does. `norms`, `infant_norms`:
    the cohort's normative curves (see `write_cohort`). Returns the prefixes that got a
    salvaged report.
    """
    logs = snakemake_log if isinstance(snakemake_log, list) else [snakemake_log]
    text = "\n".join(Path(p).read_text(errors="replace") for p in logs if Path(p).is_file())
    if INTERRUPTED in text:
        return []
    jobs = failed_jobs(text)
    salvaged = []
    for sess in sessions:
        hit = [j for j in jobs if any(belongs_to(o, sess["prefix"]) for o in j.outputs)]
        if not hit or Path(sess["html"]).is_file():
            continue
        build_subject_report(
            sess["outputs"],
            sess["html"],
            salvaged_stages(sess["stages"]),
            failures=[describe(j) for j in hit],
        )
        salvaged.append(sess["prefix"])
    if salvaged:
        reports = [s["html"] for s in sessions if Path(s["html"]).is_file()]
        stages = [
            s["stages"] if s["prefix"] not in salvaged else salvaged_stages(s["stages"])
            for s in sessions
        ]
        stages = [p for p in stages if Path(p).is_file()]
        write_cohort(stages, reports, cohort_tsv, cohort_html, norms, infant_norms)
    return salvaged


def salvaged_stages(stages: PathLike) -> Path:
    """Where a salvaged report's stage status goes (not the report rule's output)."""
    return Path(stages).parent / "salvaged" / Path(stages).name
