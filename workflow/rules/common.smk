# Shared definitions: paths, sessions discovered in the BIDS dataset, input functions.
# No rules here; every rule file includes what it needs from these names.

import json
import shlex
import shutil
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod

from earlybrain.io.bids import BIDSError, discover_sessions
from earlybrain.io.masks import MaskNotFoundError, find_mask
from earlybrain.recon.config import ReconConfig
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

# Rules whose jobs run torch. The SLURM GPU profile (profiles/slurm) sends exactly these
# to the GPU partition with one GPU; tests/test_slurm.py keeps the two lists equal.
TORCH_RULES = {"recon"}

DATASET_DESCRIPTION = f"{DERIV}/dataset_description.json"
COHORT_TSV = f"{DERIV}/group/cohort.tsv"
COHORT_HTML = f"{DERIV}/group/cohort.html"

# strict=False: a session with a problem (missing age, no images, bad names) still
# gets jobs; its validation step records the problem and its report names it.
# `snakemake --lint` checks the rules, not a dataset: let it run from a bare checkout.
LINT_ONLY = "--lint" in sys.argv and not Path(BIDS).is_dir()
try:
    SESSIONS = (
        [] if LINT_ONLY else discover_sessions(BIDS, config.get("subjects") or None, strict=False)
    )
except BIDSError as exc:
    raise WorkflowError(
        f"{exc}\nSet bids_dir (and output_dir) in a config file or on the command line: "
        "--config bids_dir=/path/to/bids output_dir=/path/to/out"
    ) from exc
BY_PREFIX = {s.prefix: s for s in SESSIONS}

try:  # a misspelt recon key stops the run now, not after every N4 job
    ReconConfig.from_dict(config["recon"])
except ValueError as exc:
    raise WorkflowError(f"config recon: {exc}") from exc
RAW_IMAGES = {(s.reldir, im.stem, im.suffix): im.path for s in SESSIONS for im in s.images}


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
    }[kind]
    return [
        pattern.format(deriv=DERIV, reldir=rec.reldir, stem=im.stem, suffix=im.suffix)
        for im in rec.images
    ]


def brain_masks(rec):
    """Brain mask per stack from masks_dir, or [] when any is missing (no recon then)."""
    if not config.get("masks_dir"):
        return []
    try:
        return [str(find_mask(config["masks_dir"], rec.reldir, im.stem)) for im in rec.images]
    except MaskNotFoundError:
        return []


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


def recon_inputs(wildcards):
    rec = session_of(wildcards)
    return {"stacks": preprocessed(rec, "image"), "masks": brain_masks(rec)}


def session_report_inputs(rec, validation):
    """A session's report inputs once its validation JSON exists: the stages it reaches.

    A fetal session is reconstructed when every stack has a brain mask.
    """
    with open(validation) as fh:
        passed = json.load(fh)["status"] == "pass"
    masks = brain_masks(rec) if passed and rec.kind == "fetal" else []
    recon = recon_outputs(rec) if masks else {}
    return {
        "validation": validation,
        "n4": preprocessed(rec, "image") if passed else [],
        "bias": preprocessed(rec, "bias") if passed else [],
        "mask": preprocessed(rec, "mask") if passed else [],
        "brain_masks": masks,
        "recon_metrics": recon.get("metrics", []),
        "recon_figures": recon.get("figures", []),
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
                    "brain_masks": given["brain_masks"],
                    "recon_metrics": given["recon_metrics"] or None,
                    "recon_figures": given["recon_figures"],
                },
            }
        )
    done = salvage(log, sessions, COHORT_TSV, COHORT_HTML)
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
