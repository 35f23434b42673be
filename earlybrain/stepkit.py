"""How a workflow step is declared, once, and what is derived from the declaration.

A step is a typed function next to its science (``earlybrain/<package>/steps.py``),
decorated with :func:`step`. Each parameter says, through ``Annotated``, where its value
comes from in the Snakemake rule (an input, an output, or a parameter) and what it is.
From that one declaration come both ``earlybrain step NAME`` (:func:`add_parser`,
:func:`call`) and the rule's params and shell command (:func:`rule_params`,
:func:`shell_command`), so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import shlex
import sys
import traceback
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from earlybrain.device import DEVICES, FALLBACKS
from earlybrain.io.provenance import portable

Role = Literal["input", "output", "param"]


@dataclass(frozen=True)
class Source:
    """Where a step argument comes from in its rule, and its help text."""

    role: Role
    help: str = ""
    choices: tuple[str, ...] | None = None


def Input(help: str = "") -> Source:  # noqa: N802
    """A file the rule lists under ``input:`` with the argument's name."""
    return Source("input", help)


def Output(help: str = "") -> Source:  # noqa: N802
    """A file the step writes, which the rule lists under ``output:`` with its name."""
    return Source("output", help)


def Param(help: str = "", choices: tuple[str, ...] | None = None) -> Source:  # noqa: N802
    """A setting the rule gives (from the config, the session, the wildcards), or the
    rule's ``threads`` for an argument of that name. Folders and prefixes of steps
    whose outputs are many files are settings too."""
    return Source("param", help, choices)


def fail(message: object) -> int:
    """A step's expected failure: one line on stderr (the end of the job's log, which a
    salvaged report shows; torch's load errors span several lines) and status 1. Paths
    inside the run's datasets are spelled as BIDS URIs (`provenance.portable`): a
    clinic's folder names often name the patient."""
    print("error: " + " ".join(portable(str(message)).split()), file=sys.stderr)
    return 1


def print_traceback(exc: BaseException) -> None:
    """An unexpected error's traceback on stderr, paths inside the run's datasets spelled
    as BIDS URIs like `fail`'s: it lands in the job's log, which a salvaged report shows."""
    print(portable("".join(traceback.format_exception(exc))), end="", file=sys.stderr)


@dataclass(frozen=True)
class Compute:
    """Where a step's torch work runs. The workflow gives every step that has these the
    config's device and device_fallback (earlybrain.workflow_steps), and its threads."""

    device: Annotated[str, Param("torch device", DEVICES)] = "auto"
    device_fallback: Annotated[
        str, Param("with no GPU: run on the CPU, or none to fail", FALLBACKS)
    ] = "cpu"
    threads: Annotated[int, Param("CPU threads")] = 1

    @property
    def cpu_fallback(self) -> bool:
        return self.device_fallback == "cpu"


Kind = Literal["path", "paths", "str", "int", "float", "bool", "json", "floats"]


@dataclass(frozen=True)
class Arg:
    """One argument of a step, as the signature and its annotation declare it."""

    name: str
    kind: Kind
    role: Role
    help: str
    required: bool
    default: Any
    choices: tuple[str, ...] | None
    group: str = ""  # the dataclass argument it is a field of

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Step:
    """A declared step: ``earlybrain step NAME`` runs ``func`` for Snakemake rule ``rule``."""

    name: str
    rule: str
    target: str | Callable[[argparse.Namespace], str]  # what it works on (error messages)
    help: str
    func: Callable[..., int]
    args: tuple[Arg, ...]
    groups: dict[str, type]  # dataclass arguments, spread into `args`

    def arg(self, name: str) -> Arg:
        return next(a for a in self.args if a.name == name)


def _kind(hint: Any) -> Kind:
    """How a type travels on a command line; ``X | None`` as X (None: left out)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Path:
        return "path"
    if origin is list and args == (Path,):
        return "paths"
    if origin is tuple and set(args) - {Ellipsis} == {float}:
        return "floats"
    if hint is dict or origin is dict:
        return "json"
    named = {str: "str", int: "int", float: "float", bool: "bool"}
    if hint in named:
        return named[hint]  # type: ignore[return-value]
    raise TypeError(f"step argument type {hint!r} is not one a command line can carry")


def _arg(name: str, hint: Any, default: Any, group: str = "") -> Arg:
    meta = next((m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Source)), None)
    if meta is None:
        raise TypeError(f"step argument {name} says neither Input, Output nor Param")
    required = default is inspect.Parameter.empty or default is dataclasses.MISSING
    return Arg(
        name, _kind(typing.get_args(hint)[0]), meta.role, meta.help, required,
        None if required else default, meta.choices, group,
    )  # fmt: skip


def _args(func: Callable[..., int]) -> tuple[tuple[Arg, ...], dict[str, type]]:
    """A step's arguments, a dataclass argument spread into one per field; the
    dataclasses by argument name."""
    hints = typing.get_type_hints(func, include_extras=True)
    out, groups = [], {}
    for p in inspect.signature(func).parameters.values():
        cls = typing.get_args(hints[p.name])[0] if hasattr(hints[p.name], "__metadata__") else None
        if dataclasses.is_dataclass(cls):
            groups[p.name] = cls
            inner = typing.get_type_hints(cls, include_extras=True)
            out += [_arg(f.name, inner[f.name], f.default, p.name) for f in dataclasses.fields(cls)]
        else:
            out.append(_arg(p.name, hints[p.name], p.default))
    return tuple(out), groups


def step(
    name: str, *, rule: str, target: str | Callable[[argparse.Namespace], str]
) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Declare ``func`` as the step ``name`` that Snakemake rule ``rule`` runs.

    The function is returned unchanged (tests call it directly); its declaration is
    ``func.step``. Its docstring's first line is the step's help.
    """

    def declare(func: Callable[..., int]) -> Callable[..., int]:
        doc = (inspect.getdoc(func) or name).split("\n\n")[0]
        declared = Step(name, rule, target, " ".join(doc.split()), func, *_args(func))
        if isinstance(target, str):
            declared.arg(target)  # a typo fails at import, not inside an error message
        func.step = declared  # type: ignore[attr-defined]
        return func

    return declare


def declared_steps(*modules: types.ModuleType) -> dict[str, Step]:
    """name -> Step of every function declared in ``modules``, in declaration order."""
    found: dict[str, Step] = {}
    for module in modules:
        for value in vars(module).values():
            declared = getattr(value, "step", None)
            if isinstance(declared, Step) and declared.func is value:
                if declared.name in found:
                    raise ValueError(f"step {declared.name} is declared twice")
                found[declared.name] = declared
    return found


# --- the command line: earlybrain step NAME ------------------------------------------

_SCALARS = {"str": str, "int": int, "float": float}


def add_parser(steps: argparse._SubParsersAction, declared: Step) -> None:
    """The subcommand of one step, with one option per argument."""
    p = steps.add_parser(declared.name, help=declared.help, description=declared.help)
    for a in declared.args:
        kw: dict[str, Any] = {"help": f"{a.role}: {a.help}" if a.help else a.role}
        if a.kind == "bool":
            p.add_argument(a.flag, action="store_true", **kw)
            continue
        if a.kind == "path" and not a.required:
            kw |= {"nargs": "?", "default": "", "const": ""}  # an empty value: no file
        elif a.kind == "paths":
            kw |= {"nargs": "+"} if a.required else {"nargs": "*", "default": []}
        elif a.kind == "floats":
            kw |= {"type": float, "nargs": "+"}
        elif a.kind == "json":
            kw["metavar"] = "JSON"
        elif a.kind in _SCALARS:
            kw["type"] = _SCALARS[a.kind]
        if a.choices:
            kw["choices"] = a.choices
        if a.required:
            kw["required"] = True
        elif a.kind not in ("path", "paths"):
            kw["default"] = a.default
        p.add_argument(a.flag, **kw)


def call(declared: Step, namespace: argparse.Namespace) -> int:
    """Run a step with the values parsed from its command line."""
    values: dict[str, Any] = {}
    for a in declared.args:
        v = getattr(namespace, a.name)
        if a.kind == "path":
            v = Path(v) if v else None
        elif a.kind == "paths":
            v = [Path(p) for p in v]
        elif a.kind == "json" and isinstance(v, str):
            v = json.loads(v)
        elif a.kind == "floats" and v is not None:
            v = tuple(v)
        if a.group:
            values.setdefault(a.group, {})[a.name] = v
        else:
            values[a.name] = v
    for group, cls in declared.groups.items():
        values[group] = cls(**values[group])
    return int(declared.func(**values) or 0)


def target_of(declared: Step, namespace: argparse.Namespace) -> str:
    """What a run of the step works on, as its command line named it."""
    if callable(declared.target):
        return declared.target(namespace)
    value = getattr(namespace, declared.target)
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


# --- the rule's shell command and params: derived from the same declaration ----------


def _words(a: Arg, value: Any) -> str:
    """One argument as shell words; "" when absent (the step then takes its default)."""
    if value is None or value is False or value == "" or (a.kind == "paths" and not value):
        return ""
    if a.kind == "bool":
        return a.flag
    if a.kind == "json":
        return f"{a.flag} {shlex.quote(json.dumps(value, sort_keys=True))}"
    if a.kind in ("paths", "floats"):
        items = [value] if isinstance(value, str) else list(value)
        return " ".join([a.flag, *(shlex.quote(str(v)) for v in items)])
    if a.kind == "path" and isinstance(value, (list, tuple)):  # a named input's files
        if not value:
            return ""
        (value,) = value
    return f"{a.flag} {shlex.quote(str(value))}"


def _given(a: Arg, value: Any) -> Any:
    """A params entry: the words of a constant, or a function of the wildcards."""
    if callable(value):
        return lambda wildcards: _words(a, value(wildcards))
    return _words(a, value)


def _from_input(a: Arg) -> Callable[..., str]:
    """A params entry reading the job's input of that name. Not ``{input.name}`` in the
    shell: until a checkpoint has run (a dry run) the named inputs do not exist yet."""
    return lambda wildcards, input: _words(a, input.get(a.name))


def rule_params(declared: Step, values: Mapping[str, Any], *, complete: bool = True) -> dict:
    """The ``params:`` of a rule running ``declared``, from the values it gives.

    ``values`` (constants, or functions of the wildcards) are named after the step's
    settings; a setting without a default must be given. Inputs are read from the job's
    named inputs. A ``use rule ... with:`` passes only the values it changes
    (``complete=False``). Each entry is already shell words, so the rule's shell
    command (:func:`shell_command`) has the same form for every step.
    """
    settings = {a.name: a for a in declared.args if a.role == "param" and a.name != "threads"}
    unknown = sorted(set(values) - set(settings))
    if unknown:
        raise KeyError(f"step {declared.name} has no setting {', '.join(unknown)}")
    missing = [n for n, a in settings.items() if a.required and n not in values]
    if complete and missing:
        raise KeyError(f"the rule of step {declared.name} gives no {', '.join(missing)}")
    params: dict[str, Any] = {n: _given(settings[n], v) for n, v in values.items()}
    if complete:
        params |= {n: "" for n in settings if n not in values}  # the step's default
        params |= {a.name: _from_input(a) for a in declared.args if a.role == "input"}
    return params


def shell_command(declared: Step, executable: str) -> str:
    """``executable step NAME ...`` with one placeholder per argument, log redirected."""
    words = [executable, "step", declared.name]
    for a in declared.args:
        if a.role == "output":
            words.append(f"{a.flag} {{output.{a.name}:q}}")
        elif a.name == "threads":
            words.append(f"{a.flag} {{threads}}")
        else:
            words.append(f"{{params.{a.name}}}")
    return " ".join(words) + " > {log:q} 2>&1"
