"""A "Methods" paragraph for the subject report, written from what actually ran.

Everything quantitative comes from the JSON sidecars the steps wrote next to their
outputs (the parameters they really used, after any capping), never from the current
config, which may have changed since. A stage gets a sentence only when the stage table
says it is done, so a session that failed gets no invented methods. Library versions
are read from the installed package metadata (no heavy imports at report time).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from earlybrain import __version__
from earlybrain.report.html import esc

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
    "monai": (
        "Cardoso et al. 2022",
        "Cardoso MJ, Li W, Brown R, Ma N, Kerfoot E, Wang Y, et al. MONAI: an open-source "
        "framework for deep learning in healthcare. arXiv:2211.02701. 2022.",
    ),
}

# Distributions whose versions a reader needs, by the stage that used them.
BASE_SOFTWARE = ("earlybrain", "snakemake", "numpy", "nibabel")
STAGE_SOFTWARE = {"n4": ("antspyx",), "svr_srr": ("torch",), "segmentation": ("torch", "monai")}


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
        "through-plane FWHM equal to the slice thickness, sampled every "
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


def build_methods(
    stages: Sequence[dict[str, str]],
    *,
    n4_sidecars: Sequence[dict[str, Any]] = (),
    recon_sidecar: dict[str, Any] | None = None,
    recon_metrics: dict[str, Any] | None = None,
    brain_mask_detail: str = "",
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
        m.paragraphs.append(
            "Brain masks of the stacks were given, not computed by earlybrain "
            f"({brain_mask_detail or 'precomputed masks from masks_dir'})."
        )
    if status.get("svr_srr") == "done":
        text = recon_paragraph(recon_sidecar or {}, recon_metrics or {}, m)
        m.paragraphs.append(
            text
            or "A slice-to-volume reconstruction ran, but its parameter sidecar could not be "
            "read, so its settings are not reported here."
        )
    if status.get("segmentation") == "done":
        m.paragraphs.append(f"Segmentation networks were built with MONAI {m.cite('monai')}.")
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
            if status.get(key) == "done":
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
