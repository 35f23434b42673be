"""Synthetic DICOM studies (pydicom) built from NIfTI images, with PHI in every usual tag.

Used by tests/test_import_dicom.py: the images come from the simulator, so the
geometry written into the DICOM headers is known exactly (NIfTI affine, RAS) and the
import can be checked voxel for voxel; the PHI values are distinctive strings, so that
a byte search of everything the import writes finds any that leaks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

# Every identifying value the study carries, by DICOM keyword. The times are distinctive
# prefixes (acquisition times of the slices continue them).
PHI: dict[str, str] = {
    "PatientName": "DOE^JANE",
    "PatientID": "PID7319",
    "OtherPatientIDs": "OPID2288",
    "PatientBirthDate": "19870214",
    "PatientAddress": "7 Privet Lane Exampleville",
    "PatientTelephoneNumbers": "5550173",
    "AccessionNumber": "ACC55821",
    "StudyID": "STU4411",
    "StudyDate": "20261105",
    "SeriesDate": "20261106",
    "AcquisitionDate": "20261107",
    "ContentDate": "20261108",
    "StudyTime": "134512",
    "SeriesTime": "135020",
    "InstitutionName": "St Example Hospital",
    "InstitutionAddress": "12 Harbour Road Exampletown",
    "InstitutionalDepartmentName": "Radiology Zeta",
    "ReferringPhysicianName": "REF^HOUSE",
    "PerformingPhysicianName": "PERF^WILSON",
    "RequestingPhysician": "REQ^FOREMAN",
    "OperatorsName": "OPER^CUDDY",
    "StationName": "STATION-X9",
    "DeviceSerialNumber": "SN123987",
    "ImageComments": "rescan for PID7319",
}
ACQUISITION_TIME_PREFIX = "1357"  # + two digits per series: e.g. 135703.500000


def phi_strings(study_uid: str | None = None) -> list[str]:
    """The strings that must not appear anywhere in an imported dataset (any case): every
    value, names also with spaces and the patient's name parts alone, dates and times
    also in ISO form, the acquisition times of the series."""
    out: set[str] = set()
    for key, value in PHI.items():
        out.add(value)
        if "^" in value:
            out.add(value.replace("^", " "))
        if key.endswith("Date"):
            out.add(f"{value[:4]}-{value[4:6]}-{value[6:]}")
        if key.endswith("Time"):
            out.add(f"{value[:2]}:{value[2:4]}:{value[4:6]}")
    out.update(PHI["PatientName"].split("^"))
    out.add("JANE DOE")
    for series in range(1, 10):
        hhmmss = f"{ACQUISITION_TIME_PREFIX}{series:02d}"
        out |= {hhmmss, f"{hhmmss[:2]}:{hhmmss[2:4]}:{hhmmss[4:]}"}
    if study_uid:
        out.add(study_uid)
    return sorted(out)


@dataclass
class Series:
    """One DICOM series to write: an image (x, y, slices) with its RAS affine."""

    number: int
    description: str
    data: np.ndarray
    affine: np.ndarray
    thickness_mm: float | None = None
    scanning_sequence: str = "SE"
    sequence_variant: str = "SK"
    sequence_name: str = "*haste"
    acquisition_type: str = "2D"
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "M", "ND")
    repetition_ms: float = 1400.0
    echo_ms: float = 90.0
    protocol: str | None = None
    extra: dict[str, object] = field(default_factory=dict)


LPS = np.diag([-1.0, -1.0, 1.0])


def scale_to_uint16(data: np.ndarray, top: float = 4000.0) -> np.ndarray:
    """Linear map of the image onto 0..top, rounded. Kept below 12288 on purpose: a pixel
    pair can then never spell three ASCII digits, so the PHI byte search cannot hit pixel
    data by chance."""
    d = np.asarray(data, dtype=np.float64)
    lo, hi = float(d.min()), float(d.max())
    return np.round((d - lo) * (top / max(hi - lo, 1e-9))).astype(np.uint16)


def write_series(
    folder: Path,
    series: Series,
    study_uid: str,
    frame_uid: str,
    series_uid: str | None = None,
    first_instance: int = 1,
) -> list[Path]:
    """One file per slice: MR Image Storage, geometry from the affine (RAS -> LPS).

    DICOM columns run along NIfTI i, rows along NIfTI j: pixel (row r, column c) of
    slice k is voxel (c, r, k), at ImagePositionPatient + c * col_spacing * row_cosine
    + r * row_spacing * column_cosine.
    """
    folder.mkdir(parents=True, exist_ok=True)
    A = np.asarray(series.affine, dtype=np.float64)
    pixels = scale_to_uint16(series.data)
    nx, ny, nz = pixels.shape
    dx, dy, dz = (float(np.linalg.norm(A[:3, i])) for i in range(3))
    row_cos = LPS @ (A[:3, 0] / dx)
    col_cos = LPS @ (A[:3, 1] / dy)
    series_uid = series_uid or generate_uid()
    paths = []
    for k in range(nz):
        pos = LPS @ (A[:3, :3] @ np.array([0.0, 0.0, k]) + A[:3, 3])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "MR"
        ds.Manufacturer = "SIEMENS"
        ds.ManufacturerModelName = "Avanto"
        ds.MagneticFieldStrength = 1.5
        ds.SoftwareVersions = "syngo MR B17"
        for key, value in PHI.items():
            setattr(ds, key, value)
        ds.PatientSex = "F"
        ds.PatientAge = "038Y"
        ds.PatientWeight = 71.0
        ds.PatientPosition = "HFS"
        ds.AcquisitionTime = f"{ACQUISITION_TIME_PREFIX}{series.number:02d}.{k:02d}0000"
        ds.ContentTime = ds.AcquisitionTime
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SeriesNumber = series.number
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = first_instance + k
        ds.SeriesDescription = series.description
        ds.ProtocolName = series.protocol or series.description
        ds.ImageType = list(series.image_type)
        ds.ScanningSequence = series.scanning_sequence
        ds.SequenceVariant = series.sequence_variant
        ds.SequenceName = series.sequence_name
        ds.MRAcquisitionType = series.acquisition_type
        ds.RepetitionTime = series.repetition_ms
        ds.EchoTime = series.echo_ms
        ds.EchoNumbers = 1
        ds.SliceThickness = series.thickness_mm or dz
        ds.SpacingBetweenSlices = dz
        ds.PixelSpacing = [dy, dx]  # [between rows, between columns]
        ds.ImageOrientationPatient = [float(v) for v in (*row_cos, *col_cos)]
        ds.ImagePositionPatient = [float(v) for v in pos]
        ds.SliceLocation = float(np.dot(np.cross(row_cos, col_cos), pos))
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.PixelData = np.ascontiguousarray(pixels[:, :, k].T).tobytes()
        for key, value in series.extra.items():
            setattr(ds, key, value)
        path = folder / f"IM{series.number:03d}_{first_instance + k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_study(folder: Path, series: Sequence[Series], localiser_number: int | None = 1) -> str:
    """Write every series under `folder` (one subfolder each), and a 3-plane localiser
    first when `localiser_number` is given; returns the StudyInstanceUID."""
    study_uid, frame_uid = generate_uid(), generate_uid()
    if localiser_number is not None:
        write_localiser(folder / f"S{localiser_number:02d}", localiser_number, study_uid, frame_uid)
    for s in series:
        write_series(folder / f"S{s.number:02d}", s, study_uid, frame_uid)
    return study_uid


def write_localiser(folder: Path, number: int, study_uid: str, frame_uid: str, size: int = 32):
    """A 3-slice localiser: one image in each of three orthogonal planes, one series."""
    yy, xx = np.mgrid[:size, :size]
    img = (np.exp(-((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / (size * 2.0)) * 1000)[..., None]
    planes = [
        np.eye(3),  # axial
        np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]]),  # coronal
        np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]]),  # sagittal
    ]
    uid = generate_uid()
    for k, R in enumerate(planes):
        aff = np.eye(4)
        aff[:3, :3] = R @ np.diag([2.0, 2.0, 10.0])
        aff[:3, 3] = -aff[:3, :3] @ np.array([size / 2, size / 2, 0.0])
        plane = Series(
            number=number,
            description="localizer",
            data=img,
            affine=aff,
            scanning_sequence="GR",
            sequence_variant="SP",
            sequence_name="*fl2d1",
            repetition_ms=8.6,
            echo_ms=4.0,
        )
        write_series(folder, plane, study_uid, frame_uid, series_uid=uid, first_instance=k + 1)
