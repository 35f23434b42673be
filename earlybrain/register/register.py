"""Register a brain volume to its age-matched atlas template: init -> rigid -> affine -> SyN.

Why this shape: the initial pose is unknown (fetal heads lie in any orientation), so a
robust initialisation (`register.init`) picks the start; then ANTs refines it in the
usual order, each stage starting from the previous one, with fixed seeds and thread
count so that the same input gives the same output. The template is the fixed image:
the warped volume lands on the atlas grid (standard orientation), and the inverse maps
carry the atlas labels and mask to the subject (a segmentation baseline and a QC
measure: the warped atlas mask should cover the subject's own brain mask).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from earlybrain.atlas.manifest import load_manifest, select_template
from earlybrain.atlas.templates import TemplateImages, load_template
from earlybrain.config_values import coerce_fields
from earlybrain.io.atomic import write_bytes_atomic, write_json_atomic
from earlybrain.io.nifti import load_nifti, save_nifti, voxel_sizes
from earlybrain.io.provenance import source_reference, source_references
from earlybrain.io.sidecar import write_sidecar
from earlybrain.register import antsio
from earlybrain.register.init import InitParams, InitResult, check_seed, initialise
from earlybrain.register.metrics import dice, ncc
from earlybrain.register.orientation import network_vote
from earlybrain.register.stages import align, identity_warp, linear_stage

log = logging.getLogger("earlybrain.register")
PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class RegistrationParams:
    """Settings of one registration. Defaults: < 2 min for a 0.8 mm volume on 2 cores."""

    threads: int = 2  # ITK threads; results repeat exactly for a fixed count
    random_seed: int = 1  # ANTs' sampling seed
    init: InitParams = field(default_factory=InitParams)
    # GC (global correlation) rather than Mattes MI: with several ITK threads, Mattes
    # accumulates its histogram in a varying order and results change from run to run
    linear_metric: str = "GC"  # rigid and affine stages (same-contrast template)
    linear_shrink: tuple[int, ...] = (4, 2, 1)
    linear_sigmas_vox: tuple[int, ...] = (2, 1, 0)
    rigid_iterations: tuple[int, ...] = (100, 50, 0)
    affine_iterations: tuple[int, ...] = (100, 50, 0)
    syn_metric: str = "mattes"  # "mattes" (MI) or "CC"
    syn_sampling: int = 32  # histogram bins for mattes, radius for CC
    syn_iterations: tuple[int, ...] = (60, 30, 10)  # shrink 4, 2, 1 (one level per entry)
    syn_grad_step: float = 0.2
    syn_flow_sigma: float = 3.0
    syn_total_sigma: float = 0.0
    output_voxel_mm: float | None = None  # atlas-space output grid; None: the input's voxel
    crop_margin_mm: float = 10.0  # work on the brain's bounding box plus this margin
    intensity_percentile: float = 99.0  # brain intensities are divided by this percentile
    max_age_distance_weeks: float = 2.0  # refuse templates further away in age
    qc_min_ncc: float = 0.7  # below this (atlas-space NCC) the registration is flagged
    qc_min_mask_dice: float = 0.85  # below this (warped atlas mask vs brain mask) flagged
    # when ANTs fails from the chosen start, rigid + affine run from up to this many
    # starts in all (stages.starts); none completes: stages.RegistrationError
    max_starts: int = 3
    # let the fetal segmentation network's confidence in its labels overrule NCC's choice
    # of orientation (register.orientation, InitParams.vote_margin); fetal atlases only
    # (infant heads lie upright in the scanner, and the voter is a fetal network)
    orientation_vote: bool = True

    def __post_init__(self) -> None:
        check_seed(self.random_seed)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> RegistrationParams:
        """From plain config values (lists become tuples); unknown keys are errors."""
        values = dict(values or {})
        init = values.pop("init", None)
        out = coerce_fields(cls, values, "registration")
        if isinstance(init, dict):
            out["init"] = InitParams(**coerce_fields(InitParams, init, "registration init"))
        elif init is not None:
            out["init"] = init
        return cls(**out)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RegistrationResult:
    fwdtransforms: list[str]  # ANTs order, pull subject onto the atlas grid: [warp, affine]
    invtransforms: list[str]  # [affine (to invert), inverse warp]
    atlas_image: np.ndarray  # the subject's volume on the atlas-space output grid
    atlas_affine: np.ndarray
    atlas_mask: np.ndarray  # the subject's brain mask on that grid
    subject_dseg: np.ndarray | None  # atlas labels in subject space (earlybrain's 12)
    subject_atlas_mask: np.ndarray  # atlas brain mask in subject space
    init: InitResult
    metrics: dict[str, Any]


def _scaled(image: np.ndarray, mask: np.ndarray, percentile: float) -> np.ndarray:
    """Brain-only image divided by a high percentile: a common scale for template and subject."""
    inside = image[mask > 0]
    top = float(np.percentile(inside, percentile)) if inside.size else 0.0
    if top <= 0:
        raise ValueError("the brain mask holds no positive intensities to register")
    return np.where(mask > 0, image / top, 0.0).astype(np.float32)


def crop_box(mask: np.ndarray, affine: np.ndarray, margin_mm: float) -> tuple[slice, ...]:
    """Bounding box of the mask plus a margin (mm), clipped to the grid."""
    idx = np.argwhere(mask > 0)
    pad = np.ceil(margin_mm / voxel_sizes(affine)).astype(int)
    lo = np.maximum(idx.min(axis=0) - pad, 0)
    hi = np.minimum(idx.max(axis=0) + pad + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def cropped_affine(affine: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    shift = np.eye(4)
    shift[:3, 3] = [s.start for s in box]
    return np.asarray(affine, dtype=np.float64) @ shift


@dataclass
class Start:
    """A subject cropped to its brain's box, both images on a common scale, and the
    initialisation found between them: where every registration begins."""

    box: tuple[slice, ...]  # the crop, in the subject's voxels
    affine: np.ndarray  # of the crop
    raw: np.ndarray  # the cropped image as given (float32)
    mask: np.ndarray  # the cropped brain mask (uint8)
    fixed: np.ndarray  # the template, brain only, scaled
    moving: np.ndarray  # the crop, brain only, scaled
    init: InitResult


def find_start(
    template: TemplateImages,
    image: np.ndarray,
    affine: np.ndarray,
    mask: np.ndarray,
    params: RegistrationParams = RegistrationParams(),
    vote_model: Any | None = None,
) -> Start:
    """Crop to the brain (reconstructions hold much empty space), scale, initialise.
    `vote_model` (a segmentation network) may overrule NCC's choice of orientation
    when params.orientation_vote is on (register.orientation)."""
    full_mask = (np.asarray(mask) > 0).astype(np.uint8)
    if not full_mask.any():
        raise ValueError("the brain mask is empty")
    box = crop_box(full_mask, affine, params.crop_margin_mm)
    affine_c = cropped_affine(affine, box)
    raw_c = np.asarray(image, dtype=np.float32)[box]
    mask_c = full_mask[box]
    fixed_np = _scaled(template.image, template.mask, params.intensity_percentile)
    moving_np = _scaled(raw_c, mask_c, params.intensity_percentile)
    vote = None
    if vote_model is not None and params.orientation_vote:
        vote = network_vote(template.mask, template.affine, moving_np, affine_c, vote_model)
    init = initialise(
        fixed_np, template.affine, template.mask, moving_np, affine_c, mask_c, params.init, vote
    )
    return Start(box, affine_c, raw_c, mask_c, fixed_np, moving_np, init)


def register_images(
    template: TemplateImages,
    image: np.ndarray,
    affine: np.ndarray,
    mask: np.ndarray,
    workdir: PathLike,
    params: RegistrationParams = RegistrationParams(),
    image_name: str = "the image",
    vote_model: Any | None = None,
) -> RegistrationResult:
    """Register a subject volume (any pose) to `template`; transforms are written in
    `workdir`. A RegistrationError, naming `image_name`, when no start aligns it.
    `vote_model` (a segmentation network) picks the orientation among the refined starts
    when params.orientation_vote is on."""
    antsio.set_threads(params.threads)
    ants = antsio.ants_module()
    workdir = Path(workdir)
    if len(params.linear_shrink) != len(params.linear_sigmas_vox):
        raise ValueError("linear_shrink and linear_sigmas_vox need the same number of levels")
    for name in ("rigid_iterations", "affine_iterations"):
        if len(getattr(params, name)) > len(params.linear_shrink):
            raise ValueError(f"{name} has more levels than linear_shrink")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    start = find_start(template, image, affine, mask, params, vote_model)
    box, affine_c, raw_c, mask_c = start.box, start.affine, start.raw, start.mask
    fixed_np, moving_np, init = start.fixed, start.moving, start.init
    full_mask = (np.asarray(mask) > 0).astype(np.uint8)
    timings["init_s"] = time.perf_counter() - t0
    log.info("initialisation: %s", json.dumps(init.chosen.summary()))

    fixed = antsio.to_ants(fixed_np, template.affine)
    moving = antsio.to_ants(moving_np, affine_c)
    # the metric is sampled on the template grid, so finer moving voxels only cost time
    tpl_vox = voxel_sizes(template.affine)
    if np.min(voxel_sizes(affine_c)) < 0.9 * np.min(tpl_vox):
        moving = ants.resample_image(moving, tuple(float(v) for v in tpl_vox), False, 0)
    fmask = template.mask > 0

    def score(warped: Any) -> float:
        return ncc(fixed_np, warped.numpy(), fmask)

    done = align(fixed, moving, score, init, params, workdir, image_name)
    aff = done.affine
    timings["linear_s"] = done.linear_s
    if done.syn is not None:
        fwd, inv = list(done.syn["fwdtransforms"]), list(done.syn["invtransforms"])
        warped = done.syn["warpedmovout"]
        timings["syn_s"] = done.syn_s
    else:  # affine only: an identity warp keeps both transform lists' shape
        warp = identity_warp(fixed, workdir / "identity_warp.nii.gz")
        fwd, inv = [warp, aff["fwdtransforms"][0]], [aff["fwdtransforms"][0], warp]
        warped = aff["warpedmovout"]
    if len(fwd) != 2 or len(inv) != 2:
        raise RuntimeError(f"unexpected ANTs transform files: {fwd} / {inv}")

    t = time.perf_counter()
    metrics: dict[str, Any] = {
        "ncc_init_coarse": init.chosen.refined_score
        if init.chosen.refined_score is not None
        else init.chosen.score,
        "ncc_affine": ncc(fixed_np, aff["warpedmovout"].numpy(), fmask),
        "ncc": ncc(fixed_np, warped.numpy(), fmask),
        "start": done.start,
        "starts": done.attempts,
        "deformable": done.syn is not None,
    }
    # outputs on the atlas-space grid at the input's resolution (or the one asked for)
    vox = params.output_voxel_mm or float(np.min(voxel_sizes(affine)))
    ref = ants.resample_image(fixed, (vox, vox, vox), False, 0)
    atlas_img = ants.apply_transforms(
        ref, antsio.to_ants(raw_c, affine_c), fwd, interpolator="linear"
    )
    atlas_mask = ants.apply_transforms(
        ref, antsio.to_ants(mask_c, affine_c), fwd, interpolator="genericLabel"
    )
    # atlas labels and mask to the subject: computed on the crop, pasted into the full grid
    subject_grid = antsio.to_ants(np.zeros(mask_c.shape, np.float32), affine_c)
    back = {"transformlist": inv, "whichtoinvert": [True, False], "interpolator": "genericLabel"}

    def to_subject(labels: np.ndarray) -> np.ndarray:
        warped = ants.apply_transforms(
            subject_grid, antsio.to_ants(labels, template.affine), **back
        ).numpy()
        out = np.zeros(full_mask.shape, dtype=np.uint8)
        out[box] = np.rint(warped).astype(np.uint8)
        return out

    subject_atlas_mask = (to_subject(template.mask) > 0).astype(np.uint8)
    subject_dseg = to_subject(template.dseg) if template.dseg is not None else None
    jac = ants.create_jacobian_determinant_image(fixed, fwd[0]).numpy()[fmask]
    metrics |= {
        "mask_dice": dice(subject_atlas_mask, full_mask),
        "jacobian_min": float(jac.min()),
        "jacobian_max": float(jac.max()),
    }
    timings["resample_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    warnings = []
    if not metrics["ncc"] >= params.qc_min_ncc:
        warnings.append(f"atlas-space NCC {metrics['ncc']:.3f} < {params.qc_min_ncc}")
    if not metrics["mask_dice"] >= params.qc_min_mask_dice:
        warnings.append(
            f"warped atlas mask Dice {metrics['mask_dice']:.3f} < {params.qc_min_mask_dice}"
        )
    if metrics["jacobian_min"] <= 0:
        warnings.append("the warp folds (Jacobian determinant <= 0 somewhere in the brain)")
    if done.syn_error is not None:
        warnings.append(f"SyN failed ({done.syn_error}): affine alignment only")
    metrics |= {"qc_pass": not warnings, "qc_warnings": warnings, "timings": timings}
    return RegistrationResult(
        fwdtransforms=fwd,
        invtransforms=inv,
        atlas_image=atlas_img.numpy().astype(np.float32),
        atlas_affine=antsio.ras_affine(atlas_img),
        atlas_mask=(np.rint(atlas_mask.numpy()) > 0).astype(np.uint8),
        subject_dseg=subject_dseg,
        subject_atlas_mask=subject_atlas_mask,
        init=init,
        metrics=metrics,
    )


def rigid_align(
    template: TemplateImages,
    image: np.ndarray,
    affine: np.ndarray,
    mask: np.ndarray,
    workdir: PathLike,
    params: RegistrationParams = RegistrationParams(),
) -> tuple[np.ndarray, InitResult]:
    """Robust initialisation + rigid stage only: the template->subject point map (RAS 4x4).

    The map keeps the isotropic scale found by the initialisation (template and subject
    brains differ in size); callers that need a pure rotation remove it.
    """
    antsio.set_threads(params.threads)
    workdir = Path(workdir)
    start = find_start(template, image, affine, mask, params)
    init_path = antsio.write_matrix_transform(start.init.matrix, workdir / "init.mat")
    rigid = linear_stage(
        "Rigid",
        antsio.to_ants(start.fixed, template.affine),
        antsio.to_ants(start.moving, start.affine),
        [str(init_path)],
        params.rigid_iterations,
        params,
        str(workdir / "rigid_"),
    )
    return antsio.read_matrix_transform(rigid["fwdtransforms"][0]), start.init


def registration_paths(
    out_dir: PathLike,
    prefix: str,
    space: str,
    contrast: str = "T2w",
    xfm_dir: PathLike | None = None,
) -> dict[str, Path]:
    """Output file names (BIDS-derivative style) of one registration; the comment above
    each key says what its file holds (the outputs reference prints it)."""
    out = Path(out_dir)
    xfm = Path(xfm_dir) if xfm_dir is not None else out / "xfm"
    fwd = f"{prefix}_from-{contrast}_to-{space}_mode-image"
    return {
        # the volume warped into atlas space: the template's grid at the volume's own
        # resolution (or register.output_voxel_mm)
        "volume": out / f"{prefix}_space-{space}_{contrast}.nii.gz",
        # the volume's brain mask, warped with it into atlas space
        "volume_mask": out / f"{prefix}_space-{space}_desc-brain_mask.nii.gz",
        # the template's tissue labels warped onto the volume's grid (12 labels)
        "dseg": out / f"{prefix}_desc-atlas_dseg.nii.gz",
        # the template's brain mask warped onto the volume's grid
        "atlas_mask": out / f"{prefix}_desc-atlas_mask.nii.gz",
        # registration QC: template chosen, initialisation, NCC, mask Dice, Jacobian
        # range, warnings, timings
        "qc": out / f"{prefix}_desc-registration_qc.json",
        # forward affine transform, volume to template (ANTs matrix)
        "affine": xfm / f"{fwd}_desc-affine_xfm.mat",
        # forward deformation field (SyN), applied after the affine: volume to template
        "warp": xfm / f"{fwd}_desc-warp_xfm.nii.gz",
        # inverse deformation field: template back to the volume (with the inverted affine)
        "inverse_warp": xfm
        / f"{prefix}_from-{space}_to-{contrast}_mode-image_desc-warp_xfm.nii.gz",
        # how to apply the transforms, forward and back, with ANTs
        "xfm": xfm / f"{fwd}_xfm.json",
    }


def _copy(src: PathLike, dst: Path) -> Path:
    return write_bytes_atomic(dst, Path(src).read_bytes())


def _clean(obj: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, so the QC file is strict JSON."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def register_to_atlas(
    volume_path: PathLike,
    mask_path: PathLike | None,
    age_weeks: float,
    manifest_path: PathLike,
    out_dir: PathLike,
    prefix: str,
    params: RegistrationParams | dict[str, Any] | None = None,
    contrast: str = "T2w",
    xfm_dir: PathLike | None = None,
    vote_weights: PathLike | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """File entry: register one volume to the age-matched template; write every output.

    With params.orientation_vote and a fetal atlas, the segmentation network
    `vote_weights` (None: the shipped fetal one) votes on the orientation, on `device`.

    Writes (see `registration_paths`): the volume and its brain mask in atlas space,
    the atlas labels and mask in subject space, forward (affine + warp) and inverse
    transforms with a JSON note on how to apply them, and a QC JSON (template chosen,
    initialisation log, NCC, mask Dice, Jacobian range, timings), which is returned.
    Without a brain mask, the nonzero voxels of the volume are taken as the brain.
    """
    p = params if isinstance(params, RegistrationParams) else RegistrationParams.from_dict(params)
    manifest = load_manifest(manifest_path)
    choice = select_template(manifest, float(age_weeks), contrast, p.max_age_distance_weeks)
    log.info(choice.message)
    template = load_template(manifest, choice.template, contrast)
    vol = load_nifti(volume_path)
    data = np.asarray(vol.dataobj, dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"{volume_path}: expected a 3D volume, got shape {data.shape}")
    if mask_path is not None:
        m = load_nifti(mask_path)
        if m.shape[:3] != data.shape or not np.allclose(m.affine, vol.affine, atol=1e-3):
            raise ValueError(f"{mask_path}: mask grid differs from the volume {volume_path}")
        mask = (np.asarray(m.dataobj) > 0).astype(np.uint8)
        mask_note = source_reference(mask_path)
    else:
        mask = (data > 0).astype(np.uint8)
        mask_note = "none given: nonzero voxels of the volume"
    if mask.sum() < 100:
        raise ValueError(f"{mask_path or volume_path}: brain mask is empty or tiny")
    paths = registration_paths(out_dir, prefix, manifest.space, contrast, xfm_dir)
    vote_model = None
    if p.orientation_vote and manifest.population == "fetal":
        from earlybrain.segment.inference import load_model

        vote_model = load_model(vote_weights, device)
    with tempfile.TemporaryDirectory(prefix="earlybrain-register-") as tmp:
        res = register_images(
            template, data, vol.affine, mask, tmp, p, str(volume_path), vote_model
        )
        warp, aff = res.fwdtransforms
        _copy(aff, paths["affine"])
        _copy(warp, paths["warp"])
        _copy(res.invtransforms[1], paths["inverse_warp"])
    sources = [str(volume_path)] + ([str(mask_path)] if mask_path else [])
    tpl_sources = [str(choice.template.images[contrast]), str(choice.template.mask)]
    common = {
        "Template": {
            "atlas": manifest.name,
            "space": manifest.space,
            "age_weeks": choice.template.age_weeks,
            "requested_age_weeks": float(age_weeks),
            "manifest": str(manifest.path),
        }
    }
    pars = p.as_dict()
    if vote_model is not None:
        pars["orientation_vote_weights"] = {"path": vote_model.path, "sha256": vote_model.sha256}
    save_nifti(res.atlas_image, res.atlas_affine, paths["volume"], dtype=np.float32)
    write_sidecar(paths["volume"], step="register", parameters=pars, sources=sources, extra=common)
    save_nifti(res.atlas_mask, res.atlas_affine, paths["volume_mask"], dtype=np.uint8)
    write_sidecar(
        paths["volume_mask"], step="register", parameters=pars, sources=sources, extra=common
    )
    save_nifti(res.subject_atlas_mask, vol.affine, paths["atlas_mask"], dtype=np.uint8)
    write_sidecar(
        paths["atlas_mask"], step="register", parameters=pars, sources=tpl_sources, extra=common
    )
    if res.subject_dseg is not None:
        save_nifti(res.subject_dseg, vol.affine, paths["dseg"], dtype=np.uint8)
        write_sidecar(
            paths["dseg"],
            step="register",
            parameters=pars,
            sources=[*tpl_sources, str(choice.template.dseg)],
            extra=common | {"Labels": "earlybrain 12 labels (7 tissues, left/right)"},
        )
    write_json_atomic(
        paths["xfm"],
        {
            "Description": "ANTs transforms between the subject volume and the atlas template",
            "FromSpace": contrast,
            "ToSpace": manifest.space,
            "Forward": {
                "use": "ants.apply_transforms(fixed=<atlas grid>, moving=<subject image>, "
                "transformlist=[warp, affine])",
                "transformlist": [paths["warp"].name, paths["affine"].name],
                "whichtoinvert": [False, False],
            },
            "Inverse": {
                "use": "ants.apply_transforms(fixed=<subject grid>, moving=<atlas image>, "
                "transformlist=[affine, inverse_warp], whichtoinvert=[True, False])",
                "transformlist": [paths["affine"].name, paths["inverse_warp"].name],
                "whichtoinvert": [True, False],
            },
            "Sources": source_references(sources + tpl_sources),
        },
    )
    qc = _clean(
        {
            "template": common["Template"] | {"selection": choice.message},
            "mask": mask_note,
            "initialisation": res.init.log(),
            **res.metrics,
            "parameters": pars,
        }
    )
    write_json_atomic(paths["qc"], qc)
    if res.subject_dseg is None and paths["dseg"].exists():
        paths["dseg"].unlink()  # never leave a stale label map from an earlier run
    return qc
