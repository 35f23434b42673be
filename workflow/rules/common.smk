# Shared definitions: paths, sessions discovered in the BIDS dataset, input functions.
# No rules here; every rule file includes what it needs from these names.

import functools
import json
import math
import shlex
import shutil
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod

from earlybrain.atlas import workflow as atlas_wf
from earlybrain.brainage import workflow as brainage_wf
from earlybrain.atlas.manifest import ManifestError
from earlybrain.io.bids import BIDSError, discover_sessions
from earlybrain.io.masks import MaskNotFoundError, find_mask
from earlybrain.preprocess.infant import primary_contrast
from earlybrain.preprocess.stack_quality import QualityRules
from earlybrain.recon.config import ReconConfig
from earlybrain.register.register import RegistrationParams
from earlybrain.segment import workflow as segment_wf
from snakemake.exceptions import WorkflowError

BIDS = config["bids_dir"]
OUTDIR = config["output_dir"]
DERIV = f"{OUTDIR}/earlybrain"
LOGS = f"{OUTDIR}/logs"
BENCH = f"{OUTDIR}/benchmarks"
# conda environment for --sdm conda, relative to the rule files in workflow/rules/
ENV = "../../envs/earlybrain.yaml"


def earlybrain_command():
    """How rules call the CLI.

    With --sdm conda: `earlybrain` from the activated job environment. Otherwise the
    one installed beside the Python running Snakemake (works without activating the
    venv), falling back to PATH.
    """
    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
        return "earlybrain"
    beside = Path(sys.executable).parent / "earlybrain"
    if beside.is_file():
        return shlex.quote(str(beside))
    return shutil.which("earlybrain") or "earlybrain"


EARLYBRAIN = earlybrain_command()

# Rules worth a GPU. The SLURM GPU profile (profiles/slurm) sends exactly these to the
# GPU partition with one GPU; tests/test_slurm.py keeps the two lists equal. brain_mask
# runs torch too, but takes seconds per stack on a CPU: one GPU job per stack would
# mostly wait in the GPU queue, so it stays on the CPU partition (device: auto).
GPU_RULES = {
    "recon",
    "segment",
    "infant_prep",
    "segment_infant",
    "segment_given",
    "train_masking",
    "train_segmentation",
    "train_brainage",
}

DATASET_DESCRIPTION = f"{DERIV}/dataset_description.json"
COHORT_TSV = f"{DERIV}/group/cohort.tsv"
COHORT_HTML = f"{DERIV}/group/cohort.html"

# strict=False: a session with a problem (missing age, no images, bad names) still
# gets jobs; its validation step records the problem and its report names it.
# `snakemake --lint` checks the rules, not a dataset, and the training targets
# need none: let them run from a bare checkout.
TRAIN_TARGETS = ("train_masking", "train_segmentation", "train_brainage")
NO_DATASET = ("--lint" in sys.argv or any(t in sys.argv for t in TRAIN_TARGETS)) and not Path(
    BIDS
).is_dir()
try:
    SESSIONS = (
        []
        if NO_DATASET
        else discover_sessions(
            BIDS,
            config.get("subjects") or None,
            strict=False,
            reconstructed=config["reconstructed"],
        )
    )
except BIDSError as exc:
    raise WorkflowError(
        f"{exc}\nSet bids_dir (and output_dir) in a config file or on the command line: "
        "--config bids_dir=/path/to/bids output_dir=/path/to/out"
    ) from exc
BY_PREFIX = {s.prefix: s for s in SESSIONS}

# a misspelt key stops the run now, not after every N4 job
for _key, _check in (
    ("recon", ReconConfig.from_dict),
    ("register", RegistrationParams.from_dict),
    ("stack_quality", lambda values: QualityRules(**values)),
):
    try:
        _check(config[_key])
    except (TypeError, ValueError) as exc:
        raise WorkflowError(f"config {_key}: {exc}") from exc

# empty: the weights shipped in models/masking (earlybrain.preprocess.masking)
MASKING_WEIGHTS = config["masking"]["weights"]
# inference keys of config segmentation (empty weights: the shipped models/segmentation)
SEGMENTATION_SETTINGS = segment_wf.inference_settings(config["segmentation"])
# the same for infant sessions, with the infant network (segmentation.infant_weights)
INFANT_SEGMENTATION_SETTINGS = segment_wf.infant_settings(config["segmentation"])
# inference keys of config brainage (empty: the shipped models/brainage ensemble and norms)
BRAINAGE_SETTINGS = brainage_wf.inference_settings(config["brainage"])
# normative curves of infant sessions (config brainage.infant_norms; null: the shipped ones)
INFANT_NORMS = brainage_wf.infant_norms_file(config["brainage"])

# the atlas: a relative manifest path missing from the working directory is taken
# relative to the repository, where the shipped atlas lives (atlases/README.md)
REPO = Path(str(workflow.basedir)).resolve()
ATLAS_MANIFEST = atlas_wf.resolve_manifest(config["atlas"]["manifest"], REPO)
try:
    ATLAS_SPACE = atlas_wf.atlas_space(ATLAS_MANIFEST)
except ManifestError as exc:
    raise WorkflowError(f"config atlas.manifest: {exc}") from exc
# infant sessions register to the infant atlas (config atlas.infant_manifest)
INFANT_MANIFEST = atlas_wf.resolve_manifest(config["atlas"]["infant_manifest"], REPO)
try:
    INFANT_SPACE = atlas_wf.atlas_space(INFANT_MANIFEST, "earlybrainInfant")
except ManifestError as exc:
    raise WorkflowError(f"config atlas.infant_manifest: {exc}") from exc
RAW_IMAGES = {(s.reldir, im.stem, im.suffix): im.path for s in SESSIONS for im in s.images}
IMAGE_SESSIONS = {(s.reldir, im.stem, im.suffix): s for s in SESSIONS for im in s.images}


wildcard_constraints:
    sdir=r"sub-[A-Za-z0-9]+(/ses-[A-Za-z0-9]+)?",
    prefix=r"sub-[A-Za-z0-9]+(_ses-[A-Za-z0-9]+)?",
    ents=r"sub-[A-Za-z0-9]+(_[A-Za-z]+-[A-Za-z0-9]+)*",
    suffix=r"T1w|T2w",


def session_of(wildcards):
    """The discovered session for a job's {prefix} wildcard."""
    return BY_PREFIX[wildcards.prefix]


def session_tables(wildcards):
    """participants.tsv / sessions.tsv: ages come from them, so they are inputs."""
    rec = session_of(wildcards)
    tables = [Path(BIDS) / "participants.tsv", Path(BIDS) / f"sub-{rec.subject}" / f"sub-{rec.subject}_sessions.tsv"]
    return [str(t) for t in tables if t.is_file()]


def session_option(wildcards):
    """`--session <label>` for sessioned datasets, nothing otherwise."""
    ses = session_of(wildcards).session
    return f"--session {shlex.quote(ses)}" if ses else ""


def existing_images(wildcards):
    """The session's images that exist.

    A listed image that is missing (e.g. a dangling DataLad/git-annex symlink) is then
    reported by that session's validation instead of Snakemake refusing to start the
    whole cohort over one missing input file.
    """
    return [str(p) for p in session_of(wildcards).image_paths if p.exists()]


def raw_image(wildcards):
    return str(RAW_IMAGES[(wildcards.sdir, wildcards.ents, wildcards.suffix)])


def validation_json(rec):
    return f"{DERIV}/{rec.reldir}/qc/{rec.prefix}_validation.json"


def preprocessed(rec, kind):
    """Paths of one kind of N4 output ("image", "bias", "mask") for every image of a session."""
    pattern = {
        "image": "{deriv}/{reldir}/anat/{stem}_desc-n4_{suffix}.nii.gz",
        "bias": "{deriv}/{reldir}/anat/{stem}_desc-biasfield_{suffix}.nii.gz",
        "mask": "{deriv}/{reldir}/anat/{stem}_desc-foreground{suffix}_mask.nii.gz",
        "figure": "{deriv}/{reldir}/figures/{stem}_desc-n4_{suffix}.png",
    }[kind]
    return [
        pattern.format(deriv=DERIV, reldir=rec.reldir, stem=im.stem, suffix=im.suffix)
        for im in rec.images
    ]


def image_brain_mask(wildcards):
    """The brain mask on this input image's grid, if its session has one: each fetal
    stack's own; an infant's on the first image of its working contrast."""
    key = (wildcards.sdir, wildcards.ents, wildcards.suffix)
    rec = IMAGE_SESSIONS[key]
    if rec.reconstruction:
        return [given_mask(rec)]
    if rec.kind == "fetal":
        stem, suffix = wildcards.ents, wildcards.suffix
        return [f"{DERIV}/{rec.reldir}/anat/{stem}_desc-brain{suffix}_mask.nii.gz"]
    first = next(im for im in rec.images if im.suffix == infant_contrast(rec))
    return [infant_mask(rec)] if (rec.reldir, first.stem, first.suffix) == key else []


def precomputed_mask(wildcards):
    """The lab's own mask of this stack in masks_dir, or [] (the network masks it)."""
    mask, _ = _masks_dir_lookup(wildcards.sdir, wildcards.ents, wildcards.suffix)
    return [mask] if mask else []


def masks_dir_miss(wildcards):
    """`--masks-dir-miss MESSAGE` when masks_dir is set but has no mask for this stack:
    the network masks it, and its sidecar, log and the report say so."""
    _, miss = _masks_dir_lookup(wildcards.sdir, wildcards.ents, wildcards.suffix)
    return f"--masks-dir-miss {shlex.quote(miss)}" if miss else ""


@functools.cache
def _masks_dir_lookup(sdir, ents, suffix):
    """(mask path, "") when masks_dir has this stack's mask, ("", why not) when it has
    none, ("", "") without masks_dir: one search serves the input and the params."""
    if not config.get("masks_dir"):
        return "", ""
    try:
        return str(find_mask(config["masks_dir"], sdir, ents, suffix)), ""
    except MaskNotFoundError as exc:
        return "", str(exc)


def threshold_option(value):
    """`--threshold X`, or nothing to use the threshold the weights were validated with."""
    return "" if value is None else f"--threshold {float(value)}"


def brain_masks(rec):
    """Brain mask per stack (see brain_mask in preprocess.smk): fetal stacks only."""
    if rec.kind != "fetal" or rec.reconstruction:
        return []
    return [
        f"{DERIV}/{rec.reldir}/anat/{im.stem}_desc-brain{im.suffix}_mask.nii.gz"
        for im in rec.images
    ]


def stack_qc_tsv(rec):
    return f"{DERIV}/{rec.reldir}/qc/{rec.prefix}_desc-stackquality.tsv"


def stack_qc_inputs(wildcards):
    rec = session_of(wildcards)
    return {"stacks": preprocessed(rec, "image"), "masks": brain_masks(rec)}


def registration_figure(rec):
    return f"{DERIV}/{rec.reldir}/figures/{rec.prefix}_{stage_entity(rec)}_desc-atlas_dseg.png"


def registration_outputs(rec):
    """Outputs of register_atlas (fetal), register_given or register_infant for a session."""
    if rec.kind == "fetal":
        return atlas_wf.rule_outputs(DERIV, rec.reldir, rec.prefix, ATLAS_SPACE, stage_entity(rec))
    contrast = infant_contrast(rec)
    return atlas_wf.rule_outputs(
        DERIV, rec.reldir, rec.prefix, INFANT_SPACE, f"mod-{contrast}", contrast
    )


def segmentation_outputs(rec):
    """Outputs of segment (fetal) or segment_infant for a session."""
    space = ATLAS_SPACE if rec.kind == "fetal" else INFANT_SPACE
    return segment_wf.rule_outputs(DERIV, rec.reldir, rec.prefix, space, stage_entity(rec))


def brainage_outputs(rec):
    """Outputs of brainage (fetal, workflow/rules/brainage.smk), brainage_given or
    brainage_infant."""
    if rec.kind == "fetal":
        return brainage_wf.rule_outputs(DERIV, rec.reldir, rec.prefix, stage_entity(rec))
    return brainage_wf.infant_rule_outputs(DERIV, rec.reldir, rec.prefix, infant_contrast(rec))


def brainage_figure(rec):
    if rec.kind == "fetal":
        return brainage_wf.figure_path(DERIV, rec.reldir, rec.prefix, stage_entity(rec))
    return brainage_wf.infant_figure_path(DERIV, rec.reldir, rec.prefix, infant_contrast(rec))


def segmentation_figure(rec):
    entity = stage_entity(rec)
    return f"{DERIV}/{rec.reldir}/figures/{rec.prefix}_{entity}_desc-segmentation_dseg.png"


def recon_outputs(rec):
    """SVR/SRR outputs of a fetal session (see workflow/rules/recon.smk)."""
    base = f"{DERIV}/{rec.reldir}"
    return {
        "volume": f"{base}/anat/{rec.prefix}_rec-svr_T2w.nii.gz",
        "brainmask": f"{base}/anat/{rec.prefix}_rec-svr_desc-brain_mask.nii.gz",
        "slices": f"{base}/qc/{rec.prefix}_rec-svr_slices.tsv",
        "metrics": f"{base}/qc/{rec.prefix}_rec-svr_metrics.json",
        "figures": [
            f"{base}/figures/{rec.prefix}_rec-svr_views.png",
            f"{base}/figures/{rec.prefix}_rec-svr_motion.png",
        ],
    }


# atlas building (build_atlas in register.smk)
ATLAS_BUILD = config["atlas"]["build"]
ATLAS_BUILD_FILES = atlas_wf.build_inputs(ATLAS_BUILD, REPO)


def atlas_build_inputs(wildcards):
    """The configured cohort, or else this run's validated fetal reconstructions."""
    if ATLAS_BUILD_FILES["volumes"] or ATLAS_BUILD_FILES["cohort"]:
        return ATLAS_BUILD_FILES
    volumes, masks = [], []
    for rec in SESSIONS:
        if rec.kind != "fetal" or rec.reconstruction:  # ages by name: rec-svr only
            continue
        validation = checkpoints.validate.get(sdir=rec.reldir, prefix=rec.prefix).output.json
        with open(validation) as fh:
            if json.load(fh)["status"] != "pass":
                continue
        volumes.append(recon_outputs(rec)["volume"])
        masks.append(recon_outputs(rec)["brainmask"])
    return {"volumes": volumes, "masks": masks, "reference": [ATLAS_MANIFEST]}


def atlas_build_args(wildcards, input):
    """Arguments of `earlybrain build-atlas`; ages of this run's sessions from their records."""
    keys = ("volumes", "labels", "masks", "cohort", "reference")
    files = {k: list(input.get(k) or []) for k in keys}
    build = dict(ATLAS_BUILD)
    if not (ATLAS_BUILD_FILES["volumes"] or ATLAS_BUILD_FILES["cohort"]):
        build["ages"] = [cohort_age(path) for path in files["volumes"]]
        if "weeks" not in build and build["ages"]:  # every week the cohort spans
            build["weeks"] = f"{math.floor(min(build['ages']))}-{math.ceil(max(build['ages']))}"
    return atlas_wf.build_args(build, files)


def cohort_age(volume):
    """Age (weeks) of the session a reconstruction belongs to."""
    prefix = Path(volume).name.split("_rec-svr")[0]
    return BY_PREFIX[prefix].age_weeks



def infant_contrast(rec):
    """The contrast an infant session is masked, registered and segmented on."""
    return primary_contrast(
        [im.suffix for im in rec.images], rec.age_weeks, config["infant"]["t1w_from_months"]
    )


def infant_entity(rec):
    """The entity naming an infant session's derived files: mod-T1w or mod-T2w."""
    return f"mod-{infant_contrast(rec)}"


def infant_image(wildcards):
    """The N4-corrected image an infant session works on (first of its contrast)."""
    rec = session_of(wildcards)
    im = next(im for im in rec.images if im.suffix == wildcards.suffix)
    return f"{DERIV}/{rec.reldir}/anat/{im.stem}_desc-n4_{im.suffix}.nii.gz"


def infant_mask(rec):
    return f"{DERIV}/{rec.reldir}/anat/{rec.prefix}_{infant_entity(rec)}_desc-brain_mask.nii.gz"


def stage_entity(rec):
    """What a session's registered volume is called: rec-svr (fetal), rec-<label> (a
    reconstruction made elsewhere) or mod-<contrast> (infant)."""
    if rec.reconstruction:
        return f"rec-{rec.reconstruction}"
    return "rec-svr" if rec.kind == "fetal" else infant_entity(rec)


def given_raw(wildcards):
    """The reconstruction a session brought, as given (workflow/rules/given.smk)."""
    return str(session_of(wildcards).images[0].path)


def given_image(wildcards):
    """Its N4-corrected version: what the given-reconstruction rules work on."""
    rec = session_of(wildcards)
    return preprocessed(rec, "image")[0]


def given_mask(rec):
    return f"{DERIV}/{rec.reldir}/anat/{rec.prefix}_{stage_entity(rec)}_desc-brain_mask.nii.gz"


def recon_inputs(wildcards):
    rec = session_of(wildcards)
    return {
        "stacks": preprocessed(rec, "image"),
        "masks": brain_masks(rec),
        "stack_qc": stack_qc_tsv(rec),
    }


def session_report_inputs(rec, validation):
    """A session's report inputs once its validation JSON exists: the stages it reaches.

    A validated fetal session is masked, its stacks ranked, reconstructed, registered
    to the atlas, segmented and aged; a validated infant session is masked, registered
    to the infant atlas, segmented and aged (brainage_infant).
    """
    with open(validation) as fh:
        passed = json.load(fh)["status"] == "pass"
    given = passed and bool(rec.reconstruction)
    fetal = passed and rec.kind == "fetal" and not given
    infant = passed and rec.kind == "infant"
    recon = recon_outputs(rec) if fetal else {}
    return {
        "validation": validation,
        "n4": preprocessed(rec, "image") if passed else [],
        "bias": preprocessed(rec, "bias") if passed else [],
        "mask": preprocessed(rec, "mask") if passed else [],
        "n4_figures": preprocessed(rec, "figure") if passed else [],
        "brain_masks": (
            brain_masks(rec)
            if fetal
            else [infant_mask(rec)] if infant else [given_mask(rec)] if given else []
        ),
        "stack_qc": stack_qc_tsv(rec) if fetal else [],
        "recon_metrics": recon.get("metrics", []),
        "recon_figures": recon.get("figures", []),
        "registration_qc": registration_outputs(rec)["qc"] if passed else [],
        "registration_figure": registration_figure(rec) if passed else [],
        "segmentation_qc": segmentation_outputs(rec)["qc"] if passed else [],
        "volumes": segmentation_outputs(rec)["volumes"] if passed else [],
        "segmentation_figure": segmentation_figure(rec) if passed else [],
        "brainage": brainage_outputs(rec)["brainage"] if passed else [],
        "zscores": brainage_outputs(rec)["zscores"] if passed else [],
        "brainage_figure": brainage_figure(rec) if passed else [],
    }


def report_inputs(wildcards):
    """validate is a checkpoint: Snakemake re-evaluates this function after the session
    is validated, so a failed session never schedules N4 jobs but still gets a report."""
    rec = session_of(wildcards)
    validation = checkpoints.validate.get(sdir=rec.reldir, prefix=rec.prefix).output.json
    return session_report_inputs(rec, validation)


def salvage_reports(log):
    """onerror: sessions hit by a failed job still get a report, the cohort a table."""
    from earlybrain.report.salvage import salvage_reports as salvage

    sessions = []
    for rec in SESSIONS:
        validation = validation_json(rec)
        if not Path(validation).is_file():
            continue
        given = session_report_inputs(rec, validation)
        sessions.append(
            {
                "prefix": rec.prefix,
                "html": report_html(rec.prefix),
                "stages": stages_json(rec.prefix),
                "inputs": {
                    "validation_path": validation,
                    "n4_paths": given["n4"],
                    "bias_paths": given["bias"],
                    "mask_paths": given["mask"],
                    "n4_figures": given["n4_figures"],
                    "brain_masks": given["brain_masks"],
                    "stack_qc": given["stack_qc"] or None,
                    "recon_metrics": given["recon_metrics"] or None,
                    "registration_qc": given["registration_qc"] or None,
                    "registration_figure": given["registration_figure"] or None,
                    "segmentation_qc": given["segmentation_qc"] or None,
                    "volumes": given["volumes"] or None,
                    "segmentation_figure": given["segmentation_figure"] or None,
                    "brainage": given["brainage"] or None,
                    "zscores": given["zscores"] or None,
                    "brainage_figure": given["brainage_figure"] or None,
                    "recon_figures": given["recon_figures"],
                },
            }
        )
    norms = brainage_wf.norms_file(config["brainage"])
    done = salvage(log, sessions, COHORT_TSV, COHORT_HTML, norms, INFANT_NORMS)
    if done:
        print(f"reports written for the sessions with a failed job: {', '.join(done)}")
        print(f"cohort table: {COHORT_HTML}")


def stages_json(prefix):
    return f"{DERIV}/group/stages/{prefix}_stages.json"


def report_html(prefix):
    return f"{DERIV}/{prefix}.html"


def all_reports():
    return [report_html(s.prefix) for s in SESSIONS]


def all_stages():
    return [stages_json(s.prefix) for s in SESSIONS]


def quoted_input(key):
    """Param function: the named input `key` as shell-quoted words, "" when absent.

    Shell commands of rules fed by a checkpoint use this instead of {input.key}: until
    the checkpoint has run (e.g. in a dry run) the named inputs do not exist yet.
    """

    def get(wildcards, input):
        files = input.get(key) or []
        if isinstance(files, str):
            files = [files]
        return " ".join(shlex.quote(str(f)) for f in files)

    return get
