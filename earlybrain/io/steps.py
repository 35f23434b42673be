"""Workflow steps of the inputs: validating a session, describing the derivatives."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated

from earlybrain import __version__
from earlybrain.io.atomic import write_json_atomic
from earlybrain.io.bids import BIDS_VERSION
from earlybrain.io.provenance import dataset_links, portable
from earlybrain.stepkit import Output, Param, print_traceback, step


def _session_dir(a: argparse.Namespace) -> str:
    return f"{a.bids}/sub-{a.subject}" + (f"/ses-{a.session}" if a.session else "")


@step("validate", rule="validate", target=_session_dir)
def validate_step(
    bids: Annotated[Path, Param("the BIDS dataset")],
    subject: Annotated[str, Param("label without sub-")],
    out: Annotated[Path, Output("validation JSON")],
    session: Annotated[str, Param("label without ses- (empty: no sessions)")] = "",
    fetal_ga_range: Annotated[tuple[float, ...] | None, Param("plausible GA, weeks")] = None,
    infant_pma_range: Annotated[tuple[float, ...] | None, Param("plausible PMA, weeks")] = None,
    min_slices: Annotated[int | None, Param("fewest slices of a fetal stack")] = None,
    reconstructed: Annotated[
        bool, Param("a session of one 3D T2w image is a fetal reconstruction made elsewhere")
    ] = False,
) -> int:
    """Validate one session's inputs, always writing a status (pass/fail and why).

    So a bad session never stops the workflow. Only running out of memory (the job's
    problem, not the input's: a re-run with more memory must validate again) and failing
    to write the JSON make this step fail. Unset limits take ValidationSettings' defaults.
    """
    from earlybrain.io.bids import discover_sessions
    from earlybrain.io.validate import ValidationSettings, validate_session, write_validation

    session_label = session or None
    prefix = f"sub-{subject}" + (f"_ses-{session}" if session else "")
    limits = {
        "fetal_ga_range": fetal_ga_range,
        "infant_pma_range": infant_pma_range,
        "min_slices": min_slices,
    }
    try:
        records = [
            r
            for r in discover_sessions(bids, [subject], strict=False, reconstructed=reconstructed)
            if r.session == session_label
        ]
        if not records:
            raise ValueError(f"{prefix}: session not found in {bids}")
        settings = ValidationSettings(**{k: v for k, v in limits.items() if v is not None})
        report = validate_session(records[0], settings)
    except MemoryError:
        raise
    except Exception as exc:  # report, don't crash: the session gets a report saying why
        print_traceback(exc)
        report = {
            "subject": subject,
            "session": session_label,
            "prefix": prefix,
            "reldir": f"sub-{subject}" + (f"/ses-{session}" if session else ""),
            "kind": None,
            "age_weeks": None,
            "images": [],
            "status": "fail",
            "errors": [f"{prefix}: validation could not run ({type(exc).__name__}: {exc})"],
        }
    write_validation(report, out)
    report = portable(report)  # the log quotes it too
    if report.get("age_weeks") is not None:
        print(
            f"{prefix}: {report['kind']}, {report['age_measure']} {report['age_weeks']:.1f} weeks"
            f" from column {report['age_column']!r} in {report['age_source']}"
        )
    for note in report.get("notes", []):
        print(f"note: {note}")
    for e in report["errors"]:
        print(f"validation problem: {e}")
    print(f"{prefix}: validation {report['status']}")
    return 0


@step("dataset-description", rule="dataset_description", target="out")
def dataset_description_step(
    bids: Annotated[Path, Param("the BIDS dataset")],
    out: Annotated[Path, Output("dataset_description.json of the derivatives")],
) -> int:
    """Write the derivatives' dataset_description.json with GeneratedBy (BIDS >= 1.4)."""
    content = {
        "Name": "earlybrain derivatives",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [
            {
                "Name": "earlybrain",
                "Version": __version__,
                "Description": "fetal and infant brain MRI: brain masks, bias correction, "
                "slice-to-volume reconstruction, atlas registration, tissue segmentation, "
                "brain age and QC reports",
            }
        ],
        # relative links, not the absolute folders: they may name the patient
        "DatasetLinks": dataset_links(out.parent, bids),
        "SourceDatasets": [{"URL": "bids:raw:"}],
    }
    write_json_atomic(out, content)
    return 0
