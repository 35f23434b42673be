"""BIDS discovery: session kinds, age columns and aliases, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from synth_fixtures import make_bids, make_stack

from earlybrain.io.bids import (
    BIDSError,
    DuplicateSubjectError,
    MissingAgeError,
    NoImagesError,
    NonBIDSNameError,
    discover_sessions,
    parse_image_name,
)


def test_fetal_and_infant_sessions(tmp_path: Path) -> None:
    bids = make_bids(tmp_path / "bids", fetal={"f01": 25.5}, infant={"i01": 52.0}, n_stacks=3)
    recs = {r.prefix: r for r in discover_sessions(bids)}
    assert set(recs) == {"sub-f01", "sub-i01"}
    f, i = recs["sub-f01"], recs["sub-i01"]
    assert f.kind == "fetal" and f.age_weeks == 25.5 and f.age_column == "ga_weeks"
    assert [im.run for im in f.images] == ["1", "2", "3"]
    assert [im.stem for im in f.images] == ["sub-f01_run-1", "sub-f01_run-2", "sub-f01_run-3"]
    assert i.kind == "infant" and i.age_weeks == 52.0 and i.age_column == "pma_weeks"
    assert sorted(im.suffix for im in i.images) == ["T1w", "T2w"]
    assert i.age_measure == "PMA" and f.age_measure == "GA"
    assert f.ok and i.ok


@pytest.mark.parametrize("column", ["GA", "gestational_age", "ga", "age_weeks", "scan_age"])
def test_fetal_age_aliases(tmp_path: Path, column: str) -> None:
    bids = make_bids(tmp_path / "bids", fetal={"f01": 31.0}, ga_column=column, pma_column="x")
    (rec,) = discover_sessions(bids)
    assert rec.age_weeks == 31.0
    assert rec.age_column == column


def test_infant_age_in_months_is_converted_to_pma(tmp_path: Path) -> None:
    bids = make_bids(tmp_path / "bids", fetal={}, infant={"i01": 6.0}, pma_column="age_months")
    (rec,) = discover_sessions(bids)
    assert rec.age_weeks == pytest.approx(40 + 6 * 4.345)
    assert rec.age_column == "age_months"
    assert any("term birth" in n for n in rec.notes)


def test_sessions_tsv_takes_precedence(tmp_path: Path) -> None:
    bids = tmp_path / "bids"
    for ses in ("1", "2"):
        make_stack(bids / "sub-f01" / f"ses-{ses}" / "anat" / f"sub-f01_ses-{ses}_run-1_T2w.nii.gz")
    (bids / "participants.tsv").write_text("participant_id\tga_weeks\nsub-f01\t20\n")
    (bids / "sub-f01" / "sub-f01_sessions.tsv").write_text("session_id\tGA\nses-2\t33.5\n")
    recs = {r.prefix: r for r in discover_sessions(bids)}
    assert set(recs) == {"sub-f01_ses-1", "sub-f01_ses-2"}
    assert recs["sub-f01_ses-1"].age_weeks == 20.0  # falls back to participants.tsv
    assert recs["sub-f01_ses-2"].age_weeks == 33.5
    assert recs["sub-f01_ses-2"].age_column == "GA"
    assert recs["sub-f01_ses-2"].reldir == "sub-f01/ses-2"


def test_missing_age_is_a_clear_error(tmp_path: Path) -> None:
    bids = make_bids(tmp_path / "bids", fetal={"f01": 25.0, "f02": 26.0})
    (bids / "participants.tsv").write_text("participant_id\tga_weeks\nsub-f01\t25\nsub-f02\tn/a\n")
    with pytest.raises(MissingAgeError) as exc:
        discover_sessions(bids)
    msg = str(exc.value)
    assert "sub-f02" in msg and "participants.tsv" in msg and "ga_weeks" in msg
    # non-strict: the other subject is fine, the bad one carries the error
    recs = {r.prefix: r for r in discover_sessions(bids, strict=False)}
    assert recs["sub-f01"].ok
    assert not recs["sub-f02"].ok and "gestational age" in recs["sub-f02"].errors[0]


def test_missing_participants_tsv(tmp_path: Path) -> None:
    bids = make_bids(tmp_path / "bids")
    (bids / "participants.tsv").unlink()
    with pytest.raises(MissingAgeError, match=r"participants\.tsv \(missing\)"):
        discover_sessions(bids)


def test_age_for_the_other_kind_gives_a_hint(tmp_path: Path) -> None:
    bids = make_bids(tmp_path / "bids", fetal={"f01": 25.0})
    (bids / "participants.tsv").write_text("participant_id\tpma_weeks\nsub-f01\t44\n")
    with pytest.raises(MissingAgeError, match="other kind of scan"):
        discover_sessions(bids)


def test_non_numeric_age(tmp_path: Path) -> None:
    bids = make_bids(tmp_path / "bids", fetal={"f01": 25.0})
    (bids / "participants.tsv").write_text("participant_id\tga_weeks\nsub-f01\t25w\n")
    with pytest.raises(MissingAgeError, match="'25w' is not a number"):
        discover_sessions(bids)


def test_no_images(tmp_path: Path) -> None:
    bids = make_bids(tmp_path / "bids", fetal={"f01": 25.0})
    (bids / "sub-f02" / "anat").mkdir(parents=True)
    with pytest.raises(NoImagesError, match="sub-f02: no T1w/T2w images"):
        discover_sessions(bids)


def test_non_bids_name_names_the_file(tmp_path: Path) -> None:
    bids = make_bids(tmp_path / "bids", fetal={"f01": 25.0})
    make_stack(bids / "sub-f01" / "anat" / "stack3 final.nii.gz")
    with pytest.raises(NonBIDSNameError, match=r"stack3 final\.nii\.gz: not a BIDS image name"):
        discover_sessions(bids)
    with pytest.raises(NonBIDSNameError, match=r"x_T2w\.nii\.gz: not a BIDS image name"):
        parse_image_name(Path("x_T2w.nii.gz"))


def test_file_of_another_subject(tmp_path: Path) -> None:
    bids = make_bids(tmp_path / "bids", fetal={"f01": 25.0})
    make_stack(bids / "sub-f01" / "anat" / "sub-f09_run-4_T2w.nii.gz")
    (rec,) = discover_sessions(bids, strict=False)
    assert any("does not start with sub-f01" in e for e in rec.errors)


def test_subject_filter(tmp_path: Path) -> None:
    bids = make_bids(tmp_path / "bids", fetal={"f01": 25.0, "f02": 30.0})
    assert [r.subject for r in discover_sessions(bids, ["sub-f02"])] == ["f02"]
    assert [r.subject for r in discover_sessions(bids, ["f01"])] == ["f01"]
    with pytest.raises(BIDSError, match="subjects not found: sub-zz"):
        discover_sessions(bids, ["zz"])


def test_not_a_bids_folder(tmp_path: Path) -> None:
    with pytest.raises(BIDSError, match="does not exist"):
        discover_sessions(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BIDSError, match="no sub-<label> folders"):
        discover_sessions(tmp_path / "empty")


def test_parse_image_name_entities() -> None:
    e = parse_image_name(Path("sub-01_ses-a_acq-haste_run-2_T2w.nii.gz"))
    assert e.suffix == "T2w" and e.run == "2"
    assert e.stem == "sub-01_ses-a_acq-haste_run-2"


def test_duplicate_subjects_raise_in_strict_mode(tmp_path: Path) -> None:
    bids = make_bids(tmp_path / "bids", fetal={"f01": 25.0, "f02": 26.0})
    (bids / "participants.tsv").write_text(
        "participant_id\tga_weeks\nsub-f01\t25\nsub-f02\t26\nsub-F01\t25\n"
    )
    with pytest.raises(DuplicateSubjectError, match=r"2 rows for sub-f01 \(line 2: 'sub-f01', "):
        discover_sessions(bids)


def test_case_twin_is_found_even_when_only_one_is_selected(tmp_path: Path) -> None:
    """sub-F01 and sub-f01 are one folder on macOS/Windows: selecting one does not hide it."""
    bids = make_bids(tmp_path / "bids", fetal={"f01": 25.0, "F01": 25.0})
    (rec,) = discover_sessions(bids, ["f01"], strict=False)
    assert any("folders sub-F01 and sub-f01 differ only in letter case" in e for e in rec.errors)


def _described_dataset(root: Path, kind: str, value: str, description: dict) -> Path:
    """One session whose age column `age` is named only by participants.json."""
    import json

    bids = root / "bids"
    if kind == "fetal":
        make_stack(bids / "sub-01" / "anat" / "sub-01_run-1_T2w.nii.gz")
    else:
        make_stack(bids / "sub-01" / "anat" / "sub-01_T2w.nii.gz")
    (bids / "participants.tsv").write_text(f"participant_id\tsex\tage\nsub-01\tf\t{value}\n")
    (bids / "participants.json").write_text(json.dumps({"age": description}))
    return bids


@pytest.mark.parametrize(
    ("kind", "value", "description", "weeks"),
    [
        # mial-sub01's own dictionary, with an age filled in
        ("fetal", "26", {"Description": "Gestational age", "Units": "weeks"}, 26.0),
        ("fetal", "182", {"Description": "gestational age at scan", "Units": "days"}, 26.0),
        ("fetal", "6", {"LongName": "GA", "Description": "in months"}, 6 * 4.345),
        ("infant", "300", {"Description": "Post-menstrual age at scan (days)"}, 300 / 7),
        ("infant", "44.5", {"Description": "PMA", "Units": "wk"}, 44.5),
    ],
)
def test_age_column_described_by_participants_json(
    tmp_path: Path, kind: str, value: str, description: dict, weeks: float
) -> None:
    (rec,) = discover_sessions(_described_dataset(tmp_path, kind, value, description))
    assert rec.kind == kind and rec.ok
    assert rec.age_weeks == pytest.approx(weeks)
    assert rec.age_column == "age"
    assert any("participants.json describes" in n for n in rec.notes)


@pytest.mark.parametrize(
    ("kind", "description"),
    [
        ("infant", {"Description": "Gestational age at birth", "Units": "weeks"}),  # not PMA
        ("fetal", {"Description": "Post-menstrual age", "Units": "weeks"}),  # other measure
        ("fetal", {"Description": "Gestational age"}),  # no unit: not guessed
        ("fetal", {"Description": "Maternal age", "Units": "years"}),
    ],
)
def test_described_column_of_another_meaning_is_not_taken(
    tmp_path: Path, kind: str, description: dict
) -> None:
    bids = _described_dataset(tmp_path, kind, "30", description)
    with pytest.raises(MissingAgeError, match="data dictionary"):
        discover_sessions(bids)


def test_empty_described_column_is_named(tmp_path: Path) -> None:
    """mial-sub01 as shipped: its `age` column is GA in weeks, and empty."""
    bids = _described_dataset(
        tmp_path, "fetal", "n/a", {"Description": "Gestational age", "Units": "weeks"}
    )
    with pytest.raises(MissingAgeError, match=r"described column 'age' .*is empty"):
        discover_sessions(bids)
