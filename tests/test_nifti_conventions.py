"""Peers' NIfTI conventions (issue 26): what SVRTK, NiftyMIC, NeSVoR, dcm2niix, FSL,
ITK/ANTs and MRtrix write is read the same way by validation, N4 and brain masking.

Any orientation code, axis order and scalar data type, scl_slope/scl_inter and a
trailing singleton dimension are accepted (with a validation note where a lab should
know what was done); anything else is a clear error naming the file. Every file here is
written byte by byte with the odd header (nibabel would "fix" some fields on save) and
put in a small BIDS session beside a plain stack, so that validation sees a real session.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from synth_fixtures import make_bids, oblique_affine, phantom

from earlybrain.io.bids import SessionRecord, discover_sessions
from earlybrain.io.validate import validate_session
from earlybrain.preprocess import n4 as n4_module
from earlybrain.preprocess.steps import brain_mask_step, n4_step
from earlybrain.stepkit import Compute

SHAPE = (24, 24, 8)
SPACING = (2.0, 2.0, 4.0)
REFERENCE = oblique_affine(SPACING)  # the plain stack (run-1) of every session here
STACK = "sub-f01_run-2_T2w.nii.gz"  # the stack each test replaces by an odd file


def _place(m3: np.ndarray, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """An affine with voxel axes `m3` centred where the reference stack is (same head)."""
    centre = (REFERENCE @ [*((np.array(SHAPE) - 1) / 2), 1.0])[:3]
    aff = np.eye(4)
    aff[:3, :3] = m3
    aff[:3, 3] = centre - m3 @ ((np.array(shape[:3]) - 1) / 2)
    return aff


AFFINE = _place(np.diag(SPACING))  # RAS


def _shifted(affine: np.ndarray, mm: list[float]) -> np.ndarray:
    out = affine.copy()
    out[:3, 3] += mm
    return out


ORIENTATIONS = {
    "LPS (ITK/DICOM order)": np.diag([-2.0, -2.0, 4.0]),
    "LAS (FSL radiological, qfac -1)": np.diag([-2.0, 2.0, 4.0]),
    "PIR (sagittal, permuted)": np.array([[0, 0, 4.0], [-2.0, 0, 0], [0, -2.0, 0]]),
    "oblique (double angulation)": Rotation.from_euler("xyz", [25, -35, 40], degrees=True)
    .as_matrix()
    .dot(np.diag(SPACING)),
}


def _stored(seed: int = 5) -> np.ndarray:
    """Whole numbers 0-120: exact in every data type from int8 to float64."""
    img, _ = phantom(SHAPE, SPACING, seed=seed)
    return np.round(img / img.max() * 120.0)


def _write(
    path: Path,
    data: np.ndarray,
    affine: np.ndarray = AFFINE,
    *,
    qform: np.ndarray | None = None,
    qform_code: int = 1,
    sform_code: int = 1,
    **fields: float,
) -> Path:
    """A NIfTI-1 file with exactly these header fields (sform = `affine`)."""
    img = nib.Nifti1Image(data, None)
    img.header.set_qform(affine if qform is None else qform, code=1)
    img.header.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    raw = img.to_bytes()
    hdr = nib.Nifti1Header(binaryblock=raw[:348], check=False)
    hdr["qform_code"], hdr["sform_code"] = qform_code, sform_code
    for key, value in fields.items():
        hdr[key] = value
    raw = hdr.binaryblock + raw[348:]
    path.write_bytes(gzip.compress(raw, mtime=0) if path.name.endswith(".gz") else raw)
    return path


@pytest.fixture
def session(tmp_path: Path) -> tuple[Path, SessionRecord]:
    """(the stack to replace, its session): two stacks of one fetus, the plain one kept."""
    bids = make_bids(tmp_path / "bids", fetal={"f01": 25.0}, n_stacks=2, stack_shape=SHAPE)
    (rec,) = discover_sessions(bids, strict=False)
    return bids / "sub-f01" / "anat" / STACK, rec


@pytest.fixture
def n4_inputs(monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    """The arrays N4 is given, in call order (the N4 input the issue asks about)."""
    seen: list[np.ndarray] = []
    real = n4_module.n4_correct

    def spy(data: np.ndarray, *args, **kwargs):
        seen.append(np.array(data))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(n4_module, "n4_correct", spy)
    return seen


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Untrained masking networks: these tests check grids, not masks."""
    from earlybrain.preprocess.masking.inference import MaskingGeometry, MaskingModel, save_weights
    from earlybrain.preprocess.masking.network import DEFAULT_ARCH, build_network

    torch.set_num_threads(1)  # the test machine is shared; tiny stacks gain nothing
    torch.manual_seed(0)
    nets = [build_network(DEFAULT_ARCH).eval() for _ in range(2)]
    model = MaskingModel(
        *nets, DEFAULT_ARCH, DEFAULT_ARCH, MaskingGeometry(), 0.4, torch.device("cpu")
    )
    return save_weights(tmp_path_factory.mktemp("weights") / "w.pt", model)


def _run_n4(src: Path, out_dir: Path, expect: int = 0) -> dict[str, Path]:
    """The N4 step on `src` (few iterations: the outputs' grid is what is checked)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: out_dir / f"{k}.nii.gz" for k in ("n4", "bias", "foreground")}
    rc = n4_step(
        src,
        paths["n4"],
        paths["bias"],
        paths["foreground"],
        params={"n4": {"shrink_factor": 2, "iterations": [5]}},
        threads=1,
    )
    assert rc == expect
    return paths


def _run_brain_mask(src: Path, out: Path, weights: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    rc = brain_mask_step(
        src,
        out,
        precomputed=None,
        weights=weights,
        threshold=None,
        min_volume_ml=0.0,
        compute=Compute(device="cpu"),
    )
    assert rc == 0
    return out


def _passes(rec: SessionRecord) -> dict:
    report = validate_session(rec)
    assert report["status"] == "pass", report["errors"]
    return report


def _fails(rec: SessionRecord, stack: Path, problem: str) -> None:
    """Validation fails with one message naming the file and the problem, and the N4 step
    refuses the file with the same message: one line on stderr, exit status 1."""
    report = validate_session(rec)
    assert report["status"] == "fail"
    named = [e for e in report["errors"] if e.startswith(f"{stack}: ") and problem in e]
    assert named, report["errors"]
    with contextlib.redirect_stderr(io.StringIO()) as stderr:
        _run_n4(stack, stack.parents[3] / "refused", expect=1)
    err = stderr.getvalue().strip()
    assert err.startswith(f"error: {stack}: ") and problem in err and "\n" not in err
    assert not (stack.parents[3] / "refused").exists() or not any(
        (stack.parents[3] / "refused").iterdir()
    )


def _on_grid(path: Path, shape: tuple[int, ...], affine: np.ndarray) -> nib.Nifti1Image:
    img = nib.load(path)
    assert img.shape == shape, path
    np.testing.assert_allclose(img.affine, affine, atol=1e-4, err_msg=str(path))
    return img


# ------------------------------------------------------------ 1. orientation codes --
def test_qform_only_places_the_image(session, tmp_path: Path) -> None:
    """sform_code 0 (e.g. some older converters): the qform places the image."""
    stack, rec = session
    elsewhere = _shifted(AFFINE, [60.0, 60.0, 60.0])
    _write(stack, _stored().astype(np.int16), elsewhere, qform=AFFINE, sform_code=0)
    report = _passes(rec)
    assert report["notes"] == []
    for p in _run_n4(stack, tmp_path / "out").values():
        _on_grid(p, SHAPE, AFFINE)


def test_sform_only_places_the_image(session, tmp_path: Path) -> None:
    """qform_code 0 (nibabel's own default): the sform places the image, whatever the
    uncoded qform says."""
    stack, rec = session
    elsewhere = _shifted(AFFINE, [60.0, 60.0, 60.0])
    _write(stack, _stored().astype(np.int16), AFFINE, qform=elsewhere, qform_code=0)
    assert _passes(rec)["notes"] == []
    for p in _run_n4(stack, tmp_path / "out").values():
        _on_grid(p, SHAPE, AFFINE)


@pytest.mark.parametrize(
    ("qcode", "scode"), [(1, 1), (1, 2), (2, 1), (1, 3), (1, 4), (4, 4), (1, 5)]
)
def test_any_pair_of_transform_codes(session, tmp_path: Path, qcode: int, scode: int) -> None:
    """scanner=1, aligned=2, talairach=3, mni=4, template=5: all place the image alike."""
    stack, rec = session
    _write(stack, _stored().astype(np.int16), qform_code=qcode, sform_code=scode)
    assert _passes(rec)["notes"] == []
    _on_grid(_run_n4(stack, tmp_path / "out")["n4"], SHAPE, AFFINE)


def test_qform_sform_disagreement_uses_the_sform_with_a_note(session, tmp_path: Path) -> None:
    """0.5 mm apart: the sform is used (nibabel, FSL), and the report says by how much."""
    stack, rec = session
    _write(stack, _stored().astype(np.int16), qform=_shifted(AFFINE, [0.3, 0.4, 0.0]))
    (note,) = _passes(rec)["notes"]
    assert note.startswith(f"{stack}: qform and sform disagree by up to 0.50 mm")
    assert "the sform is used" in note
    out = _run_n4(stack, tmp_path / "out")["n4"]
    _on_grid(out, SHAPE, AFFINE)  # the sform, not the qform 0.5 mm away
    # float32 rounding of the same matrix is no disagreement
    _write(stack, _stored().astype(np.int16), qform=_shifted(AFFINE, [0.03, 0.04, 0.0]))
    assert _passes(rec)["notes"] == []


def test_qform_sform_mirror_images_are_an_error(session) -> None:
    """Axes pointing different ways (here left/right): which is right cannot be guessed."""
    stack, rec = session
    qform = AFFINE.copy()
    qform[:3, 0] *= -1
    qform[:3, 3] -= qform[:3, 0] * (SHAPE[0] - 1)  # same box, first axis reversed
    _write(stack, _stored().astype(np.int16), qform=qform)
    _fails(rec, stack, "qform (LAS) and sform (RAS) point the image axes in different directions")


def test_no_orientation_is_an_error(session) -> None:
    """Both codes 0: no position in the scanner, so no SVR across stacks, no left/right."""
    stack, rec = session
    _write(stack, _stored().astype(np.int16), qform_code=0, sform_code=0)
    _fails(rec, stack, "image has no orientation")


def test_invalid_transform_code_is_an_error(session) -> None:
    """nibabel would silently read sform_code 7 as 0 and fall back to the qform."""
    stack, rec = session
    _write(stack, _stored().astype(np.int16), sform_code=7)
    _fails(rec, stack, "sform_code = 7 is not a NIfTI transform code")


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_axis_orders_keep_world_geometry(session, tmp_path: Path, weights, name: str) -> None:
    """Non-RAS, permuted and oblique axes: N4 and the brain mask are written on the
    input's own grid (no reorientation), so every voxel stays where it was in the scanner."""
    stack, rec = session
    affine = _place(ORIENTATIONS[name])
    stored = _stored()
    _write(stack, stored.astype(np.int16), affine)
    report = _passes(rec)
    corners = np.array(np.meshgrid(*[(0, n - 1) for n in SHAPE], indexing="ij")).reshape(3, -1)
    world = (affine @ np.vstack([corners, np.ones(8)]))[:3]
    np.testing.assert_allclose(
        report["images"][1]["bounds_mm"], [world.min(1), world.max(1)], atol=1e-3
    )
    paths = _run_n4(stack, tmp_path / "out")
    for p in paths.values():
        _on_grid(p, SHAPE, affine)
    corrected = nib.load(paths["n4"]).get_fdata()
    assert np.corrcoef(corrected.ravel(), stored.ravel())[0, 1] > 0.95  # same voxel order
    mask = _run_brain_mask(stack, tmp_path / "out" / "brain_mask.nii.gz", weights)
    assert _on_grid(mask, SHAPE, affine).get_data_dtype() == np.uint8


# ---------------------------------------------------------------- 2. data types --
@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.float32, np.float64]
)
def test_scalar_data_types_load(session, tmp_path: Path, n4_inputs, dtype: type) -> None:
    """Every real scalar type reaches N4 with its values; outputs are float32 / uint8."""
    stack, rec = session
    stored = _stored()
    _write(stack, stored.astype(dtype), scl_slope=0.0)
    report = _passes(rec)
    assert report["images"][1]["dtype"] == np.dtype(dtype).name
    paths = _run_n4(stack, tmp_path / "out")
    np.testing.assert_array_equal(n4_inputs[-1], stored.astype(np.float32))
    assert nib.load(paths["n4"]).get_data_dtype() == np.float32
    assert nib.load(paths["bias"]).get_data_dtype() == np.float32
    assert nib.load(paths["foreground"]).get_data_dtype() == np.uint8


@pytest.mark.parametrize("kind", ["complex64", "RGB24"])
def test_complex_and_colour_images_are_errors(session, kind: str) -> None:
    """No magnitude intensities to correct or segment (NIfTI has no float16 to test)."""
    stack, rec = session
    stored = _stored().astype(np.uint8)
    if kind == "RGB24":
        data = np.zeros(SHAPE, [("R", "u1"), ("G", "u1"), ("B", "u1")])
        data["R"] = data["G"] = data["B"] = stored
    else:
        data = stored.astype(np.complex64) * (1 + 1j)
    _write(stack, data)
    _fails(rec, stack, "is not a real-valued scalar image")


# ------------------------------------------------------- 3. scl_slope / scl_inter --
def test_slope_and_intercept_are_applied(session, tmp_path: Path, n4_inputs) -> None:
    stack, rec = session
    stored = _stored()
    _write(stack, stored.astype(np.uint16), scl_slope=0.5, scl_inter=10.0)
    assert _passes(rec)["notes"] == []
    _run_n4(stack, tmp_path / "out")
    np.testing.assert_allclose(n4_inputs[-1], stored * 0.5 + 10.0)


def test_zero_slope_means_no_scaling(session, tmp_path: Path, n4_inputs) -> None:
    """The NIfTI standard: scl_slope 0 means the values are used as stored (intercept too)."""
    stack, rec = session
    stored = _stored()
    _write(stack, stored.astype(np.uint16), scl_slope=0.0, scl_inter=10.0)
    assert _passes(rec)["notes"] == []
    _run_n4(stack, tmp_path / "out")
    np.testing.assert_array_equal(n4_inputs[-1], stored)


def test_non_finite_slope_is_no_scaling_with_a_note(session, tmp_path: Path, n4_inputs) -> None:
    """As nifti1_io (FSL, AFNI, ITK) and nibabel read it; the note says so."""
    stack, rec = session
    stored = _stored()
    _write(stack, stored.astype(np.int16), scl_slope=np.inf, scl_inter=3.0)
    (note,) = _passes(rec)["notes"]
    assert note.startswith(f"{stack}: header scl_slope is inf: read as no scaling")
    _run_n4(stack, tmp_path / "out")
    np.testing.assert_array_equal(n4_inputs[-1], stored)


def test_non_finite_intercept_is_an_error(session) -> None:
    stack, rec = session
    _write(stack, _stored().astype(np.int16), scl_slope=2.0, scl_inter=np.nan)
    _fails(rec, stack, "the stored values cannot be scaled")


# -------------------------------------------------------------- 4. dimensions --
@pytest.mark.parametrize("extra", [(1,), (1, 1)])
def test_trailing_singleton_dimensions_are_squeezed_with_a_note(
    session, tmp_path: Path, weights, extra: tuple[int, ...]
) -> None:
    """dcm2niix/FSL's (X, Y, Z, 1): one 3D image; the report's notes say it was squeezed."""
    stack, rec = session
    stored = _stored()
    _write(stack, stored.reshape(SHAPE + extra).astype(np.int16))
    report = _passes(rec)
    (note,) = report["notes"]
    assert note == (
        f"{stack}: shape {SHAPE + extra} has trailing singleton dimension(s); read as the 3D "
        f"volume {SHAPE}"
    )
    assert report["images"][1]["shape"] == list(SHAPE + extra)  # as stored
    assert report["images"][1]["n_slices"] == SHAPE[2]
    for p in _run_n4(stack, tmp_path / "out").values():
        _on_grid(p, SHAPE, AFFINE)
    _on_grid(_run_brain_mask(stack, tmp_path / "out" / "brain_mask.nii.gz", weights), SHAPE, AFFINE)


@pytest.mark.parametrize(
    ("shape", "problem"),
    [
        ((*SHAPE, 3), "image is 4D with 3 volumes (shape (24, 24, 8, 3)); give one 3D image"),
        ((*SHAPE, 1, 2), "image is 5D with 2 volumes (shape (24, 24, 8, 1, 2)); give one 3D"),
        (SHAPE[:2], "image is 2D (shape (24, 24)), expected a 3D volume"),
    ],
)
def test_series_and_single_slices_are_errors(session, shape: tuple[int, ...], problem: str) -> None:
    stack, rec = session
    data = np.random.default_rng(0).uniform(1, 100, shape).astype(np.float32)
    _write(stack, data)
    _fails(rec, stack, problem)


# ------------------------------------------------------------- 5. inputs untouched --
def _fingerprint(folder: Path) -> dict[str, tuple[str, int, int]]:
    """sha256, mode and mtime of everything under `folder`: a file written, replaced or
    added (a folder's mtime changes then) shows."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        out[str(p.relative_to(folder))] = (digest, st.st_mode, st.st_mtime_ns)
    return out


def test_inputs_are_not_modified(tmp_path: Path, weights) -> None:
    """Validation, N4 and brain masking read the odd files and write nothing beside them."""
    bids = make_bids(tmp_path / "bids", fetal={"f01": 25.0}, n_stacks=1, stack_shape=SHAPE)
    anat = bids / "sub-f01" / "anat"
    stored = _stored()
    odd = {
        2: dict(
            data=stored.astype(np.int16),
            affine=_place(ORIENTATIONS["LAS (FSL radiological, qfac -1)"]),
        ),
        3: dict(data=stored.astype(np.int16), qform=_shifted(AFFINE, [0.5, 0.0, 0.0])),
        4: dict(data=stored.astype(np.uint16), scl_slope=0.5, scl_inter=10.0),
        5: dict(data=stored.astype(np.float64), scl_slope=np.nan),
        6: dict(data=stored.reshape((*SHAPE, 1)).astype(np.int16), qform_code=0),
        7: dict(data=stored.reshape((*SHAPE, 1, 1)).astype(np.uint8), sform_code=0),
    }
    for run, kw in odd.items():
        suffix = ".nii" if run % 2 else ".nii.gz"
        _write(anat / f"sub-f01_run-{run}_T2w{suffix}", **kw)
    before = _fingerprint(bids)
    (rec,) = discover_sessions(bids, strict=False)
    assert len(rec.images) == 7
    report = _passes(rec)
    assert len(report["notes"]) == 4  # disagreement, NaN slope, two squeezes
    out = tmp_path / "derivatives"
    for im in rec.images:
        _run_n4(im.path, out / im.path.name.split(".")[0])
        _run_brain_mask(im.path, out / im.path.name.split(".")[0] / "brain_mask.nii.gz", weights)
    assert _fingerprint(bids) == before
