"""De-identification of BIDS sidecars and NIfTI headers.

Why a module of its own: `earlybrain import-dicom` scrubs what it writes, and the same
rules apply wherever the pipeline copies a lab's own raw sidecars into derivatives or
reports (a lab's BIDS dataset may have been converted with PHI kept). Converters differ
in what they strip (dcm2niix's ``-ba y`` keeps InstitutionName, StationName,
DeviceSerialNumber, AcquisitionTime, and writes the acquisition time into the NIfTI
``descrip``), so nothing here trusts the converter.

Two layers, because neither is enough alone:

* by key: `PHI_KEYS` (an explicit deny-list) plus any key containing one of
  `PHI_KEY_PARTS` (Patient, Date, Time, Institution, Physician, ...), except the
  acquisition keys in `KEPT_KEYS` / `TIMING_KEY_RE` (RepetitionTime, EchoTime,
  PatientPosition, ...). An unknown key that looks identifying is dropped: losing a
  harmless field costs less than leaking a date.
* by value (`PhiMatcher`): free-text fields (SeriesDescription, ProtocolName) sometimes
  hold the patient's name or ID typed in by the radiographer; when the identifying
  values are known (from the DICOM headers), any string field that contains one is
  dropped too.

PatientSex and PatientAge are dropped with the rest of Patient*: for a fetus they
describe the mother, for an infant the pipeline does not use them, and sex belongs in
participants.tsv if a lab wants it recorded.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

#: Keys removed wherever they occur (BIDS / dcm2niix spelling of the DICOM attributes).
PHI_KEYS: frozenset[str] = frozenset(
    {
        # the person
        "PatientName",
        "PatientID",
        "OtherPatientIDs",
        "OtherPatientNames",
        "PatientBirthDate",
        "PatientBirthTime",
        "PatientSex",
        "PatientAge",
        "PatientSize",
        "PatientWeight",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "PatientComments",
        "AdditionalPatientHistory",
        "EthnicGroup",
        "Occupation",
        "MedicalAlerts",
        "Allergies",
        "PregnancyStatus",
        "LastMenstrualDate",
        "SmokingStatus",
        "ResponsiblePerson",
        # the visit
        "AccessionNumber",
        "StudyID",
        "StudyDescription",
        "ProcedureStepDescription",
        "PerformedProcedureStepDescription",
        "RequestedProcedureDescription",
        "ImageComments",
        "StudyComments",
        "StudyDate",
        "SeriesDate",
        "AcquisitionDate",
        "ContentDate",
        "StudyTime",
        "SeriesTime",
        "AcquisitionTime",
        "ContentTime",
        "AcquisitionDateTime",
        "InstanceCreationDate",
        "InstanceCreationTime",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "FrameOfReferenceUID",
        # the people and the place
        "ReferringPhysicianName",
        "PerformingPhysicianName",
        "RequestingPhysician",
        "PhysiciansOfRecord",
        "NameOfPhysiciansReadingStudy",
        "OperatorsName",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "StationName",
        "DeviceSerialNumber",
    }
)

#: Any key containing one of these (case-insensitive; "UID" case-sensitive) is dropped.
PHI_KEY_PARTS: tuple[str, ...] = (
    "patient",
    "birth",
    "date",
    "time",
    "institution",
    "department",
    "physician",
    "operator",
    "referring",
    "requesting",
    "station",
    "serial",
    "accession",
    "address",
    "telephone",
    "comment",
)
_UID_PART = "UID"

#: Keys that match a part above but describe the acquisition, not the person or visit.
KEPT_KEYS: frozenset[str] = frozenset(
    {
        "PatientPosition",
        "ImageOrientationPatient",
        "ImageOrientationPatientDICOM",
        "ImagePositionPatient",
        "FrameTimesStart",
    }
)
#: Durations of the sequence (seconds), not clock times: RepetitionTime, EchoTime2, ...
TIMING_KEY_RE = re.compile(
    r"^(Repetition|Echo|Inversion|Delay|TotalReadout|Dwell|Mixing|TriggerDelay|BolusCutOffDelay)"
    r"Time(\d+|s|Excitation|Preparation)?$"
)

#: NIfTI-1 header text fields that converters fill with times, comments or names.
NIFTI_TEXT_FIELDS: tuple[str, ...] = ("descrip", "aux_file", "db_name", "intent_name")


def is_phi_key(key: str) -> bool:
    """Whether a sidecar key names identifying information (see the module docstring)."""
    if key in PHI_KEYS:
        return True
    if key in KEPT_KEYS or TIMING_KEY_RE.match(key):
        return False
    low = key.lower()
    return _UID_PART in key or any(part in low for part in PHI_KEY_PARTS)


class PhiMatcher:
    """Finds known identifying values (names, IDs, dates, times) inside free text.

    Built from the raw values of a study's identifying DICOM attributes. Each value is
    also matched in the forms a converter or a person writes it: a name's components
    (``DOE^JANE`` -> ``DOE``, ``JANE``), a DICOM date as ISO (``20261105`` ->
    ``2026-11-05``), a DICOM time as ``13:45:12``. Matching ignores case. Values (and
    name components) shorter than `min_length` are ignored: a two-letter surname or a
    study ID of ``1`` would match everywhere.
    """

    def __init__(self, values: Iterable[str] = (), min_length: int = 3) -> None:
        needles: set[str] = set()
        for raw in values:
            for value in _forms(str(raw).strip()):
                if len(value) >= min_length:
                    needles.add(value.lower())
        # longest first, so that redaction replaces "DOE^JANE" before "DOE"
        self.needles: tuple[str, ...] = tuple(sorted(needles, key=lambda s: (-len(s), s)))

    def __bool__(self) -> bool:
        return bool(self.needles)

    def found_in(self, text: str) -> list[str]:
        """The known values that occur in `text` (as stored, lower case)."""
        low = text.lower()
        return [n for n in self.needles if n in low]

    def redact(self, text: str, mark: str = "[redacted]") -> str:
        """`text` with every known value replaced by `mark` (for printing descriptions)."""
        for needle in self.needles:
            text = re.sub(re.escape(needle), mark, text, flags=re.IGNORECASE)
        return text


def _forms(value: str) -> set[str]:
    """A value and the other spellings it may appear in."""
    if not value:
        return set()
    forms = {value}
    if "^" in value or " " in value:
        forms |= {p for p in re.split(r"[\^ ,]+", value) if p}
        forms.add(" ".join(p for p in value.split("^") if p))
    if re.fullmatch(r"\d{8}", value):  # DICOM date YYYYMMDD
        forms.add(f"{value[:4]}-{value[4:6]}-{value[6:]}")
    m = re.fullmatch(r"(\d{2})(\d{2})(\d{2})(\.\d+)?", value)  # DICOM time HHMMSS.frac
    if m:
        forms |= {m[1] + m[2] + m[3], f"{m[1]}:{m[2]}:{m[3]}"}
    return forms


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def _scrub(meta: Mapping[str, Any], known: PhiMatcher, path: str, dropped: list[str]) -> dict:
    out: dict[str, Any] = {}
    for key, value in meta.items():
        where = f"{path}{key}"
        if is_phi_key(str(key)) or any(known.found_in(s) for s in _strings(value)):
            dropped.append(where)
            continue
        if isinstance(value, Mapping):
            value = _scrub(value, known, f"{where}.", dropped)
        elif isinstance(value, list):
            value = [
                _scrub(v, known, f"{where}[{i}].", dropped) if isinstance(v, Mapping) else v
                for i, v in enumerate(value)
            ]
        out[key] = value
    return out


def scrub_sidecar(meta: Mapping[str, Any], known_phi: PhiMatcher | None = None) -> dict[str, Any]:
    """A copy of a BIDS sidecar without identifying fields (nested mappings included).

    Drops every key `is_phi_key` flags and, when `known_phi` is given, every field whose
    text contains one of its values. The input is not modified.
    """
    return _scrub(meta, known_phi or PhiMatcher(), "", [])


def phi_fields(meta: Mapping[str, Any], known_phi: PhiMatcher | None = None) -> list[str]:
    """The fields `scrub_sidecar` would drop, as dotted paths (``Key``, ``Outer.Inner``)."""
    dropped: list[str] = []
    _scrub(meta, known_phi or PhiMatcher(), "", dropped)
    return dropped


def deidentified_nifti(path: str | os.PathLike[str]) -> bytes:
    """An uncompressed NIfTI-1 file's bytes with its text fields blanked and extensions
    removed; geometry, data type, scaling and every voxel byte unchanged.

    The header is edited rather than the image re-saved so that nothing about the data
    is re-encoded (nibabel would recompute scaling for a scaled integer image).
    """
    raw = Path(path).read_bytes()
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw))
    offset = int(header["vox_offset"])
    nbytes = int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
    if header["magic"] != b"n+1" or len(raw) < offset + nbytes:
        raise ValueError(f"{path}: not a complete single-file NIfTI-1 image")
    for name in NIFTI_TEXT_FIELDS:
        header[name] = b""
    header.extensions.clear()
    header["vox_offset"] = 352  # 348-byte header + 4-byte "no extensions" flag
    out = io.BytesIO()
    header.write_to(out)
    return out.getvalue() + raw[offset : offset + nbytes]
