"""`earlybrain import-dicom`: a scanner's DICOM study -> a de-identified BIDS session.

Why: labs receive studies as DICOM folders; the pipeline reads BIDS. Hand conversion is
where the mistakes happen (a localiser passed as a stack, a phase image as a T2w, the
patient's name in a file name or a sidecar), so this command makes each choice the same
way every time and prints it, series by series.

Steps: dcm2niix (the PyPI wheel's binary, nothing downloaded) converts the whole folder
into a temporary folder, with its own anonymisation on and file names made of series
numbers only; each image is classified from its sidecar (sequence, description,
acquisition type, image type, slices) as a fetal T2 stack (2D single-shot FSE or
bSSFP), an infant 3D T1w/T2w, or skipped with a reason; the kept images are written
with blanked NIfTI text fields (dcm2niix puts the acquisition time in ``descrip``) and
scrubbed sidecars (`earlybrain.io.deidentify`); participants.tsv (or the subject's
sessions.tsv) gets the age. The DICOM folder is only read.

Infant sessions keep one image per contrast, without an entity: the pipeline's infant
layout has no run entity and works on the first image of a contrast, so a second
``acq-`` image would be N4-corrected and then ignored. When a contrast was acquired more
than once the last series is kept: a radiographer repeats a sequence because the first
attempt moved or failed. The skipped ones are listed with that reason.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nibabel import Nifti1Header

from earlybrain import __version__
from earlybrain.io.ages import GA_COLUMNS, PMA_COLUMNS
from earlybrain.io.atomic import write_bytes_atomic, write_json_atomic
from earlybrain.io.bids import BIDS_VERSION, LABEL
from earlybrain.io.deidentify import (
    PhiMatcher,
    deidentified_nifti,
    phi_fields,
    scrub_sidecar,
)
from earlybrain.io.dicom_series import Decision, Image, Kind, plan, series_name
from earlybrain.io.nifti import gzip_bytes
from earlybrain.io.tables import TableError, update_table

#: dcm2niix options, in order: its defaults file ignored (a user's ~/.dcm2nii.ini must not
#: change the result); BIDS sidecar with its anonymisation; no compression (the import
#: rewrites each kept image anyway); names = series number only (+ a suffix on clashes);
#: empty comment (aux_file); localisers and derived images kept (so that they are listed
#: as skipped), sub-folders searched 9 deep.
DCM2NIIX_OPTIONS: tuple[str, ...] = (
    *("-g", "i"),
    *("-b", "y", "-ba", "y"),
    *("-z", "n"),
    *("-f", "%s", "-w", "2"),
    *("-c", ""),
    *("-i", "n", "-d", "9"),
)
# converter bookkeeping that is not about the acquisition (BidsGuess: dcm2niix's own guess
# of a BIDS name, which contradicts the one chosen here)
DROPPED_KEYS = frozenset({"BidsGuess"})

# DICOM attributes whose values are looked for in the free-text fields that are kept: the
# part of deidentify.PHI_KEYS specific enough to search for (not sex, age or per-image UIDs)
PHI_TAGS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthDate",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "StudyTime",
    "SeriesTime",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "RequestingPhysician",
    "PhysiciansOfRecord",
    "OperatorsName",
    "StationName",
    "DeviceSerialNumber",
    "StudyInstanceUID",
)


class DicomImportError(Exception):
    """A problem that stops the import; the message names the folder or file."""


@dataclass
class ImportResult:
    """What an import did: the session kind, the images written, every decision."""

    kind: Kind
    written: list[Path] = field(default_factory=list)  # images, relative to the BIDS folder
    decisions: list[Decision] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def find_dcm2niix() -> str | None:
    """The PyPI wheel's dcm2niix binary (inside its package, so found wherever pip put the
    scripts), else the one beside this interpreter, else one on PATH."""
    try:
        import dcm2niix

        wheel = Path(dcm2niix.bin)
    except (ImportError, AttributeError, TypeError):
        wheel = Path(sys.executable).parent / "dcm2niix"
    return str(wheel) if wheel.is_file() else shutil.which("dcm2niix")


@dataclass
class DicomScan:
    """What the DICOM headers say before conversion: identifying values, files, people."""

    phi: PhiMatcher
    n_files: int
    patients: int  # distinct (PatientID, PatientName)
    studies: int  # distinct StudyInstanceUID


def scan_dicom(dicom_dir: Path) -> DicomScan:
    """Read every header once (no pixels) for the identifying values and the number of
    patients and studies.

    The values are only used to catch them in free text (descriptions) and in the labels
    the user gives; files pydicom cannot read are left to dcm2niix.
    """
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError
    from pydicom.multival import MultiValue

    values: set[str] = set()
    patients: set[tuple[str, str]] = set()
    studies: set[str] = set()
    n = 0
    for path in sorted(p for p in dicom_dir.rglob("*") if p.is_file()):
        try:
            ds = dcmread(path, stop_before_pixels=True, specific_tags=list(PHI_TAGS))
        except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, KeyError):
            continue
        n += 1
        patients.add((str(ds.get("PatientID", "")), str(ds.get("PatientName", ""))))
        studies.add(str(ds.get("StudyInstanceUID", "")))
        for tag in PHI_TAGS:
            value = ds.get(tag)
            if value is None:
                continue
            items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
            values.update(str(v) for v in items if str(v).strip())
    return DicomScan(PhiMatcher(values), n, len(patients), len(studies))


def run_dcm2niix(dicom_dir: Path, out: Path, exe: str) -> tuple[list[Image], list[str]]:
    """Convert the folder into `out`; returns the images and dcm2niix's warnings."""
    cmd = [exe, *DCM2NIIX_OPTIONS, "-o", str(out), str(dicom_dir)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=False)
    except OSError as exc:
        raise DicomImportError(f"{dicom_dir}: cannot run dcm2niix ({exe}: {exc})") from exc
    lines = [ln.strip() for ln in (proc.stdout + "\n" + proc.stderr).splitlines() if ln.strip()]
    problems = [ln for ln in lines if re.match(r"(error|warning)\b", ln, re.IGNORECASE)]
    images = []
    for nii in sorted(out.glob("*.nii")):
        side = nii.with_suffix(".json")
        try:
            meta = json.loads(side.read_text(encoding="utf-8", errors="replace"))
        except (OSError, ValueError):
            meta = {}
        shape: tuple[int, ...] = ()
        error = None
        try:
            with nii.open("rb") as fh:
                header = Nifti1Header.from_fileobj(fh)
            shape = tuple(int(s) for s in header.get_data_shape())
        except Exception as exc:  # nibabel raises several kinds for a bad header
            error = f"unreadable NIfTI from dcm2niix ({type(exc).__name__}: {exc})"
        else:
            if header["magic"] != b"n+1":  # e.g. NIfTI-2, for images over 32767 voxels a side
                error = f"not a NIfTI-1 image ({header['magic']!r})"
        has_bval = nii.with_suffix(".bval").is_file()
        meta = meta if isinstance(meta, dict) else {}
        images.append(Image(nii, meta, shape, has_bval, error))
    if not images:
        if proc.returncode == 2 or any("unable to find any dicom" in ln.lower() for ln in lines):
            raise DicomImportError(f"{dicom_dir}: no DICOM images found (searched 9 folders deep)")
        why = problems[-1] if problems else (lines[-1] if lines else "no output")
        raise DicomImportError(
            f"{dicom_dir}: dcm2niix converted nothing (exit {proc.returncode}): {why}"
        )
    warnings = []
    if proc.returncode != 0:
        why = f": {problems[-1]}" if problems else ""
        warnings.append(f"dcm2niix exit {proc.returncode}, some files not converted{why}")
    return images, warnings


# ---------------------------------------------------------------- the import


def _check_label(name: str, label: str, phi: PhiMatcher) -> str:
    bare = label.strip().removeprefix(f"{name}-")
    if not re.fullmatch(LABEL, bare):
        option = "--participant" if name == "sub" else "--session"
        raise DicomImportError(f"{option} {label!r}: a BIDS label is letters and digits only")
    if phi.found_in(bare):
        raise DicomImportError(
            f"{name}-{bare}: the label contains an identifying value of the DICOM headers "
            "(patient ID, name or a date); use a study code instead"
        )
    return bare


def _existing_images(anat: Path, prefix: str) -> list[Path]:
    if not anat.is_dir():
        return []
    return sorted(
        p
        for p in anat.iterdir()
        if p.name.startswith(prefix + "_") and re.search(r"_T[12]w\.(nii(\.gz)?|json)$", p.name)
    )


def import_dicom(
    dicom_dir: str | Path,
    bids_dir: str | Path,
    participant: str,
    session: str | None = None,
    ga_weeks: float | None = None,
    pma_weeks: float | None = None,
    overwrite: bool = False,
    log: Callable[[str], object] = print,
    warn: Callable[[str], object] = lambda m: print(m, file=sys.stderr),
) -> ImportResult:
    """Convert, select, de-identify and write one session; raises DicomImportError.

    `log` gets the per-series listing, `warn` what the user must act on (stderr)."""
    src, bids = Path(dicom_dir), Path(bids_dir)
    if not src.is_dir():
        raise DicomImportError(f"{src}: no such folder")
    if not any(p.is_file() for p in src.rglob("*")):
        raise DicomImportError(f"{src}: the folder is empty (no DICOM files)")
    if bids.resolve().is_relative_to(src.resolve()):
        raise DicomImportError(f"{bids}: the BIDS folder must not lie inside {src} (input)")
    if ga_weeks is not None and pma_weeks is not None:
        raise DicomImportError("give --ga-weeks (fetal) or --pma-weeks (infant), not both")
    for flag, weeks in (("--ga-weeks", ga_weeks), ("--pma-weeks", pma_weeks)):
        if weeks is not None and not (math.isfinite(weeks) and weeks > 0):
            raise DicomImportError(f"{flag} {weeks}: not a positive number of weeks")
    exe = find_dcm2niix()
    if exe is None:
        raise DicomImportError("dcm2niix not found: pip install dcm2niix (in this environment)")

    scan = scan_dicom(src)
    phi = scan.phi
    if scan.patients > 1:
        raise DicomImportError(
            f"{src}: holds images of {scan.patients} patients (PatientID/PatientName differ); "
            "import one patient's study at a time"
        )
    sub = _check_label("sub", participant, phi)
    ses = _check_label("ses", session, phi) if session else None
    prefix = f"sub-{sub}" + (f"_ses-{ses}" if ses else "")
    reldir = Path(f"sub-{sub}") / (f"ses-{ses}" if ses else "") / "anat"
    if bids.exists() and not bids.is_dir():
        raise DicomImportError(f"{bids}: not a folder")
    old = _existing_images(bids / reldir, prefix)
    old_images = [p.name for p in old if not p.name.endswith(".json")]
    if old and not overwrite:
        listed = ", ".join(old_images[:3]) + (", ..." if len(old_images) > 3 else "")
        raise DicomImportError(
            f"{bids / reldir}: {prefix} already has {len(old_images)} images ({listed}); "
            "use --overwrite to replace them"
        )

    kind: Kind | None = "fetal" if ga_weeks is not None else None
    kind = "infant" if pma_weeks is not None else kind
    with tempfile.TemporaryDirectory(prefix="earlybrain-dcm2niix-") as tmp:
        images, warnings = run_dcm2niix(src, Path(tmp), exe)
        kind, decisions = plan(images, kind, prefix, reldir)
        if scan.studies > 1:
            warnings.append(f"{src} holds {scan.studies} studies: imported as one session")
        result = ImportResult(kind=kind, decisions=decisions, warnings=warnings)
        _print_plan(src, scan.n_files, decisions, phi, log)
        kept = [d for d in decisions if d.target is not None]
        if not kept:
            want = "fetal T2 stacks" if kind == "fetal" else "infant 3D T1w/T2w volumes"
            given = ga_weeks is not None or pma_weeks is not None
            raise DicomImportError(
                f"{src}: no {want if given else 'fetal T2 stacks or infant 3D T1w/T2w'} "
                f"among {len(decisions)} images; nothing written"
            )
        for d in kept:
            assert d.target is not None
            write_bytes_atomic(bids / d.target, gzip_bytes(deidentified_nifti(d.image.nii)))
            meta = {k: v for k, v in d.image.meta.items() if k not in DROPPED_KEYS}
            for key in phi_fields(meta, phi):
                if key.split(".")[0] in ("SeriesDescription", "ProtocolName"):
                    log(f"  note: {d.target.name}: {key} dropped: it contains an identifying value")
            write_json_atomic(bids / _json(d.target), scrub_sidecar(meta, phi))
            result.written.append(d.target)
    for stale in old:  # --overwrite: what the previous import wrote and this one did not
        rel = stale.relative_to(bids)
        if rel not in result.written and rel not in {_json(t) for t in result.written}:
            stale.unlink()
    converter = str(kept[0].image.meta.get("ConversionSoftwareVersion") or "")
    age = ga_weeks if kind == "fetal" else pma_weeks
    _write_dataset_files(bids, sub, ses, kind, age, converter, result)
    for w in result.warnings:
        warn(f"warning: {w}")
    return result


def _json(rel: Path) -> Path:
    return rel.with_name(rel.name.removesuffix(".nii.gz") + ".json")


def _print_plan(
    src: Path,
    n_files: int,
    decisions: Sequence[Decision],
    phi: PhiMatcher,
    log: Callable[[str], object],
) -> None:
    """One line per series (per image where a series' images were decided differently)."""
    n_series = len({d.image.series for d in decisions})
    log(f"{src}: {n_files} DICOM files, {n_series} series, {len(decisions)} images")
    groups: dict[int | str, list[Decision]] = {}
    for d in decisions:
        key = d.image.series if d.image.series is not None else d.image.stem
        groups.setdefault(key, []).append(d)
    for members in groups.values():
        first = members[0].image
        name = f"{series_name(first)} {phi.redact(first.description)!r}"
        same = len(members) > 1 and all(
            d.target is None and d.reason == members[0].reason for d in members
        )
        if same:
            log(f"  {name} ({len(members)} images): skipped: {members[0].reason}")
            continue
        for d in members:
            shape = "x".join(str(s) for s in d.image.shape[:3])
            part = f" [{d.image.stem}]" if len(members) > 1 else ""
            if d.target is not None:
                log(f"  {name}{part} {shape}: {d.reason} -> {d.target.as_posix()}")
            else:
                log(f"  {name}{part} {shape}: skipped: {d.reason}")


def _write_dataset_files(
    bids: Path,
    sub: str,
    ses: str | None,
    kind: Kind,
    age: float | None,
    converter: str,
    result: ImportResult,
) -> None:
    """dataset_description.json when missing; the age in participants.tsv (no session) or
    the subject's sessions.tsv (with a session: one subject, several ages)."""
    desc = bids / "dataset_description.json"
    if not desc.exists():
        write_json_atomic(
            desc,
            {
                "Name": "MRI dataset imported from DICOM",
                "BIDSVersion": BIDS_VERSION,
                "DatasetType": "raw",
                "GeneratedBy": [
                    {"Name": "earlybrain import-dicom", "Version": __version__},
                    {"Name": "dcm2niix", "Version": converter.lstrip("v")},
                ],
            },
        )
    aliases = GA_COLUMNS if kind == "fetal" else PMA_COLUMNS
    column = "ga_weeks" if kind == "fetal" else "pma_weeks"
    participants = bids / "participants.tsv"
    if ses is None:
        column, value = update_table(
            participants, "participant_id", f"sub-{sub}", aliases, column, age
        )
        where = f"{participants.name}"
    else:
        update_table(participants, "participant_id", f"sub-{sub}", (), "participant_id", None)
        sessions = bids / f"sub-{sub}" / f"sub-{sub}_sessions.tsv"
        column, value = update_table(sessions, "session_id", f"ses-{ses}", aliases, column, age)
        where = f"sub-{sub}/{sessions.name}"
    if value.strip().lower() in ("", "n/a"):
        measure = "gestational age (--ga-weeks)" if kind == "fetal" else "PMA (--pma-weeks)"
        result.warnings.append(
            f"no {measure} given: {column} is n/a in {where}; the pipeline needs it, so fill "
            "it in (or import again with the age) before running"
        )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="earlybrain import-dicom",
        allow_abbrev=False,
        description="Convert a DICOM study (dcm2niix) into a de-identified BIDS session: "
        "fetal T2 stacks (HASTE/SSFSE/bSSFP) or an infant's 3D T1w/T2w; localisers, "
        "derived images and other contrasts are listed and skipped.",
    )
    ap.add_argument("dicom_dir", metavar="DICOM_DIR", help="the study folder (only read)")
    ap.add_argument("bids_dir", metavar="BIDS_DIR", help="BIDS dataset to add the session to")
    ap.add_argument("--participant", required=True, help="subject label, e.g. f01 (not an ID)")
    ap.add_argument("--session", help="session label (layout sub-ID/ses-S/anat)")
    age = ap.add_mutually_exclusive_group()
    age.add_argument("--ga-weeks", type=float, help="gestational age at scan: a fetal session")
    age.add_argument("--pma-weeks", type=float, help="post-menstrual age: an infant session")
    ap.add_argument("--overwrite", action="store_true", help="replace the session's images")
    a = ap.parse_args(argv)
    try:
        result = import_dicom(
            a.dicom_dir,
            a.bids_dir,
            a.participant,
            a.session,
            a.ga_weeks,
            a.pma_weeks,
            a.overwrite,
        )
    except (DicomImportError, TableError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    skipped = [d for d in result.decisions if d.target is None]
    n_series = len({d.image.series for d in skipped})
    print(
        f"converted {len(result.written)} images, skipped {len(skipped)} ({n_series} series) "
        f"-> {a.bids_dir} ({result.kind} session)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
