"""The outputs reference's tables of every file a run writes: `earlybrain.io.paths.Derivatives`,
the `rule_outputs` of the modules that name a volume's registration, segmentation and
brain-age files (what each holds: the comments of the keys of their `*_paths`
functions), and the `output:` of every other rule, read from workflow/rules/*.smk."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from earlybrain import REPO_ROOT
from earlybrain.config_schema import shipped_config
from earlybrain.docs_reference.source import cell, key_comments, replace_between
from earlybrain.io.paths import RECON, Derivatives

RULES = REPO_ROOT / "workflow" / "rules"

# example values of the methods' arguments and of the rules' wildcards
EXAMPLE = Derivatives("<output_dir>/earlybrain", "sub-01", "sub-01")
EXAMPLE_ARGS = {"datatype": "anat", "stem": "sub-01_run-1", "suffix": "T2w", "entity": RECON}
EXAMPLE_WILDCARDS = {"given": "svrtk", "suffix": "T2w"}
SNAKEFILE = REPO_ROOT / "Snakefile"
_SECTION = re.compile(r"^\s*# --- (?P<title>.*?) -*$")
_METHOD = re.compile(r"^\s*def (?P<name>[a-z]\w*)\(")
_RULE = re.compile(r"^(?:rule|checkpoint|use rule \w+ as) (?P<name>\w+)(?: with)?:", re.M)
_OUTPUT = re.compile(r"^([ \t]+)output:\n((?:\1[ \t]+.*\n|[ \t]*\n)*)", re.M)
_ENTRY = re.compile(r"^\s*(?:(?P<name>\w+)=)?(?P<expr>[^\s#].*?),?\s*$")  # not a comment
_CALL = re.compile(r"\bD\.(?P<name>\w+)\((?P<args>[^()]*)\)")
_MODULE_CALL = re.compile(r"^\*\*(?P<alias>\w+)\.rule_outputs\((?P<args>[^()]*)\)$")
_CONSTANT = re.compile(
    r'^(?P<name>[A-Z_]+) = "(?P<value>[^"]*)"(?:[ \t]*#[ \t]*(?P<note>.*))?$', re.M
)
_ASSIGN = re.compile(r"^(?P<name>[A-Z][A-Z_]*) = (?P<expr>.+)$", re.M)
_IMPORT = re.compile(r"^from (?P<package>[\w.]+) import (?P<name>\w+) as (?P<alias>\w+)$", re.M)
_INCLUDE = re.compile(r'^include: "(?P<path>[^"]+)"', re.M)


def path_methods() -> list[tuple[str, list[str]]]:
    """(section title, public methods returning a path) of Derivatives, in source order,
    titled by the class's `# --- title ---` comments."""
    sections: list[tuple[str, list[str]]] = [("Folders", [])]
    for line in inspect.getsource(Derivatives).splitlines():
        if m := _SECTION.match(line):
            title = m["title"]
            sections.append((title[:1].upper() + title[1:], []))
        elif (m := _METHOD.match(line)) and _returns_path(m["name"]):
            sections[-1][1].append(m["name"])
    return [(title, names) for title, names in sections if names]


def _returns_path(name: str) -> bool:
    returns = inspect.signature(getattr(Derivatives, name)).return_annotation
    return returns in ("str", str)


@functools.cache
def rule_files() -> tuple[Path, ...]:
    """The rule files, in the order the Snakefile includes them (the data's flow)."""
    included = [REPO_ROOT / m["path"] for m in _INCLUDE.finditer(SNAKEFILE.read_text())]
    return tuple(p for p in included if p.parent == RULES) + tuple(
        p for p in sorted(RULES.glob("*.smk")) if p not in included
    )


@dataclasses.dataclass(frozen=True)
class RuleOutputs:
    """A rule's `output:` as written: (name, expression) per line, and its docstring."""

    rule: str
    doc: str
    entries: tuple[tuple[str, str], ...]


@functools.cache
def rule_outputs_written() -> tuple[RuleOutputs, ...]:
    """Every rule's `output:` block, in the order of the rule files (read once: every
    table of the page asks)."""
    found = []
    for smk in rule_files():
        headers = list(_RULE.finditer(text := smk.read_text()))
        for i, head in enumerate(headers):
            block = text[head.end() : headers[i + 1].start() if i + 1 < len(headers) else None]
            doc = re.match(r'\s*"""(.*?)"""', block, re.S)
            output = _OUTPUT.search(block)
            lines = output[2].splitlines() if output else []
            entries = tuple((m["name"] or "", m["expr"]) for ln in lines if (m := _ENTRY.match(ln)))
            found.append(
                RuleOutputs(head["name"], " ".join(doc[1].split()) if doc else "", entries)
            )
    return tuple(found)


def rule_calls() -> dict[str, dict[str, list[str]]]:
    """method -> its arguments as written in a rule's `output:` -> the rules (a method
    may name the files of several stages: brain_mask(GIVEN), brain_mask(INFANT))."""
    calls: dict[str, dict[str, list[str]]] = {}
    for written in rule_outputs_written():
        for _, expr in written.entries:
            for call in _CALL.finditer(expr):
                rules_of = calls.setdefault(call["name"], {}).setdefault(call["args"], [])
                if written.rule not in rules_of:
                    rules_of.append(written.rule)
    return calls


def module_calls() -> dict[str, dict[str, list[str]]]:
    """Module (`earlybrain.atlas.workflow`) -> the arguments of its `rule_outputs` as a
    rule's `output:` unpacks them (`**atlas_wf.rule_outputs(D, ATLAS_SPACE, GIVEN)`) ->
    the rules, in the rule files' order."""
    modules = {
        m["alias"]: f"{m['package']}.{m['name']}"
        for smk in rule_files()
        for m in _IMPORT.finditer(smk.read_text())
    }
    calls: dict[str, dict[str, list[str]]] = {}
    for written in rule_outputs_written():
        for _, expr in written.entries:
            if m := _MODULE_CALL.match(expr):
                calls.setdefault(modules[m["alias"]], {}).setdefault(m["args"], []).append(
                    written.rule
                )
    return calls


def _wildcards(value: str) -> str:
    """`value` with the rules' wildcards replaced by their examples."""
    return re.sub(r"\{(\w+)\}", lambda w: EXAMPLE_WILDCARDS.get(w[1], w[0]), value)


def _constant_lines() -> Iterator[re.Match[str]]:
    for smk in rule_files():
        yield from _CONSTANT.finditer(smk.read_text())


@functools.cache
def atlas_spaces() -> dict[str, str]:
    """ATLAS_SPACE and INFANT_SPACE as workflow/rules/common.smk sets them: the spaces of
    the atlases of the shipped configuration (`atlas.manifest`, `atlas.infant_manifest`)."""
    from earlybrain.atlas.workflow import atlas_space, resolve_manifest

    atlas = shipped_config()["atlas"]
    return {
        "ATLAS_SPACE": atlas_space(resolve_manifest(atlas["manifest"], REPO_ROOT)),
        "INFANT_SPACE": atlas_space(
            resolve_manifest(atlas["infant_manifest"], REPO_ROOT), "earlybrainInfant"
        ),
    }


def _constants() -> dict[str, str]:
    """The names the rules give the volumes' entities and spaces, with example values:
    RECON (earlybrain.io.paths), the stage entities of the rule files (GIVEN =
    "rec-{given}", with example wildcards) and the atlas spaces."""
    found = {"RECON": RECON, **atlas_spaces()}
    found |= {m["name"]: _wildcards(m["value"]) for m in _constant_lines()}
    return found


def _constant_notes() -> dict[str, str]:
    """What each stage entity names, from its comment in the rule file (`GIVEN = ...  #
    the stage entity of a given reconstruction (...)`: a given reconstruction)."""
    notes = {}
    for m in _constant_lines():
        note = re.sub(r"\s*\([^()]*\)$", "", m["note"] or "")
        notes[m["name"]] = re.sub(r"^the stage entity of\s+", "", note)
    return notes


def example_path(name: str, args: str, constants: dict[str, str]) -> str:
    """The path `D.name(args)` gives for sub-01 (wildcards replaced by examples)."""
    method = getattr(EXAMPLE, name)
    given = [a.strip() for a in args.split(",") if a.strip()]
    values = []
    for i, param in enumerate(inspect.signature(method).parameters.values()):
        if i < len(given):
            arg = given[i]
            values.append(constants.get(arg, arg.strip("\"'") if arg[0] in "\"'" else f"<{arg}>"))
        elif param.default is inspect.Parameter.empty or "{" in str(param.default):
            values.append(EXAMPLE_ARGS.get(param.name, f"<{param.name}>"))
        else:
            values.append(param.default)
    return method(*values)


def _summary(name: str) -> str:
    """The docstring's first sentence, or the name in words."""
    doc = " ".join((inspect.getdoc(getattr(Derivatives, name)) or "").split())
    if not doc:
        words = name.replace("_", " ")
        return words[:1].upper() + words[1:] + "."
    return re.split(r"(?<=[.!?])\s", doc, maxsplit=1)[0]


def _sentence(text: str) -> str:
    """A comment as a table cell's sentence: capitalised, with a full stop."""
    text = text.strip()
    return f"{text[:1].upper()}{text[1:]}{'' if text.endswith('.') else '.'}" if text else ""


def derivatives_section() -> str:
    """One table per section of Derivatives: method, example path, what, written by."""
    calls, constants = rule_calls(), _constants()
    out = []
    for title, names in path_methods():
        out += [f"### {title}", "", "| method | path | what | written by |", "|---|---|---|---|"]
        for name in names:
            what = _summary(name)
            variants = calls.get(name) or {"": []}
            for args in sorted(variants, key=lambda a: (a != "", a)):  # the default first
                rules = variants[args]
                path = example_path(name, args, constants)
                out.append(
                    f"| `{name}` | {cell(path, code=True)} | {cell(what)} | {_rules(rules)} |"
                )
                what = ""  # said on the method's first row
        out.append("")
    return "\n".join(out)


def _rules(rules: list[str]) -> str:
    return ", ".join(f"`{r}`" for r in rules)


def _paths_function(module: Any) -> Callable[..., Any]:
    """The function whose dict `module.rule_outputs` returns (`registration_paths`), whose
    keys' comments say what each file holds; rule_outputs itself when it calls none."""
    called = re.search(r"\b(\w+_paths)\(", inspect.getsource(module.rule_outputs))
    return getattr(module, called[1]) if called else module.rule_outputs


def _call_values(module: Any, args: str, constants: dict[str, str]) -> list[Any]:
    """The values `module.rule_outputs(args)` gets for sub-01, every parameter given
    (its default where the rule leaves it)."""
    given = [a.strip() for a in args.split(",") if a.strip()]
    values: list[Any] = []
    for i, param in enumerate(inspect.signature(module.rule_outputs).parameters.values()):
        if i >= len(given):
            values.append(param.default)
        elif given[i] == "D":
            values.append(EXAMPLE)
        elif given[i] in constants:
            values.append(constants[given[i]])
        elif given[i][:1] in "\"'":
            values.append(_wildcards(given[i].strip("\"'")))
        else:
            raise ValueError(f"{module.__name__}.rule_outputs({args}): no example for {given[i]}")
    return values


def volume_sections() -> str:
    """One table per module whose `rule_outputs` names a volume's files (registration,
    segmentation, brain age), for earlybrain's reconstruction; then how the rules for the
    other volumes (given reconstructions, infants' images) name the same files."""
    constants, notes = _constants(), _constant_notes()
    docs = {w.rule: w.doc for w in rule_outputs_written()}
    out = []
    for name, calls in module_calls().items():
        module = importlib.import_module(name)
        meanings = key_comments(_paths_function(module))
        # the call with the fewest arguments names earlybrain's reconstruction (rec-svr)
        first, *others = sorted(calls, key=lambda a: (a.count(","), a))
        values = _call_values(module, first, constants)
        out += [f"### `{calls[first][0]}` and its variants", "", cell(docs[calls[first][0]]), ""]
        out += ["| key | path | what | written by |", "|---|---|---|---|"]
        for key, path in module.rule_outputs(*values).items():
            what = _sentence(meanings.get(key, ""))
            out.append(
                f"| `{key}` | {cell(path, code=True)} | {cell(what)} | {_rules(calls[first])} |"
            )
        out.append("")
        for args in others:
            other = _call_values(module, args, constants)
            entity = next((a.strip() for a in args.split(",") if a.strip() in notes), "")
            swaps = [f"`{b}` for `{a}`" for a, b in zip(values, other, strict=True) if a != b]
            example = next(iter(module.rule_outputs(*other).values()))
            what = notes.get(entity) or f"the volume `{constants.get(entity, args)}`"
            many = len(calls[args]) > 1
            rules = f"rule{'s' if many else ''} {_rules(calls[args])} name{'' if many else 's'}"
            out.append(
                f"- For {cell(what)}, {rules} the same files with "
                f"{' and '.join(swaps)}: e.g. {cell(example, code=True)}."
            )
        out.append("")
    return "\n".join(out)


def _config_key(expr: str) -> str:
    """`config["masking"]["train"]` -> masking.train ("" for another expression)."""
    keys = re.fullmatch(r'config((?:\["\w+"\])+)', expr.strip())
    return ".".join(re.findall(r'"(\w+)"', keys[1])) if keys else ""


def evaluate_output(expr: str, names: dict[str, str]) -> tuple[str, list[str]]:
    """The path a rule's output expression gives with the shipped configuration, and the
    configuration keys that move it: `f"{MASKING_TRAIN_OUT}/card.json"`, with the rule
    files' `MASKING_TRAIN_OUT = MASKING_TRAIN.get("out_dir") or f"{OUTDIR}/models/masking"`,
    gives `<output_dir>/models/masking/card.json`, moved by masking.train.out_dir."""
    expr = expr.strip()
    if m := re.fullmatch(r"directory\((?P<inner>.*)\)", expr):
        path, keys = evaluate_output(m["inner"], names)
        return f"{path}/", keys  # a folder
    if m := re.fullmatch(r'(?P<var>\w+)\.get\("(?P<key>\w+)"\) or (?P<rest>.+)', expr):
        path, keys = evaluate_output(m["rest"], names)
        return path, [f"{_config_key(names.get(m['var'], ''))}.{m['key']}".lstrip("."), *keys]
    if m := re.fullmatch(r'f?"(?P<text>[^"]*)"', expr):
        keys: list[str] = []

        def named(w: re.Match[str]) -> str:
            if w[1] not in names:
                return f"<{w[1]}>"
            path, more = evaluate_output(names[w[1]], names)
            keys.extend(more)
            return path

        return re.sub(r"\{(\w+)\}", named, m["text"]), keys
    if key := _config_key(expr):
        return f"<{key}>", []
    if expr in names:
        return evaluate_output(names[expr], names)
    raise ValueError(f"the outputs reference cannot read the output {expr!r}")


def other_outputs() -> list[tuple[str, str, str, list[str]]]:
    """(rule, output name, path, configuration keys that move it) of every output that
    neither Derivatives nor a module's rule_outputs names (and is no sidecar of one)."""
    names = {
        m["name"]: m["expr"] for smk in rule_files() for m in _ASSIGN.finditer(smk.read_text())
    }
    found = []
    for written in rule_outputs_written():
        for name, expr in written.entries:
            if not (_CALL.search(expr) or _MODULE_CALL.match(expr)):
                found.append((written.rule, name, *evaluate_output(expr, names)))
    return found


def group_sections() -> str:
    """The files of the whole run (cohort table and page, dataset description), then the
    outputs of the rules a run makes only when asked (training, atlas, norms)."""
    from earlybrain.workflow_steps import STEPS

    docs = {w.rule: w.doc for w in rule_outputs_written()}
    helps = {s.rule: {a.name: a.help for a in s.args} for s in STEPS.values()}
    outputs = other_outputs()
    count = {r: sum(o[0] == r for o in outputs) for r, *_ in outputs}
    run = [o for o in outputs if o[2].startswith(f"{EXAMPLE.root}/")]
    out = ["### The whole run", "", "| path | what | written by |", "|---|---|---|"]
    for rule, name, path, _ in run:
        what = docs[rule]
        if count[rule] > 1 and helps.get(rule, {}).get(name):  # which of the rule's files
            what = f"{_sentence(helps[rule][name])[:-1]}: {what[:1].lower()}{what[1:]}"
        out.append(f"| {cell(path, code=True)} | {cell(what)} | `{rule}` |")
    out += ["", "### Outputs of the maintenance rules", ""]
    out += ["Run only when named (`snakemake train_masking`, ...), never by `all`.", ""]
    out += ["| rule | writes | moved by | what |", "|---|---|---|---|"]
    for rule in dict.fromkeys(o[0] for o in outputs if o not in run):
        mine = [o for o in outputs if o[0] == rule]
        paths = ", ".join(cell(p, code=True) for _, _, p, _ in mine)
        keys = ", ".join(f"`{k}`" for k in dict.fromkeys(k for o in mine for k in o[3]))
        out.append(f"| `{rule}` | {paths} | {keys} | {cell(docs[rule])} |")
    return "\n".join(out)


def outputs_section() -> str:
    """The tables of every file: Derivatives', then the volumes' (registration,
    segmentation, brain age), then the cohort's and the maintenance rules'."""
    parts = [derivatives_section(), volume_sections(), group_sections()]
    return "\n\n".join(part.strip() for part in parts)


def outputs_page(text: str) -> str:
    """The outputs reference with its tables written from Derivatives and the rules."""
    return replace_between(text, "outputs", outputs_section())
