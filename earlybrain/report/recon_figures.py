"""Figures of the SVR/SRR stage: the reconstruction in three views, motion and weights.

The volume is shown in the closest-to-RAS voxel order (no resampling), through the
centre of its brain mask, so a reader sees the brain as acquired-then-reconstructed
rather than a re-interpolated copy. The motion figure puts every slice's pose, weight and
rejection on one page per stack: it is where a failed motion correction shows first.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from matplotlib.figure import Figure

from earlybrain.io.nifti import load_nifti
from earlybrain.report.figures import intensity_window, to_png

ROT = ("rot_x_deg", "rot_y_deg", "rot_z_deg")
TRANS = ("trans_x_mm", "trans_y_mm", "trans_z_mm")
AXIS_COLOURS = ("#d62728", "#2ca02c", "#1f77b4")
LABEL_COLOURS = ("#ff7f0e", "#17becf", "#e377c2", "#bcbd22", "#9467bd", "#2ca02c", "#d62728")


def _canonical(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    img = nib.as_closest_canonical(load_nifti(path))
    return np.asanyarray(img.dataobj).astype(np.float32), nib.affines.voxel_sizes(img.affine)


def orthogonal_views(
    volume_path: str | os.PathLike[str],
    mask_path: str | os.PathLike[str] | None = None,
    labels_path: str | os.PathLike[str] | None = None,
) -> bytes:
    """Sagittal, coronal and axial slices through the brain's centre, with mm aspect.

    With `labels_path` (a label map on the volume's grid) the boundaries of every label
    are drawn over the image, e.g. atlas labels warped to the subject.
    """
    vol, vox = _canonical(volume_path)
    labels = _canonical(labels_path)[0].round().astype(int) if labels_path else None
    mask = _canonical(mask_path)[0] > 0 if mask_path is not None else vol > 0
    centre = (
        np.round(np.argwhere(mask).mean(axis=0)).astype(int)
        if mask.any()
        else np.array(vol.shape) // 2
    )
    vmin, vmax = intensity_window(vol[mask] if mask.any() else vol)
    aspects = (vox[2] / vox[1], vox[2] / vox[0], vox[1] / vox[0])
    names = ("sagittal", "coronal", "axial")
    fig = Figure(figsize=(9.0, 3.3))
    axes = fig.subplots(1, 3)
    for axis, (ax, name, aspect) in enumerate(zip(axes, names, aspects, strict=True)):
        ax.imshow(
            np.take(vol, centre[axis], axis=axis).T,
            cmap="gray",
            vmin=vmin,
            vmax=vmax,
            origin="lower",
            interpolation="nearest",
            aspect=aspect,
        )
        if labels is not None:  # one colour per label value, the same in every view
            cut = np.take(labels, centre[axis], axis=axis).T
            for lab in (v for v in np.unique(cut) if v > 0):
                colour = LABEL_COLOURS[lab % len(LABEL_COLOURS)]
                ax.contour((cut == lab).astype(float), levels=[0.5], colors=colour, linewidths=0.5)
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.01, wspace=0.03)
    return to_png(fig, dpi=90)


def read_slice_table(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return float("nan")


def motion_figure(slices_tsv: str | os.PathLike[str], reject_weight: float) -> bytes:
    """Per stack: rotations, translations (relative to the stack's median pose) and weights.

    Slices are in acquisition order within each packet (packet by packet), which is how
    motion unfolds in time; rejected slices are red crosses on every panel.
    """
    rows = read_slice_table(slices_tsv)
    stacks = sorted({int(r["stack"]) for r in rows})
    fig = Figure(figsize=(10.0, 1.9 * len(stacks) + 0.5))
    axes = fig.subplots(len(stacks), 3, squeeze=False)
    for i, s in enumerate(stacks):
        mine = sorted(
            (r for r in rows if int(r["stack"]) == s),
            key=lambda r: (int(r["packet"]), int(r["slice"])),
        )
        order = np.arange(len(mine))
        rejected = np.array([r["rejected"] == "1" for r in mine])
        name = Path(mine[0]["stack_name"]).name.split("_desc-")[0] if mine else f"stack {s}"
        for ax, keys, unit in ((axes[i][0], ROT, "deg"), (axes[i][1], TRANS, "mm")):
            for key, colour in zip(keys, AXIS_COLOURS, strict=True):
                values = np.array([_number(r[key]) for r in mine])
                values = values - np.nanmedian(values)
                ax.plot(order, values, color=colour, lw=0.9, label=key.split("_")[1])
                ax.plot(order[rejected], values[rejected], "x", color="red", ms=4)
            ax.set_ylabel(unit, fontsize=7)
            ax.tick_params(labelsize=6)
        weights = np.array([_number(r["weight"]) for r in mine])
        axes[i][2].bar(order, weights, color=np.where(rejected, "#d62728", "#7f7f7f"), width=0.9)
        axes[i][2].axhline(reject_weight, color="black", lw=0.6, ls="--")
        axes[i][2].set_ylim(0, 1.05)
        axes[i][2].tick_params(labelsize=6)
        axes[i][0].set_title(f"{name}: rotation", fontsize=7)
        axes[i][1].set_title(f"{name}: translation", fontsize=7)
        axes[i][2].set_title(f"{name}: slice weight ({int(rejected.sum())} rejected)", fontsize=7)
    axes[0][0].legend(fontsize=6, ncol=3, loc="upper left")
    for ax in axes[-1]:
        ax.set_xlabel("slice, in acquisition order (packet by packet)", fontsize=7)
    fig.subplots_adjust(left=0.06, right=0.99, top=0.95, bottom=0.08, hspace=0.6, wspace=0.25)
    return to_png(fig, dpi=80)
