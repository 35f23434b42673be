"""Every workflow step by name: what `earlybrain step` offers and the rules run.

Each step is declared once, next to its science (the packages' ``steps`` modules); this
registry only lists those modules. `stepkit` derives the command line and the rules'
params and shell commands from the declarations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from earlybrain.brainage import steps as brainage_steps
from earlybrain.io import steps as io_steps
from earlybrain.preprocess import steps as preprocess_steps
from earlybrain.recon import steps as recon_steps
from earlybrain.register import steps as register_steps
from earlybrain.report import steps as report_steps
from earlybrain.segment import steps as segment_steps
from earlybrain.stepkit import Compute, Step, declared_steps, rule_params, shell_command

STEPS: dict[str, Step] = declared_steps(
    io_steps,
    preprocess_steps,
    recon_steps,
    register_steps,
    segment_steps,
    brainage_steps,
    report_steps,
)


def step_params(name: str, config: Mapping[str, Any], **values: object) -> dict:
    """``params:`` of the rule running step ``name`` (see stepkit.rule_params). A step
    that runs torch (a Compute argument) gets the workflow ``config``'s device and
    device_fallback unless the rule says otherwise."""
    declared = STEPS[name]
    if Compute in declared.groups.values():
        torch = {"device": config["device"], "device_fallback": config["device_fallback"]}
        values = torch | values
    return rule_params(declared, values)


def step_overrides(name: str, **values: object) -> dict:
    """``params:`` of a ``use rule ... with:`` that changes some of the step's values."""
    return rule_params(STEPS[name], values, complete=False)


def step_shell(name: str, executable: str) -> str:
    """The shell command of the rule running step ``name``."""
    return shell_command(STEPS[name], executable)
