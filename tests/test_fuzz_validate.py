"""Fuzz the input validator with generated malformed NIfTI files (issue 11).

A seeded generator (no extra dependency) breaks valid images in the ways files break in
practice (cut-off copies, wrong headers, broken geometry, bad values) with random
parameters. Every file is checked in a worker process with a memory cap and a deadline:
the validator must neither crash, nor hang, nor allocate what a header claims, and must
return a failed status whose one-line message names the file and a known problem.
"""

from __future__ import annotations

import gzip
import multiprocessing
import resource
import struct
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from earlybrain.io.validate import ValidationSettings, check_image

N_FILES = 200
SEED = 20260611
DEADLINE_S = 20.0  # per file; a valid small file takes milliseconds
MEMORY_CAP = 2 * 1024**3  # address space of a worker: a header claiming terabytes must not matter

# NIfTI-1 header offsets (bytes)
DIM, DATATYPE, BITPIX, PIXDIM, VOX_OFFSET = 40, 70, 72, 76, 108
QFORM_CODE, SFORM_CODE, QUATERN_B, SROW_X = 252, 254, 256, 280
HEADER = 352  # header + 4 extension bytes: where a single-file image's data starts


def _valid(rng: np.random.Generator) -> bytes:
    """A small valid 3D stack (uncompressed bytes) that passes validation as fetal."""
    shape = tuple(int(n) for n in rng.integers(4, 12, 3))
    dtype = rng.choice([np.uint8, np.int16, np.float32])
    data = rng.uniform(1, 100, shape).astype(dtype)
    affine = np.diag([*rng.uniform(0.5, 4.0, 3), 1.0])
    affine[:3, 3] = rng.uniform(-50, 50, 3)
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img.to_bytes()


def _put(raw: bytes, offset: int, fmt: str, *values: float) -> bytes:
    out = bytearray(raw)
    struct.pack_into("<" + fmt, out, offset, *values)
    return bytes(out)


def _dims(raw: bytes) -> list[int]:
    return list(struct.unpack_from("<8h", raw, DIM))


def _with_dims(raw: bytes, dims: list[int]) -> bytes:
    return _put(raw, DIM, "8h", *dims)


def _image(data: np.ndarray) -> bytes:
    affine = np.diag([2.0, 2.0, 4.0, 1.0])
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    return img.to_bytes()


# Each maker returns (file suffix, bytes) for a file that must fail validation.
def truncated_gzip(rng):
    gz = gzip.compress(_valid(rng))
    return ".nii.gz", gz[: int(rng.integers(1, len(gz) - 1))]


def truncated_nii(rng):
    raw = _valid(rng)
    return ".nii", raw[: int(rng.integers(1, len(raw) - 1))]


def random_bytes(rng):
    suffix = str(rng.choice([".nii", ".nii.gz"]))
    return suffix, rng.bytes(int(rng.integers(1, 4000)))


def random_gzip_payload(rng):
    return ".nii.gz", gzip.compress(rng.bytes(int(rng.integers(1, 4000))))


def flipped_gzip_bytes(rng):
    gz = bytearray(gzip.compress(_valid(rng)))
    for i in rng.integers(10, len(gz) - 8, int(rng.integers(1, 8))):
        gz[i] ^= int(rng.integers(1, 256))
    return ".nii.gz", bytes(gz)


def gzip_named_nii(rng):
    return ".nii", gzip.compress(_valid(rng))


def empty_or_header_only(rng):
    raw = _valid(rng)
    return str(rng.choice([".nii", ".nii.gz"])), raw[: int(rng.choice([0, 348, HEADER]))]


def bad_magic(rng):
    return ".nii", _put(_valid(rng), 344, "4s", rng.bytes(4).replace(b"n", b"x"))


def larger_dims_than_data(rng):
    raw = _valid(rng)
    dims = _dims(raw)
    dims[int(rng.integers(1, 4))] += int(rng.integers(1, 50))
    return ".nii", _with_dims(raw, dims)


def huge_dims_tiny_data(rng):
    raw = _valid(rng)
    dims = _dims(raw)
    dims[1:4] = [int(v) for v in rng.integers(2000, 32767, 3)]
    suffix = str(rng.choice([".nii", ".nii.gz"]))
    raw = _with_dims(raw, dims)
    return suffix, gzip.compress(raw) if suffix.endswith(".gz") else raw


def bad_ndim(rng):
    raw = _valid(rng)
    dims = _dims(raw)
    dims[0] = int(rng.choice([-3, -1, 8, 9, 100]))
    return ".nii", _with_dims(raw, dims)


def negative_dim(rng):
    raw = _valid(rng)
    dims = _dims(raw)
    dims[int(rng.integers(1, 4))] = -int(rng.integers(1, 100))
    return ".nii", _with_dims(raw, dims)


def zero_dim(rng):
    shape = [int(n) for n in rng.integers(3, 10, 3)]
    shape[int(rng.integers(0, 3))] = 0
    return ".nii.gz", gzip.compress(_image(np.zeros(shape, np.int16)))


def wrong_ndim_data(rng):
    ndim = int(rng.choice([1, 2, 4, 5]))
    shape = [int(n) for n in rng.integers(3, 8, ndim)]
    if ndim > 3:
        shape[3] = int(rng.integers(2, 4))  # a true 4D/5D image, not a trailing 1
    data = rng.uniform(1, 100, shape).astype(np.float32)
    return ".nii.gz", gzip.compress(_image(data))


def unknown_datatype(rng):
    code = int(rng.choice([3, 5, 7, 9, 13, 17, 999, -4]))
    return ".nii", _put(_valid(rng), DATATYPE, "h", code)


def wider_datatype(rng):
    """A datatype code wider than the data written: the data cannot fill the array."""
    raw = _put(_valid(rng), DATATYPE, "hh", 1792, 128)  # complex128, 16 bytes per voxel
    return ".nii", raw


def bad_vox_offset(rng):
    raw = _valid(rng)
    offset = float(rng.choice([np.nan, np.inf, -16.0, 1e9, len(raw) + 16.0]))
    return ".nii", _put(raw, VOX_OFFSET, "f", offset)


def nan_or_inf(rng):
    data = rng.uniform(1, 100, tuple(int(n) for n in rng.integers(4, 10, 3))).astype(np.float32)
    for _ in range(int(rng.integers(1, 5))):
        data[tuple(int(rng.integers(0, n)) for n in data.shape)] = rng.choice([np.nan, np.inf])
    return ".nii.gz", gzip.compress(_image(data))


def constant(rng):
    data = np.full(tuple(int(n) for n in rng.integers(4, 10, 3)), rng.uniform(-5, 5), np.float32)
    return ".nii", _image(data)


def complex_data(rng):
    data = rng.uniform(1, 100, (6, 6, 6)) * (1 + 1j)
    return ".nii", _image(data.astype(np.complex64))


def bad_pixdim(rng):
    raw = _put(_valid(rng), QFORM_CODE, "hh", 0, 0)  # no q/sform: the geometry is pixdim
    value = float(rng.choice([0.0, -1.0, -2.5, np.nan, np.inf]))
    return ".nii", _put(raw, PIXDIM + 4 * int(rng.integers(1, 4)), "f", value)


def implausible_pixdim(rng):
    raw = _put(_valid(rng), SFORM_CODE, "h", 0)  # the qform uses pixdim
    value = float(rng.choice([1e-4, 0.002, 50.0, 1e5]))
    return ".nii", _put(raw, PIXDIM + 4 * int(rng.integers(1, 4)), "f", value)


def broken_sform(rng):
    raw = _valid(rng)
    row = list(struct.unpack_from("<12f", raw, SROW_X))
    kind = int(rng.integers(0, 3))
    if kind == 0:
        row[int(rng.integers(0, 12))] = float(rng.choice([np.nan, np.inf]))
    elif kind == 1:
        row = [0.0] * 12
    else:  # a zero column: singular
        col = int(rng.integers(0, 3))
        for r in range(3):
            row[4 * r + col] = 0.0
    return ".nii", _put(raw, SROW_X, "12f", *row)


def broken_qform(rng):
    raw = _put(_valid(rng), SFORM_CODE, "h", 0)
    b, c, d = (float(v) for v in rng.uniform(1.0, 3.0, 3))  # b^2+c^2+d^2 > 1: not a rotation
    if rng.random() < 0.5:
        b = float(rng.choice([np.nan, np.inf]))
    return ".nii", _put(raw, QUATERN_B, "3f", b, c, d)


def qform_sform_disagree(rng):
    """An sform with one axis reversed (a shift alone is only a validation note)."""
    raw = _valid(rng)
    row = list(struct.unpack_from("<12f", raw, SROW_X))
    col = int(rng.integers(0, 3))
    for r in range(3):
        row[4 * r + col] *= -1
    return ".nii", _put(raw, SROW_X, "12f", *row)


def too_few_slices(rng):
    shape = (*(int(n) for n in rng.integers(8, 16, 2)), int(rng.integers(1, 3)))
    return ".nii.gz", gzip.compress(_image(rng.uniform(1, 100, shape).astype(np.float32)))


MAKERS: list[Callable[[np.random.Generator], tuple[str, bytes]]] = [
    truncated_gzip,
    truncated_nii,
    random_bytes,
    random_gzip_payload,
    flipped_gzip_bytes,
    gzip_named_nii,
    empty_or_header_only,
    bad_magic,
    larger_dims_than_data,
    huge_dims_tiny_data,
    bad_ndim,
    negative_dim,
    zero_dim,
    wrong_ndim_data,
    unknown_datatype,
    wider_datatype,
    bad_vox_offset,
    nan_or_inf,
    constant,
    complex_data,
    bad_pixdim,
    implausible_pixdim,
    broken_sform,
    broken_qform,
    qform_sform_disagree,
    too_few_slices,
]


def generate(folder: Path, n: int, seed: int) -> list[Path]:
    """n malformed files, every maker used in turn, each with its own random parameters."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        maker = MAKERS[i % len(MAKERS)]
        suffix, raw = maker(rng)
        path = folder / f"{i:03d}_{maker.__name__}{suffix}"
        path.write_bytes(raw)
        paths.append(path)
    return paths


def test_generator_starts_from_valid_files(tmp_path: Path) -> None:
    """Otherwise 'every file fails' would prove nothing about the breakages."""
    rng = np.random.default_rng(SEED)
    for i in range(20):
        path = tmp_path / f"ok{i}.nii.gz"
        path.write_bytes(gzip.compress(_valid(rng)))
        info = check_image(path, "fetal", ValidationSettings())
        assert info["ok"], info["problems"]


def test_malformed_files_give_clear_errors_without_crash_or_hang(tmp_path: Path) -> None:
    paths = generate(tmp_path, N_FILES, SEED)
    settings = ValidationSettings()
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: the cap applies to it alone
    with ctx.Pool(  # leaving the block terminates the workers, even a hung one
        2,
        initializer=resource.setrlimit,
        initargs=(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP)),
    ) as pool:
        pending = [(p, pool.apply_async(check_image, (p, "fetal", settings))) for p in paths]
        results = []
        for path, job in pending:
            try:
                results.append((path, job.get(timeout=DEADLINE_S)))
            except multiprocessing.TimeoutError:
                pytest.fail(f"{path.name}: validation did not finish within {DEADLINE_S} s")
    for path, info in results:
        assert not info["ok"], f"{path.name} passed validation"
        assert info["problems"], path.name
        for problem in info["problems"]:
            assert problem.startswith(f"{path}: "), problem
            assert "\n" not in problem and "Traceback" not in problem, problem
            assert "unexpected error" not in problem, problem  # a failure mode nobody named
