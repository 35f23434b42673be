"""Step declarations: the rule's command line and `earlybrain step` come from one place.

For every declared step, a job's command built from the rule side (params + shell
command) is parsed by the CLI side and must hand the step function exactly the values
the job had. A rename on either side, a lost quote or a list cut short fails here.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from earlybrain import cli
from earlybrain.stepkit import Arg, Compute, Step, call, rule_params, shell_command
from earlybrain.workflow_steps import STEPS, step_params


def _sample(a: Arg) -> Any:
    """A value of the argument's kind that quoting or list handling could break."""
    return {
        "path": Path(f"/data/{a.name} with space's.nii.gz"),
        "paths": [Path(f"/d/{a.name}-1.nii.gz"), Path(f"/d/{a.name} 2.nii.gz")],
        "str": a.choices[-1] if a.choices else f"{a.name} 'x'",
        "int": 3,
        "float": 2.5,
        "bool": True,
        "json": {"k": [1, 2], "s": "a 'b'"},
        "floats": (17.5, 44.0),
    }[a.kind]


class _Named(dict):
    """Snakemake's named input/output lists answer .get and attribute access."""

    __getattr__ = dict.__getitem__


def _job_command(declared: Step, job: dict[str, Any]) -> list[str]:
    """The words a rule running `declared` would execute for a job with these values."""
    settings = {a.name: job[a.name] for a in declared.args if a.role == "param"}
    settings.pop("threads", None)
    params = rule_params(declared, settings)
    files = _Named({a.name: str(job[a.name]) for a in declared.args if a.role == "input"})
    files |= {
        a.name: [str(p) for p in job[a.name]]
        for a in declared.args
        if a.role == "input" and a.kind == "paths"
    }
    rendered = {
        k: v(None, files) if k in files else (v(None) if callable(v) else v)
        for k, v in params.items()
    }
    command = shell_command(declared, "earlybrain").split(" > ")[0]
    command = re.sub(r"\{params\.(\w+)\}", lambda m: rendered[m[1]], command)
    command = re.sub(
        r"\{output\.(\w+):q\}", lambda m: shlex.quote(str(job[m[1]])), command
    ).replace("{threads}", str(job.get("threads", 1)))
    return shlex.split(command)[1:]


@pytest.mark.parametrize("name", sorted(STEPS))
def test_the_rule_command_hands_the_step_what_the_job_has(name: str) -> None:
    declared = STEPS[name]
    job = {a.name: _sample(a) for a in declared.args}
    argv = _job_command(declared, job)
    assert argv[:2] == ["step", name]

    seen: dict[str, Any] = {}
    recorded = dataclasses.replace(declared, func=lambda **kw: seen.update(kw) or 0)
    assert call(recorded, cli.build_parser().parse_args(argv)) == 0

    expected: dict[str, Any] = {}
    for a in declared.args:
        value = job[a.name]
        if a.group:
            expected.setdefault(a.group, {})[a.name] = value
        else:
            expected[a.name] = value
    for group, cls in declared.groups.items():
        expected[group] = cls(**expected[group])
    assert seen == expected


def test_an_absent_optional_file_or_setting_leaves_the_step_its_default() -> None:
    declared = STEPS["brain-mask"]
    config = {"device": "cpu", "device_fallback": "cpu"}
    params = step_params("brain-mask", config, weights="", threshold=None, min_volume_ml=1.0,
                         masks_dir_miss="")  # fmt: skip
    assert params["device"] == "--device cpu"  # from the workflow's config
    assert params["threshold"] == params["weights"] == params["masks_dir_miss"] == ""
    assert params["precomputed"](None, _Named(precomputed=[])) == ""
    assert params["precomputed"](None, _Named()) == ""  # before a checkpoint has run
    argv = ["step", "brain-mask", "--image", "s.nii.gz", "--out", "m.nii.gz"]
    seen: dict[str, Any] = {}
    recorded = dataclasses.replace(declared, func=lambda **kw: seen.update(kw) or 0)
    call(recorded, cli.build_parser().parse_args(argv))
    assert seen["precomputed"] is None and seen["weights"] is None
    assert seen["threshold"] is None and seen["compute"] == Compute()


def test_a_rule_that_misnames_or_forgets_a_setting_fails_when_parsed() -> None:
    config = {"device": "cpu", "device_fallback": "cpu"}
    with pytest.raises(KeyError, match="no setting devic"):
        step_params("recon", config, devic="gpu")
    with pytest.raises(KeyError, match="gives no age, out_anat, prefix"):
        step_params("brainage", config)
