"""`earlybrain import-dicom`: series selection, geometry, BIDS layout, de-identification.

The DICOM studies are written with pydicom from simulated images (tests/dicom_fixtures.py),
with PHI in every usual tag, so the import is checked voxel for voxel against the images
it came from and byte for byte for leaks.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import yaml
from conftest import file_checksums
from dicom_fixtures import (
    PHI,
    Series,
    phi_strings,
    scale_to_uint16,
    write_study,
)
from synth_fixtures import FAST_WORKFLOW_CONFIG

from earlybrain.io.bids import BIDS_VERSION, discover_sessions
from earlybrain.io.deidentify import (
    PhiMatcher,
    deidentified_nifti,
    is_phi_key,
    phi_fields,
    scrub_sidecar,
)
from earlybrain.io.dicom_import import find_dcm2niix, main
from earlybrain.io.dicom_series import Image, classify
from earlybrain.preprocess.n4 import ACQUISITION_FIELDS
from earlybrain.simulate.cohort import CohortSpec, simulate_cohort

GA = 27.5
HASTE = {1: "HASTE_tra", 2: "HASTE_cor", 3: "HASTE_sag"}  # run -> description


def fetal_series(anat: Path) -> list[Series]:
    """The simulated stacks as HASTE series 3-5 (in run order), plus a FLAIR (series 7).

    The sagittal stack's protocol name holds the patient ID, as radiographers sometimes
    type it: the import must drop that field, not the stack.
    """
    series = []
    for run, desc in HASTE.items():
        img = nib.load(anat / f"sub-f01_run-{run}_T2w.nii.gz")
        series.append(
            Series(
                number=2 + run,
                description=desc,
                data=np.asanyarray(img.dataobj),
                affine=img.affine,
                thickness_mm=4.5,
                protocol=f"{desc}_{PHI['PatientID']}" if run == 3 else None,
            )
        )
    img = nib.load(anat / "sub-f01_run-1_T2w.nii.gz")
    series.append(
        Series(
            number=7,
            description="t2_tirm_tra_dark-fluid",
            data=np.asanyarray(img.dataobj),
            affine=img.affine,
            scanning_sequence="SE\\IR",
            sequence_variant="SK\\SP\\MP",
            sequence_name="*tir2d1",
            repetition_ms=9000.0,
            echo_ms=81.0,
            extra={"InversionTime": 2500.0},
        )
    )
    return series


@pytest.fixture(scope="module")
def fetal_study(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A simulated fetus as a DICOM study (localiser, 3 HASTE, FLAIR), imported once."""
    root = tmp_path_factory.mktemp("dicom_fetal")
    sim, _ = simulate_cohort(
        root / "sim", CohortSpec(n_fetal=1, seed=5, preset="tiny", n_stacks=3, fetal_ages=(GA,))
    )
    dicom = root / "dicom"
    study_uid = write_study(dicom, fetal_series(sim / "sub-f01" / "anat"))
    before = file_checksums(dicom)
    bids = root / "bids"
    return {"sim": sim, "dicom": dicom, "bids": bids, "uid": study_uid, "before": before}


@pytest.fixture(scope="module")
def fetal_import(fetal_study: dict) -> dict:
    """The import of `fetal_study` (fetus sub-f01, GA given), with its output and time."""
    buf = io.StringIO()
    t0 = time.monotonic()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        rc = main([str(fetal_study["dicom"]), str(fetal_study["bids"]), "--participant", "f01",
                   "--ga-weeks", str(GA)])  # fmt: skip
    return fetal_study | {"rc": rc, "out": buf.getvalue(), "seconds": time.monotonic() - t0}


# ------------------------------------------------------------------ helpers


def _is_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


BASE64_RUN = re.compile(rb"[A-Za-z0-9+/]{100,}={0,2}")


def phi_hits(folder: Path, needles: list[str], everywhere: bool = False) -> list[tuple[str, str]]:
    """(file, needle) for every PHI string found under `folder`, case-insensitively, gz
    files decompressed.

    `everywhere`: every byte of every file, as substrings. Sound for the import's own
    output: its voxels are uint16 below 12288 (tests/dicom_fixtures.py), so no two
    adjacent data bytes are printable characters. Otherwise (the workflow's float images,
    PNG figures), text files and NIfTI headers are searched for every needle as a whole
    word, and the other binary bytes for needles of 6 or more characters only: a
    3-letter name turns up by chance in megabytes of float data (8 cases / 2**24 per
    position), a 6-character string practically never. The same holds for the base64
    images embedded in the HTML reports.
    """
    hits = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
        if everywhere:
            full, rest = data.lower(), b""
        elif _is_text(data):  # embedded images (base64) are searched like binary data
            blobs = BASE64_RUN.findall(data)
            full, rest = BASE64_RUN.sub(b" ", data).lower(), b" ".join(blobs).lower()
        elif data[344:347] == b"n+1":  # NIfTI-1: header + extensions, then voxels
            offset = int(np.frombuffer(data[108:112], "<f4")[0])
            full, rest = data[:offset].lower(), data[offset:].lower()
        else:
            full, rest = b"", data.lower()
        for needle in needles:
            n = needle.lower().encode()
            word = (
                re.escape(n) if everywhere else rb"(?<![a-z0-9])" + re.escape(n) + rb"(?![a-z0-9])"
            )
            if re.search(word, full) or (len(n) >= 6 and n in rest):
                hits.append((str(path.relative_to(folder)), needle))
    return hits


def assert_same_voxels(data: np.ndarray, affine: np.ndarray, imported: nib.Nifti1Image) -> None:
    """`imported` shows `data` (scaled as in the DICOM) at the same place in the scanner,
    within 0.01 mm. dcm2niix may flip or reorder axes, so voxels are matched through the
    two affines: source voxel -> imported voxel must be a signed axis permutation."""
    T = np.linalg.inv(imported.affine) @ affine
    P = np.round(T)
    assert sorted(np.abs(P[:3, :3]).sum(axis=0)) == [1, 1, 1], T
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in data.shape], indexing="ij"))
    corners = np.vstack([corners.reshape(3, -1), np.ones((1, 8))])
    err = np.abs(imported.affine @ P @ corners - affine @ corners)[:3].max()
    assert err < 0.01, f"voxels {err:.4f} mm apart"
    ijk = np.indices(data.shape).reshape(3, -1)
    mapped = (P[:3, :3] @ ijk + P[:3, 3:]).astype(int)
    got = np.asanyarray(imported.dataobj)[tuple(mapped)]
    np.testing.assert_array_equal(got, scale_to_uint16(data).reshape(-1))


# ------------------------------------------------------------------ the fetal import


def test_dcm2niix_is_the_wheels() -> None:
    """The converter comes with the Python dependencies: nothing to install or download."""
    import dcm2niix

    exe = find_dcm2niix()
    assert exe is not None and Path(exe) == Path(dcm2niix.bin)
    res = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    assert "v1.0." in res.stdout + res.stderr


def test_fetal_import_lists_converted_and_skipped(fetal_import: dict) -> None:
    out = fetal_import["out"]
    assert fetal_import["rc"] == 0, out
    for run, desc in HASTE.items():
        assert f"'{desc}'" in out
        assert f"-> sub-f01/anat/sub-f01_run-{run}_T2w.nii.gz" in out
    assert "series 1 'localizer' (3 images): skipped: localiser" in out
    assert "series 7 't2_tirm_tra_dark-fluid'" in out and "skipped: other contrast (FLAIR)" in out
    assert "ProtocolName dropped: it contains an identifying value" in out
    assert "converted 3 images" in out
    assert fetal_import["seconds"] < 30


def test_fetal_import_bids_layout_and_age(fetal_import: dict) -> None:
    bids = fetal_import["bids"]
    anat = bids / "sub-f01" / "anat"
    assert sorted(p.name for p in anat.iterdir()) == sorted(
        f"sub-f01_run-{r}_T2w.{ext}" for r in (1, 2, 3) for ext in ("nii.gz", "json")
    )
    (rec,) = discover_sessions(bids)
    assert rec.kind == "fetal" and rec.age_weeks == GA and len(rec.images) == 3
    assert (bids / "participants.tsv").read_text() == f"participant_id\tga_weeks\nsub-f01\t{GA}\n"
    desc = json.loads((bids / "dataset_description.json").read_text())
    assert desc["BIDSVersion"] == BIDS_VERSION and desc["DatasetType"] == "raw"
    side = json.loads((anat / "sub-f01_run-2_T2w.json").read_text())
    # what the reconstruction and N4 read survives the scrub
    assert side["SliceThickness"] == 4.5 and side["MRAcquisitionType"] == "2D"
    assert len(side["SliceTiming"]) == nib.load(anat / "sub-f01_run-2_T2w.nii.gz").shape[2]
    assert side["EchoTime"] == pytest.approx(0.09) and side["MagneticFieldStrength"] == 1.5
    assert side["SeriesDescription"] == "HASTE_cor" and "BidsGuess" not in side
    assert "ProtocolName" not in json.loads((anat / "sub-f01_run-3_T2w.json").read_text())


def test_fetal_import_keeps_geometry_and_data(fetal_import: dict) -> None:
    """Voxel-to-world of every stack as the simulator wrote it (within 0.01 mm), with the
    voxels the DICOM held; dcm2niix may flip or reorder axes, so voxels are matched
    through the two affines."""
    for run in HASTE:
        src = nib.load(fetal_import["sim"] / "sub-f01" / "anat" / f"sub-f01_run-{run}_T2w.nii.gz")
        dst = nib.load(fetal_import["bids"] / "sub-f01" / "anat" / f"sub-f01_run-{run}_T2w.nii.gz")
        assert_same_voxels(np.asanyarray(src.dataobj), src.affine, dst)
        for field in ("descrip", "aux_file", "db_name", "intent_name"):
            assert dst.header[field].item() == b""


def test_the_phi_search_finds_what_dcm2niix_leaves(fetal_study: dict, tmp_path: Path) -> None:
    """The search below is not vacuous: in the DICOM files it finds every value, and in
    dcm2niix's own anonymised output (-ba y) the institution, station, serial number and
    acquisition time (sidecar, and the NIfTI descrip) that the import has to remove."""
    needles = phi_strings(fetal_study["uid"])
    found = {n for _, n in phi_hits(fetal_study["dicom"], needles, everywhere=True)}
    assert set(PHI.values()) <= found
    out = tmp_path / "raw"
    out.mkdir()
    exe = find_dcm2niix()
    assert exe is not None
    subprocess.run([exe, "-ba", "y", "-f", "%s", "-o", str(out), str(fetal_study["dicom"] / "S03")],
                   check=True, capture_output=True)  # fmt: skip
    hits = set(phi_hits(out, needles))
    for needle in (PHI["InstitutionName"], PHI["StationName"], PHI["DeviceSerialNumber"]):
        assert ("3.json", needle) in hits
    assert ("3.nii", "135703") in hits  # descrip "TE=90;Time=135703.000"


def test_fetal_import_writes_no_phi_and_leaves_input_alone(fetal_import: dict) -> None:
    bids = fetal_import["bids"]
    assert phi_hits(bids, phi_strings(fetal_import["uid"]), everywhere=True) == []
    for path in bids.rglob("*.nii.gz"):  # nor in the gzip header (name, time stamp)
        raw = path.read_bytes()
        assert raw[4:8] == b"\0\0\0\0" and not raw[3] & 0x08  # mtime 0, no FNAME
    assert file_checksums(fetal_import["dicom"]) == fetal_import["before"]
    assert not list(fetal_import["dicom"].rglob("*.nii*"))


def test_second_participant_appends_and_overwrite_is_refused(
    fetal_import: dict, tmp_path: Path, capsys
) -> None:
    bids = shutil.copytree(fetal_import["bids"], tmp_path / "bids")
    (bids / "participants.tsv").write_text("participant_id\tGA\tsex\nsub-f01\t27.5\tF\n")
    dicom = str(fetal_import["dicom"])
    assert main([dicom, str(bids), "--participant", "sub-f02", "--ga-weeks", "31"]) == 0
    # the lab's own column and its other columns are kept
    assert (bids / "participants.tsv").read_text() == (
        "participant_id\tGA\tsex\nsub-f01\t27.5\tF\nsub-f02\t31\tn/a\n"
    )
    ages = {r.subject: r.age_weeks for r in discover_sessions(bids)}
    assert ages == {"f01": 27.5, "f02": 31.0}
    capsys.readouterr()

    before = file_checksums(bids)
    assert main([dicom, str(bids), "--participant", "f02", "--ga-weeks", "32"]) == 1
    err = capsys.readouterr().err
    assert (
        "sub-f02 already has 3 images (sub-f02_run-1_T2w.nii.gz, " in err and "--overwrite" in err
    )
    assert err.count("\n") == 1 and str(bids / "sub-f02" / "anat") in err
    assert file_checksums(bids) == before

    stale = bids / "sub-f02" / "anat" / "sub-f02_run-9_T2w.nii.gz"
    shutil.copy(bids / "sub-f02" / "anat" / "sub-f02_run-1_T2w.nii.gz", stale)
    assert main([dicom, str(bids), "--participant", "f02", "--ga-weeks", "32", "--overwrite"]) == 0
    assert not stale.exists()  # a previous import's leftovers do not join the new session
    assert len(list((bids / "sub-f02" / "anat").glob("*.nii.gz"))) == 3
    assert "sub-f02\t32\tn/a" in (bids / "participants.tsv").read_text()


def test_without_age_the_kind_comes_from_the_images(fetal_import: dict, tmp_path: Path, capsys):
    bids = tmp_path / "bids"
    assert main([str(fetal_import["dicom"]), str(bids), "--participant", "f01"]) == 0
    captured = capsys.readouterr()
    assert "(fetal session)" in captured.out
    err = captured.err
    assert "warning: no gestational age" in err and "ga_weeks is n/a in participants.tsv" in err
    assert (bids / "participants.tsv").read_text() == "participant_id\tga_weeks\nsub-f01\tn/a\n"


def test_identifying_labels_are_refused(fetal_import: dict, tmp_path: Path, capsys) -> None:
    dicom, bids = str(fetal_import["dicom"]), str(tmp_path / "bids")
    assert main([dicom, bids, "--participant", PHI["PatientID"], "--ga-weeks", "30"]) == 1
    assert "use a study code instead" in capsys.readouterr().err
    args = ["--participant", "f01", "--session", PHI["StudyDate"], "--ga-weeks", "30"]
    assert main([dicom, bids, *args]) == 1
    assert "use a study code instead" in capsys.readouterr().err
    assert not Path(bids).exists()


# ------------------------------------------------------------------ the infant import


def test_infant_import_with_session(tmp_path: Path, fetal_import: dict, capsys) -> None:
    """3D T1w + a T2w acquired twice (the last kept) + a 2D HASTE (skipped), into a
    session of a dataset that already has a fetus; the age goes to sessions.tsv."""
    sim, _ = simulate_cohort(tmp_path / "sim", CohortSpec(n_fetal=0, n_infant=1, preset="tiny"))
    anat = sim / "sub-i01" / "anat"
    t1, t2 = (nib.load(anat / f"sub-i01_{c}.nii.gz") for c in ("T1w", "T2w"))
    volume = {"acquisition_type": "3D", "sequence_variant": "SP"}
    t2_data = np.asanyarray(t2.dataobj)
    flip = np.diag([-1.0, 1, 1, 1])  # the repeat stored the other way round: same image
    flip[0, 3] = t2.shape[0] - 1
    series = [
        Series(3, "t1_mprage_sag", np.asanyarray(t1.dataobj), t1.affine,
               scanning_sequence="GR\\IR", sequence_name="*tfl3d1", repetition_ms=2300,
               echo_ms=2.3, **volume),
        Series(4, "t2_spc_sag", t2_data * 0.5, t2.affine, sequence_name="*spc_282ns",
               repetition_ms=3200, echo_ms=410, **volume),
        Series(5, "HASTE_tra", t2_data[:, :, ::4], t2.affine @ np.diag([1, 1, 4, 1])),
        Series(6, "t2_spc_sag", t2_data[::-1], t2.affine @ flip, sequence_name="*spc_282ns",
               repetition_ms=3200, echo_ms=410, **volume),
    ]  # fmt: skip
    dicom = tmp_path / "dicom"
    uid = write_study(dicom, series)
    bids = shutil.copytree(fetal_import["bids"], tmp_path / "bids")
    args = ["--participant", "i01", "--session", "s1", "--pma-weeks", "45.5"]
    assert main([str(dicom), str(bids), *args]) == 0
    out = capsys.readouterr().out
    assert "series 3 't1_mprage_sag'" in out and "-> sub-i01/ses-s1/anat/sub-i01_ses-s1_T1w" in out
    assert "series 4 't2_spc_sag'" in out and "an earlier T2w: the last one (series 6)" in out
    assert "series 5 'HASTE_tra'" in out and "2D stack: an infant session uses 3D volumes" in out
    assert "series 6 't2_spc_sag'" in out and "sub-i01_ses-s1_T2w.nii.gz" in out
    ses = bids / "sub-i01" / "ses-s1" / "anat"
    assert sorted(p.name for p in ses.iterdir()) == [
        "sub-i01_ses-s1_T1w.json",
        "sub-i01_ses-s1_T1w.nii.gz",
        "sub-i01_ses-s1_T2w.json",
        "sub-i01_ses-s1_T2w.nii.gz",
    ]
    assert_same_voxels(t2_data, t2.affine, nib.load(ses / "sub-i01_ses-s1_T2w.nii.gz"))
    assert_same_voxels(
        np.asanyarray(t1.dataobj), t1.affine, nib.load(ses / "sub-i01_ses-s1_T1w.nii.gz")
    )
    assert (bids / "sub-i01" / "sub-i01_sessions.tsv").read_text() == (
        "session_id\tpma_weeks\nses-s1\t45.5\n"
    )
    assert "sub-i01\t" in (bids / "participants.tsv").read_text()
    recs = {r.prefix: r for r in discover_sessions(bids)}
    assert recs["sub-f01"].kind == "fetal" and recs["sub-f01"].age_weeks == GA
    infant = recs["sub-i01_ses-s1"]
    assert infant.kind == "infant" and infant.age_weeks == 45.5
    assert [im.suffix for im in infant.images] == ["T1w", "T2w"]
    assert phi_hits(bids, phi_strings(uid), everywhere=True) == []


# ------------------------------------------------------------------ bad input


def _error(capsys, argv: list[str]) -> str:
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc != 0
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    return captured.err


def test_empty_folder(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    err = _error(capsys, [str(tmp_path / "empty"), str(tmp_path / "bids"), "--participant", "x1"])
    assert f"{tmp_path / 'empty'}: the folder is empty" in err
    assert not (tmp_path / "bids").exists()


def test_missing_folder(tmp_path: Path, capsys) -> None:
    err = _error(capsys, [str(tmp_path / "nope"), str(tmp_path / "bids"), "--participant", "x1"])
    assert f"{tmp_path / 'nope'}: no such folder" in err


def test_no_dicom(tmp_path: Path, capsys) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not an image\n")
    err = _error(capsys, [str(tmp_path / "notes"), str(tmp_path / "bids"), "--participant", "x1"])
    assert f"{tmp_path / 'notes'}: no DICOM images found" in err
    assert not (tmp_path / "bids").exists()


def test_dcm2niix_failure(fetal_study: dict, tmp_path: Path, capsys) -> None:
    """A DICOM file cut short: dcm2niix converts nothing and says why."""
    bad = tmp_path / "cut"
    bad.mkdir()
    first = sorted((fetal_study["dicom"] / "S03").iterdir())[0]
    (bad / first.name).write_bytes(first.read_bytes()[:3000])
    err = _error(capsys, [str(bad), str(tmp_path / "bids"), "--participant", "x1"])
    assert f"{bad}: dcm2niix converted nothing (exit " in err and "large enough" in err


def test_only_localiser_and_flair(fetal_study: dict, tmp_path: Path, capsys) -> None:
    dicom = tmp_path / "dicom"
    for s in ("S01", "S07"):
        shutil.copytree(fetal_study["dicom"] / s, dicom / s)
    err = _error(capsys, [str(dicom), str(tmp_path / "bids"), "--participant", "x1"])
    assert "no fetal T2 stacks or infant 3D T1w/T2w among 4 images; nothing written" in err
    assert not (tmp_path / "bids").exists()


def test_two_patients_are_refused(fetal_study: dict, tmp_path: Path, capsys) -> None:
    dicom = tmp_path / "dicom"
    for s in ("S03", "S04"):
        shutil.copytree(fetal_study["dicom"] / s, dicom / s)
    for path in (dicom / "S04").iterdir():
        ds = pydicom.dcmread(path)
        ds.PatientID = "PID0001"
        ds.save_as(path)
    err = _error(capsys, [str(dicom), str(tmp_path / "bids"), "--participant", "x1"])
    assert "holds images of 2 patients" in err and "PID" not in err
    assert not (tmp_path / "bids").exists()


def test_bids_inside_dicom_is_refused(fetal_study: dict, tmp_path: Path, capsys) -> None:
    dicom = shutil.copytree(fetal_study["dicom"] / "S03", tmp_path / "dicom")
    err = _error(capsys, [str(dicom), str(dicom / "bids"), "--participant", "x1"])
    assert "must not lie inside" in err


# ------------------------------------------------------------------ units


def test_pipeline_keys_are_not_phi() -> None:
    """Scrubbing must keep what the reconstruction and N4 read from raw sidecars."""
    needed = {*ACQUISITION_FIELDS, "SliceTiming", "SliceThickness", "SpacingBetweenSlices"}
    needed |= {"InversionTime", "EchoTime2", "TotalReadoutTime", "AcquisitionDuration"}
    needed |= {"PatientPosition", "ImageOrientationPatientDICOM", "SeriesDescription"}
    assert [k for k in sorted(needed) if is_phi_key(k)] == []
    phi = ["AcquisitionTime", "AcquisitionDateTime", "StationName", "DeviceSerialNumber",
           "InstitutionAddress", "PatientSex", "FrameOfReferenceUID", "ImageComments",
           "ReferringPhysicianName", "OperatorsName", "InstitutionalDepartmentName",
           "AccessionNumber", "StudyID", "PatientBirthDate", "SomeVendorScanDate"]  # fmt: skip
    assert [k for k in phi if not is_phi_key(k)] == []


def test_scrub_sidecar_by_key_and_value() -> None:
    meta = {
        "EchoTime": 0.09,
        "AcquisitionTime": "13:57:03.000000",
        "ProtocolName": "haste Doe Jane",
        "SeriesDescription": "HASTE_cor",
        "Notes": ["scanned 2026-11-05"],
        "Lab": {"StationName": "X", "Coil": "body", "Visit": {"StudyDate": "20261105"}},
    }
    known = PhiMatcher(["DOE^JANE", "20261105", "1"])
    clean = scrub_sidecar(meta, known)
    assert clean == {"EchoTime": 0.09, "SeriesDescription": "HASTE_cor", "Lab": {
        "Coil": "body", "Visit": {}}}  # fmt: skip
    assert "StationName" in meta["Lab"]  # the input is left alone
    assert phi_fields(meta, known) == [
        "AcquisitionTime", "ProtocolName", "Notes", "Lab.StationName", "Lab.Visit.StudyDate"
    ]  # fmt: skip
    assert scrub_sidecar({"ProtocolName": "haste Doe Jane"}) == {"ProtocolName": "haste Doe Jane"}
    assert known.redact("HASTE_JANE_20261105") == "HASTE_[redacted]_[redacted]"
    assert not known.found_in("series 1")  # "1" is too short to look for


def test_deidentified_nifti_keeps_every_voxel_byte(tmp_path: Path) -> None:
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 4.5, 1.0]))
    img.header["descrip"] = b"TE=90;Time=135703.000"
    img.header["aux_file"] = b"DOE"
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"PatientName DOE^JANE\0\0\0"))
    nib.save(img, tmp_path / "a.nii")
    raw = bytearray((tmp_path / "a.nii").read_bytes())
    raw[112:120] = np.array([2.5, -7.0], "<f4").tobytes()  # scl_slope, scl_inter (nibabel
    (tmp_path / "a.nii").write_bytes(raw)  # would drop a scaling the data do not need)
    (tmp_path / "b.nii").write_bytes(deidentified_nifti(tmp_path / "a.nii"))
    a, b = nib.load(tmp_path / "a.nii"), nib.load(tmp_path / "b.nii")
    assert b.header["descrip"].item() == b"" and b.header["aux_file"].item() == b""
    assert len(b.header.extensions) == 0 and b"DOE" not in (tmp_path / "b.nii").read_bytes()
    np.testing.assert_array_equal(a.affine, b.affine)
    assert (b.dataobj.slope, b.dataobj.inter) == (a.dataobj.slope, a.dataobj.inter) == (2.5, -7)
    np.testing.assert_array_equal(a.dataobj.get_unscaled(), b.dataobj.get_unscaled())


def _img(shape=(64, 64, 20), stem: str = "3", bval: bool = False, **meta) -> Image:
    return Image(Path(f"{stem}.nii"), meta, shape, bval)


@pytest.mark.parametrize(
    ("image", "role", "reason"),
    [
        (_img(SeriesDescription="HASTE_cor", MRAcquisitionType="2D"), "ssfse", "single-shot"),
        (_img(SeriesDescription="T2 SSFSE", MRAcquisitionType="2D"), "ssfse", "single-shot"),
        (_img(SeriesDescription="fetal", SequenceName="*tfi2d1_8", MRAcquisitionType="2D"),
         "bssfp", "bSSFP"),
        (_img(SeriesDescription="FIESTA sag", MRAcquisitionType="2D"), "bssfp", "bSSFP"),
        (_img(SeriesDescription="AAHScout", MRAcquisitionType="2D"), None, "localiser"),
        (_img(SeriesDescription="x", ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"]), None,
         "localiser"),
        (_img((64, 64, 3), SeriesDescription="HASTE_tra", MRAcquisitionType="2D"), None,
         "only 3 slice"),
        (_img(SeriesDescription="HASTE_tra", MRAcquisitionType="2D",
              ImageType=["DERIVED", "PRIMARY", "MPR"]), None, "derived"),
        (_img(stem="3_ph", SeriesDescription="HASTE_tra", MRAcquisitionType="2D",
              ImageType=["ORIGINAL", "PRIMARY", "P", "ND"]), None, "phase image"),
        (_img(stem="3_e2", SeriesDescription="HASTE_tra", MRAcquisitionType="2D",
              EchoNumber=2), None, "echo 2"),
        (_img((64, 64, 20, 3), SeriesDescription="HASTE_tra", MRAcquisitionType="2D"), None,
         "4D"),
        (_img(SeriesDescription="ep2d_diff_tra", MRAcquisitionType="2D", bval=True), None,
         "DWI"),
        (_img(SeriesDescription="resolve_tra", MRAcquisitionType="2D",
              ScanningSequence="EP"), None, "EPI"),
        (_img(SeriesDescription="T2 FLAIR tra", MRAcquisitionType="2D"), None, "FLAIR"),
        (_img(SeriesDescription="t2_tse_tra", MRAcquisitionType="2D"), None, "not a single"),
        (_img(SeriesDescription="t1_mprage_sag", MRAcquisitionType="3D"), "T1w", "by name"),
        (_img(SeriesDescription="sT1W_3D_TFE", MRAcquisitionType="3D"), "T1w", "by name"),
        (_img(SeriesDescription="T2 CUBE", MRAcquisitionType="3D"), "T2w", "by name"),
        (_img(SeriesDescription="3D sag", MRAcquisitionType="3D", EchoTime=0.0025), "T1w",
         "short echo"),
        (_img(SeriesDescription="3D sag", MRAcquisitionType="3D", EchoTime=0.35), "T2w",
         "long echo"),
        (_img(SeriesDescription="3D sag", MRAcquisitionType="3D", EchoTime=0.03), None,
         "unknown contrast"),
    ],
)  # fmt: skip
def test_classify(image: Image, role: str | None, reason: str) -> None:
    got_role, why = classify(image)
    assert (got_role, reason in why) == (role, True), why


# ------------------------------------------------------------------ the whole pipeline


@pytest.mark.slow
def test_workflow_on_imported_dataset_leaks_no_phi(fetal_import: dict, tmp_path: Path) -> None:
    """The imported session runs through the workflow, and nothing it writes (volumes,
    sidecars, QC, reports, figures, logs) holds PHI."""
    from earlybrain.runner import run_workflow

    bids = shutil.copytree(fetal_import["bids"], tmp_path / "bids")
    out = tmp_path / "out"
    t0 = time.monotonic()
    rc = run_workflow(bids, out, cores=2, overrides=yaml.safe_load(FAST_WORKFLOW_CONFIG))
    print(f"workflow on the imported session: {time.monotonic() - t0:.0f} s")
    assert rc == 0
    assert (out / "earlybrain" / "sub-f01.html").is_file()
    assert phi_hits(out, phi_strings(fetal_import["uid"])) == []
