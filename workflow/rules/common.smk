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
from earlybrain.io.paths import RECON, Derivatives, sidecar
from earlybrain.io.provenance import declare_datasets
from earlybrain.preprocess.infant import primary_contrast
from earlybrain.preprocess.stack_quality import QualityRules
from earlybrain.recon.config import ReconConfig
from earlybrain.report.outputs import SessionOutputs
from earlybrain.register.register import RegistrationParams
from earlybrain.segment import workflow as segment_wf
from earlybrain.workflow_steps import step_overrides
from earlybrain.workflow_steps import step_params as _step_params
from earlybrain.workflow_steps import step_shell as _step_shell
from snakemake.exceptions import WorkflowError

BIDS = config["bids_dir"]
OUTDIR = config["output_dir"]
DERIV = f"{OUTDIR}/earlybrain"
LOGS = f"{OUTDIR}/logs"
BENCH = f"{OUTDIR}/benchmarks"
# every step names its sources by BIDS URIs into these datasets, never by absolute
# paths (earlybrain.io.provenance); the steps' processes inherit the declaration
declare_datasets(DERIV, BIDS, config.get("masks_dir"))
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


def step_params(name, **values):
    """Every step rule's params: the values it gives, named after the step's arguments
    (earlybrain.workflow_steps), already as shell words."""
    return _step_params(name, config, **values)


def step_shell(name):
    """Every step rule's shell command: `earlybrain step NAME` with its arguments, derived
    from the step's declaration (earlybrain.workflow_steps), log redirected."""
    return _step_shell(name, EARLYBRAIN)


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

# the derivatives' file names (earlybrain.io.paths): D's methods give the rules' output
# patterns (wildcards), derivatives(rec)'s the files of one session
D = Derivatives(DERIV)
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
# relative to the repository, where the shipped atlas lives (docs/user-guide/atlases.md)
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
    tables = [
        Path(BIDS) / "participants.tsv",
        Path(BIDS) / f"sub-{rec.subject}" / f"sub-{rec.subject}_sessions.tsv",
    ]
    return [str(t) for t in tables if t.is_file()]


def existing_images(wildcards):
    """The session's images that exist.

    A listed image that is missing (e.g. a dangling DataLad/git-annex symlink) is then
    reported by that session's validation instead of Snakemake refusing to start the
    whole cohort over one missing input file.
    """
    return [str(p) for p in session_of(wildcards).image_paths if p.exists()]


def raw_image(wildcards):
    return str(RAW_IMAGES[(wildcards.sdir, wildcards.ents, wildcards.suffix)])


def derivatives(rec):
    """The derivative files of one session (earlybrain.io.paths)."""
    return Derivatives(DERIV, rec.reldir, rec.prefix)


def folder(datatype):
    """Param function: a job's session folder of one datatype (anat, xfm)."""
    return lambda wildcards: Derivatives(DERIV, wildcards.sdir).folder(datatype)


def stage_stem(entity):
    """Param function: a job's file stem for a volume's stage entity (RECON, or a
    pattern such as "mod-{suffix}"): sub-01_rec-svr, sub-01_mod-T2w."""
    return lambda wildcards: f"{wildcards.prefix}_{entity.format_map(dict(wildcards.items()))}"


def validation_json(rec):
    return derivatives(rec).validation()


def preprocessed(rec, kind):
    """One kind of N4 output (n4, bias, foreground, n4_figure) for every image of a session."""
    name = getattr(derivatives(rec), kind)
    return [name(im.stem, im.suffix) for im in rec.images]


def image_brain_mask(wildcards):
    """The brain mask on this input image's grid, if its session has one: each fetal
    stack's own; an infant's on the first image of its working contrast."""
    key = (wildcards.sdir, wildcards.ents, wildcards.suffix)
    rec = IMAGE_SESSIONS[key]
    if rec.reconstruction:
        return [volume_mask(rec)]
    if rec.kind == "fetal":
        return [derivatives(rec).stack_mask(wildcards.ents, wildcards.suffix)]
    first = next(im for im in rec.images if im.suffix == infant_contrast(rec))
    return [volume_mask(rec)] if (rec.reldir, first.stem, first.suffix) == key else []


def precomputed_mask(wildcards):
    """The lab's own mask of this stack in masks_dir, or [] (the network masks it)."""
    mask, _ = _masks_dir_lookup(wildcards.sdir, wildcards.ents, wildcards.suffix)
    return [mask] if mask else []


def masks_dir_miss(wildcards):
    """Why masks_dir, when set, has no mask for this stack ("" otherwise): the network
    masks it, and its sidecar, log and the report say so."""
    return _masks_dir_lookup(wildcards.sdir, wildcards.ents, wildcards.suffix)[1]


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


def brain_masks(rec):
    """Brain mask per stack (see brain_mask in preprocess.smk): fetal stacks only."""
    if rec.kind != "fetal" or rec.reconstruction:
        return []
    return [derivatives(rec).stack_mask(im.stem, im.suffix) for im in rec.images]


def stack_qc_tsv(rec):
    return derivatives(rec).stack_quality()


def stack_qc_inputs(wildcards):
    rec = session_of(wildcards)
    return {"stacks": preprocessed(rec, "n4"), "masks": brain_masks(rec)}


def registration_outputs(rec):
    """Outputs of register_atlas (fetal), register_given or register_infant for a session."""
    if rec.kind == "fetal":
        return atlas_wf.rule_outputs(derivatives(rec), ATLAS_SPACE, stage_entity(rec))
    contrast = infant_contrast(rec)
    return atlas_wf.rule_outputs(derivatives(rec), INFANT_SPACE, stage_entity(rec), contrast)


def segmentation_outputs(rec):
    """Outputs of segment (fetal) or segment_infant for a session."""
    space = ATLAS_SPACE if rec.kind == "fetal" else INFANT_SPACE
    return segment_wf.rule_outputs(derivatives(rec), space, stage_entity(rec))


def brainage_outputs(rec):
    """Outputs of brainage (workflow/rules/brainage.smk), brainage_given or brainage_infant."""
    return brainage_wf.rule_outputs(derivatives(rec), stage_entity(rec))


def recon_figures(rec):
    return [derivatives(rec).recon_views(), derivatives(rec).recon_motion()]


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
        validation = checkpoints.validate.get(sdir=rec.reldir, prefix=rec.prefix).output.out
        with open(validation) as fh:
            if json.load(fh)["status"] != "pass":
                continue
        volumes.append(derivatives(rec).volume())
        masks.append(derivatives(rec).brain_mask())
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
    prefix = Path(volume).name.split(f"_{RECON}")[0]
    return BY_PREFIX[prefix].age_weeks


def infant_contrast(rec):
    """The contrast an infant session is masked, registered and segmented on."""
    return primary_contrast(
        [im.suffix for im in rec.images], rec.age_weeks, config["infant"]["t1w_from_months"]
    )


def infant_entity(rec):
    """The entity naming an infant session's derived files: mod-T1w or mod-T2w."""
    return f"mod-{infant_contrast(rec)}"


def _infant_input(wildcards):
    """The image an infant session works on (first of its contrast), and the session."""
    rec = session_of(wildcards)
    return rec, next(im for im in rec.images if im.suffix == wildcards.suffix)


def infant_raw(wildcards):
    """That image as given (skull-stripped or not: earlybrain.preprocess.infant)."""
    return str(_infant_input(wildcards)[1].path)


def infant_image(wildcards):
    """Its N4-corrected version: what the infant rules work on."""
    rec, im = _infant_input(wildcards)
    return derivatives(rec).n4(im.stem, im.suffix)


def volume_mask(rec):
    """The brain mask of an infant's image or of a reconstruction made elsewhere."""
    return derivatives(rec).brain_mask(stage_entity(rec))


def stage_entity(rec):
    """What a session's registered volume is called: rec-svr (fetal), rec-<label> (a
    reconstruction made elsewhere) or mod-<contrast> (infant)."""
    if rec.reconstruction:
        return f"rec-{rec.reconstruction}"
    return RECON if rec.kind == "fetal" else infant_entity(rec)


def given_raw(wildcards):
    """The reconstruction a session brought, as given (workflow/rules/given.smk)."""
    return str(session_of(wildcards).images[0].path)


def given_image(wildcards):
    """Its N4-corrected version: what the given-reconstruction rules work on."""
    rec = session_of(wildcards)
    return preprocessed(rec, "n4")[0]


def recon_inputs(wildcards):
    rec = session_of(wildcards)
    return {
        "stacks": preprocessed(rec, "n4"),
        "masks": brain_masks(rec),
        "stack_qc": stack_qc_tsv(rec),
    }


def session_report_inputs(rec, validation):
    """A session's report inputs (the fields of earlybrain.report.outputs.SessionOutputs)
    once its validation JSON exists: the outputs of the stages it reaches.

    A validated fetal session is masked, its stacks ranked, reconstructed, registered
    to the atlas, segmented and aged; an infant session or a reconstruction made
    elsewhere is masked as a volume, then registered, segmented and aged.
    """
    with open(validation) as fh:
        if json.load(fh)["status"] != "pass":
            return {"validation": validation}
    fetal = rec.kind == "fetal" and not rec.reconstruction
    d, entity = derivatives(rec), stage_entity(rec)
    segmentation, brainage = segmentation_outputs(rec), brainage_outputs(rec)
    return {
        "validation": validation,
        "n4": preprocessed(rec, "n4"),
        "bias": preprocessed(rec, "bias"),
        "mask": preprocessed(rec, "foreground"),
        "n4_figures": preprocessed(rec, "n4_figure"),
        "brain_masks": brain_masks(rec) if fetal else [volume_mask(rec)],
        "stack_qc": stack_qc_tsv(rec) if fetal else [],
        "recon_metrics": d.recon_metrics() if fetal else [],
        "recon_figures": recon_figures(rec) if fetal else [],
        "registration_qc": registration_outputs(rec)["qc"],
        "registration_figure": d.atlas_figure(entity),
        "segmentation_qc": segmentation["qc"],
        "volumes": segmentation["volumes"],
        "segmentation_figure": d.segmentation_figure(entity),
        "brainage": brainage["brainage"],
        "zscores": brainage["zscores"],
        "brainage_figure": d.brainage_chart(entity),
    }


def report_inputs(wildcards):
    """validate is a checkpoint: Snakemake re-evaluates this function after the session
    is validated, so a failed session never schedules N4 jobs but still gets a report."""
    rec = session_of(wildcards)
    validation = checkpoints.validate.get(sdir=rec.reldir, prefix=rec.prefix).output.out
    return session_report_inputs(rec, validation)


def salvage_reports(log):
    """onerror: sessions hit by a failed job still get a report, the cohort a table."""
    from earlybrain.report.salvage import salvage_reports as salvage

    sessions = []
    for rec in SESSIONS:
        validation = validation_json(rec)
        if not Path(validation).is_file():
            continue
        sessions.append(
            {
                "prefix": rec.prefix,
                "html": derivatives(rec).report(),
                "stages": derivatives(rec).stages(),
                "outputs": SessionOutputs.of(session_report_inputs(rec, validation)),
            }
        )
    norms = brainage_wf.norms_file(config["brainage"])
    done = salvage(log, sessions, COHORT_TSV, COHORT_HTML, norms, INFANT_NORMS)
    if done:
        print(f"reports written for the sessions with a failed job: {', '.join(done)}")
        print(f"cohort table: {COHORT_HTML}")


def all_reports():
    return [derivatives(s).report() for s in SESSIONS]


def all_stages():
    return [derivatives(s).stages() for s in SESSIONS]
