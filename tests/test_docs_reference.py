"""The generated reference pages are up to date and name every key and every file."""

from __future__ import annotations

import dataclasses
import inspect
import shutil
from pathlib import Path

import pytest

from earlybrain import docs_reference
from earlybrain.config_schema import load_schema
from earlybrain.io.paths import Derivatives
from earlybrain.recon.config import ReconConfig
from earlybrain.register.register import RegistrationParams


def _schema_leaves(node: dict, prefix: str = "") -> set[str]:
    """Every key of the schema that is not a section with keys of its own."""
    out: set[str] = set()
    for key, sub in node.get("properties", {}).items():
        props = sub.get("properties")
        out |= _schema_leaves(sub, f"{prefix}{key}.") if props else {f"{prefix}{key}"}
    return out


def _fields(cls: type, prefix: str) -> set[str]:
    """Every field of a settings dataclass as a config key; one holding a dataclass
    (register.init) as its own fields."""
    out: set[str] = set()
    for field in dataclasses.fields(cls):
        nested = field.default_factory if field.default_factory is not dataclasses.MISSING else None
        if nested is not None and dataclasses.is_dataclass(nested):
            out |= _fields(nested, f"{prefix}{field.name}.")  # type: ignore[arg-type]
        else:
            out.add(f"{prefix}{field.name}")
    return out


def test_the_committed_pages_are_up_to_date() -> None:
    assert docs_reference.main(["--check"]) == 0, "run: python -m earlybrain.docs_reference"


def test_every_key_is_listed() -> None:
    text = docs_reference.CONFIGURATION.read_text()
    every = text[text.index("<!-- every-key:start -->") :]
    keys = _schema_leaves(load_schema()) - {"register"}  # a section the dataclass fills
    keys |= _fields(ReconConfig, "recon.") | _fields(RegistrationParams, "register.")
    assert {"recon.max_step_mm", "register.init.step_mm", "atlas.build"} <= keys
    missing = sorted(k for k in keys if f"| `{k}` |" not in every)
    assert not missing


def test_a_meaning_comes_from_the_dataclass_comment() -> None:
    source = inspect.getsource(ReconConfig)
    comment = source.split("max_step_mm: float = 8.0  # ")[1].splitlines()[0]
    text = docs_reference.CONFIGURATION.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `recon.max_step_mm` |"))
    assert row.endswith(f"| {comment} |")
    assert "| `recon.resolution_mm` | number | `0.8` | isotropic output voxel size |" in text


def test_every_path_of_a_session_is_listed() -> None:
    text = docs_reference.OUTPUTS.read_text()
    methods = [
        name
        for name, fn in inspect.getmembers(Derivatives, inspect.isfunction)
        if not name.startswith("_") and inspect.signature(fn).return_annotation in ("str", str)
    ]
    assert {"validation", "n4", "brain_mask", "brainage_chart"} <= set(methods)
    for name in methods:
        assert f"| `{name}` |" in text, name
    assert "`<output_dir>/earlybrain/sub-01/anat/sub-01_mod-T2w_desc-brain_mask.nii.gz`" in text
    assert "| `recon` |" in text and "| `infant_prep` |" in text  # the rules that write them


def _generated_rows() -> list[dict[str, str]]:
    """Every row of the generated tables, as {column: cell}."""
    text = docs_reference.OUTPUTS.read_text()
    body = text[text.index("<!-- outputs:start -->") : text.index("<!-- outputs:end -->")]
    rows, header = [], None
    for line in body.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if header is None:
            header = cells
        elif not set(line) <= set("|-"):
            rows.append(dict(zip(header, cells, strict=True)))
    return rows


def test_every_file_of_a_volume_is_listed() -> None:
    """Registration, segmentation and brain age of a fetal reconstruction: every key with
    its path; the given reconstructions' and infants' files by an example each."""
    from earlybrain.atlas import workflow as atlas_wf
    from earlybrain.brainage import workflow as brainage_wf
    from earlybrain.segment import workflow as segment_wf

    text = docs_reference.OUTPUTS.read_text()
    d, space = docs_reference.outputs.EXAMPLE, docs_reference.outputs.atlas_spaces()["ATLAS_SPACE"]
    infant = docs_reference.outputs.atlas_spaces()["INFANT_SPACE"]
    assert (space, infant) == ("earlybrainFetal", "earlybrainInfant")
    fetal = {
        "register_atlas": atlas_wf.rule_outputs(d, space),
        "segment": segment_wf.rule_outputs(d, space),
        "brainage": brainage_wf.rule_outputs(d),
    }
    assert {"volume", "affine", "inverse_warp", "dseg", "volumes", "brainage", "zscores"} <= {
        key for outputs in fetal.values() for key in outputs
    }
    for rule, outputs in fetal.items():
        for key, path in outputs.items():
            assert f"| `{key}` | `{path}` |" in text and f"| `{rule}` |" in text, (rule, key)
    variants = {  # one example path per variant
        "register_given": atlas_wf.rule_outputs(d, space, "rec-svrtk")["volume"],
        "register_infant": atlas_wf.rule_outputs(d, infant, "mod-T2w")["volume"],
        "segment_given": segment_wf.rule_outputs(d, space, "rec-svrtk")["atlas_dseg"],
        "segment_infant": segment_wf.rule_outputs(d, infant, "mod-T2w")["atlas_dseg"],
        "brainage_given": brainage_wf.rule_outputs(d, "rec-svrtk")["brainage"],
        "brainage_infant": brainage_wf.rule_outputs(d, "mod-T2w")["brainage"],
    }
    for rule, path in variants.items():
        line = next(ln for ln in text.splitlines() if f"`{rule}`" in ln)
        assert line.startswith("- For ") and f"`{path}`" in line, rule


def test_the_files_of_the_run_and_of_the_maintenance_rules_are_listed() -> None:
    text = docs_reference.OUTPUTS.read_text()
    for path, rule in (
        ("group/cohort.tsv", "cohort"),
        ("group/cohort.html", "cohort"),
        ("dataset_description.json", "dataset_description"),
    ):
        assert f"| `<output_dir>/earlybrain/{path}` |" in text and f"| `{rule}` |" in text
    for rule, path, key in (
        ("train_masking", "<output_dir>/models/masking/unet2d_weights.pt", "masking.train.out_dir"),
        ("fit_norms", "<output_dir>/models/brainage/norms.json", "brainage.fit_norms.out"),
        ("build_atlas", "<output_dir>/atlas/", "atlas.build.out"),
    ):
        row = next(ln for ln in text.splitlines() if ln.startswith(f"| `{rule}` |"))
        assert f"`{path}`" in row and f"`{key}`" in row, rule


def test_every_file_says_what_it_holds() -> None:
    """Each file's description is a sentence of its own, not its name in words: every
    Derivatives method (on its first row), every key of a volume's files, every other
    output."""
    rows = _generated_rows()
    named = [r for r in rows if "method" in r or "key" in r]
    assert len(named) > 30 and all(r["what"] for r in rows if "key" in r or "rule" in r)
    first = {r["method"]: r["what"] for r in reversed(rows) if "method" in r}
    assert all(first.values()), [m for m, what in first.items() if not what]
    for row in rows:
        what = row["what"]
        name = row.get("method") or row.get("key") or row.get("rule") or ""
        words = name.strip("`").replace("_", " ").lower()
        if what:
            assert len(what.split()) >= 3, (name, what)
            assert what.rstrip(".").lower() != words, (name, what)


STALE = {  # an edit of each page's generated parts: an old default, a renamed file
    "CONFIGURATION": [
        ("| `recon.resolution_mm` | `0.8` |", "| `recon.resolution_mm` | `1.0` |"),
        ("| `recon.max_step_mm` | float | `8.0` |", "| `recon.max_step_mm` | float | `9.0` |"),
    ],
    "OUTPUTS": [("sub-01_rec-svr_T2w.nii.gz", "sub-01_rec-SVR_T2w.nii.gz")],
}


@pytest.mark.parametrize("page", sorted(STALE))
def test_check_fails_on_a_stale_page(
    page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    copies = {}
    for name in STALE:
        copies[name] = tmp_path / f"{name}.md"
        shutil.copy(getattr(docs_reference, name), copies[name])
        monkeypatch.setattr(docs_reference, name, copies[name])
    stale = copies[page].read_text()
    for old, new in STALE[page]:
        assert old in stale
        stale = stale.replace(old, new)
    copies[page].write_text(stale)
    assert docs_reference.main(["--check"]) == 1
    assert str(copies[page]) in capsys.readouterr().out
    assert copies[page].read_text() == stale  # --check writes nothing
    assert docs_reference.main([]) == 0
    assert docs_reference.main(["--check"]) == 0
