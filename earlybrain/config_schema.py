"""The workflow configuration: its schema and every default, each declared once.

`workflow/schemas/config.schema.yaml` gives each key its type, range and meaning, and
the default of a key that only the workflow reads. A key whose value a library
dataclass takes (the validation limits, the N4 parameters, the stack-quality rules, the
reconstruction's settings, the networks' training recipes) or a library constant gives
(the shipped atlases, the masking's smallest brain, the segmentation's smallest kept
component) has no default in the YAML: it gets the library's default here, so the
science and the workflow cannot disagree. `config/config.yaml` holds only what a lab
sets; `complete_config` fills in the rest, for Snakemake (the
Snakefile) and for `earlybrain run` (which writes the resolved configuration).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from typing import Any

import yaml

from earlybrain import REPO_ROOT
from earlybrain.device import DEVICES, FALLBACKS
from earlybrain.training import CONFIG_KEY

SCHEMA = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"


class ConfigError(ValueError):
    """A configuration that does not match workflow/schemas/config.schema.yaml."""


def dataclass_sections() -> dict[tuple[str, ...], type]:
    """Config sections (as key paths) whose keys are fields of a library dataclass (a
    field's `config_key` metadata names a key that differs from the field)."""
    from earlybrain.io.validate import ValidationSettings
    from earlybrain.preprocess.n4 import ForegroundParams, N4Params, NormaliseParams
    from earlybrain.preprocess.stack_quality import QualityRules
    from earlybrain.recon.config import ReconConfig
    from earlybrain.training import BrainAgeRecipe, MaskingRecipe, SegmentationRecipe

    return {
        ("validation",): ValidationSettings,
        ("preprocess", "foreground"): ForegroundParams,
        ("preprocess", "n4"): N4Params,
        ("preprocess", "normalise"): NormaliseParams,
        ("stack_quality",): QualityRules,
        ("recon",): ReconConfig,
        ("masking", "train"): MaskingRecipe,
        ("segmentation", "train"): SegmentationRecipe,
        ("brainage", "train"): BrainAgeRecipe,
    }


def library_constants() -> dict[tuple[str, ...], Any]:
    """Config keys whose default is a library constant (the shipped atlases, a library
    function's keyword default)."""
    from earlybrain.atlas.workflow import DEFAULT_INFANT_MANIFEST, DEFAULT_MANIFEST
    from earlybrain.preprocess.masking.localise import MIN_BRAIN_ML
    from earlybrain.segment.labelmaps import DEFAULT_SCHEME
    from earlybrain.segment.postprocess import KEEP_FRACTION

    return {
        ("atlas", "manifest"): DEFAULT_MANIFEST,
        ("atlas", "infant_manifest"): DEFAULT_INFANT_MANIFEST,
        ("masking", "min_volume_ml"): MIN_BRAIN_ML,
        ("segmentation", "keep_fraction"): KEEP_FRACTION,
        ("segmentation", "train", "label_scheme"): DEFAULT_SCHEME,
    }


def field_default(field: dataclasses.Field) -> Any:
    """A dataclass field's default as a config value (a tuple as a list)."""
    value = field.default
    if value is dataclasses.MISSING:
        value = field.default_factory()  # type: ignore[misc]
    return list(value) if isinstance(value, tuple) else value


def _node(schema: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    for key in path:
        schema = schema["properties"][key]
    return schema


def library_defaults(schema: dict[str, Any]) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(key path, default) of every schema key whose default the library declares."""
    for path, cls in dataclass_sections().items():
        keys = _node(schema, path).get("properties", {})
        for field in dataclasses.fields(cls):
            key = field.metadata.get(CONFIG_KEY, field.name)
            if key in keys:
                yield (*path, key), field_default(field)
    yield from library_constants().items()


def load_schema() -> dict[str, Any]:
    """The schema with every default in place (the library's filled in) and the choices
    that the library declares (devices, label schemes)."""
    from earlybrain.segment.labelmaps import SCHEMES

    schema = yaml.safe_load(SCHEMA.read_text())
    for path, default in library_defaults(schema):
        _node(schema, path)["default"] = default
    schema["properties"]["device"]["enum"] = list(DEVICES)
    schema["properties"]["device_fallback"]["enum"] = list(FALLBACKS)
    _node(schema, ("segmentation", "train", "label_scheme"))["enum"] = list(SCHEMES)
    return schema


def _validator(schema: dict[str, Any]) -> Any:
    """A JSON-schema validator that also fills in the defaults, as Snakemake's does."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    check_properties = base.VALIDATORS["properties"]

    def properties(validator: Any, props: dict, instance: Any, sub: dict) -> Iterator:
        if isinstance(instance, dict):
            for key, prop in props.items():
                if "default" in prop:
                    instance.setdefault(key, copy.deepcopy(prop["default"]))
        yield from check_properties(validator, props, instance, sub)

    return jsonschema.validators.extend(base, {"properties": properties})(schema)


def complete_config(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Fill in the defaults of `config` (in place) and check it; a ConfigError names each
    key and its problem."""
    errors = sorted(
        _validator(load_schema()).iter_errors(config), key=lambda e: list(e.absolute_path)
    )
    if errors:
        lines = [
            f"  {'.'.join(str(p) for p in e.absolute_path) or '(top level)'}: {e.message}"
            for e in errors
        ]
        raise ConfigError(f"{source}: invalid configuration\n" + "\n".join(lines))
    return config


def shipped_config() -> dict[str, Any]:
    """config/config.yaml with every default filled in: what a run gets by default."""
    return complete_config(yaml.safe_load(DEFAULT_CONFIG.read_text()), str(DEFAULT_CONFIG))
