"""Every configuration default is declared once, and the reference shows them all."""

from __future__ import annotations

import dataclasses
import inspect
import re

import pytest
import yaml

from earlybrain import docs_reference
from earlybrain.config_schema import (
    DEFAULT_CONFIG,
    SCHEMA,
    ConfigError,
    complete_config,
    library_defaults,
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
    keys = list(library_defaults(raw_schema))
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
    assert docs_reference.main(["--check"]) == 0, "run: python -m earlybrain.docs_reference"
    text = docs_reference.CONFIGURATION.read_text().partition("<!-- every-key:start -->")[0]
    rows = set(re.findall(r"^\| `([\w.*]+)` \|", text, re.M))
    for key in _leaves(shipped_config()):
        parents = [key.rsplit(".", n)[0] + ".*" for n in range(1, key.count(".") + 1)]
        assert {key, f"{key}.*", *parents} & rows, key


def test_the_workflow_trains_and_infers_with_the_libraries_defaults() -> None:
    """`snakemake train_*` gets the trainers' own defaults (their command lines read the
    same TrainConfig), and the masking and segmentation steps the functions' defaults."""
    from earlybrain.brainage.train import TrainConfig as BrainAgeTrain
    from earlybrain.preprocess.masking.inference import mask_stack_file
    from earlybrain.preprocess.train_masking import TrainConfig as MaskingTrain
    from earlybrain.segment.pipeline import segment_to_files
    from earlybrain.segment.train import train_segmentation
    from earlybrain.segment.train_data import TrainConfig as SegmentationTrain
    from earlybrain.training import CONFIG_KEY

    config = complete_config({"bids_dir": "b", "output_dir": "o"})
    for section, cls in (
        ("masking", MaskingTrain),
        ("segmentation", SegmentationTrain),
        ("brainage", BrainAgeTrain),
    ):
        trained = config[section]["train"]
        recipe = {f.metadata.get(CONFIG_KEY, f.name): f.name for f in dataclasses.fields(cls)}
        shared = set(trained) & set(recipe)
        assert {"seed", "subjects", "val_subjects", "batch_size"} <= shared, section
        for key in shared:
            assert trained[key] == getattr(cls(), recipe[key]), f"{section}.train.{key}"

    def default(fn: object, name: str) -> object:
        return inspect.signature(fn).parameters[name].default  # type: ignore[arg-type]

    assert config["masking"]["min_volume_ml"] == default(mask_stack_file, "min_volume_ml")
    assert config["segmentation"]["keep_fraction"] == default(segment_to_files, "keep_fraction")
    scheme = config["segmentation"]["train"]["label_scheme"]
    assert scheme == default(train_segmentation, "label_scheme")
    with pytest.raises(ConfigError, match="label_scheme: 'bogus' is not one of"):
        complete_config(
            {
                "bids_dir": "b",
                "output_dir": "o",
                "segmentation": {"train": {"label_scheme": "bogus"}},
            }
        )
