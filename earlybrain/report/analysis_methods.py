"""The Methods paragraphs of the steps that measure the brain volume in atlas space: atlas
registration, tissue segmentation and volumetry, and brain age with the normative scores
(fetal deep ensemble or infant combination of classical estimates).

Each paragraph is written from the step's QC or result JSON, the model card beside the
network's weights and the normative curves it used, never from the current config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from earlybrain.report.preprocessing_methods import device_phrase, num
from earlybrain.report.references import Methods
from earlybrain.report.segmentation import mean_agreement, segmentation_warnings


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
        f"{num(par.get('working_grid_mm', '?'))} mm working grid and segmented by "
        f"sliding-window inference (overlapping windows, Gaussian blending){tta} in "
        f"{num(times.get('network_s', '?'))} s on {device_phrase(par.get('device'))}. Labels "
        f"more than {num(par.get('mask_margin_mm', '?'))} mm outside the registered brain "
        "mask were removed; the tissues were split into left and right at the atlas "
        f"midsagittal plane (x = {num(par.get('midsagittal_plane_x_mm', '?'))} mm); of "
        "each label the largest connected component was kept, with any other component at "
        f"least {num(par.get('keep_fraction', '?'))} times its size, and holes were filled. "
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
            f"brain-age step recorded ages {num(lo)}-{num(hi)} weeks in training and a "
            f"validation mean absolute error of {num(deep.get('validation_mae_weeks', '?'))} "
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
        + f" aged {num(lo)}-{num(hi)} weeks"
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
        f"{num(deep.get('sd_weeks', '?'))} weeks (aleatoric "
        f"{num(deep.get('aleatoric_sd_weeks', '?'))}, epistemic "
        f"{num(deep.get('epistemic_sd_weeks', '?'))}), on "
        f"{device_phrase(result.get('device'))}. The weights "
        f"({Path(str(deep.get('weights', '?'))).name}, SHA-256 "
        f"{str(deep.get('weights_sha256', '?'))[:12]}) {_ensemble_training(card, deep)} "
        "Two classical estimates were made as checks: the age of the weekly template of "
        f"atlas {atlas.get('atlas', '?')} most similar to the subject (normalised "
        "cross-correlation), and the age that makes the tissue volumes most likely under "
        "the normative growth curves; estimates more than "
        f"{num(par.get('spread_limit_weeks', '?'))} weeks apart were flagged (here "
        f"{num(result.get('method_spread_weeks', '?'))} weeks). The brain-age gap "
        "(estimate minus chronological age) was scored against the SD of the gap in healthy "
        f"validation subjects ({num(result.get('gap_sd_weeks', '?'))} weeks)."
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
            f"{num(lo)}-{num(hi)} weeks {norms.get('age_kind', '')} ({source}): at each "
            f"age, log volume is normal with a mean polynomial of degree {degrees.pop()} in "
            "age and an SD log-linear in age, fitted by maximum likelihood."
        )
    else:
        text = f" Each volume was scored (z-score, centile) against normative curves: {source}."
    return text + f" Values with |z| > {num(par.get('z_limit', '?'))} were flagged."


def infant_brainage_paragraph(result: dict[str, Any], norms: dict[str, Any], m: Methods) -> str:
    """The infant method (`earlybrain.brainage.infant`): three classical estimates and
    their joint combination, calibrated on simulated infants run end to end."""
    meth = result.get("methods", {})
    atlas, comb = meth.get("atlas_similarity", {}), meth.get("combined", {})
    myel = meth.get("myelination")
    par, cal = result.get("Parameters", {}), result.get("calibration") or {}
    text = (
        "Brain age was estimated from three classical estimates, each bias-corrected and "
        "with an SD calibrated on simulated infants processed by this pipeline "
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
    text += (
        " The primary estimate is the posterior over age given all of them at once: the "
        "atlas-similarity and volume ages and the contrast indexes each follow a logistic "
        "curve of age, with jointly Student-t residuals (so that estimates sharing an error, "
        "such as brain size seen by both the volumes and the template match, count once), "
        "flat prior over the calibrated ages; its SD was scaled by "
        f"{num(comb.get('sd_scale', '?'))} to match its errors on the calibration cohort "
        f"at that age and for that kind of brain mask ({cal.get('mask_method') or 'unknown'}): "
        f"here {num(result.get('predicted_age_weeks', '?'))} ± "
        f"{num(result.get('uncertainty_sd_weeks', '?'))} weeks post-menstrual age "
        f"({num(result.get('predicted_age_months', '?'))} months after term, "
        "(PMA - 40 weeks) / 4.345). Estimates further apart than "
        f"{num(par.get('spread_limit_weeks', '?'))} weeks (2 SD of their difference) were "
        f"flagged (here {num(result.get('method_spread_weeks', '?'))} weeks). The "
        "brain-age gap (estimate minus chronological age) was scored against the gaps of "
        "the healthy calibration infants at this age (mean "
        f"{num(result.get('gap_bias_weeks', '?'))}, SD "
        f"{num(result.get('gap_sd_weeks', '?'))} weeks)."
    )
    return text + norms_sentences(result, norms)
