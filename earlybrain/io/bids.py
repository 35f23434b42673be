"""Discover fetal and infant sessions in a BIDS raw dataset.

The workflow builds its wildcards from the records returned here, so every decision
about what a session is (fetal stacks vs. infant 3D volumes), which files belong to it
and which age applies is made once, in tested code, rather than in the Snakefile.

Fetal sessions: ``sub-<id>[/ses-<s>]/anat/sub-<id>[_ses-<s>]_run-<n>_T2w.nii.gz`` (several
runs = stacks of thick 2D slices). Infant sessions: 3D ``*_T1w`` and/or ``*_T2w`` without a
``run`` entity. Ages come from ``sub-<id>/sub-<id>_sessions.tsv`` (per session) or
``participants.tsv``: gestational age (GA) in weeks for fetal scans, post-menstrual age
(PMA) in weeks for infants; common column aliases are accepted, and so is any column that
the table's JSON data dictionary (``participants.json`` / ``sub-<id>_sessions.json``)
describes as GA or PMA in weeks, days or months; the column used is recorded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from earlybrain.io.ages import (
    GA_COLUMNS,
    GENERIC_WEEK_COLUMNS,
    MONTH_COLUMNS,
    PMA_COLUMNS,
    AgeValueError,
    DescribedAge,
    Kind,
    described_ages,
    lookup_age,
    measure_of,
    other_kind_age_column,
)
from earlybrain.io.tables import TableError, read_table

LABEL = r"[A-Za-z0-9]+"
_NAME_RE = re.compile(
    rf"^sub-(?P<sub>{LABEL})(?:_ses-(?P<ses>{LABEL}))?"
    rf"(?P<ents>(?:_[A-Za-z]+-{LABEL})*)_(?P<suffix>[A-Za-z0-9]+)\.nii(?:\.gz)?$"
)
_ENTITY_RE = re.compile(rf"_([A-Za-z]+)-({LABEL})")
ANAT_SUFFIXES = ("T1w", "T2w")

# the BIDS specification our outputs and the DICOM import follow (BIDS URIs: >= 1.8)
BIDS_VERSION = "1.10.0"


class BIDSError(ValueError):
    """A BIDS dataset or session that cannot be used; the message names the path/subject."""


class MissingAgeError(BIDSError):
    """No usable age for a session in participants.tsv / sessions.tsv."""


class NoImagesError(BIDSError):
    """A subject/session without any T1w/T2w image."""


class NonBIDSNameError(BIDSError):
    """An image whose file name does not follow the BIDS naming scheme."""


class DuplicateSubjectError(BIDSError):
    """A subject or session listed twice (repeated rows, or two spellings of one label)."""


@dataclass(frozen=True)
class ImageEntry:
    """One raw image: its path and parsed BIDS entities."""

    path: Path
    suffix: str  # "T1w" or "T2w"
    entities: tuple[tuple[str, str], ...]  # ordered (key, label), sub/ses first

    @property
    def stem(self) -> str:
        """Entity part of the name without suffix, e.g. ``sub-f01_run-1``."""
        return "_".join(f"{k}-{v}" for k, v in self.entities)

    @property
    def run(self) -> str | None:
        return dict(self.entities).get("run")


@dataclass(frozen=True)
class SessionRecord:
    """One scan session: the unit the workflow processes and reports on."""

    subject: str  # label without "sub-"
    session: str | None  # label without "ses-", None when the dataset has no sessions
    kind: Kind
    age_weeks: float | None  # GA for fetal, PMA for infant
    age_column: str | None  # column the age came from (e.g. "GA", "age_months")
    age_source: str | None  # file the age came from
    images: tuple[ImageEntry, ...]
    errors: tuple[str, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())
    # a fetal session that brings its own 3D reconstruction: the label its derived files
    # carry (`rec-<label>`); None for stacks (reconstructed here) and infant sessions
    reconstruction: str | None = None

    @property
    def prefix(self) -> str:
        """``sub-X`` or ``sub-X_ses-Y``: the start of every output file name."""
        return f"sub-{self.subject}" + (f"_ses-{self.session}" if self.session else "")

    @property
    def reldir(self) -> str:
        """``sub-X`` or ``sub-X/ses-Y``: the folder of this session in BIDS layouts."""
        return f"sub-{self.subject}" + (f"/ses-{self.session}" if self.session else "")

    @property
    def age_measure(self) -> str:
        return measure_of(self.kind)

    @property
    def image_paths(self) -> list[Path]:
        return [im.path for im in self.images]

    @property
    def ok(self) -> bool:
        return not self.errors


def parse_image_name(path: Path) -> ImageEntry:
    """Parse a BIDS anatomical image name; raise NonBIDSNameError if it is not one."""
    m = _NAME_RE.match(path.name)
    if not m:
        raise NonBIDSNameError(
            f"{path}: not a BIDS image name (expected sub-<label>[_ses-<label>]"
            "[_<key>-<label>...]_<suffix>.nii[.gz], e.g. sub-01_run-1_T2w.nii.gz)"
        )
    entities: list[tuple[str, str]] = [("sub", m["sub"])]
    if m["ses"]:
        entities.append(("ses", m["ses"]))
    entities += _ENTITY_RE.findall(m["ents"] or "")
    keys = [k for k, _ in entities]
    if len(set(keys)) != len(keys):
        raise NonBIDSNameError(f"{path}: repeated BIDS entity in file name")
    return ImageEntry(path=path, suffix=m["suffix"], entities=tuple(entities))


def _norm_sub(label: str) -> str:
    label = label.strip()
    return label[4:] if label.startswith("sub-") else label


def _norm_ses(label: str) -> str:
    label = label.strip()
    return label[4:] if label.startswith("ses-") else label


def _index_rows(
    path: Path, column: str, norm: Callable[[str], str], entity: str
) -> tuple[dict[str, dict[str, str]], dict[str, DuplicateSubjectError]]:
    """Rows of a TSV by label, plus an error per repeated label (keys: lower case).

    Labels are compared after removing the ``sub-``/``ses-`` prefix and ignoring letter
    case: ``sub-01`` and ``01``, or ``sub-F01`` and ``sub-f01``, are one subject written
    twice (and the latter pair collides on case-insensitive file systems).
    """
    rows: dict[str, dict[str, str]] = {}
    seen: dict[str, list[tuple[int, str]]] = {}
    try:
        _, table = read_table(path)
    except TableError as exc:
        raise BIDSError(str(exc)) from exc
    for line, row in enumerate(table, start=2):  # line 1 is the header
        raw = (row.get(column) or "").strip()
        if raw:
            rows[norm(raw)] = row
            seen.setdefault(norm(raw).lower(), []).append((line, raw))
    errors = {}
    for key, hits in seen.items():
        if len(hits) > 1:
            where = ", ".join(f"line {n}: {raw!r}" for n, raw in hits)
            errors[key] = DuplicateSubjectError(
                f"{path}: {len(hits)} rows for {entity}-{norm(hits[0][1])} ({where}); "
                f"keep one row per {'participant' if entity == 'sub' else 'session'}"
            )
    return rows, errors


def _case_duplicates(dirs: Sequence[Path]) -> dict[str, DuplicateSubjectError]:
    """Folders whose names differ only in letter case: one subject/session stored twice."""
    groups: dict[str, list[Path]] = {}
    for d in dirs:
        groups.setdefault(d.name.lower(), []).append(d)
    errors = {}
    for group in groups.values():
        if len(group) > 1:
            names = " and ".join(d.name for d in group)
            error = DuplicateSubjectError(
                f"{group[0].parent}: folders {names} differ only in letter case: the same "
                "subject twice? (they collide on case-insensitive file systems); rename or "
                "remove one"
            )
            errors.update({d.name: error for d in group})
    return errors


def _age_in(
    row: dict[str, str], kind: Kind, source: Path, who: str, described: dict[str, DescribedAge]
) -> tuple[float, str, str | None] | None:
    try:
        return lookup_age(row, kind, source, who, described)
    except AgeValueError as exc:
        raise MissingAgeError(str(exc)) from None


# what earlybrain calls its own reconstruction: a given one may not take the name
OWN_RECONSTRUCTION = "svr"
# the label of a given reconstruction whose file name has no rec entity
GIVEN_LABEL = "given"


def given_reconstruction(images: Sequence[ImageEntry], reconstructed: bool) -> str | None:
    """The label of a session's own 3D fetal reconstruction, or None.

    One T2w image without a run entity is a fetal reconstruction made elsewhere (SVRTK,
    NiftyMIC, NeSVoR) when its name carries a BIDS ``rec`` entity
    (``sub-X_rec-svrtk_T2w.nii.gz``), or for every such session when the config says
    ``reconstructed: true``. A ``rec`` entity alone is not proof (an infant's scanner can
    write ``rec-norm``): the caller also wants a gestational age for it.
    """
    if len(images) != 1 or images[0].suffix != "T2w" or images[0].run is not None:
        return None
    label = dict(images[0].entities).get("rec")
    if label is None and not reconstructed:
        return None
    return label or GIVEN_LABEL


def _session_kind(images: Sequence[ImageEntry]) -> Kind:
    """Fetal when every image is a T2w stack with a run entity, infant otherwise."""
    if images and all(im.suffix == "T2w" and im.run is not None for im in images):
        return "fetal"
    return "infant"


def _collect_images(anat: Path, sub: str, ses: str | None) -> tuple[list[ImageEntry], list[str]]:
    """Parse every NIfTI in an anat folder; returns (T1w/T2w entries, problems)."""
    entries: list[ImageEntry] = []
    problems: list[str] = []
    seen: dict[tuple[str, str], Path] = {}
    for path in sorted(anat.iterdir()):
        if not (path.name.endswith(".nii.gz") or path.name.endswith(".nii")):
            continue
        try:
            entry = parse_image_name(path)
        except NonBIDSNameError as exc:
            problems.append(str(exc))
            continue
        ent = dict(entry.entities)
        if ent["sub"] != sub or ent.get("ses") != ses:
            want = f"sub-{sub}" + (f"_ses-{ses}" if ses else "")
            problems.append(f"{path}: file name does not start with {want} but lies in {anat}")
            continue
        if entry.suffix not in ANAT_SUFFIXES:
            continue  # other modalities (FLAIR, masks, ...) are not used yet
        key = (entry.stem, entry.suffix)
        if key in seen:
            problems.append(f"{path}: same image also stored as {seen[key].name}")
            continue
        seen[key] = path
        entries.append(entry)
    return entries, problems


def _session_dirs(subdir: Path) -> list[tuple[str | None, Path]]:
    sessions = sorted(p for p in subdir.glob("ses-*") if p.is_dir())
    out: list[tuple[str | None, Path]] = [(p.name[4:], p) for p in sessions]
    if (subdir / "anat").is_dir() or not sessions:
        out.insert(0, (None, subdir))
    return out


def discover_sessions(
    bids_dir: str | os.PathLike[str],
    subjects: Iterable[str] | None = None,
    *,
    strict: bool = True,
    reconstructed: bool = False,
) -> list[SessionRecord]:
    """List the sessions of a BIDS raw dataset with kind, age and images.

    With ``strict=True`` the first problem raises (BIDSError subclasses naming the
    file or subject). With ``strict=False`` per-session problems are stored in
    ``SessionRecord.errors`` instead, so that the workflow can still build a job (and a
    report saying what is wrong) for that session while the others go ahead. Problems
    with the dataset as a whole (missing folder, no subjects, unknown subject in
    ``subjects``) always raise. ``reconstructed``: a session of one 3D T2w image is a
    fetal reconstruction made elsewhere (see `given_reconstruction`).
    """
    bids = Path(bids_dir)
    if not bids.is_dir():
        raise BIDSError(f"{bids}: BIDS folder does not exist")
    subdirs = sorted(p for p in bids.glob("sub-*") if p.is_dir())
    if not subdirs:
        raise BIDSError(f"{bids}: no sub-<label> folders; is this a BIDS raw dataset?")
    available = {p.name[4:] for p in subdirs}
    duplicate_dirs = _case_duplicates(subdirs)  # before filtering: the twin may be left out
    if subjects:
        wanted = [_norm_sub(s) for s in subjects]
        unknown = [s for s in wanted if s not in available]
        if unknown:
            raise BIDSError(
                f"{bids}: subjects not found: {', '.join('sub-' + s for s in unknown)}"
                f" (available: {', '.join(sorted('sub-' + s for s in available))})"
            )
        subdirs = [p for p in subdirs if p.name[4:] in set(wanted)]

    participants_path = bids / "participants.tsv"
    participants: dict[str, dict[str, str]] = {}
    duplicate_rows: dict[str, DuplicateSubjectError] = {}
    if participants_path.is_file():
        participants, duplicate_rows = _index_rows(
            participants_path, "participant_id", _norm_sub, "sub"
        )

    records: list[SessionRecord] = []
    for subdir in subdirs:
        sub = subdir.name[4:]
        if not re.fullmatch(LABEL, sub):
            raise NonBIDSNameError(f"{subdir}: subject label must be alphanumeric")
        sessions_tsv = subdir / f"sub-{sub}_sessions.tsv"
        ses_rows: dict[str, dict[str, str]] = {}
        duplicate_ses_rows: dict[str, DuplicateSubjectError] = {}
        sub_errors: list[BIDSError] = [
            e for e in (duplicate_rows.get(sub.lower()), duplicate_dirs.get(subdir.name)) if e
        ]
        if sessions_tsv.is_file():
            try:
                ses_rows, duplicate_ses_rows = _index_rows(
                    sessions_tsv, "session_id", _norm_ses, "ses"
                )
            except BIDSError as exc:
                sub_errors.append(exc)
        sessions = _session_dirs(subdir)
        duplicate_ses_dirs = _case_duplicates([d for ses, d in sessions if ses is not None])
        for ses, sesdir in sessions:
            if ses is not None and not re.fullmatch(LABEL, ses):
                raise NonBIDSNameError(f"{sesdir}: session label must be alphanumeric")
            rec, problems = _build_record(
                sub,
                ses,
                sesdir,
                participants,
                participants_path,
                ses_rows,
                sessions_tsv,
                reconstructed,
            )
            duplicates = [duplicate_ses_dirs.get(sesdir.name)]
            if ses is not None:
                duplicates.append(duplicate_ses_rows.get(ses.lower()))
            problems = sub_errors + [e for e in duplicates if e] + problems
            if problems and strict:
                raise problems[0]
            if problems:
                rec = replace(rec, errors=tuple(str(p) for p in problems))
            records.append(rec)
    return records


def _build_record(
    sub: str,
    ses: str | None,
    sesdir: Path,
    participants: dict[str, dict[str, str]],
    participants_path: Path,
    ses_rows: dict[str, dict[str, str]],
    sessions_tsv: Path,
    reconstructed: bool = False,
) -> tuple[SessionRecord, list[BIDSError]]:
    """One session's record plus the problems found (as exceptions, for strict mode)."""
    who = f"sub-{sub}" + (f" ses-{ses}" if ses else "")
    errors: list[BIDSError] = []
    notes: list[str] = []
    err = errors.append

    anat = sesdir / "anat"
    images: list[ImageEntry] = []
    if anat.is_dir():
        images, problems = _collect_images(anat, sub, ses)
        for p in problems:
            err(NonBIDSNameError(p))
    if not images and not errors:
        err(
            NoImagesError(
                f"{who}: no T1w/T2w images (looked for *_T1w.nii[.gz] / *_T2w.nii[.gz] in {anat})"
            )
        )
    kind = _session_kind(images)
    t2_stacks = any(im.run is not None for im in images if im.suffix == "T2w")
    if kind == "infant" and t2_stacks and any(im.run is None for im in images):
        err(
            BIDSError(
                f"{who}: mixes T2w stacks with a run entity (fetal layout) and images "
                "without one (infant layout); cannot tell which this session is"
            )
        )

    age: float | None = None
    age_column: str | None = None
    age_source: str | None = None
    rows: list[tuple[Path, dict[str, str]]] = []
    if ses is not None and ses in ses_rows:
        rows.append((sessions_tsv, ses_rows[ses]))
    if sub in participants:
        rows.append((participants_path, participants[sub]))
    described = {source: described_ages(source) for source, _ in rows}
    reconstruction = given_reconstruction(images, reconstructed)
    if reconstruction is not None and not reconstructed:
        # a rec entity: a fetal reconstruction if the tables give it a gestational age
        try:
            has_ga = any(_age_in(r, "fetal", src, who, described[src]) for src, r in rows)
        except MissingAgeError:
            has_ga = True  # a GA column that is not a number: reported as the fetal error
        if not has_ga:
            reconstruction = None
    if reconstruction is not None:
        kind = "fetal"
        image = images[0].path.name
        notes.append(
            f"{image} is a 3D reconstruction made outside earlybrain (rec-{reconstruction}): "
            "stack masking, stack QC and SVR/SRR are skipped; it is brain-masked, then "
            "registered, segmented and aged"
        )
        if reconstruction == OWN_RECONSTRUCTION:
            err(
                BIDSError(
                    f"{images[0].path}: rec-{OWN_RECONSTRUCTION} is the name earlybrain gives "
                    "its own reconstructions; rename the file with the software that made it "
                    "(e.g. rec-svrtk, rec-niftymic, rec-nesvor)"
                )
            )
    try:
        if not images:  # kind unknown, so the age column to look for is unknown too
            rows = []
        for source, row in rows:
            found = _age_in(row, kind, source, who, described[source])
            if found is not None:
                age, age_column, age_note = found
                age_source = str(source)
                if age_note:
                    notes.append(age_note)
                break
    except MissingAgeError as exc:
        err(exc)
    else:
        if age is None and images:
            wanted = GA_COLUMNS if kind == "fetal" else PMA_COLUMNS + MONTH_COLUMNS
            where = " or ".join(str(s) for s, _ in rows) or (
                f"{participants_path} (missing)"
                if not participants_path.exists()
                else f"{participants_path} (no row for sub-{sub})"
            )
            hint = ""
            for _, row in rows:
                other = other_kind_age_column(row, kind)
                if other:
                    hint = (
                        f"; column {other!r} holds an age for the other kind of scan, but the "
                        f"images look like a {kind} session"
                        + (
                            " (T2w stacks with run-<n>)"
                            if kind == "fetal"
                            else " (3D T1w/T2w without run)"
                        )
                    )
                    break
            measure = (
                "gestational age (GA, weeks)"
                if kind == "fetal"
                else "post-menstrual age (PMA, weeks)"
            )
            empty = [
                f"{col!r} ({source.with_suffix('.json').name}: {meaning.measure} in {meaning.unit})"
                for source, row in rows
                for col, meaning in described[source].items()
                if meaning.measure == measure_of(kind)
                and any(k.strip().lower() == col for k in row if k)
            ]
            if empty:
                hint += f"; the described column {', '.join(empty)} is empty for this session"
            err(
                MissingAgeError(
                    f"{who}: no {measure} found in {where}; expected a column named one of "
                    f"{', '.join(wanted + GENERIC_WEEK_COLUMNS)}, or one that the table's JSON "
                    f"data dictionary describes as {measure_of(kind)} in "
                    f"weeks, days or months{hint}"
                )
            )
    record = SessionRecord(
        subject=sub,
        session=ses,
        kind=kind,
        age_weeks=age,
        age_column=age_column,
        age_source=age_source,
        images=tuple(images),
        notes=tuple(notes),
        reconstruction=reconstruction,
    )
    return record, errors


def find_session(records: Iterable[SessionRecord], prefix: str) -> SessionRecord:
    """The record whose ``prefix`` (``sub-X[_ses-Y]``) matches."""
    for rec in records:
        if rec.prefix == prefix:
            return rec
    raise BIDSError(f"no session {prefix} in the BIDS dataset")
