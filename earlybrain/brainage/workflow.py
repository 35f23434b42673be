"""Helpers for workflow/rules/brainage.smk (Snakemake lint wants no functions in rule files)."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from earlybrain.brainage.ensemble import default_weights_path
from earlybrain.brainage.pipeline import brainage_paths
from earlybrain.io.paths import RECON, Derivatives, bids_name

SETTINGS_KEYS = ("weights", "norms")


def rule_outputs(deriv: Derivatives, entity: str = RECON) -> dict[str, str]:
    """Outputs of `brainage` (or `brainage_infant`) for the volume `{prefix}_{entity}`:
    a reconstruction `rec-...` or an infant's image `mod-<contrast>` (wildcards allowed)."""
    paths = brainage_paths(deriv.folder("anat"), bids_name(deriv.prefix, entity, ext=""))
    return {k: str(v) for k, v in paths.items()}


def inference_settings(section: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of config `brainage` the per-subject step uses (not the training keys)."""
    return {k: section[k] for k in SETTINGS_KEYS if k in section}


def norms_file(section: Mapping[str, Any]) -> str:
    """The normative curves in use: config brainage.norms, else the shipped ones."""
    from earlybrain.brainage.norms import shipped_norms_path

    return str(section.get("norms") or shipped_norms_path())


def infant_norms_file(section: Mapping[str, Any]) -> str:
    """The infant normative curves in use: config brainage.infant_norms (null or empty:
    the shipped models/brainage/norms_infant.json)."""
    from earlybrain.brainage.norms import shipped_infant_norms_path

    return str(section.get("infant_norms") or shipped_infant_norms_path())


def model_files(section: Mapping[str, Any]) -> list[str]:
    """Weights and norms a subject's brain age depends on (the shipped ones when empty):
    inputs of the rule, so new weights or refitted norms re-run it."""
    return [str(section.get("weights") or default_weights_path()), norms_file(section)]


def as_list(value: str | Sequence[str]) -> list[str]:
    """A rule's named input as a list (Snakemake hands a one-file list over as the file)."""
    return [value] if isinstance(value, str) else [str(v) for v in value]


def cohort_options(volumes: Sequence[str], masks: Sequence[str], affines: Sequence[str],
                   ages: Sequence[float]) -> str:  # fmt: skip
    """`earlybrain train-brainage` arguments for training on this run's sessions."""
    volumes, masks, affines = as_list(volumes), as_list(masks), as_list(affines)
    if not volumes:
        return ""
    args = ["--cohort-volumes", *volumes, "--cohort-masks", *masks]
    args += ["--cohort-affines", *affines, "--cohort-ages", *(f"{a:g}" for a in ages)]
    return " ".join(shlex.quote(str(a)) for a in args)


def selected(records: Sequence[Any], subjects: Sequence[str]) -> list[Any]:
    """Fetal sessions with an age of `subjects` (with or without `sub-`; empty = every one).
    Choose sessions that were processed: one that failed validation has no outputs."""
    want = {s.removeprefix("sub-") for s in subjects}
    return [r for r in records if r.kind == "fetal" and r.age_weeks is not None
            and (not want or r.subject in want)]  # fmt: skip
