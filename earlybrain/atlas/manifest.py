"""Atlas manifests: read and validate, and pick the template for an age.

An atlas is a folder with one template per week and a manifest (JSON or YAML) that
says what is where. The format is described in `docs/user-guide/atlases.md`; in short:

    format: earlybrain-atlas          format_version: 1
    name, space (a BIDS-safe space label), population (fetal | infant),
    age_kind (GA | PMA; ages are always in weeks), contrasts (e.g. [T2w] or [T1w, T2w]),
    resolution_mm, orientation (RAS), midsagittal_plane_x_mm (optional),
    labels (a label table .tsv: index, name, tissue, hemisphere),
    license, license_file (optional), citation (optional), provenance (a mapping),
    templates: list of {age_weeks, images: {contrast: file}, mask, dseg (optional), build}

Paths are relative to the manifest's folder. Every problem is reported as a
ManifestError naming the manifest file and the field, because atlases are written by
hand when a lab plugs in a published one.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from earlybrain.anatomy.labels import LABELS as EARLYBRAIN_LABELS
from earlybrain.anatomy.labels import TISSUES

FORMAT = "earlybrain-atlas"
FORMAT_VERSION = 1
TISSUE_NAMES: tuple[str, ...] = tuple(TISSUES.values())  # the 7 FeTA classes, index order
NO_TISSUE = ("n/a", "none", "")  # label table entries that belong to none of the 7 classes
HEMISPHERES = ("left", "right", "both", "none")
AGE_KINDS = ("GA", "PMA")
POPULATIONS = ("fetal", "infant")

_TOP_REQUIRED = (
    "format",
    "format_version",
    "name",
    "space",
    "population",
    "age_kind",
    "contrasts",
    "resolution_mm",
    "license",
    "provenance",
    "templates",
)
_TOP_OPTIONAL = (
    "description",
    "orientation",
    "midsagittal_plane_x_mm",
    "labels",
    "license_file",
    "citation",
)
_TEMPLATE_KEYS = ("age_weeks", "images", "mask", "dseg", "build", "notes")


class ManifestError(ValueError):
    """A manifest or label table that cannot be used; the message names file and field."""


class AgeError(ValueError):
    """No template of the atlas is close enough to the requested age."""


@dataclass(frozen=True)
class LabelEntry:
    index: int
    name: str
    tissue: str | None  # one of TISSUE_NAMES, or None for labels outside the 7 classes
    hemisphere: str  # left | right | both | none

    @property
    def tissue_index(self) -> int:
        """1..7 in TISSUE_NAMES order, 0 for none."""
        return TISSUE_NAMES.index(self.tissue) + 1 if self.tissue else 0


@dataclass(frozen=True)
class LabelTable:
    path: Path
    entries: tuple[LabelEntry, ...]

    def lut(self, value: str = "tissue") -> np.ndarray:
        """Lookup array label -> tissue index (1..7, 0 = none)."""
        size = max(e.index for e in self.entries) + 1
        out = np.zeros(size, dtype=np.uint8)
        for e in self.entries:
            out[e.index] = e.tissue_index
        return out

    def to_earlybrain(self, dseg: np.ndarray, x_mm: np.ndarray, midline_x_mm: float) -> np.ndarray:
        """Convert an atlas label map to earlybrain's 12 labels (7 tissues split left/right).

        Labels declared left/right keep their side; tissues that earlybrain splits but
        the atlas labels as 'both' are split at the midsagittal plane (`x_mm` is the RAS
        x coordinate of every voxel). Labels outside the 7 tissues become 0.
        """
        dseg = np.asarray(dseg).astype(np.int64)
        lut = self.lut()
        tissue = np.zeros(dseg.shape, dtype=np.uint8)
        inside = (dseg >= 0) & (dseg < lut.size)
        tissue[inside] = lut[dseg[inside]]
        side_lut = np.zeros(lut.size, dtype=np.int8)  # -1 left, +1 right, 0 by position
        for e in self.entries:
            side_lut[e.index] = {"left": -1, "right": 1}.get(e.hemisphere, 0)
        side = np.zeros(dseg.shape, dtype=np.int8)
        side[inside] = side_lut[dseg[inside]]
        by_position = np.where(x_mm < midline_x_mm, -1, 1).astype(np.int8)
        side = np.where(side == 0, by_position, side)
        out = np.zeros(dseg.shape, dtype=np.uint8)
        for lab, (_, t, hemi) in EARLYBRAIN_LABELS.items():
            sel = tissue == t
            if hemi == "left":
                sel &= side < 0
            elif hemi == "right":
                sel &= side > 0
            out[sel] = lab
        return out


@dataclass(frozen=True)
class TemplateEntry:
    age_weeks: float
    images: Mapping[str, Path]  # contrast -> absolute path
    mask: Path
    dseg: Path | None
    build: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AtlasManifest:
    path: Path
    name: str
    space: str
    population: str
    age_kind: str
    contrasts: tuple[str, ...]
    resolution_mm: tuple[float, float, float]
    orientation: str
    midsagittal_plane_x_mm: float
    labels: LabelTable | None
    license: str
    provenance: Mapping[str, Any]
    templates: tuple[TemplateEntry, ...]  # sorted by age
    raw: Mapping[str, Any]

    @property
    def ages(self) -> list[float]:
        return [t.age_weeks for t in self.templates]


@dataclass(frozen=True)
class TemplateChoice:
    template: TemplateEntry
    requested_age_weeks: float
    distance_weeks: float
    message: str


def _err(path: Path, where: str, problem: str) -> ManifestError:
    return ManifestError(f"{path}: {where}: {problem}" if where else f"{path}: {problem}")


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{path}: atlas manifest does not exist") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ManifestError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(
                f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
            ) from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: the manifest must be a mapping of fields, not a list/value")
    return data


def _number(path: Path, where: str, value: Any, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _err(path, where, f"must be a number, got {value!r}")
    if positive and value <= 0:
        raise _err(path, where, f"must be positive, got {value!r}")
    return float(value)


def _string(path: Path, where: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _err(path, where, f"must be a non-empty string, got {value!r}")
    return value


def _file(path: Path, where: str, value: Any) -> Path:
    rel = _string(path, where, value)
    full = (path.parent / rel).resolve()
    if not full.is_file():
        raise _err(path, where, f"file {rel!r} does not exist (looked for {full})")
    return full


def read_label_table(path: str | os.PathLike[str]) -> LabelTable:
    """Read and check a label table (.tsv with index, name, tissue, hemisphere)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(
            f"{path}: cannot read the label table ({exc.strerror or exc})"
        ) from None
    rows = list(csv.DictReader(text.splitlines(), delimiter="\t"))
    need = ("index", "name", "tissue", "hemisphere")
    header = rows[0].keys() if rows else []
    missing = [c for c in need if c not in header]
    if not rows or missing:
        raise ManifestError(
            f"{path}: label table needs the tab-separated columns {', '.join(need)}"
            + (f"; missing {', '.join(missing)}" if rows else "; it has no rows")
        )
    entries, seen = [], set()
    for n, row in enumerate(rows, start=2):
        try:
            index = int(row["index"])
        except (TypeError, ValueError):
            raise ManifestError(
                f"{path}: line {n}: index {row['index']!r} is not an integer"
            ) from None
        if index <= 0 or index in seen:
            why = "must be positive (0 is background)" if index <= 0 else "is listed twice"
            raise ManifestError(f"{path}: line {n}: label index {index} {why}")
        seen.add(index)
        tissue = (row["tissue"] or "").strip()
        if tissue.lower() in NO_TISSUE:
            tissue_name = None
        elif tissue in TISSUE_NAMES:
            tissue_name = tissue
        else:
            raise ManifestError(
                f"{path}: line {n}: tissue {tissue!r} is not one of {', '.join(TISSUE_NAMES)} "
                f"(or n/a for labels outside these classes)"
            )
        hemi = (row["hemisphere"] or "").strip().lower()
        if hemi not in HEMISPHERES:
            raise ManifestError(
                f"{path}: line {n}: hemisphere {row['hemisphere']!r} is not one of "
                f"{', '.join(HEMISPHERES)}"
            )
        entries.append(LabelEntry(index, (row["name"] or "").strip(), tissue_name, hemi))
    return LabelTable(path, tuple(entries))


def _template(path: Path, i: int, raw: Any, contrasts: tuple[str, ...]) -> TemplateEntry:
    where = f"templates[{i}]"
    if not isinstance(raw, dict):
        raise _err(path, where, "must be a mapping with age_weeks, images, mask")
    unknown = sorted(set(raw) - set(_TEMPLATE_KEYS))
    if unknown:
        raise _err(
            path,
            where,
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(_TEMPLATE_KEYS)}",
        )
    for key in ("age_weeks", "images", "mask"):
        if key not in raw:
            raise _err(path, f"{where}.{key}", "missing")
    age = _number(path, f"{where}.age_weeks", raw["age_weeks"], positive=True)
    images = raw["images"]
    if not isinstance(images, dict) or not images:
        raise _err(path, f"{where}.images", "must map contrast names to files, e.g. {T2w: file}")
    resolved = {}
    for contrast, rel in images.items():
        if contrast not in contrasts:
            raise _err(
                path,
                f"{where}.images.{contrast}",
                f"contrast not declared in 'contrasts' ({', '.join(contrasts)})",
            )
        resolved[contrast] = _file(path, f"{where}.images.{contrast}", rel)
    mask = _file(path, f"{where}.mask", raw["mask"])
    dseg = _file(path, f"{where}.dseg", raw["dseg"]) if raw.get("dseg") is not None else None
    build = raw.get("build") or {}
    if not isinstance(build, dict):
        raise _err(path, f"{where}.build", "must be a mapping")
    return TemplateEntry(age, resolved, mask, dseg, build)


def parse_manifest(path: Path, data: Mapping[str, Any]) -> AtlasManifest:
    """Validate a manifest already read into a mapping (`path` is used for file paths)."""
    missing = [k for k in _TOP_REQUIRED if k not in data]
    if missing:
        raise _err(path, "", f"missing required field(s): {', '.join(missing)}")
    unknown = sorted(set(data) - set(_TOP_REQUIRED) - set(_TOP_OPTIONAL))
    if unknown:
        allowed = ", ".join(_TOP_REQUIRED + _TOP_OPTIONAL)
        raise _err(path, "", f"unknown field(s) {', '.join(unknown)}; allowed: {allowed}")
    if data["format"] != FORMAT:
        raise _err(path, "format", f"must be {FORMAT!r}, got {data['format']!r}")
    if data["format_version"] != FORMAT_VERSION:
        raise _err(
            path,
            "format_version",
            f"this earlybrain reads version {FORMAT_VERSION}, got {data['format_version']!r}",
        )
    name = _string(path, "name", data["name"])
    space = _string(path, "space", data["space"])
    if not re.fullmatch(r"[A-Za-z0-9]+", space):
        raise _err(path, "space", f"must be letters and digits only (a BIDS label), got {space!r}")
    population = data["population"]
    if population not in POPULATIONS:
        raise _err(
            path, "population", f"must be one of {', '.join(POPULATIONS)}, got {population!r}"
        )
    age_kind = data["age_kind"]
    if age_kind not in AGE_KINDS:
        raise _err(
            path, "age_kind", f"must be GA (gestational) or PMA (postmenstrual), got {age_kind!r}"
        )
    contrasts = data["contrasts"]
    if (
        not isinstance(contrasts, list)
        or not contrasts
        or not all(isinstance(c, str) and c for c in contrasts)
    ):
        raise _err(path, "contrasts", f"must be a non-empty list of names, got {contrasts!r}")
    res = data["resolution_mm"]
    res_list = res if isinstance(res, list) else [res, res, res]
    if len(res_list) != 3:
        raise _err(path, "resolution_mm", f"must be a number or 3 numbers, got {res!r}")
    resolution = tuple(_number(path, "resolution_mm", r, positive=True) for r in res_list)
    orientation = data.get("orientation", "RAS")
    if orientation != "RAS":
        raise _err(
            path, "orientation", f"templates must be in RAS world space, got {orientation!r}"
        )
    midline = _number(path, "midsagittal_plane_x_mm", data.get("midsagittal_plane_x_mm", 0.0))
    license_ = _string(path, "license", data["license"])
    if data.get("license_file") is not None:
        _file(path, "license_file", data["license_file"])
    provenance = data["provenance"]
    if not isinstance(provenance, dict) or not provenance:
        raise _err(path, "provenance", "must be a non-empty mapping (source, how it was made)")
    labels = None
    if data.get("labels") is not None:
        labels = read_label_table(_file(path, "labels", data["labels"]))
    templates_raw = data["templates"]
    if not isinstance(templates_raw, list) or not templates_raw:
        raise _err(path, "templates", "must be a non-empty list")
    templates = [_template(path, i, t, tuple(contrasts)) for i, t in enumerate(templates_raw)]
    ages = [t.age_weeks for t in templates]
    if len(set(ages)) != len(ages):
        dup = sorted({a for a in ages if ages.count(a) > 1})
        raise _err(path, "templates", f"age(s) {dup} appear more than once")
    if labels is None and any(t.dseg is not None for t in templates):
        raise _err(path, "labels", "templates have label maps (dseg) but no label table is given")
    return AtlasManifest(
        path=path,
        name=name,
        space=space,
        population=population,
        age_kind=age_kind,
        contrasts=tuple(contrasts),
        resolution_mm=resolution,  # type: ignore[arg-type]
        orientation=orientation,
        midsagittal_plane_x_mm=midline,
        labels=labels,
        license=license_,
        provenance=provenance,
        templates=tuple(sorted(templates, key=lambda t: t.age_weeks)),
        raw=dict(data),
    )


def load_manifest(path: str | os.PathLike[str]) -> AtlasManifest:
    """Read and validate an atlas manifest (.json, .yaml or .yml); or a folder holding one."""
    path = Path(path)
    if path.is_dir():
        found = [path / n for n in ("manifest.json", "manifest.yaml", "manifest.yml")]
        found = [p for p in found if p.is_file()]
        if not found:
            raise ManifestError(f"{path}: folder has no manifest.json / manifest.yaml")
        path = found[0]
    return parse_manifest(path.resolve(), _read_mapping(path))


def select_template(
    manifest: AtlasManifest,
    age_weeks: float,
    contrast: str = "T2w",
    max_distance_weeks: float = 2.0,
) -> TemplateChoice:
    """The template nearest in age that has `contrast` (ties go to the younger one).

    Ages further than `max_distance_weeks` from every template are refused: an atlas
    of the wrong age would bias everything downstream, so the user must choose.
    """
    if not math.isfinite(age_weeks):
        raise AgeError(f"age must be a number of weeks, got {age_weeks!r}")
    usable = [t for t in manifest.templates if contrast in t.images]
    if not usable:
        raise AgeError(
            f"atlas {manifest.name!r} ({manifest.path}) has no {contrast} template; it has "
            f"{', '.join(manifest.contrasts)}"
        )
    best = min(usable, key=lambda t: (abs(t.age_weeks - age_weeks), t.age_weeks))
    dist = abs(best.age_weeks - age_weeks)
    lo, hi = usable[0].age_weeks, usable[-1].age_weeks
    if dist > max_distance_weeks:
        raise AgeError(
            f"age {age_weeks:g} weeks ({manifest.age_kind}) is {dist:.1f} weeks from the nearest "
            f"template of atlas {manifest.name!r}, which covers {lo:g}-{hi:g} weeks; "
            f"the limit is {max_distance_weeks:g} weeks (use an atlas covering this age)"
        )
    message = (
        f"age {age_weeks:g} weeks {manifest.age_kind}: using the {best.age_weeks:g}-week "
        f"{contrast} template of atlas {manifest.name!r} ({dist:.2f} weeks away)"
    )
    return TemplateChoice(best, float(age_weeks), float(dist), message)
