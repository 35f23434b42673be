"""Report figures as PNG bytes (matplotlib, Agg, no pyplot state).

Figures are drawn in voxel space along each image's slice axis: for thick-slice fetal
stacks that is the plane the scanner acquired, which is where motion and bias show.
PNG metadata carries no software version or date so identical inputs give identical
bytes (reports can be diffed between runs).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from earlybrain.io.nifti import load_input_image, load_nifti
from earlybrain.io.validate import slice_axis

PNG_METADATA = {"Software": None}


def pick_slices(data: np.ndarray, axis: int, n: int = 6) -> list[int]:
    """Up to n evenly spaced slices inside the non-empty range along `axis`."""
    profile = np.abs(np.moveaxis(data, axis, 0)).reshape(data.shape[axis], -1).sum(axis=1)
    nonzero = np.flatnonzero(profile > 0.05 * profile.max()) if profile.max() > 0 else []
    lo, hi = (int(nonzero[0]), int(nonzero[-1])) if len(nonzero) else (0, data.shape[axis] - 1)
    count = min(n, hi - lo + 1)
    return sorted({round(v) for v in np.linspace(lo, hi, count + 2)[1:-1]} or {lo})


def intensity_window(data: np.ndarray, lo: float = 1.0, hi: float = 99.5) -> tuple[float, float]:
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return 0.0, 1.0
    vmin, vmax = np.percentile(finite, [lo, hi])
    return float(vmin), float(vmax if vmax > vmin else vmin + 1.0)


def to_png(fig: Figure, dpi: int = 80) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata=PNG_METADATA, facecolor="white")
    return buf.getvalue()


def mosaic(
    rows: Sequence[tuple[str, np.ndarray, dict]],
    axis: int,
    slices: Sequence[int] | None = None,
    contours: Sequence[tuple[int, np.ndarray, str]] = (),
) -> bytes:
    """Rows of slices (one row per image) as PNG.

    Each row is (label, 3D array, imshow options such as cmap/vmin/vmax). The same slice
    indices are used for every row so before/after/bias line up. `contours` are
    (row, boolean volume, colour): the volume is outlined on that row.
    """
    first = rows[0][1]
    slices = list(slices) if slices is not None else pick_slices(first, axis)
    ncol = len(slices)
    plane = [s for i, s in enumerate(first.shape) if i != axis]
    aspect = plane[1] / max(plane[0], 1)  # height/width of a slice as drawn (transposed)
    fig = Figure(figsize=(1.6 * ncol + 0.4, 1.6 * aspect * len(rows) + 0.3))
    axes = fig.subplots(len(rows), ncol, squeeze=False)
    colorbars = []
    for r, (label, vol, opts) in enumerate(rows):
        kw = {"cmap": "gray", "interpolation": "nearest", "origin": "lower"}
        if "vmin" not in opts:
            kw["vmin"], kw["vmax"] = intensity_window(vol)
        kw.update(opts)
        for c, k in enumerate(slices):
            ax = axes[r][c]
            im = ax.imshow(np.take(vol, k, axis=axis).T, **kw)
            for row, outline, colour in contours:
                cut = np.take(outline, k, axis=axis)
                if row == r and cut.any():
                    ax.contour(cut.T.astype(float), levels=[0.5], colors=colour, linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"slice {k}", fontsize=7)
        axes[r][0].set_ylabel(label, fontsize=7)
        colorbars.append(im if opts.get("cmap", "gray") != "gray" else None)
    fig.subplots_adjust(left=0.05, right=0.9, top=0.93, bottom=0.02, wspace=0.03, hspace=0.05)
    for r, im in enumerate(colorbars):
        if im is not None:  # in its own axes right of the row, so it covers no slice
            pos = axes[r][-1].get_position()
            cb = fig.colorbar(im, cax=fig.add_axes((0.915, pos.y0, 0.012, pos.height)))
            cb.ax.tick_params(labelsize=6)
    return to_png(fig)


def n4_figure(
    raw: np.ndarray,
    corrected: np.ndarray,
    bias: np.ndarray,
    foreground: np.ndarray | None,
    axis: int,
    brain: np.ndarray | None = None,
) -> bytes:
    """Raw (with the foreground outline) / N4-corrected and normalised (with the brain
    mask's outline) / bias field.

    N4's field has an arbitrary overall scale, so it is shown relative to its median
    inside the foreground: 1 = average, 1.2 = 20 % brighter than average.
    """
    fg = foreground > 0 if foreground is not None and foreground.any() else None
    inside = bias[fg] if fg is not None else bias.ravel()
    rel = bias / float(np.median(inside))
    rel_inside = rel[fg] if fg is not None else rel.ravel()
    span = max(abs(float(rel_inside.min()) - 1.0), abs(float(rel_inside.max()) - 1.0), 1e-3)
    return mosaic(
        [
            ("input", raw, {}),
            ("N4 + normalised", corrected, {}),
            ("relative bias", rel, {"cmap": "coolwarm", "vmin": 1.0 - span, "vmax": 1.0 + span}),
        ],
        axis=axis,
        slices=pick_slices(brain.astype(np.float32), axis)
        if brain is not None and brain.any()
        else None,
        contours=[
            *([(0, foreground.astype(bool), "#ffb000")] if foreground is not None else []),
            *([(1, brain.astype(bool), "#00d0ff")] if brain is not None else []),
        ],
    )


def image_data(path: str | os.PathLike[str]) -> np.ndarray:
    """An image's voxels as float32 (an ImageError names a file that cannot be read)."""
    return np.asanyarray(load_nifti(path).dataobj).astype(np.float32)


def n4_figure_of_files(
    raw: str | os.PathLike[str],
    corrected: str | os.PathLike[str],
    bias: str | os.PathLike[str],
    foreground: str | os.PathLike[str],
    brain: str | os.PathLike[str] | None = None,
) -> bytes:
    """`n4_figure` of one input image and its N4 outputs on disk (and its brain mask when
    there is one on its grid): the n4_figures rule's PNG, or the report's own drawing when
    that rule did not run (a report salvaged after a failed job)."""
    img, _ = load_input_image(raw)  # a raw input, read as N4 read it (e.g. 4th dim squeezed)
    data = np.asanyarray(img.dataobj).astype(np.float32)
    axis = slice_axis(data.shape, np.asarray(img.header.get_zooms()[:3], dtype=float))
    mask = image_data(brain) > 0 if brain is not None and Path(brain).is_file() else None
    return n4_figure(
        data, image_data(corrected), image_data(bias), image_data(foreground) > 0, axis, mask
    )


def input_figure(raw: np.ndarray, axis: int) -> bytes:
    """A single row of input slices (used when a session was not processed)."""
    return mosaic([("input", raw, {})], axis=axis)
