"""The configuration reference's table of every key: each schema leaf, and each field of
a library dataclass that a section takes, listed in the schema or not, with its type,
the default a run gets and its meaning (the schema's description, else the field's
comment)."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from typing import Any

from earlybrain.config_schema import dataclass_sections, field_default, load_schema, shipped_config
from earlybrain.docs_reference.source import cell, field_comments, replace_between
from earlybrain.training import CONFIG_KEY

# --- the hand-written table: its default column is written from the shipped configuration

EVERY_KEY = "<!-- every-key:start -->"  # the hand-written table ends above it
_ROW = re.compile(r"^\| `(?P<key>[\w.*]+)` \|(?P<default>[^|]*)\| (?P<meaning>.*)$", re.M)


def _lookup(config: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        config = config[part]
    return config


def _default_cell(key: str, config: dict[str, Any], listed: frozenset[str]) -> str:
    """A reference row's default: the key's value in the shipped configuration; for a
    row `section.*`, the section's keys that have no row of their own."""
    if not key.endswith(".*"):
        return f"`{json.dumps(_lookup(config, key))}`"
    section = key[:-2]
    value = _lookup(config, section)
    rest = {k: v for k, v in value.items() if f"{section}.{k}" not in listed}
    return f"`{json.dumps(rest)}`" if rest or not value else ""


# --- the table of every key


def _schema_type(node: dict[str, Any]) -> str:
    kinds = node.get("type", "")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    words = [
        f"array of {node['items']['type']}"
        if k == "array" and "type" in node.get("items", {})
        else k
        for k in kinds
    ]
    text = " or ".join(w for w in words if w)
    if "enum" in node:
        text += f": one of {', '.join(str(v) for v in node['enum'])}"
    return text


def _annotation(field: dataclasses.Field) -> str:
    kind = field.type
    return kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))


def _shipped(config: dict[str, Any], key: str, fallback: Any) -> Any:
    """The key's value in the shipped configuration, or `fallback` (a dataclass field the
    configuration leaves to the library)."""
    try:
        return _lookup(config, key)
    except (KeyError, TypeError):
        return fallback


Row = tuple[str, str, Any, str]  # key, type, default, meaning


def _field_rows(cls: type, path: tuple[str, ...], listed: set[str]) -> Iterator[Row]:
    """The fields of `cls` that a section takes although its schema does not list them;
    a field holding a dataclass is a section of its own (register.init)."""
    comments = field_comments(cls)
    for field in dataclasses.fields(cls):
        key = field.metadata.get(CONFIG_KEY, field.name)
        default = field_default(field)
        if key in listed:
            continue
        if dataclasses.is_dataclass(default):
            yield from _field_rows(type(default), (*path, key), set())
        else:
            yield ".".join((*path, key)), _annotation(field), default, comments.get(field.name, "")


def _config_rows(
    node: dict[str, Any],
    path: tuple[str, ...],
    sections: dict[tuple[str, ...], type],
    field: dataclasses.Field | None = None,
    comment: str = "",
) -> Iterator[Row]:
    """The keys at or below `node`, in the schema's order: a key the schema lists takes
    its type and description from it, else from its dataclass field (`field`, whose
    comment is `comment`); a dataclass section's unlisted fields follow its keys, where
    the section accepts them."""
    props = node.get("properties") or {}
    cls = sections.get(path)
    if path and not props and cls is None:
        kind = _schema_type(node) or (_annotation(field) if field else "")
        default = node.get("default", field_default(field) if field else None)
        yield ".".join(path), kind, default, node.get("description") or comment
        return
    fields = {f.metadata.get(CONFIG_KEY, f.name): f for f in dataclasses.fields(cls)} if cls else {}
    comments = field_comments(cls) if cls else {}
    for key, sub in props.items():
        f = fields.get(key)
        yield from _config_rows(
            sub, (*path, key), sections, f, comments.get(f.name, "") if f else ""
        )
    if cls is not None and node.get("additionalProperties", True) is not False:
        yield from _field_rows(cls, path, set(props))


def config_sections() -> dict[tuple[str, ...], type]:
    """Every section whose keys a dataclass takes: those whose defaults the schema gets
    from the library, and `register`, which the schema leaves open."""
    from earlybrain.register.register import RegistrationParams

    return {**dataclass_sections(), ("register",): RegistrationParams}


def _see_section(key: str, listed: frozenset[str]) -> str:
    """For a key without a meaning of its own: its hand-written row, or that of its
    section (`masking.train.*`), which explains it, if the page has one."""
    if key in listed:
        return "see the table above"
    parts = key.split(".")
    for n in range(len(parts) - 1, 0, -1):
        row = ".".join(parts[:n]) + ".*"
        if row in listed:
            return f"see `{row}` above"
    return ""


def configuration_section(config: dict[str, Any], listed: frozenset[str]) -> str:
    """The table of every key: type, default (as `config`, the shipped configuration,
    has it), meaning; `listed`: the keys of the hand-written table (`section.*` explains
    a section's keys together)."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, kind, default, meaning in _config_rows(load_schema(), (), config_sections()):
        value = json.dumps(_shipped(config, key, default), default=str)
        meaning = meaning or _see_section(key, listed)
        lines.append(f"| `{key}` | {cell(kind)} | {cell(value, code=True)} | {cell(meaning)} |")
    return "\n".join(lines)


def configuration_page(text: str) -> str:
    """The configuration reference with the hand-written table's default column and the
    table of every key written from the code."""
    config = shipped_config()
    head, marker, rest = text.partition(EVERY_KEY)
    listed = frozenset(m["key"] for m in _ROW.finditer(head))
    head = _ROW.sub(
        lambda m: f"| `{m['key']}` | {_default_cell(m['key'], config, listed)} | {m['meaning']}",
        head,
    )
    return replace_between(head + marker + rest, "every-key", configuration_section(config, listed))
