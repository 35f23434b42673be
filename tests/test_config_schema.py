"""Every configuration default is declared once, and the reference shows them all."""

from __future__ import annotations

import re

import pytest
import yaml

from earlybrain.config_schema import (
    DEFAULT_CONFIG,
    REFERENCE,
    SCHEMA,
    ConfigError,
    complete_config,
    dataclass_keys,
    main,
    shipped_config,
)
from earlybrain.io.validate import ValidationSettings
from earlybrain.recon.config import ReconConfig


def _leaves(config: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        out += _leaves(value, f"{name}.") if isinstance(value, dict) and value else [name]
    return out


def test_a_default_is_written_in_one_place() -> None:
    """The shipped config.yaml sets only the keys without a default; the schema's YAML
    leaves the dataclasses' keys to them."""
    raw_schema = yaml.safe_load(SCHEMA.read_text())
    assert set(yaml.safe_load(DEFAULT_CONFIG.read_text())) == set(raw_schema["required"])
    keys = list(dataclass_keys(raw_schema))
    assert len(keys) >= 20
    for path, _ in keys:
        node = raw_schema
        for part in path:
            node = node["properties"][part]
        assert "default" not in node, ".".join(path)


def test_defaults_come_from_the_dataclasses_and_the_schema() -> None:
    config = complete_config({"bids_dir": "b", "output_dir": "o"})
    assert config["validation"]["min_slices"] == ValidationSettings().min_slices
    assert config["recon"]["resolution_mm"] == ReconConfig().resolution_mm
    assert config["preprocess"]["n4"]["iterations"] == [100, 100]
    assert config["masking"]["train"]["seed"] == 0  # nested defaults of the schema
    given = complete_config({"bids_dir": "b", "output_dir": "o", "recon": {"seed": 7}})
    assert given["recon"]["seed"] == 7 and given["recon"]["outer_iterations"] == 4


def test_a_bad_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"validation: Additional properties .*'min_slice'"):
        complete_config({"bids_dir": "b", "output_dir": "o", "validation": {"min_slice": 2}})
    with pytest.raises(ConfigError, match=r"recon.resolution_mm: 0.1 is less than"):
        complete_config({"bids_dir": "b", "output_dir": "o", "recon": {"resolution_mm": 0.1}})


def test_the_reference_lists_every_key_with_its_current_default() -> None:
    assert main(["--check"]) == 0, "run: python -m earlybrain.config_schema"
    rows = set(re.findall(r"^\| `([\w.*]+)` \|", REFERENCE.read_text(), re.M))
    for key in _leaves(shipped_config()):
        parents = [key.rsplit(".", n)[0] + ".*" for n in range(1, key.count(".") + 1)]
        assert {key, f"{key}.*", *parents} & rows, key
