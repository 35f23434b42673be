"""Write a simulated cohort as a BIDS dataset, and its ground truth beside it.

Layout of `out/`:
    bids/                          the raw dataset a user would have
      dataset_description.json, participants.tsv
      sub-fNN/anat/sub-fNN_run-K_T2w.nii.gz (+ .json)     fetal stacks
      sub-iNN/anat/sub-iNN_T1w.nii.gz, sub-iNN_T2w.nii.gz  infant 3D volumes
    groundtruth/                   never read by the pipeline, only by tests/benchmarks
      labels.tsv
      sub-X/sub-X_desc-truth_T2w.nii.gz        noise-free volume, reference scanner space
      sub-X/sub-X_desc-truth_dseg.nii.gz       labels (left/right), same grid
      sub-X/sub-X_run-K_desc-brain_mask.nii.gz true brain mask of each stack
      sub-X/sub-X_run-K_desc-bias_T2w.nii.gz   true bias field of each stack
      sub-X/sub-X_motion.tsv                   true rigid pose of every slice
      sub-X/sub-X_truth.json                   age, parameters, volumes, biometry
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from earlybrain import __version__
from earlybrain.anatomy import biometry
from earlybrain.anatomy.labels import label_table_tsv
from earlybrain.io.atomic import write_json_atomic, write_text_atomic
from earlybrain.io.bids import BIDS_VERSION
from earlybrain.io.nifti import save_nifti
from earlybrain.simulate.acquisition import StackProtocol, simulate_stacks, simulate_volume
from earlybrain.simulate.phantom import Phantom, make_phantom


@dataclass(frozen=True)
class Preset:
    truth_voxel_mm: float
    protocol: StackProtocol
    infant_voxel_mm: float


PRESETS: dict[str, Preset] = {
    # for unit tests: seconds per subject
    "tiny": Preset(1.6, StackProtocol(inplane_mm=2.0, thickness_mm=4.5, fov_margin_mm=12.0), 2.4),
    # for the demo run: still fast, recognisable anatomy
    "demo": Preset(1.0, StackProtocol(inplane_mm=1.25, thickness_mm=3.5, fov_margin_mm=30.0), 1.3),
    # realistic clinical resolution
    "full": Preset(0.8, StackProtocol(inplane_mm=1.0, thickness_mm=3.0, fov_margin_mm=70.0), 1.0),
}


@dataclass(frozen=True)
class CohortSpec:
    n_fetal: int = 2
    n_infant: int = 0
    seed: int = 0
    motion: str = "moderate"
    n_stacks: int = 3
    preset: str = "demo"
    fetal_ages: tuple[float, ...] | None = None  # weeks GA
    infant_ages_months: tuple[float, ...] | None = None
    # also publish the true stack masks as a derivatives dataset (bids/derivatives/masks),
    # the form in which a lab hands over manual masks
    write_masks: bool = False

    def ages(self) -> tuple[list[float], list[float]]:
        """Ages of the cohort: given ones, or spread evenly over the supported ranges."""
        fetal = (
            list(self.fetal_ages) if self.fetal_ages else list(np.linspace(22, 36, self.n_fetal))
        )
        infant = (
            list(self.infant_ages_months)
            if self.infant_ages_months
            else list(np.linspace(1, 22, self.n_infant))
        )
        if len(fetal) != self.n_fetal or len(infant) != self.n_infant:
            raise ValueError("give exactly one age per subject")
        return [round(float(a), 1) for a in fetal], [round(float(a), 1) for a in infant]


def subject_seed(cohort_seed: int, kind: str, index: int) -> int:
    """Independent, reproducible seed per subject."""
    kind_code = {"fetal": 1, "infant": 2}[kind]
    return int(np.random.SeedSequence([cohort_seed, kind_code, index]).generate_state(1)[0])


def _tsv(rows: list[dict[str, object]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def _truth_common(phantom: Phantom, seed: int) -> dict[str, object]:
    vox_ml = float(abs(np.linalg.det(phantom.affine[:3, :3]))) / 1000.0
    return {
        "kind": phantom.kind,
        "age_weeks": phantom.age_weeks,
        "seed": seed,
        "anatomy": asdict(phantom.anatomy),
        "traits": asdict(phantom.traits),
        "volumes_ml": phantom.volumes_ml(),
        "brain_volume_ml": phantom.brain_volume_ml(),
        "truth_voxel_ml": vox_ml,
        "software": {"name": "earlybrain simulate", "version": __version__},
    }


def write_fetal_subject(
    bids: Path, truth: Path, sub: str, ga: float, seed: int, spec: CohortSpec, preset: Preset
) -> dict[str, object]:
    phantom = make_phantom(ga, seed, kind="fetal", voxel_mm=preset.truth_voxel_mm)
    session = simulate_stacks(phantom, spec.n_stacks, spec.motion, seed + 1, preset.protocol)
    anat = bids / f"sub-{sub}" / "anat"
    gt = truth / f"sub-{sub}"
    motion_rows = []
    for run, stack in enumerate(session.stacks, start=1):
        stem = f"sub-{sub}_run-{run}"
        save_nifti(stack.data, stack.affine, anat / f"{stem}_T2w.nii.gz")
        t_start = float(stack.slice_times.min())
        write_json_atomic(
            anat / f"{stem}_T2w.json",
            {
                "MRAcquisitionType": "2D",
                "PulseSequenceType": "single-shot fast spin echo (simulated)",
                "SliceThickness": preset.protocol.thickness_mm,
                "SliceEncodingDirection": "k",
                "SliceTiming": [round(float(t) - t_start, 4) for t in stack.slice_times],
                "StackOrientation": stack.orientation,
                "Simulated": True,
            },
        )
        save_nifti(stack.mask, stack.affine, gt / f"{stem}_desc-brain_mask.nii.gz", dtype=np.uint8)
        if spec.write_masks:
            masks = bids / "derivatives" / "masks"
            save_nifti(
                stack.mask,
                stack.affine,
                masks / f"sub-{sub}" / "anat" / f"{stem}_mask.nii.gz",
                dtype=np.uint8,
            )
        save_nifti(stack.bias, stack.affine, gt / f"{stem}_desc-bias_T2w.nii.gz", dtype=np.float32)
        for k in range(stack.data.shape[2]):
            rx, ry, rz, tx, ty, tz = stack.poses[k]
            motion_rows.append(
                {
                    "run": run,
                    "slice": k,
                    "acquisition_index": int(np.where(stack.slice_order == k)[0][0]),
                    "time_s": _fmt(stack.slice_times[k]),
                    "rot_x_deg": _fmt(rx),
                    "rot_y_deg": _fmt(ry),
                    "rot_z_deg": _fmt(rz),
                    "trans_x_mm": _fmt(tx),
                    "trans_y_mm": _fmt(ty),
                    "trans_z_mm": _fmt(tz),
                    "intensity_factor": _fmt(stack.intensity_factor[k]),
                }
            )
    save_nifti(
        session.truth_image,
        session.truth_affine,
        gt / f"sub-{sub}_desc-truth_T2w.nii.gz",
        dtype=np.float32,
    )
    save_nifti(
        phantom.labels * (phantom.labels <= 12),
        session.truth_affine,
        gt / f"sub-{sub}_desc-truth_dseg.nii.gz",
        dtype=np.uint8,
    )
    write_text_atomic(gt / f"sub-{sub}_motion.tsv", _tsv(motion_rows))
    info = _truth_common(phantom, seed) | {
        "ga_weeks": ga,
        "acquisition": session.protocol,
        "head_centre_mm": session.head_centre.tolist(),
        "pose_convention": "M(p) = R (p - c) + c + t, R = Rz Ry Rx, c = head_centre_mm; "
        "stack voxel v of slice k shows truth at M_k^-1(A v)",
        "biometry": {"bpd_mm": biometry.bpd_mm(ga), "tcd_mm": biometry.tcd_mm(ga)},
        "n_stacks": spec.n_stacks,
    }
    write_json_atomic(gt / f"sub-{sub}_truth.json", info)
    return {"participant_id": f"sub-{sub}", "ga_weeks": f"{ga:.1f}", "pma_weeks": "n/a"}


def write_infant_subject(
    bids: Path, truth: Path, sub: str, months: float, seed: int, preset: Preset
) -> dict[str, object]:
    phantom = make_phantom(months, seed, kind="infant", voxel_mm=preset.truth_voxel_mm)
    contrasts = ("T1w", "T2w")
    images, affine, mask, truths, meta = simulate_volume(
        phantom, contrasts, preset.infant_voxel_mm, seed + 1
    )
    anat = bids / f"sub-{sub}" / "anat"
    gt = truth / f"sub-{sub}"
    for contrast in contrasts:
        save_nifti(images[contrast], affine, anat / f"sub-{sub}_{contrast}.nii.gz")
        write_json_atomic(
            anat / f"sub-{sub}_{contrast}.json",
            {"MRAcquisitionType": "3D", "Simulated": True},
        )
        save_nifti(
            truths[contrast],
            meta.truth_affine,
            gt / f"sub-{sub}_desc-truth_{contrast}.nii.gz",
            dtype=np.float32,
        )
    save_nifti(mask, affine, gt / f"sub-{sub}_desc-brain_mask.nii.gz", dtype=np.uint8)
    save_nifti(
        phantom.labels * (phantom.labels <= 12),
        meta.truth_affine,
        gt / f"sub-{sub}_desc-truth_dseg.nii.gz",
        dtype=np.uint8,
    )
    pma = biometry.months_to_pma_weeks(months)
    info = _truth_common(phantom, seed) | {
        "age_months": months,
        "pma_weeks": pma,
        "acquisition": meta.protocol,
    }
    write_json_atomic(gt / f"sub-{sub}_truth.json", info)
    return {"participant_id": f"sub-{sub}", "ga_weeks": "n/a", "pma_weeks": f"{pma:.1f}"}


def simulate_cohort(out_dir: Path, spec: CohortSpec) -> tuple[Path, Path]:
    """Simulate every subject of `spec` into `out_dir`; returns (bids_dir, truth_dir)."""
    if spec.preset not in PRESETS:
        raise ValueError(f"unknown preset {spec.preset!r}; choose from {sorted(PRESETS)}")
    preset = PRESETS[spec.preset]
    out_dir = Path(out_dir)
    bids, truth = out_dir / "bids", out_dir / "groundtruth"
    fetal_ages, infant_ages = spec.ages()
    rng = np.random.default_rng(spec.seed)
    rows = []
    for i, ga in enumerate(fetal_ages, start=1):
        row = write_fetal_subject(
            bids, truth, f"f{i:02d}", ga, subject_seed(spec.seed, "fetal", i), spec, preset
        )
        rows.append(row | {"sex": rng.choice(["F", "M"])})
    for i, months in enumerate(infant_ages, start=1):
        row = write_infant_subject(
            bids, truth, f"i{i:02d}", months, subject_seed(spec.seed, "infant", i), preset
        )
        rows.append(row | {"sex": rng.choice(["F", "M"])})
    write_text_atomic(bids / "participants.tsv", _tsv(rows))
    write_json_atomic(
        bids / "participants.json",
        {
            "ga_weeks": {"Description": "gestational age at scan", "Units": "weeks"},
            "pma_weeks": {"Description": "postmenstrual age at scan", "Units": "weeks"},
            "sex": {"Description": "sex of the subject", "Levels": {"F": "female", "M": "male"}},
        },
    )
    write_json_atomic(
        bids / "dataset_description.json",
        {
            "Name": f"earlybrain simulated cohort (seed {spec.seed})",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "raw",
            "License": "CC0",
            "GeneratedBy": [{"Name": "earlybrain simulate", "Version": __version__}],
        },
    )
    if spec.write_masks and fetal_ages:
        write_json_atomic(
            bids / "derivatives" / "masks" / "dataset_description.json",
            {
                "Name": "brain masks of the simulated stacks",
                "BIDSVersion": BIDS_VERSION,
                "DatasetType": "derivative",
                "GeneratedBy": [
                    {
                        "Name": "earlybrain simulate",
                        "Version": __version__,
                        "Description": "true masks of the simulator, standing in for manual masks",
                    }
                ],
            },
        )
    write_text_atomic(truth / "labels.tsv", label_table_tsv())
    write_json_atomic(truth / "cohort.json", asdict(spec) | {"software_version": __version__})
    return bids, truth
