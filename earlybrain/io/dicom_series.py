"""Which DICOM series a session keeps, and as what: the import's decisions.

Each image dcm2niix wrote is classified from its sidecar (sequence, description,
acquisition type, image type, slices) as a fetal T2 stack (2D single-shot FSE or bSSFP),
an infant 3D T1w/T2w, or skipped with a reason; `plan` then numbers a fetal session's
stacks or keeps one image per contrast for an infant (the last repeat).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from earlybrain.io.ages import Kind

Role = Literal["ssfse", "bssfp", "T1w", "T2w"]

#: An image with fewer slices is a localiser or a single test slice, not a stack.
MIN_SLICES = 5


def _words(*words: str) -> str:
    """Alternatives matched as whole tokens (underscores, digits and '*' separate)."""
    return r"(?<![a-z])(?:" + "|".join(words) + r")(?![a-z])"


LOCALISER_RE = re.compile(r"locali[sz]er|scout|survey|tri-?pilot|3-?plane|" + _words("loc"))
SSFSE_RE = re.compile(
    r"haste|ss-?fse|ss_fse|sshfse|ssh[-_ ]?tse|single[-_ ]?shot|half[-_ ]?fourier|" + _words("fase")
)
BSSFP_RE = re.compile(r"trufi|true[-_ ]?fisp|b-?ssfp|balanced|fiesta|b-?ffe|" + _words("tfi"))
OTHER_CONTRASTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("FLAIR", re.compile(r"flair|dark[-_ ]?fluid|tirm")),
    ("DWI", re.compile(r"dwi|diff|dti|" + _words("trace", "adc", "b0", "b1000"))),
    ("BOLD/EPI", re.compile(r"bold|fmri|ep2d|resting|" + _words("epi"))),
    ("SWI", re.compile(r"swi|swan|susceptib|t2\*|t2_?star|" + _words("medic", "merge"))),
    ("ASL", re.compile(r"pcasl|perfusion|" + _words("asl", "pasl"))),
    ("angiography", re.compile(r"angio|" + _words("tof", "mra"))),
    ("field map", re.compile(r"field[-_ ]?map|b0map|b1map|tfl_b1|" + _words("fmap"))),
    ("spectroscopy", re.compile(r"spectro|" + _words("svs", "csi", "mrs"))),
    ("proton density", re.compile(r"proton[-_ ]?density|" + _words("pd", "pdw"))),
    ("calibration", re.compile(r"calibration|prescan|coil[-_ ]?sens|" + _words("cal", "asset"))),
)
T1_RE = re.compile(r"t1|mprage|mp-rage|spgr|bravo|" + _words("tfe", "flash", "vibe", "mpr"))
T2_RE = re.compile(r"t2|space|cube|vista|" + _words("tse", "fse", "frfse", "drive"))
# dcm2niix's names for images it made itself (resampled, motion corrected, maps)
DERIVED_NAME_RE = re.compile(r"_(Eq|Tilt|MoCo|ADC|trace|FA)(_|$)")


@dataclass
class Image:
    """One image dcm2niix wrote: its file, sidecar and shape."""

    nii: Path
    meta: dict[str, Any]
    shape: tuple[int, ...]
    has_bval: bool = False
    error: str | None = None  # why the file cannot be used at all

    @property
    def stem(self) -> str:
        return self.nii.name.removesuffix(".nii")

    @property
    def series(self) -> int | None:
        n = self.meta.get("SeriesNumber")
        return int(n) if isinstance(n, int | float) and math.isfinite(n) else None

    @property
    def description(self) -> str:
        return str(self.meta.get("SeriesDescription") or self.meta.get("ProtocolName") or "")

    @property
    def n_slices(self) -> int:
        return self.shape[2] if len(self.shape) >= 3 else 1

    @property
    def order(self) -> tuple[int, str]:
        return (self.series if self.series is not None else 1 << 30, self.stem)


@dataclass
class Decision:
    """What happens to one image: kept as `role` -> `target`, or skipped for `reason`."""

    image: Image
    role: Role | None
    reason: str
    target: Path | None = None  # relative to the BIDS folder


def _text(meta: dict[str, Any], *keys: str) -> str:
    parts = []
    for key in keys:
        value = meta.get(key)
        if isinstance(value, list):
            parts += [str(v) for v in value]
        elif value is not None:
            parts.append(str(value))
    return " ".join(parts).lower()


def classify(image: Image) -> tuple[Role | None, str]:
    """(role, why) for a kept image or (None, reason) for a skipped one; mode-independent."""
    meta = image.meta
    names = _text(meta, "SeriesDescription", "ProtocolName")
    sequence = _text(meta, "SequenceName", "PulseSequenceDetails", "PulseSequenceName")
    image_type = [str(t).upper() for t in meta.get("ImageType") or []]
    acq = str(meta.get("MRAcquisitionType") or "").upper()
    echo = meta.get("EchoNumber")
    if image.error:
        return None, image.error
    if LOCALISER_RE.search(names) or "LOCALIZER" in image_type:
        return None, "localiser"
    if image.n_slices < MIN_SLICES:
        return None, f"only {image.n_slices} slice(s): a localiser or test slice, not a stack"
    if {"DERIVED", "SECONDARY"} & set(image_type) or DERIVED_NAME_RE.search(image.stem):
        return None, f"derived/secondary image (ImageType {'/'.join(image_type) or '?'})"
    if {"P", "PHASE"} & set(image_type) or image.stem.endswith("_ph"):
        return None, "phase image (its magnitude is kept)"
    if {"REAL", "IMAGINARY"} & set(image_type) or re.search(r"_(real|imaginary)$", image.stem):
        return None, "real/imaginary part (the magnitude is kept)"
    if isinstance(echo, int | float) and echo > 1:
        return None, f"echo {echo:g} of a multi-echo series (echo 1 is kept)"
    if len(image.shape) >= 4 and image.shape[3] > 1:
        return None, f"4D series ({image.shape[3]} volumes): not a single stack or volume"
    if image.has_bval:
        return None, "other contrast (DWI: has b-values)"
    for name, pattern in OTHER_CONTRASTS:
        if pattern.search(names) or pattern.search(sequence):
            return None, f"other contrast ({name})"
    if "EP" in str(meta.get("ScanningSequence") or "").upper().split("\\"):
        return None, "other contrast (EPI readout: DWI/BOLD)"
    is_ssfse = bool(SSFSE_RE.search(names) or SSFSE_RE.search(sequence))
    is_bssfp = bool(BSSFP_RE.search(names) or BSSFP_RE.search(sequence))
    if acq == "2D" or (not acq and (is_ssfse or is_bssfp)):
        if is_ssfse:
            return "ssfse", "2D single-shot T2 stack"
        if is_bssfp:
            return "bssfp", "2D bSSFP stack"
        return None, "2D series that is not a single-shot T2 (HASTE/SSFSE) or bSSFP stack"
    if acq == "3D":
        if is_bssfp:
            return None, "3D bSSFP (CISS/FIESTA-C): not a T1w or T2w volume"
        return _volume_contrast(names + " " + sequence, meta)
    return None, f"neither a 2D stack nor a 3D volume (MRAcquisitionType {acq or 'missing'})"


def _volume_contrast(text: str, meta: dict[str, Any]) -> tuple[Role | None, str]:
    """T1w or T2w of a 3D image: by name, else by echo time (seconds, as in BIDS)."""
    t1, t2 = bool(T1_RE.search(text)), bool(T2_RE.search(text))
    if t1 != t2:
        return ("T1w", "3D T1-weighted (by name)") if t1 else ("T2w", "3D T2-weighted (by name)")
    te = meta.get("EchoTime")
    if isinstance(te, int | float):
        if te < 0.02:
            return "T1w", f"3D, T1-weighted by its short echo time ({te * 1000:g} ms)"
        if te > 0.06:
            return "T2w", f"3D, T2-weighted by its long echo time ({te * 1000:g} ms)"
    return None, "3D image of unknown contrast (neither name nor echo time says T1w or T2w)"


def plan(
    images: Sequence[Image], kind: Kind | None, prefix: str, anat: Path
) -> tuple[Kind, list[Decision]]:
    """Decide every image: the session kind (given, or from what is present), then runs
    for fetal stacks or one image per contrast for an infant."""
    classified = [(im, *classify(im)) for im in sorted(images, key=lambda i: i.order)]
    stacks = [c for c in classified if c[1] in ("ssfse", "bssfp")]
    volumes = [c for c in classified if c[1] in ("T1w", "T2w")]
    if kind is None:
        if stacks:
            kind = "fetal"
        elif volumes:
            kind = "infant"
        else:
            kind = "fetal"  # nothing usable: reported by the caller
    decisions: list[Decision] = []
    if kind == "fetal":
        use = "ssfse" if any(r == "ssfse" for _, r, _ in stacks) else "bssfp"
        run = 0
        for im, role, why in classified:
            if role in ("T1w", "T2w"):
                decisions.append(Decision(im, None, "3D volume: a fetal session uses 2D stacks"))
            elif role == "bssfp" and use == "ssfse":
                decisions.append(
                    Decision(
                        im,
                        None,
                        "bSSFP stack: the session has single-shot T2 stacks, and "
                        "reconstruction combines stacks of one contrast",
                    )
                )
            elif role in ("ssfse", "bssfp"):
                run += 1
                decisions.append(Decision(im, role, why, anat / f"{prefix}_run-{run}_T2w.nii.gz"))
            else:
                decisions.append(Decision(im, None, why))
        return kind, decisions
    last = {r: max(i.order for i, rr, _ in volumes if rr == r) for _, r, _ in volumes}
    for im, role, why in classified:
        if role in ("ssfse", "bssfp"):
            decisions.append(Decision(im, None, "2D stack: an infant session uses 3D volumes"))
        elif role in ("T1w", "T2w") and im.order != last[role]:
            kept = next(i for i, r, _ in volumes if i.order == last[role])
            decisions.append(
                Decision(
                    im,
                    None,
                    f"an earlier {role}: the last one ({series_name(kept)}) is kept, as a "
                    "repeat usually replaces a failed acquisition",
                )
            )
        elif role in ("T1w", "T2w"):
            decisions.append(Decision(im, role, why, anat / f"{prefix}_{role}.nii.gz"))
        else:
            decisions.append(Decision(im, None, why))
    return kind, decisions


def series_name(im: Image) -> str:
    return f"series {im.series}" if im.series is not None else f"image {im.stem}"
