"""NIfTI reading and writing with clear errors, atomic and byte-reproducible output.

Reading is defensive because inputs come from scanners, converters and copies that can
fail half-way: every way a file can be unusable becomes an ImageError whose one-line
message names the file and the problem, and nothing is allocated from a header's claims
before checking that the file can hold that much data.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import stat
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from earlybrain.io.atomic import write_bytes_atomic

# deflate compresses at most about 1032:1, so a .nii.gz whose header claims more image
# bytes than that is truncated or corrupt, whatever the data would decompress to
MAX_DEFLATE_RATIO = 1032
NIFTI1_MAGIC = b"n+1\0"  # at byte 344 of a single-file NIfTI-1
NIFTI2_MAGIC = b"n+2\0"  # at byte 4 of a single-file NIfTI-2
NIFTI1_HEADER, NIFTI2_HEADER = 348, 540
# NIfTI transform codes (qform_code / sform_code); 5 ("template") is the 2020 addition
XFORM_CODES = {0: "unknown", 1: "scanner", 2: "aligned", 3: "talairach", 4: "mni", 5: "template"}
# qform and sform further apart than this (at any corner voxel) earn a validation note:
# float32 storage of the same matrix differs by ~1e-4 mm, converters' real edits by more
QFORM_SFORM_NOTE_MM = 0.1
# ... and axes further apart than this are two different orientations (a mirrored pair
# always has an axis at least 70.5 degrees off): then which side is left is unknown
QFORM_SFORM_MAX_DEG = 45.0


class ImageError(ValueError):
    """An input image that cannot be used; the message names the file and the problem."""


def _check_file(path: Path) -> None:
    """Missing, dangling, special, empty or unreadable files, each with its own message."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            target = os.readlink(path)
            hint = " (git-annex/DataLad content not fetched? run `datalad get`)"
            raise ImageError(
                f"{path}: broken symbolic link to {target}"
                + (hint if ".git/annex" in target else "")
            ) from None
        raise ImageError(f"{path}: file does not exist") from None
    except OSError as exc:  # e.g. a folder on the way that this user may not enter
        raise ImageError(f"{path}: cannot access the file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise ImageError(f"{path}: is {what}, expected a NIfTI file")
    if st.st_size == 0:
        raise ImageError(f"{path}: file is empty (0 bytes)")
    try:
        with path.open("rb"):
            pass
    except PermissionError:
        raise ImageError(
            f"{path}: permission denied: this user cannot read the file "
            f"({stat.filemode(st.st_mode)}, owner uid {st.st_uid}); fix its permissions"
        ) from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot open ({exc.strerror or exc})") from None


def _problem(exc: BaseException) -> str:
    """One line saying what is wrong, for the exceptions reading a damaged file raises."""
    if isinstance(exc, gzip.BadGzipFile) and "CRC" in str(exc):
        return f"gzip data is corrupt ({exc}: damaged in storage or transfer?)"
    if isinstance(exc, gzip.BadGzipFile):
        return "not a gzip file although the name ends in .gz"
    if isinstance(exc, EOFError):
        return "gzip stream is truncated (incomplete copy or download?)"
    if isinstance(exc, zlib.error):
        return f"gzip data is corrupt ({exc})"
    text = " ".join(str(exc).split()) or "no details"
    return f"{type(exc).__name__}: {text}"


def _read_head(path: Path) -> bytes:
    """The first bytes of the (decompressed) file: enough for either NIfTI header."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            return fh.read(NIFTI2_HEADER)
    except (OSError, EOFError, zlib.error) as exc:
        raise ImageError(f"{path}: cannot read as NIfTI: {_problem(exc)}") from None


def _check_magic(path: Path, head: bytes) -> None:
    if head[:2] == b"\x1f\x8b":
        raise ImageError(
            f"{path}: file is gzip-compressed but its name ends in .nii (rename it .nii.gz)"
        )
    if len(head) < NIFTI1_HEADER:
        raise ImageError(
            f"{path}: cannot read as NIfTI: only {len(head)} bytes, shorter than a NIfTI "
            f"header ({NIFTI1_HEADER} bytes)"
        )
    if head[344:348] != NIFTI1_MAGIC and head[4:8] != NIFTI2_MAGIC:
        raise ImageError(
            f"{path}: cannot read as NIfTI: no single-file NIfTI-1/2 magic string "
            f"({NIFTI1_MAGIC[:3].decode()!r} / {NIFTI2_MAGIC[:3].decode()!r}) in the header"
        )


def _parse_header(path: Path) -> nib.Nifti1Header:
    head = _read_head(path)
    _check_magic(path, head)
    cls = nib.Nifti2Header if head[4:8] == NIFTI2_MAGIC else nib.Nifti1Header
    return cls(binaryblock=head[: cls.sizeof_hdr], check=False)


def read_header(path: str | os.PathLike[str]) -> nib.Nifti1Header:
    """The header exactly as stored (NIfTI-1 or -2), without nibabel's silent fixes.

    nibabel replaces zero pixdims by 1 and rewrites qform/sform when it rebuilds an
    image, which would hide a broken header from validation.
    """
    path = Path(path)
    _check_file(path)
    return _parse_header(path)


def _check_header(path: Path, hdr: nib.Nifti1Header) -> None:
    """Fields that nibabel would reject with a confusing message, or trust blindly."""
    ndim = int(hdr["dim"][0])
    if not 1 <= ndim <= 7:
        raise ImageError(
            f"{path}: header dim[0] = {ndim}, but the number of dimensions must be 1 to 7 "
            "(corrupt header)"
        )
    shape = tuple(int(s) for s in hdr["dim"][1 : ndim + 1])
    if any(s < 0 for s in shape):
        raise ImageError(f"{path}: header has a negative dimension (shape {shape})")
    try:
        hdr.get_data_dtype()
    except KeyError:
        raise ImageError(
            f"{path}: unknown NIfTI datatype code {int(hdr['datatype'])} (corrupt header)"
        ) from None
    slope, inter = float(hdr["scl_slope"]), float(hdr["scl_inter"])
    if slope != 0 and math.isfinite(slope) and not math.isfinite(inter):
        raise ImageError(
            f"{path}: header scl_slope = {slope:g} but scl_inter = {inter}: the stored values "
            "cannot be scaled (corrupt header)"
        )
    offset = float(hdr["vox_offset"])
    if not math.isfinite(offset) or offset < 0:
        raise ImageError(f"{path}: header has an invalid data offset (vox_offset = {offset})")
    if hdr["qform_code"] > 0:
        try:
            hdr.get_qform()
        except ValueError:  # nibabel: "w2 should be positive"
            bcd = ", ".join(f"{float(hdr[k]):.4g}" for k in ("quatern_b", "quatern_c", "quatern_d"))
            raise ImageError(
                f"{path}: qform quaternion (b, c, d) = ({bcd}) is not a rotation "
                "(b^2 + c^2 + d^2 must not exceed 1; corrupt header)"
            ) from None


def _check_data_size(path: Path, img: nib.Nifti1Image) -> None:
    """Refuse headers that claim more data than the file can hold (before allocating)."""
    shape = tuple(int(s) for s in img.shape)
    dtype = img.get_data_dtype()
    n_bytes = math.prod(shape) * dtype.itemsize
    size = path.stat().st_size
    gz = path.name.endswith(".gz")
    room = size * MAX_DEFLATE_RATIO if gz else size - int(img.dataobj.offset)
    if n_bytes > room:
        held = f"a {size}-byte compressed file" if gz else f"{max(room, 0)} bytes after the header"
        raise ImageError(
            f"{path}: header claims shape {shape} of {dtype} ({n_bytes} bytes) "
            f"but there are only {held}: truncated file or corrupt header"
        )


def _verify_gzip(path: Path, chunk: int = 1 << 22) -> None:
    """Decompress a .gz to its end so that its CRC is checked (constant memory).

    Reading an image stops after the voxel data, before the checksum at the end, so a
    byte damaged in storage or transfer could otherwise pass as a plausible image.
    """
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(chunk):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        raise ImageError(f"{path}: cannot read as NIfTI: {_problem(exc)}") from None


def load_nifti(path: str | os.PathLike[str], *, verify_checksum: bool = False) -> nib.Nifti1Image:
    """Load a NIfTI image fully into memory, turning every failure into an ImageError.

    ``verify_checksum`` also reads a .nii.gz to its end to check its CRC (input
    validation does; steps reading validated inputs need not pay for it again).
    """
    path = Path(path)
    _check_file(path)
    if verify_checksum and path.name.endswith(".gz"):
        _verify_gzip(path)
    _check_header(path, _parse_header(path))
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for corrupt headers
        raise ImageError(f"{path}: cannot read as NIfTI: {_problem(exc)}") from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise ImageError(f"{path}: not a NIfTI image ({type(img).__name__})")
    _check_data_size(path, img)
    try:
        data = np.asanyarray(img.dataobj)  # read everything now so corrupt data fails here
    except MemoryError:  # the data is there (size checked): a resource problem, not the file's
        raise
    except Exception as exc:
        raise ImageError(f"{path}: cannot read as NIfTI: {_problem(exc)}") from None
    if not np.all(np.isfinite(img.affine)):  # nibabel cannot even rebuild such an image
        raise ImageError(f"{path}: affine is singular or non-finite, cannot place the image")
    return type(img)(data, img.affine, img.header)


def check_scalar(path: str | os.PathLike[str], img: nib.Nifti1Image) -> None:
    """Complex and RGB images are not intensities the pipeline can correct or segment."""
    dtype = img.get_data_dtype()
    if dtype.names is not None or dtype.kind not in "biuf":
        label = img.header.get_value_label("datatype")
        raise ImageError(
            f"{path}: data type {label} is not a real-valued scalar image (complex or "
            "colour data); give the magnitude image"
        )


def squeeze_to_3d(
    path: str | os.PathLike[str], img: nib.Nifti1Image
) -> tuple[nib.Nifti1Image, list[str]]:
    """The 3D volume of an image with trailing singleton dimensions, with a note saying so.

    dcm2niix and FSL write a single volume as (X, Y, Z, 1); that is still one 3D image.
    A real series (more than one volume) or fewer than 3 dimensions is an ImageError:
    which volume to use is the lab's decision, not ours.
    """
    shape = tuple(int(s) for s in img.shape)
    if not shape or any(s == 0 for s in shape):
        raise ImageError(f"{path}: image has zero size (shape {shape})")
    if len(shape) < 3:
        raise ImageError(f"{path}: image is {len(shape)}D (shape {shape}), expected a 3D volume")
    if len(shape) == 3:
        return img, []
    n_volumes = math.prod(shape[3:])
    if n_volumes > 1:
        raise ImageError(
            f"{path}: image is {len(shape)}D with {n_volumes} volumes (shape {shape}); "
            "give one 3D image per file"
        )
    data = np.asanyarray(img.dataobj).reshape(shape[:3])
    note = (
        f"{path}: shape {shape} has trailing singleton dimension(s); read as the 3D volume "
        f"{shape[:3]}"
    )
    return type(img)(data, img.affine, img.header), [note]


def scaling_notes(path: str | os.PathLike[str], hdr: nib.Nifti1Header) -> list[str]:
    """A non-finite scl_slope means "no scaling" to nifti1_io (FSL, AFNI, ITK) and nibabel
    alike; say so, since the header's author may have meant something else."""
    slope = float(hdr["scl_slope"])
    if math.isfinite(slope):
        return []  # 0 is the standard's "no scaling"; others are applied when reading
    return [f"{path}: header scl_slope is {slope}: read as no scaling (as NIfTI readers do)"]


def affine_usable(affine: np.ndarray) -> bool:
    """Finite and invertible: an affine that can place voxels in the scanner."""
    return bool(np.all(np.isfinite(affine))) and abs(np.linalg.det(affine[:3, :3])) > 1e-12


def corner_voxels(shape: tuple[int, ...]) -> np.ndarray:
    """Homogeneous voxel coordinates of the 8 corner voxels, as columns."""
    ranges = [(0, max(n - 1, 0)) for n in shape[:3]]
    pts = np.array(np.meshgrid(*ranges, indexing="ij")).reshape(3, -1)
    return np.vstack([pts, np.ones(pts.shape[1])])


def _corner_distance(a: np.ndarray, b: np.ndarray, shape: tuple[int, ...]) -> float:
    """Largest distance (mm) between where two affines put the image's corner voxels."""
    diff = (np.asarray(a, float) - np.asarray(b, float)) @ corner_voxels(shape)
    return float(np.sqrt((diff[:3] ** 2).sum(axis=0)).max())


def _axis_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle (degrees) between each voxel axis's direction under two affines."""
    ua = a[:3, :3] / np.linalg.norm(a[:3, :3], axis=0)
    ub = b[:3, :3] / np.linalg.norm(b[:3, :3], axis=0)
    return np.degrees(np.arccos(np.clip((ua * ub).sum(axis=0), -1.0, 1.0)))


def orientation_notes(
    path: str | os.PathLike[str],
    hdr: nib.Nifti1Header,
    shape: tuple[int, ...],
    note_mm: float = QFORM_SFORM_NOTE_MM,
) -> list[str]:
    """Check how the header places the image in the scanner; notes for what a lab should know.

    The pipeline works in world (scanner) coordinates and uses the sform when its code is
    set, else the qform (nibabel's and FSL's rule). ImageErrors: an invalid code, no
    orientation at all (both codes 0: SVR cannot combine stacks, and left/right is
    unknown), or a qform and sform pointing the axes different ways (left/right
    ambiguous). A smaller qform/sform disagreement is a note: converters produce those.
    ``hdr`` is the header as stored (`read_header`), ``shape`` the image's.
    """
    codes = {"qform": int(hdr["qform_code"]), "sform": int(hdr["sform_code"])}
    for name, code in codes.items():
        if code not in XFORM_CODES:
            raise ImageError(
                f"{path}: header {name}_code = {code} is not a NIfTI transform code "
                f"(0-{max(XFORM_CODES)}; corrupt header)"
            )
    if codes["qform"] == 0 and codes["sform"] == 0:
        raise ImageError(
            f"{path}: image has no orientation (qform_code and sform_code are both 0): its "
            "position in the scanner, and which side is left, are unknown; convert it again "
            "from DICOM (e.g. with dcm2niix) or restore the header's qform/sform"
        )
    if codes["qform"] == 0 or codes["sform"] == 0:
        return []
    qform, sform = hdr.get_qform(), hdr.get_sform()
    if not (affine_usable(qform) and affine_usable(sform)):
        return []  # a broken form is a geometry error of its own (see validate)
    angle = float(_axis_angles(qform, sform).max())
    if angle > QFORM_SFORM_MAX_DEG:
        axes = {k: "".join(nib.aff2axcodes(v)) for k, v in (("qform", qform), ("sform", sform))}
        raise ImageError(
            f"{path}: qform ({axes['qform']}) and sform ({axes['sform']}) point the image axes "
            f"in different directions (up to {angle:.0f} degrees apart): software differs in "
            "which one it uses, so even left and right are ambiguous; rewrite the header so "
            "that both describe the same geometry"
        )
    dist = _corner_distance(qform, sform, shape)
    if dist <= note_mm:
        return []
    return [
        f"{path}: qform and sform disagree by up to {dist:.2f} mm (axes up to {angle:.1f} "
        "degrees apart); the sform is used, as nibabel and FSL do, so a tool that reads the "
        "qform places this image (and its outputs) differently"
    ]


def load_input_image(
    path: str | os.PathLike[str],
    *,
    verify_checksum: bool = False,
    qform_sform_note_mm: float = QFORM_SFORM_NOTE_MM,
) -> tuple[nib.Nifti1Image, list[str]]:
    """A raw input image as the 3D scalar volume the pipeline works on, plus notes.

    Every reader of *raw* inputs uses this, so that peers' conventions (any orientation
    code, any scalar data type, scl_slope/scl_inter, a trailing singleton dimension) are
    read the same way everywhere and anything else is an ImageError naming the file.
    Derivatives, which the pipeline writes itself, are read with `load_nifti`.
    """
    path = Path(path)
    img = load_nifti(path, verify_checksum=verify_checksum)
    check_scalar(path, img)
    img, notes = squeeze_to_3d(path, img)
    hdr = read_header(path)
    notes += scaling_notes(path, hdr)
    notes += orientation_notes(path, hdr, img.shape, qform_sform_note_mm)
    return img, notes


def save_nifti(
    data: np.ndarray,
    affine: np.ndarray,
    path: str | os.PathLike[str],
    *,
    dtype: type | np.dtype | None = None,
    xyzt_units: tuple[str, str] = ("mm", "sec"),
) -> Path:
    """Save an array as NIfTI; gzip when the name ends in .gz.

    The gzip header carries no timestamp, so the same data gives the same bytes
    (needed for reproducible simulations and for comparing runs), and the write is
    atomic.
    """
    path = Path(path)
    arr = np.asarray(data)
    if dtype is not None:
        arr = arr.astype(dtype)
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units(*xyzt_units)
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    raw = img.to_bytes()
    return write_bytes_atomic(path, gzip_bytes(raw) if path.name.endswith(".gz") else raw)


def gzip_bytes(data: bytes) -> bytes:
    """gzip without a file name or a time stamp in its header: the same data always gives
    the same bytes (reproducible outputs), and nothing about where or when it was made."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return buf.getvalue()


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel spacing in mm along each array axis."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
