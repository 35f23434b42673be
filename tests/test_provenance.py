"""Outputs name their sources by BIDS URIs, never by the folders the data lie in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from earlybrain import REPO_ROOT
from earlybrain.io.provenance import (
    DATASET_ENV,
    dataset_links,
    declare_datasets,
    portable,
    resolve_reference,
    source_reference,
)
from earlybrain.io.sidecar import write_sidecar
from earlybrain.io.validate import ValidationSettings, check_image
from earlybrain.stepkit import fail, print_traceback


@pytest.fixture
def datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A raw dataset named like a clinical folder, derivatives inside it, masks elsewhere."""
    for var in DATASET_ENV.values():  # so that the declaration is undone after the test
        monkeypatch.setenv(var, "")
    bids = tmp_path / "DOE^JANE_2026-12-01" / "bids"
    deriv = bids / "derivatives" / "earlybrain"
    masks = tmp_path / "lab-masks"
    for d in (bids / "sub-01" / "anat", deriv / "sub-01" / "anat", masks / "sub-01" / "anat"):
        d.mkdir(parents=True)
    declare_datasets(deriv, bids, masks)
    return {"bids": bids, "deriv": deriv, "masks": masks}


def test_sources_are_bids_uris_of_the_declared_datasets(datasets: dict[str, Path]) -> None:
    raw = datasets["bids"] / "sub-01" / "anat" / "sub-01_run-1_T2w.nii.gz"
    n4 = datasets["deriv"] / "sub-01" / "anat" / "sub-01_run-1_desc-n4_T2w.nii.gz"
    mask = datasets["masks"] / "sub-01" / "anat" / "sub-01_run-1_mask.nii.gz"
    assert source_reference(raw) == "bids:raw:sub-01/anat/sub-01_run-1_T2w.nii.gz"
    # the derivatives lie inside the raw dataset: the deepest dataset names them
    assert source_reference(n4) == "bids::sub-01/anat/sub-01_run-1_desc-n4_T2w.nii.gz"
    assert source_reference(mask) == "bids:masks:sub-01/anat/sub-01_run-1_mask.nii.gz"
    weights = REPO_ROOT / "models" / "masking" / "unet2d_weights.pt"
    assert source_reference(weights) == "models/masking/unet2d_weights.pt"
    side = json.loads(write_sidecar(n4, step="n4", sources=[raw, None, mask]).read_text())
    assert side["Sources"] == [source_reference(raw), source_reference(mask)]
    assert "DOE^JANE" not in json.dumps(side)


def test_references_resolve_through_the_declaration_or_the_dataset_links(
    datasets: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = datasets["bids"] / "sub-01" / "anat" / "sub-01_run-1_T2w.nii.gz"
    mask = datasets["masks"] / "sub-01" / "anat" / "sub-01_run-1_mask.nii.gz"
    links = dataset_links(datasets["deriv"], datasets["bids"])
    assert links == {"masks": "../../../../lab-masks", "raw": "../.."}
    assert resolve_reference(source_reference(raw)) == raw
    refs = [source_reference(raw), source_reference(mask)]
    (datasets["deriv"] / "dataset_description.json").write_text(json.dumps({"DatasetLinks": links}))
    for var in DATASET_ENV.values():  # a reader of finished outputs, in another process
        monkeypatch.setenv(var, "")
    assert [resolve_reference(r, datasets["deriv"]) for r in refs] == [raw, mask]
    with pytest.raises(KeyError, match="not declared"):
        resolve_reference(refs[0])


def test_a_step_run_alone_records_paths_as_given(tmp_path: Path, monkeypatch) -> None:
    for var in DATASET_ENV.values():
        monkeypatch.setenv(var, "")
    path = tmp_path / "x.nii.gz"
    assert source_reference(path) == str(path)
    assert resolve_reference(str(path)) == path


def test_a_bad_input_is_named_inside_its_dataset(datasets: dict[str, Path]) -> None:
    raw = datasets["bids"] / "sub-01" / "anat" / "sub-01_run-1_T2w.nii.gz"
    raw.write_bytes(b"\x1f\x8b not really gzip")
    info = check_image(raw, "fetal", ValidationSettings())
    assert not info["ok"] and info["path"] == "bids:raw:sub-01/anat/sub-01_run-1_T2w.nii.gz"
    assert all(p.startswith(info["path"]) for p in info["problems"]), info["problems"]
    assert "DOE^JANE" not in json.dumps(info)


def test_messages_quote_paths_inside_their_datasets(datasets: dict[str, Path]) -> None:
    table = datasets["bids"] / "participants.tsv"
    report = {"age_source": str(table), "errors": [f"{table}: no age column"], "n": 3}
    assert portable(report) == {
        "age_source": "bids:raw:participants.tsv",
        "errors": ["bids:raw:participants.tsv: no age column"],
        "n": 3,
    }


def test_a_failing_step_names_its_file_inside_the_dataset(
    datasets: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The one error line a step ends with (a salvaged report shows it) holds no folder
    above the datasets."""
    stack = datasets["bids"] / "sub-01" / "anat" / "sub-01_run-1_T2w.nii.gz"
    assert fail(f"N4 failed on {stack}: empty image") == 1
    line = capsys.readouterr().err.strip()
    assert line == "error: N4 failed on bids:raw:sub-01/anat/sub-01_run-1_T2w.nii.gz: empty image"


def test_a_crashing_step_prints_its_traceback_inside_the_dataset(
    datasets: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """What `earlybrain step` prints for an unexpected crash (its excepthook)."""
    stack = datasets["bids"] / "sub-01" / "anat" / "sub-01_run-1_T2w.nii.gz"
    try:
        raise ValueError(f"cannot read {stack}")
    except ValueError as exc:
        print_traceback(exc)
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "DOE^JANE" not in err
    assert err.endswith("ValueError: cannot read bids:raw:sub-01/anat/sub-01_run-1_T2w.nii.gz\n")
