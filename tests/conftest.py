"""Shared fixtures: simulated cohorts are cached per session because every module uses them."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from synth_fixtures import corrupt_gzip

from earlybrain.runner import run_workflow
from earlybrain.simulate.cohort import CohortSpec, simulate_cohort

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two fetuses (moderate motion) and one infant, preset tiny; (bids_dir, truth_dir).

    The stacks' true brain masks are in bids_dir/derivatives/masks (like manual masks).
    """
    out = tmp_path_factory.mktemp("tiny_cohort")
    spec = CohortSpec(n_fetal=2, n_infant=1, seed=11, preset="tiny", write_masks=True)
    return simulate_cohort(out, spec)


def file_checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path (to prove inputs are untouched)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# identifying fields as dcm2niix writes them without anonymisation (made-up values)
SIDECAR_PHI = {
    "PatientName": "DOE^JANE",
    "PatientID": "PID7319",
    "PatientBirthDate": "19870214",
    "AccessionNumber": "ACC55821",
    "InstitutionName": "St Example Hospital",
    "InstitutionAddress": "1 Example Road, Exampleton",
    "ReferringPhysicianName": "REF^HOUSE",
    "StationName": "STATION-X9",
    "DeviceSerialNumber": "SN123987",
    "AcquisitionDateTime": "2026-11-05T10:11:12.000000",
}


@pytest.fixture(scope="session")
def cohort_workflow_run(tmp_path_factory: pytest.TempPathFactory, tiny_cohort) -> dict[str, Any]:
    """The real workflow run once per session on `tiny_cohort` with one failing subject.

    sub-f02 has a truncated stack (run-2) and lists a stack whose content is missing (a
    dangling DataLad symlink), so its validation fails and the failed-subject path of
    the reports is exercised; the other subjects run through, sub-f01 masked, ranked,
    reconstructed and registered to the atlas: its run-1 stack by the masking network,
    run-2 and run-3 from the simulator's masks given in masks_dir. Works on a copy: the
    simulated cohort is shared. Keys: rc, bids, truth, out, bad, before (input checksums).
    Session-scoped so the workflow tests and the browser test of the reports share one
    run (a few minutes on 2 cores).
    """
    root = tmp_path_factory.mktemp("cohort_run")
    bids = shutil.copytree(tiny_cohort[0], root / "bids")
    bad = bids / "sub-f02" / "anat" / "sub-f02_run-2_T2w.nii.gz"
    corrupt_gzip(bad)
    (bids / "sub-f02" / "anat" / "sub-f02_run-4_T2w.nii.gz").symlink_to(
        "../../.git/annex/objects/Xy/SHA256E-s1234--abc.nii.gz"
    )
    (bids / "derivatives" / "masks" / "sub-f01" / "anat" / "sub-f01_run-1_mask.nii.gz").unlink()
    # a lab's sidecars as a converter without anonymisation writes them: none of it may
    # reach an output (tests/test_workflow.py::test_sidecar_phi_reaches_no_output)
    for side in (bids / "sub-f01" / "anat").glob("*_T2w.json"):
        side.write_text(json.dumps(json.loads(side.read_text()) | SIDECAR_PHI))
    before = file_checksums(bids)
    out = root / "out"
    overrides = {
        "masks_dir": str(bids / "derivatives" / "masks"),
        "recon": {"resolution_mm": 1.2, "outer_iterations": 2},  # tiny preset: 1.6 mm truth
    }
    rc = run_workflow(bids, out, cores=2, overrides=overrides)
    return {
        "rc": rc,
        "bids": bids,
        "truth": tiny_cohort[1],
        "out": out,
        "bad": bad,
        "before": before,
    }
