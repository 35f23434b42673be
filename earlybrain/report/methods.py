"""A "Methods" paragraph for the subject report, written from what actually ran.

Everything quantitative comes from the JSON sidecars and QC files the steps wrote next
to their outputs (the parameters they really used, after any capping) and from the model
cards of the networks' weights, never from the current config, which may have changed
since. A stage gets a sentence only when the stage table says it ran (done, or flagged
for a check), so a session that failed gets no invented methods. Library versions are
read from the installed package metadata (no heavy imports at report time).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from earlybrain import __version__
from earlybrain.report.html import esc
from earlybrain.report.segmentation import mean_agreement, segmentation_warnings

# Plain references (no links: reports are read offline): key -> (in-text form, full).
REFERENCES: dict[str, tuple[str, str]] = {
    "n4": (
        "Tustison et al. 2010",
        "Tustison NJ, Avants BB, Cook PA, Zheng Y, Egan A, Yushkevich PA, Gee JC. N4ITK: "
        "improved N3 bias correction. IEEE Transactions on Medical Imaging. "
        "2010;29(6):1310-1320. doi:10.1109/TMI.2010.2046908",
    ),
    "svr_em": (
        "Kuklisova-Murgasova et al. 2012",
        "Kuklisova-Murgasova M, Quaghebeur G, Rutherford MA, Hajnal JV, Schnabel JA. "
        "Reconstruction of fetal brain MRI with intensity matching and complete outlier "
        "removal. Medical Image Analysis. 2012;16(8):1550-1564. doi:10.1016/j.media.2012.07.004",
    ),
    "svr_gpu": (
        "Kainz et al. 2015",
        "Kainz B, Steinberger M, Wein W, Kuklisova-Murgasova M, Malamateniou C, Keraudren K, "
        "Torsney-Weir T, Rutherford M, Aljabar P, Hajnal JV, Rueckert D. Fast volume "
        "reconstruction from motion corrupted stacks of 2D slices. IEEE Transactions on "
        "Medical Imaging. 2015;34(9):1901-1913. doi:10.1109/TMI.2015.2415453",
    ),
    "snakemake": (
        "Mölder et al. 2021",
        "Mölder F, Jablonski KP, Letcher B, Hall MB, Tomkins-Tinch CH, Sochat V, Forster J, "
        "Lee S, Twardziok SO, Kanitz A, Wilm A, Holtgrewe M, Rahmann S, Nahnsen S, Köster J. "
        "Sustainable data analysis with Snakemake. F1000Research. 2021;10:33. "
        "doi:10.12688/f1000research.29032.2",
    ),
    "unet": (
        "Ronneberger et al. 2015",
        "Ronneberger O, Fischer P, Brox T. U-Net: convolutional networks for biomedical image "
        "segmentation. MICCAI 2015, LNCS 9351:234-241. doi:10.1007/978-3-319-24574-4_28",
    ),
    "syn": (
        "Avants et al. 2008",
        "Avants BB, Epstein CL, Grossman M, Gee JC. Symmetric diffeomorphic image registration "
        "with cross-correlation: evaluating automated labeling of elderly and neurodegenerative "
        "brain. Medical Image Analysis. 2008;12(1):26-41. doi:10.1016/j.media.2007.06.004",
    ),
    "antsx": (
        "Tustison et al. 2021",
        "Tustison NJ, Cook PA, Holbrook AJ, Johnson HJ, Muschelli J, Devenyi GA, Duda JT, Das SR, "
        "Cullen NC, Gillen DL, Yassa MA, Stone JR, Gee JC, Avants BB. The ANTsX ecosystem for "
        "quantitative biological and medical imaging. Scientific Reports. 2021;11:9068. "
        "doi:10.1038/s41598-021-87564-6",
    ),
    "monai": (
        "Cardoso et al. 2022",
        "Cardoso MJ, Li W, Brown R, Ma N, Kerfoot E, Wang Y, et al. MONAI: an open-source "
        "framework for deep learning in healthcare. arXiv:2211.02701. 2022.",
    ),
    "synthseg": (
        "Billot et al. 2023",
        "Billot B, Greve DN, Puonti O, Thielscher A, Van Leemput K, Fischl B, Dalca AV, "
        "Iglesias JE. SynthSeg: segmentation of brain MRI scans of any contrast and resolution "
        "without retraining. Medical Image Analysis. 2023;86:102789. "
        "doi:10.1016/j.media.2023.102789",
    ),
    "myelination_mri": (
        "Barkovich et al. 1988",
        "Barkovich AJ, Kjos BO, Jackson DE Jr, Norman D. Normal maturation of the neonatal "
        "and infant brain: MR imaging at 1.5 T. Radiology. 1988;166(1):173-180. "
        "doi:10.1148/radiology.166.1.3336675",
    ),
    "wm_development": (
        "Dubois et al. 2014",
        "Dubois J, Dehaene-Lambertz G, Kulikova S, Poupon C, Hüppi PS, Hertz-Pannier L. The "
        "early development of brain white matter: a review of imaging studies in fetuses, "
        "newborns and infants. Neuroscience. 2014;276:48-71. "
        "doi:10.1016/j.neuroscience.2013.12.044",
    ),
    "deep_ensemble": (
        "Lakshminarayanan et al. 2017",
        "Lakshminarayanan B, Pritzel A, Blundell C. Simple and scalable predictive uncertainty "
        "estimation using deep ensembles. Advances in Neural Information Processing Systems 30 "
        "(NIPS 2017). 2017:6402-6413. arXiv:1612.01474",
    ),
}

# Distributions whose versions a reader needs, by the stage that used them.
BASE_SOFTWARE = ("earlybrain", "snakemake", "numpy", "nibabel")
STAGE_SOFTWARE = {
    "n4": ("antspyx",),
    "brain_mask": ("torch", "monai"),
    "svr_srr": ("torch",),
    "atlas_registration": ("antspyx",),
    "segmentation": ("torch", "monai"),
    "brain_age": ("torch", "scipy"),
}


@dataclass
class Methods:
    """Paragraphs in data-flow order, the references they cite, and software versions."""

    paragraphs: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)  # keys of REFERENCES
    software: list[tuple[str, str]] = field(default_factory=list)

    def cite(self, *keys: str) -> str:
        """Register references and return their in-text form, e.g. "(Tustison et al. 2010)"."""
        for k in keys:
            if k not in self.references:
                self.references.append(k)
        return "(" + "; ".join(REFERENCES[k][0] for k in keys) + ")"

    def as_dict(self) -> dict[str, Any]:
        return {
            "paragraphs": self.paragraphs,
            "references": [REFERENCES[k][1] for k in self.references],
            "software": dict(self.software),
        }


def read_json(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """A JSON object from `path`, or {} when it is missing or unreadable."""
    if path is None:
        return {}
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def read_tsv(path: str | os.PathLike[str] | None) -> list[dict[str, str]]:
    """The rows of a TSV file, or [] when it is missing or unreadable."""
    if path is None:
        return []
    try:
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh, delimiter="\t"))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []


def recon_sidecar_for(metrics: str | os.PathLike[str]) -> Path:
    """`<dir>/qc/<prefix>_rec-svr_metrics.json` -> `<dir>/anat/<prefix>_rec-svr_T2w.json`.

    The recon rule writes both; the report rule only declares the metrics as input.
    """
    m = Path(metrics)
    stem = m.name.removesuffix("_metrics.json")
    return m.parent.parent / "anat" / f"{stem}_T2w.json"


def software_versions(names: Sequence[str] = BASE_SOFTWARE) -> list[tuple[str, str]]:
    """Installed versions from package metadata (cheap: nothing is imported)."""
    out = []
    for name in names:
        if name == "earlybrain":
            out.append((name, __version__))
            continue
        try:
            out.append((name, version(name)))
        except PackageNotFoundError:
            continue
    return out


def _num(value: Any) -> str:
    """Compact number formatting (100.0 -> 100, 1e-06 -> 1e-06)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return f"{value:g}"
    return str(value)


def _device(name: Any) -> str:
    """ "cuda:0" -> "a GPU (cuda:0)", "cpu" -> "the CPU"."""
    if not name:
        return "an unrecorded device"
    name = str(name)
    if name.startswith("cuda"):
        return f"a GPU ({name})"
    return "the CPU" if name == "cpu" else name


def _values(items: Iterable[Any]) -> str:
    """Distinct values, in first-seen order: "4" or "2, 4"."""
    seen: list[str] = []
    for v in items:
        s = _num(v)
        if s not in seen:
            seen.append(s)
    return ", ".join(seen) if seen else "?"


def _ordinal(value: Any) -> str:
    s = _num(value)
    if not s.isdigit():
        return f"{s}th"
    n = int(s)
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{s}{suffix}"


def n4_paragraph(sidecars: Sequence[dict[str, Any]], m: Methods) -> str | None:
    """N4 + normalisation, from the N4 outputs' sidecars (parameters used per image)."""
    used = [s for s in sidecars if s.get("Parameters")]
    if not used:
        return None
    params = used[0]["Parameters"]
    fg, n4, norm = params.get("foreground", {}), params.get("n4", {}), params.get("normalise", {})
    iters = n4.get("iterations", [])
    shrink = _values(s.get("N4", {}).get("shrink_factor_used", "?") for s in used)
    spline = _values(s.get("N4", {}).get("spline_distance_mm_used", "?") for s in used)
    varied = len({json.dumps(s["Parameters"], sort_keys=True) for s in used}) > 1
    capped = shrink != _num(n4.get("shrink_factor", "?"))
    text = (
        f"The intensity non-uniformity of each of the {len(used)} input image(s) was corrected "
        f"with N4 {m.cite('n4')}, run in-process through ANTsPy. The bias field was fitted "
        "inside a rough foreground mask (Otsu threshold of the image smoothed with a Gaussian "
        f"of {_num(fg.get('smoothing_sigma_mm', '?'))} mm, components smaller than "
        f"{_num(fg.get('min_component_fraction', '?'))} times the largest discarded, holes "
        "filled; not a brain mask), as a B-spline with an "
        f"initial knot spacing of {spline} mm over {len(iters)} resolution level(s) of "
        f"{_values(iters) if len(set(iters)) == 1 else ', '.join(_num(i) for i in iters)} "
        f"iterations (convergence threshold {_num(n4.get('convergence_tol', '?'))}) at a "
        f"shrink factor of {shrink}"
        + (
            f" (requested {_num(n4.get('shrink_factor'))}, reduced for small images)"
            if capped
            else ""
        )
        + ". Intensities were then scaled linearly so that the "
        f"{_ordinal(norm.get('lower_percentile', '?'))} and "
        f"{_ordinal(norm.get('upper_percentile', '?'))} percentiles inside the foreground "
        "map to 0 and 1 (negative values clipped, high values kept)."
    )
    if varied:
        text += " The images were not all processed with the same parameters; see their sidecars."
    return text


def recon_paragraph(sidecar: dict[str, Any], metrics: dict[str, Any], m: Methods) -> str | None:
    """SVR/SRR, from the reconstruction's sidecar (parameters) and QC metrics (what happened)."""
    p = sidecar.get("Parameters")
    if not p:
        return None
    n_stacks = metrics.get("n_stacks", len(metrics.get("per_stack", [])) or "?")
    parts = [
        f"The {n_stacks} bias-corrected stacks were combined into one volume with isotropic "
        f"{_num(p.get('resolution_mm', '?'))} mm voxels by alternating slice-to-volume "
        "registration (SVR) and super-resolution reconstruction (SRR) "
        f"{m.cite('svr_em', 'svr_gpu')}, implemented in PyTorch and run on "
        f"{_device(sidecar.get('Device') or metrics.get('device'))}."
    ]
    ref = metrics.get("reference_stack")
    if ref is not None:
        per_stack = {st.get("stack"): st.get("name") for st in metrics.get("per_stack", [])}
        name = f" ({per_stack[ref]})" if per_stack.get(ref) else ""
        parts.append(
            "The stack with the least inter-slice inconsistency, "
            f"stack {ref}{name}, defined the output grid, which covers the brain masks dilated "
            f"by {_num(p.get('mask_dilation_mm', '?'))} mm plus a "
            f"{_num(p.get('margin_mm', '?'))} mm margin."
        )
    if p.get("motion_correction", True):
        chunks = p.get("chunk_slices", 1)
        loo = (
            ", each stack against a volume reconstructed from the other stacks"
            if p.get("leave_one_out")
            else ""
        )
        parts.append(
            "Rigid motion was estimated by Gauss-Newton registration from coarse to fine "
            f"({_num(p.get('svr_steps', '?'))} steps per smoothing level): every other stack "
            "as a whole against a reconstruction from the reference stack (smoothing "
            f"{_values(p.get('stack_sigmas_mm', []))} mm); then, in the first of "
            f"{_num(p.get('outer_iterations', '?'))} outer iteration(s), packets of "
            f"interleaved slices ({_num(p.get('interleave', '?'))} per stack where the slice "
            "timing is not recorded)"
            + (
                f" and runs of {_num(chunks)} consecutively acquired slices"
                if isinstance(chunks, int) and chunks > 1
                else ""
            )
            + f"; and in every outer iteration single slices{loo}, each iteration followed "
            "by a new volume estimate."
        )
    else:
        parts.append("Slice motion was not corrected: the stacks were combined as acquired.")
    parts.append(
        "The forward model uses a Gaussian point-spread function with an in-plane FWHM of "
        f"{_num(p.get('psf_inplane_fwhm_factor', '?'))} times the pixel spacing and a "
        "through-plane FWHM equal to the slice thickness (the sidecar's SliceThickness "
        "where recorded and plausible, so gaps between slices are modelled; else the "
        "slice spacing), sampled every "
        f"{_num(p.get('psf_step_factor', '?'))} voxel widths. SRR minimised a weighted "
        "least-squares data term plus an edge-preserving smoothness penalty (weight "
        f"{_num(p.get('regularisation', '?'))} relative to the data term, edge threshold "
        f"{_num(p.get('edge_delta', '?'))} of the median brain intensity) by conjugate "
        f"gradients ({_num(p.get('cg_steps', '?'))} steps per solve, "
        f"{_num(p.get('inner_iterations', '?'))} solves per outer iteration, "
        f"{_num(p.get('final_cg_steps', '?'))} final steps)."
    )
    lo, hi = [*p.get("slice_scale_range", []), "?", "?"][:2]
    intensity = (
        f"Each stack had a smooth multiplicative bias field (polynomial of order "
        f"{_num(p.get('bias_order', '?'))}) and each slice an intensity scale limited to "
        f"{_num(lo)}-{_num(hi)}."
    )
    if p.get("robust", False):
        rejected = metrics.get("rejected_slices")
        total = metrics.get("slices_with_brain")
        count = (
            f" ({rejected} of {total} slices containing brain)"
            if rejected is not None and total is not None
            else ""
        )
        parts.append(
            intensity + " Outliers were down-weighted by an expectation-maximisation "
            "mixture model at the voxel and the slice level "
            f"{m.cite('svr_em')}; slices with a weight below "
            f"{_num(p.get('reject_weight', '?'))} are reported as rejected{count}."
        )
    else:
        parts.append(intensity + " No robust outlier weighting was used.")
    return " ".join(parts)


def is_precomputed_mask(sidecar: dict[str, Any]) -> bool:
    """Whether a brain-mask sidecar says the mask came from masks_dir (not the network)."""
    return sidecar.get("Parameters", {}).get("method", "").startswith("precomputed")


def infant_mask_paragraph(sidecar: dict[str, Any]) -> str:
    """How an infant's 3D head image was masked."""
    par = sidecar.get("Parameters", {})
    return (
        f"The infant's {sidecar.get('Contrast', '?')} image (the session's working contrast, "
        "chosen by age: T2w early, T1w once white matter has myelinated) was masked by running "
        "the tissue segmentation network on the whole head and keeping the union of the "
        "tissues it found (largest connected component, holes filled"
        + (", mirror test-time augmentation" if par.get("test_time_mirror") else "")
        + f"; weights {Path(str(par.get('weights', '?'))).name}, SHA-256 "
        f"{str(par.get('weights_sha256', '?'))[:12]})."
    )


def given_recon_paragraph(sidecar: dict[str, Any]) -> str:
    """A session that brought its own reconstruction: what was (not) done to it."""
    par = sidecar.get("Parameters", {})
    source = Path(str((sidecar.get("Sources") or ["?"])[0])).name
    weights = par.get("weights")
    return (
        f"The session brought its own super-resolution reconstruction ({source}), made "
        "outside earlybrain; stack masking, stack quality ranking and slice-to-volume "
        "reconstruction were therefore not run. After N4, its brain mask was taken as "
        f"{par.get('method', '?')}"
        + (f" (weights {Path(str(weights)).name})" if weights else "")
        + f"; {_num(sidecar.get('BrainVolume_ml'))} mL."
    )


def brain_mask_paragraph(sidecars: Sequence[dict[str, Any]], m: Methods) -> str:
    """Network masks (with the weights' identity and validation) and/or precomputed ones."""
    step = sidecars[0].get("GeneratedBy", [{}])[0].get("Step") if sidecars else None
    if step == "infant_prep":
        return infant_mask_paragraph(sidecars[0])
    if step == "given_recon_mask":
        return given_recon_paragraph(sidecars[0])
    net = [s for s in sidecars if not is_precomputed_mask(s)]
    given = len(sidecars) - len(net)
    parts = []
    if net:
        par, card = net[0].get("Parameters", {}), net[0].get("ModelCard", {})
        geo = par.get("geometry", {})
        dice = card.get("validation_dice_mean")
        fine = geo.get("fine_mm", ("?", "?"))
        parts.append(
            f"The fetal brain (intracranial volume) was masked in {len(net)} stack(s) by two "
            f"2D U-Nets {m.cite('unet')} built with MONAI {m.cite('monai')}, each applied "
            "slice by slice with the neighbouring slices as context: a localiser found the "
            f"fetal head on whole slices at {geo.get('coarse_mm', '?')} mm, then a segmenter "
            f"masked a crop around it at the stack's in-plane resolution (kept within "
            f"{fine[0]}-{fine[1]} mm), threshold {par.get('threshold', '?')}, followed by a 3D "
            "clean-up (largest connected component, hole filling). The networks were trained "
            "on simulated clinical stacks (maternal abdomen, uterus, fetal body; brains from "
            "earlybrain's simulator and from a real fetal atlas) (weights "
            f"{Path(str(par.get('weights', '?'))).name}, SHA-256 "
            f"{str(par.get('weights_sha256', '?'))[:12]}, trained {card.get('trained', '?')} "
            f"with seed {card.get('seed', '?')}"
            + (f", simulated validation Dice {dice:.3f}" if isinstance(dice, float) else "")
            + ")."
        )
        empty = sum(bool(s.get("NoBrainReason")) for s in net)
        if empty:
            parts.append(f"In {empty} stack(s) no fetal brain was found; their masks are empty.")
        fallback = sum(bool(s.get("MasksDirMiss")) for s in net)
        if fallback:
            parts.append(
                f"masks_dir held no mask for {fallback} stack(s); the network masked them."
            )
    if given:
        parts.append(f"Brain masks of {given} stack(s) were given (masks_dir), not computed.")
    return " ".join(parts) or "Brain masks were computed (their sidecars could not be read)."


def stack_qc_paragraph(sidecar: dict[str, Any], rows: Sequence[dict[str, str]]) -> str:
    """How stacks were scored and which were excluded."""
    par = sidecar.get("Parameters", {})
    kept = sum(r.get("kept") == "true" for r in rows)
    lo, hi = par.get("volume_ratio_range", ("?", "?"))
    return (
        "Stacks were scored by the mean normalised cross-correlation of each brain slice "
        "with its neighbours, penalised for signal drop-out, jumps of the brain between "
        "slices (motion) and an implausible brain-mask volume, and ranked; the best stack "
        "was the reference. Motion lowered a stack's rank but never excluded it. A stack "
        "was excluded only when it could not help: no brain, brain in fewer than "
        f"{par.get('min_brain_slices', '?')} slices, drop-out in more than "
        f"{par.get('max_dropout_fraction', '?')} of its brain slices, or a mask volume "
        f"outside {lo}-{hi} x the median of the stacks; at least "
        f"{par.get('min_stacks', '?')} stacks were required. {kept} of "
        f"{len(rows)} stacks were kept."
    )


def registration_paragraph(qc: dict[str, Any], m: Methods) -> str:
    """Template, initialisation, ANTs stages and the registration's quality measures."""
    tpl, par = qc.get("template", {}), qc.get("parameters", {})
    syn = par.get("syn_iterations", "?")
    text = (
        f"The reconstruction was registered to the {tpl.get('age_weeks', '?')}-week template "
        f"of atlas {tpl.get('atlas', '?')} (the nearest in age to "
        f"{tpl.get('requested_age_weeks', '?')} weeks) with ANTsPy "
        f"{m.cite('antsx')}: an initial pose from the brain masks' centres and principal axes "
        "with a search over the 24 axis-aligned rotations, then rigid and affine stages "
        f"({par.get('linear_metric', '?')} metric) and symmetric diffeomorphic SyN "
        f"{m.cite('syn')} ({par.get('syn_metric', '?')} metric, iterations {syn}). After "
        f"registration the normalised cross-correlation with the template was "
        f"{qc.get('ncc', float('nan')):.3f} and the Dice overlap of the warped atlas brain "
        f"mask with the subject's was {qc.get('mask_dice', float('nan')):.3f}."
    )
    if not qc.get("qc_pass", True):
        text += " The registration was flagged: " + "; ".join(qc.get("qc_warnings", [])) + "."
    return text


def _training(card: dict[str, Any]) -> str:
    """The end of a sentence on the weights: their training and validation, from their card."""
    if not card:
        return "have no model card beside them, so their training is not reported here."
    maps = card.get("training_data", {}).get("label_maps", {})
    counts = ", ".join(f"{k} {n}" for k, n in maps.items() if n) if isinstance(maps, dict) else ""
    text = f"were trained with seed {card.get('seed', '?')} for {card.get('epochs', '?')} epochs"
    if counts:
        text += f" on {sum(maps.values())} label maps ({counts})"
    val = card.get("validation", {}).get("dice_mean")
    unseen = card.get("validation_unseen_contrast", {}).get("dice_mean")
    if isinstance(val, int | float):
        text += f"; their mean validation Dice was {val:.3f} on simulated fetal T2w images"
        if isinstance(unseen, int | float):
            text += f" and {unseen:.3f} on a contrast not seen in training"
    return text + "."


def segmentation_paragraph(qc: dict[str, Any], card: dict[str, Any], m: Methods) -> str:
    """The network (weights, training, validation), inference, post-processing, volumetry."""
    par, times = qc.get("parameters", {}), qc.get("timings", {})
    tta = (
        ", averaged with the segmentation of its left-right mirror image (test-time augmentation),"
        if par.get("test_time_augmentation")
        else ""
    )
    text = (
        f"Tissues were segmented by a 3D U-Net {m.cite('unet')} built with MONAI "
        f"{m.cite('monai')}, trained on synthetic images generated from label maps with a "
        f"random contrast per label, the approach of SynthSeg {m.cite('synthseg')}. The "
        f"weights used ({Path(str(par.get('weights', '?'))).name}, SHA-256 "
        f"{str(par.get('weights_sha256', '?'))[:12]}) {_training(card)} The registered "
        "reconstruction, in atlas space, was resampled to the network's "
        f"{_num(par.get('working_grid_mm', '?'))} mm working grid and segmented by "
        f"sliding-window inference (overlapping windows, Gaussian blending){tta} in "
        f"{_num(times.get('network_s', '?'))} s on {_device(par.get('device'))}. Labels "
        f"more than {_num(par.get('mask_margin_mm', '?'))} mm outside the registered brain "
        "mask were removed; the tissues were split into left and right at the atlas "
        f"midsagittal plane (x = {_num(par.get('midsagittal_plane_x_mm', '?'))} mm); of "
        "each label the largest connected component was kept, with any other component at "
        f"least {_num(par.get('keep_fraction', '?'))} times its size, and holes were filled. "
        "The labels were brought back to the reconstruction's grid through the inverse of "
        "the registration and the volumes measured there, in subject space; asymmetry index "
        "(L - R) / ((L + R) / 2)."
    )
    mean = mean_agreement(qc)
    if mean is not None:
        text += (
            " The mean Dice overlap of the tissues with the atlas labels warped to the "
            f"reconstruction was {mean:.3f}."
        )
    warnings = segmentation_warnings(qc)
    if warnings:
        text += " The segmentation was flagged: " + "; ".join(warnings) + "."
    return text


def _ensemble_training(card: dict[str, Any], deep: dict[str, Any]) -> str:
    """The end of a sentence on the ensemble's weights: training and validation."""
    if not card:
        lo, hi = [*(deep.get("training_range_weeks") or []), "?", "?"][:2]
        return (
            "have no model card beside them, so their training is not reported here (the "
            f"brain-age step recorded ages {_num(lo)}-{_num(hi)} weeks in training and a "
            f"validation mean absolute error of {_num(deep.get('validation_mae_weeks', '?'))} "
            "weeks)."
        )
    data, val = card.get("training_data", {}), card.get("validation", {})
    lo, hi = [*(card.get("training_range_weeks") or []), "?", "?"][:2]
    cohort = data.get("cohort", {}).get("n") or 0
    text = (
        f"were trained {card.get('trained', '?')} with seed "
        f"{card.get('config', {}).get('seed', '?')} on "
        f"{data.get('simulated', {}).get('n', '?')} simulated volumes"
        + (f" and {cohort} volumes of a cohort" if cohort else "")
        + f" aged {_num(lo)}-{_num(hi)} weeks"
    )
    if isinstance(val.get("mae_weeks"), int | float):
        text += (
            f"; on {val.get('n', '?')} simulated validation subjects their mean absolute error "
            f"was {val['mae_weeks']:.2f} weeks"
        )
        if isinstance(val.get("coverage_95"), int | float):
            text += f" and their 95 % intervals held the true age in {val['coverage_95']:.0%}"
    return text + "."


def brainage_paragraph(
    result: dict[str, Any], card: dict[str, Any], norms: dict[str, Any], m: Methods
) -> str:
    """The ensemble (weights, training, uncertainty), the two classical checks, and the
    normative scores (from the brain-age JSON, the ensemble's card and the norms file)."""
    meth = result.get("methods", {})
    deep, atlas = meth.get("deep_ensemble", {}), meth.get("atlas_similarity", {})
    par = result.get("Parameters", {})
    text = (
        f"Brain age was estimated from the registered reconstruction by a deep ensemble "
        f"{m.cite('deep_ensemble')} of {len(deep.get('members', [])) or '?'} 3D convolutional "
        "networks, each predicting a mean age and a variance; the estimate is the mixture of "
        "the members' Gaussians, whose variance adds the members' mean variance (aleatoric) "
        "and the variance of their means (epistemic): here SD "
        f"{_num(deep.get('sd_weeks', '?'))} weeks (aleatoric "
        f"{_num(deep.get('aleatoric_sd_weeks', '?'))}, epistemic "
        f"{_num(deep.get('epistemic_sd_weeks', '?'))}), on "
        f"{_device(result.get('device'))}. The weights "
        f"({Path(str(deep.get('weights', '?'))).name}, SHA-256 "
        f"{str(deep.get('weights_sha256', '?'))[:12]}) {_ensemble_training(card, deep)} "
        "Two classical estimates were made as checks: the age of the weekly template of "
        f"atlas {atlas.get('atlas', '?')} most similar to the subject (normalised "
        "cross-correlation), and the age that makes the tissue volumes most likely under "
        "the normative growth curves; estimates more than "
        f"{_num(par.get('spread_limit_weeks', '?'))} weeks apart were flagged (here "
        f"{_num(result.get('method_spread_weeks', '?'))} weeks). The brain-age gap "
        "(estimate minus chronological age) was scored against the SD of the gap in healthy "
        f"validation subjects ({_num(result.get('gap_sd_weeks', '?'))} weeks)."
    )
    return text + norms_sentences(result, norms)


def norms_sentences(result: dict[str, Any], norms: dict[str, Any]) -> str:
    """How the volumes were scored against the normative curves, and the flag limit."""
    par = result.get("Parameters", {})
    source = result.get("norms", {}).get("source") or norms.get("source", "?")
    degrees = {len(s.get("mean_coef", [])) - 1 for s in norms.get("structures", {}).values()}
    if norms and len(degrees) == 1:
        lo, hi = [*(norms.get("age_range") or []), "?", "?"][:2]
        text = (
            " Each volume was scored (z-score of its logarithm, centile) against normative "
            f"growth curves fitted on {norms.get('n_subjects', '?')} subjects aged "
            f"{_num(lo)}-{_num(hi)} weeks {norms.get('age_kind', '')} ({source}): at each "
            f"age, log volume is normal with a mean polynomial of degree {degrees.pop()} in "
            "age and an SD log-linear in age, fitted by maximum likelihood."
        )
    else:
        text = f" Each volume was scored (z-score, centile) against normative curves: {source}."
    return text + f" Values with |z| > {_num(par.get('z_limit', '?'))} were flagged."


def infant_brainage_paragraph(result: dict[str, Any], norms: dict[str, Any], m: Methods) -> str:
    """The infant method (`earlybrain.brainage.infant`): three classical estimates and
    their precision-weighted combination, calibrated on simulated infants."""
    meth = result.get("methods", {})
    atlas, comb = meth.get("atlas_similarity", {}), meth.get("combined", {})
    myel = meth.get("myelination")
    par, cal = result.get("Parameters", {}), result.get("calibration") or {}
    text = (
        "Brain age was estimated by a precision-weighted combination (weights 1 / SD²) of "
        "three classical estimates, each with an SD calibrated on simulated infants "
        f"({cal.get('source') or '?'}): atlas similarity, the age of the "
        f"{atlas.get('contrast') or result.get('contrast') or '?'} template of atlas "
        f"{atlas.get('atlas', '?')} most similar to the subject (normalised "
        "cross-correlation in the atlas orientation); the age that makes the tissue volumes "
        "most likely under the infant normative growth curves (posterior mean); and "
        "myelination, the contrast of white matter zones (deep to superficial, posterior "
        "and anterior), of the cerebellum and of the brainstem against deep grey matter in "
        "the session's segmentation, which changes with age, zone after zone, as white matter "
        f"myelinates {m.cite('myelination_mri', 'wm_development')}: each contrast index "
        "follows a logistic curve of age with a joint normal spread, and the estimate is "
        "the posterior mean over ages."
    )
    if isinstance(myel, dict):
        text += (
            f" Here the myelination estimate used {len(myel.get('indexes') or {})} indexes "
            f"of the {'+'.join(myel.get('contrasts') or []) or '?'} image(s)."
        )
    else:
        left = str(result.get("primary_method_description", "")).partition("left out: ")[2]
        text += f" Here the myelination estimate was left out ({left or 'no segmentation'})."
    weights = comb.get("weights") or {}
    if weights:
        text += (
            " Weights: "
            + ", ".join(f"{k.replace('_', ' ')} {_num(w)}" for k, w in weights.items())
            + "."
        )
    text += (
        " The estimates are not independent (atlas similarity and the volumes both see "
        "brain size), so the SD of the combination was scaled by "
        f"{_num(comb.get('sd_scale', '?'))} to match its errors on the calibration cohort: "
        f"here {_num(result.get('predicted_age_weeks', '?'))} ± "
        f"{_num(result.get('uncertainty_sd_weeks', '?'))} weeks post-menstrual age "
        f"({_num(result.get('predicted_age_months', '?'))} months after term, "
        "(PMA - 40 weeks) / 4.345). Estimates further apart than "
        f"{_num(par.get('spread_limit_weeks', '?'))} weeks (2 SD of their difference) were "
        f"flagged (here {_num(result.get('method_spread_weeks', '?'))} weeks). The "
        "brain-age gap (estimate minus chronological age) was scored against the gaps of "
        "the healthy calibration infants at this age (mean "
        f"{_num(result.get('gap_bias_weeks', '?'))}, SD "
        f"{_num(result.get('gap_sd_weeks', '?'))} weeks)."
    )
    return text + norms_sentences(result, norms)


def build_methods(
    stages: Sequence[dict[str, str]],
    *,
    n4_sidecars: Sequence[dict[str, Any]] = (),
    recon_sidecar: dict[str, Any] | None = None,
    recon_metrics: dict[str, Any] | None = None,
    brain_mask_sidecars: Sequence[dict[str, Any]] = (),
    stack_qc_sidecar: dict[str, Any] | None = None,
    stack_qc_rows: Sequence[dict[str, str]] = (),
    registration_qc: dict[str, Any] | None = None,
    segmentation_qc: dict[str, Any] | None = None,
    segmentation_card: dict[str, Any] | None = None,
    brainage: dict[str, Any] | None = None,
    brainage_card: dict[str, Any] | None = None,
    brainage_norms: dict[str, Any] | None = None,
    software: list[tuple[str, str]] | None = None,
) -> Methods:
    """The methods of one session, only for the stages whose status is "done"."""
    status = {s.get("key"): s.get("status") for s in stages}
    m = Methods()
    if status.get("inputs") != "done":
        m.paragraphs.append(
            "No processing ran for this session: its inputs failed validation, so there "
            "are no methods to report."
        )
        return m
    if status.get("n4") == "done":
        text = n4_paragraph(n4_sidecars, m)
        if text:
            m.paragraphs.append(text)
    if status.get("brain_mask") == "done":
        m.paragraphs.append(brain_mask_paragraph(brain_mask_sidecars, m))
    if status.get("stack_qc") == "done":
        m.paragraphs.append(stack_qc_paragraph(stack_qc_sidecar or {}, stack_qc_rows))
    if status.get("svr_srr") in ("done", "flagged"):
        text = recon_paragraph(recon_sidecar or {}, recon_metrics or {}, m)
        m.paragraphs.append(
            text
            or "A slice-to-volume reconstruction ran, but its parameter sidecar could not be "
            "read, so its settings are not reported here."
        )
    if status.get("atlas_registration") in ("done", "flagged"):
        m.paragraphs.append(registration_paragraph(registration_qc or {}, m))
    if status.get("segmentation") in ("done", "flagged"):
        m.paragraphs.append(
            segmentation_paragraph(segmentation_qc or {}, segmentation_card or {}, m)
        )
    if status.get("brain_age") in ("done", "flagged"):
        result = brainage or {}
        m.paragraphs.append(
            infant_brainage_paragraph(result, brainage_norms or {}, m)
            if result.get("population") == "infant"
            else brainage_paragraph(result, brainage_card or {}, brainage_norms or {}, m)
        )
    if not m.paragraphs:
        m.paragraphs.append("No processing stage beyond input validation completed.")
        return m
    versions = {
        g.get("Version")
        for side in [*n4_sidecars, recon_sidecar or {}]
        for g in side.get("GeneratedBy", [])
        if g.get("Name") == "earlybrain" and g.get("Version")
    }
    if software is None:
        names = list(BASE_SOFTWARE)
        for key, extra in STAGE_SOFTWARE.items():
            if status.get(key) in ("done", "flagged"):
                names += [n for n in extra if n not in names]
        software = software_versions(names)
    m.software = list(software)
    if versions - {dict(m.software).get("earlybrain")}:
        m.software.append(("earlybrain (recorded by the steps)", ", ".join(sorted(versions))))
    m.paragraphs.append(
        f"The steps were run as a Snakemake workflow {m.cite('snakemake')}; software "
        "versions are listed below."
    )
    return m


def methods_html(m: Methods) -> str:
    """The report's Methods section (escaped text, numbered references)."""
    parts = ['<h2 id="methods">Methods</h2>']
    parts.extend(f"<p>{esc(p)}</p>" for p in m.paragraphs)
    if m.software:
        parts.append(
            '<p class="muted">Software (versions installed where this report was written): '
            + ", ".join(f"{esc(n)} {esc(v)}" for n, v in m.software)
            + "</p>"
        )
    if m.references:
        parts.append("<h3>References</h3><ol>")
        parts.extend(f"<li>{esc(REFERENCES[k][1])}</li>" for k in m.references)
        parts.append("</ol>")
    return "\n".join(parts)
