"""Subject and cohort reports: self-contained HTML, honest stage table, relative links."""

from __future__ import annotations

import base64
import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from synth_fixtures import corrupt_gzip, make_bids

from earlybrain.io.bids import discover_sessions
from earlybrain.io.sidecar import sidecar_path, write_sidecar
from earlybrain.io.validate import validate_session, write_validation
from earlybrain.preprocess.n4 import N4Params, NormaliseParams, PreprocessParams, run_n4
from earlybrain.recon.config import ReconConfig
from earlybrain.report.cohort import write_cohort
from earlybrain.report.figures import input_figure
from earlybrain.report.html import cohort_page, esc
from earlybrain.report.outputs import SessionOutputs
from earlybrain.report.references import REFERENCES
from earlybrain.report.salvage import salvage_reports, salvaged_stages
from earlybrain.report.segmentation import FIGURE_CAPTION
from earlybrain.report.subject import build_subject_report

# not the defaults, so that the Methods can only have them from the sidecars; the shrink
# factor 3 is capped to 2 for the 8-slice stacks
N4_USED = PreprocessParams(
    n4=N4Params(shrink_factor=3, iterations=(60, 40), spline_distance_mm=150.0),
    normalise=NormaliseParams(lower_percentile=2.0, upper_percentile=98.0),
)

IMG_RE = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def process_sessions(root: Path) -> dict:
    """One passing fetal session (2 stacks, N4 done) and one failing one (corrupt stack),
    each with its report; keys: the prefixes (report, stage JSON), "<prefix> inputs"
    (the report's first four arguments), root, deriv, bad (the corrupt stack)."""
    bids = make_bids(
        root / "bids", fetal={"f01": 27.0, "f02": 30.0}, n_stacks=2, stack_shape=(32, 32, 8)
    )
    bad = bids / "sub-f02" / "anat" / "sub-f02_run-2_T2w.nii.gz"
    corrupt_gzip(bad)
    deriv = root / "out" / "earlybrain"
    result = {"root": root, "deriv": deriv, "bad": bad}
    for rec in discover_sessions(bids, strict=False):
        val = write_validation(validate_session(rec), deriv / rec.reldir / "qc" / "v.json")
        n4, bias, mask = [], [], []
        if rec.prefix == "sub-f01":
            for im in rec.images:
                stem = deriv / rec.reldir / "anat" / im.stem
                n4.append(Path(f"{stem}_desc-n4_T2w.nii.gz"))
                bias.append(Path(f"{stem}_desc-biasfield_T2w.nii.gz"))
                mask.append(Path(f"{stem}_desc-foregroundT2w_mask.nii.gz"))
                run_n4(im.path, n4[-1], bias[-1], mask[-1], N4_USED, threads=1)
        html = deriv / f"{rec.prefix}.html"
        stages = deriv / "group" / "stages" / f"{rec.prefix}_stages.json"
        build_subject_report(SessionOutputs(val, n4, bias, mask), html, stages)
        result[rec.prefix] = (html, stages)
        result[f"{rec.prefix} inputs"] = (val, n4, bias, mask)
    return result


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    return process_sessions(tmp_path_factory.mktemp("report"))


def test_subject_report_is_self_contained(processed) -> None:
    html_path, _ = processed["sub-f01"]
    text = html_path.read_text()
    pngs = IMG_RE.findall(text)
    assert len(pngs) == 2  # one figure (input / N4 / bias) per stack
    assert text.count("<img") == 2  # and no other images
    for b64 in pngs:
        assert base64.b64decode(b64).startswith(b"\x89PNG\r\n\x1a\n")
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text
    assert "27.0 weeks GA" in text and "fetal" in text


def test_stage_table_is_honest(processed) -> None:
    _, stages_path = processed["sub-f01"]
    stages = {s["key"]: s["status"] for s in json.loads(stages_path.read_text())["stages"]}
    assert stages["inputs"] == "done" and stages["n4"] == "done"
    stages_run = ("brain_mask", "stack_qc", "svr_srr", "atlas_registration", "segmentation")
    for key in (*stages_run, "brain_age"):
        assert stages[key] == "skipped"  # built, but not given their outputs here
    details = {s["key"]: s["detail"] for s in json.loads(stages_path.read_text())["stages"]}
    assert details["segmentation"] == details["brain_age"] == "not run for this session"
    text = processed["sub-f01"][0].read_text()
    row = re.search(r"<tr><td>Brain age[^<]*</td><td[^>]*>([^<]*)</td>", text)
    assert row and row.group(1) == "skipped"
    assert "<h2>Segmentation</h2>" not in text and "<h2>Brain age</h2>" not in text


def test_failed_session_report_names_the_problem(processed) -> None:
    html_path, stages_path = processed["sub-f02"]
    text = html_path.read_text()
    assert esc(f"{processed['bad']}: cannot read as NIfTI") in text
    st = json.loads(stages_path.read_text())
    assert st["status"] == "failed"
    assert st["failed_stage"] == "Input discovery and validation"
    assert {s["key"]: s["status"] for s in st["stages"]}["n4"] == "skipped"
    # the readable stack is still shown, marked as not processed
    assert len(IMG_RE.findall(text)) == 1
    assert "not processed" in text


def test_cohort_tsv_and_html(processed) -> None:
    deriv = processed["deriv"]
    stages = [processed[p][1] for p in ("sub-f02", "sub-f01")]
    reports = [processed[p][0] for p in ("sub-f02", "sub-f01")]
    tsv, html = deriv / "group" / "cohort.tsv", deriv / "group" / "cohort.html"
    write_cohort(stages, reports, tsv, html)
    rows = list(csv.DictReader(tsv.open(), delimiter="\t"))
    assert [r["participant_id"] for r in rows] == ["sub-f01", "sub-f02"]
    assert [r["status"] for r in rows] == ["ok", "failed"]
    assert rows[0]["n_images"] == "2" and rows[0]["age_weeks"] == "27.00"
    assert rows[0]["age_column"] == "ga_weeks" and rows[0]["kind"] == "fetal"
    assert "cannot read as NIfTI" in rows[1]["reason"]
    text = html.read_text()
    for r in rows:
        assert f'href="../{r["participant_id"]}.html"' in text
        assert (html.parent / f"../{r['participant_id']}.html").resolve().is_file()
    assert "http://" not in text and "https://" not in text


def _methods(html_text: str) -> str:
    """The Methods section of a subject report (it closes the page)."""
    assert html_text.count('<h2 id="methods">Methods</h2>') == 1
    return html_text.split('<h2 id="methods">Methods</h2>', 1)[1]


def test_methods_give_the_n4_parameters_used_and_cite(processed) -> None:
    html_path, stages_path = processed["sub-f01"]
    methods = _methods(html_path.read_text())
    side = json.loads(sidecar_path(processed["sub-f01 inputs"][1][0]).read_text())
    assert side["N4"] == {"shrink_factor_used": 2, "spline_distance_mm_used": 150}
    for used in (
        "each of the 2 input image(s)",
        "initial knot spacing of 150 mm over 2 resolution level(s) of 60, 40 iterations",
        "shrink factor of 2 (requested 3, reduced for small images)",
        "convergence threshold 1e-06",
        "2nd and 98th percentiles",
    ):
        assert used in methods, used
    assert "(Tustison et al. 2010)" in methods and esc(REFERENCES["n4"][1]) in methods
    assert esc(REFERENCES["snakemake"][1]) in methods and "(Mölder et al. 2021)" in methods
    for software in ("earlybrain ", "antspyx ", "numpy ", "nibabel "):
        assert software in methods, software
    # stages that did not run get no sentence and no citation
    for absent in ("SVR", "Kuklisova", "Kainz", "MONAI", "torch "):
        assert absent not in methods, absent
    recorded = json.loads(stages_path.read_text())["methods"]
    assert recorded["references"] == [REFERENCES["n4"][1], REFERENCES["snakemake"][1]]


def test_methods_of_a_reconstruction_come_from_its_sidecar(processed, tmp_path: Path) -> None:
    """The recon sidecar is found beside the metrics (anat/ vs qc/) and its values used."""
    val, n4, bias, mask = processed["sub-f01 inputs"]
    sdir = tmp_path / "sub-f01"
    metrics = sdir / "qc" / "sub-f01_rec-svr_metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(
        json.dumps(
            {
                "n_stacks": 2,
                "reference_stack": 1,
                "reference_reason": "least motion",
                "rejected_slices": 3,
                "slices_with_brain": 14,
                "ncc_observed_simulated": 0.9,
                "seconds": 12.0,
                "device": "cpu",
            }
        )
    )
    cfg = {"resolution_mm": 1.2, "outer_iterations": 2, "reject_weight": 0.4}
    volume = sdir / "anat" / "sub-f01_rec-svr_T2w.nii.gz"
    write_sidecar(
        volume,
        step="recon",
        parameters=ReconConfig.from_dict(cfg).to_dict(),
        extra={"Device": "cpu"},
    )
    html = tmp_path / "sub-f01.html"
    brain = [tmp_path / "m1.nii.gz", tmp_path / "m2.nii.gz"]
    for b, fg in zip(brain, mask, strict=True):  # stand-ins for masks taken from masks_dir
        b.write_bytes(fg.read_bytes())
        write_sidecar(b, step="brain_mask", parameters={"method": "precomputed (masks_dir)"})
    outputs = SessionOutputs(val, n4, bias, mask, brain_masks=brain, recon_metrics=metrics)
    build_subject_report(outputs, html, tmp_path / "s.json")
    methods = _methods(html.read_text())
    for used in (
        "The 2 bias-corrected stacks were combined into one volume with isotropic 1.2 mm",
        "in the first of 2 outer iteration(s)",
        "slices with a weight below 0.4 are reported as rejected (3 of 14 slices",
        "in-plane FWHM of 1.2 times the pixel spacing",
        "(Kuklisova-Murgasova et al. 2012; Kainz et al. 2015)",
        esc(REFERENCES["svr_em"][1]),
        esc(REFERENCES["svr_gpu"][1]),
        "Brain masks of 2 stack(s) were given (masks_dir), not computed.",
        "torch ",
    ):
        assert used in methods, used
    # an explicit sidecar wins over the derived one; without one, nothing is made up
    missing = tmp_path / "nowhere.json"
    build_subject_report(outputs, html, tmp_path / "s.json", recon_sidecar=missing)
    methods = _methods(html.read_text())
    assert "its parameter sidecar could not be read" in methods
    assert "1.2 mm" not in methods and "Kainz" not in methods


def test_failed_session_has_no_methods(processed) -> None:
    methods = _methods(processed["sub-f02"][0].read_text())
    assert "No processing ran for this session" in methods
    for absent in ("N4", "Tustison", "Snakemake", "SVR", "<li>", "Software"):
        assert absent not in methods, absent
    recorded = json.loads(processed["sub-f02"][1].read_text())["methods"]
    assert len(recorded["paragraphs"]) == 1 and recorded["references"] == []


COHORT_COLUMNS = [
    "participant_id",
    "session_id",
    "kind",
    "age_weeks",
    "age_measure",
    "age_column",
    "n_images",
    "total_brain_volume_ml",
    "intracranial_volume_ml",
    "predicted_age_weeks",
    "brain_age_gap_weeks",
    "brain_age_gap_z",
    "flags",
    "flagged_stages",
    "status",
    "failed_stage",
    "reason",
    "report",
]


def test_cohort_is_sortable_and_lists_the_failed(processed) -> None:
    deriv = processed["deriv"]
    tsv, html = deriv / "group" / "c2.tsv", deriv / "group" / "c2.html"
    write_cohort(
        [processed[p][1] for p in ("sub-f01", "sub-f02")],
        [processed[p][0] for p in ("sub-f01", "sub-f02")],
        tsv,
        html,
    )
    assert tsv.read_text().splitlines()[0].split("\t") == COHORT_COLUMNS
    text = html.read_text()
    assert '<table class="sortable">' in text
    assert text.count("<script>") == 1 and "<script src" not in text
    assert 'addEventListener("click"' in text
    assert "2 session(s): 2 fetal, 0 infant; 1 ok, 1 failed" in text
    failed = text.split('<h2 id="failed">Failed sessions</h2>', 1)[1]
    assert "sub-f02" in failed and "sub-f01" not in failed
    assert "Input discovery and validation" in failed and "cannot read as NIfTI" in failed
    assert '<a href="../sub-f02.html">' in failed


def test_cohort_without_failures_says_so() -> None:
    rows = [{"participant_id": "sub-i01", "kind": "infant", "status": "ok", "report": "n/a"}]
    text = cohort_page(title="t", header=["participant_id", "report"], rows=rows, version="0")
    assert "1 session(s): 0 fetal, 1 infant; 1 ok, 0 failed" in text
    assert "None: every session ran through." in text
    assert 'href="n/a"' not in text  # no link to a report that does not exist


def test_stack_ranking_and_a_flagged_registration_are_reported(processed, tmp_path: Path) -> None:
    """Stack QC table (excluded stack with its reason) and registration QC below threshold."""
    val, n4, bias, mask = processed["sub-f01 inputs"]
    tsv = tmp_path / "qc" / "sub-f01_desc-stackquality.tsv"
    tsv.parent.mkdir()
    header = "stack\trank\tscore\tncc_adjacent\tkept\treason\n"
    tsv.write_text(
        header
        + f"{n4[1]}\t1\t0.5\t0.8\ttrue\tn/a\n"
        + f"{n4[0]}\t2\t0.1\t0.2\tfalse\tsignal drop-out in 5 of 9 brain slices\n"
    )
    write_sidecar(
        tsv, step="stack_quality", parameters={"min_stacks": 1, "max_dropout_fraction": 0.25}
    )
    qc = tmp_path / "sub-f01_rec-svr_desc-registration_qc.json"
    qc.write_text(
        json.dumps(
            {
                "template": {
                    "atlas": "earlybrain-fetal",
                    "space": "earlybrainFetal",
                    "age_weeks": 27.0,
                    "requested_age_weeks": 27.0,
                },
                "initialisation": {"chosen": {"name": "pca-03"}},
                "ncc": 0.61,
                "mask_dice": 0.93,
                "qc_pass": False,
                "qc_warnings": ["atlas-space NCC 0.610 < 0.7"],
                "parameters": {"linear_metric": "GC", "syn_metric": "mattes"},
            }
        )
    )
    html = tmp_path / "r.html"
    outputs = SessionOutputs(val, n4, bias, mask, stack_qc=tsv, registration_qc=qc)
    build_subject_report(outputs, html, tmp_path / "s.json")
    stages = {s["key"]: s for s in json.loads((tmp_path / "s.json").read_text())["stages"]}
    assert stages["stack_qc"]["status"] == "done"
    assert "1 of 2 stack(s) kept" in stages["stack_qc"]["detail"]
    assert "signal drop-out in 5 of 9 brain slices" in stages["stack_qc"]["detail"]
    reg = stages["atlas_registration"]
    assert reg["status"] == "flagged" and "NCC 0.610 < 0.7" in reg["detail"]
    assert "27.0-week template of earlybrain-fetal" in reg["detail"] and "pca-03" in reg["detail"]
    text = html.read_text()
    assert "Stack quality ranking" in text and 'class="warn">flagged<' in text
    # the ranking says kept / excluded, not a stage's done / failed
    assert 'class="ok">kept<' in text and 'class="bad">excluded<' in text
    methods = _methods(text)
    assert "1 of 2 stacks were kept" in methods and "The registration was flagged" in methods
    assert "(Avants et al. 2008)" in methods and "(Tustison et al. 2021)" in methods


# the segmentation stage's outputs, in the formats of earlybrain.segment
STRUCTURES = (
    "eCSF",
    "cortical_GM",
    "WM",
    "ventricles",
    "cerebellum",
    "deep_GM",
    "brainstem",
    "total_brain",
    "intracranial",
)
SIDES = {  # lateral tissues: (left, right) mL
    "cortical_GM": (20.5, 19.5),
    "WM": (50.0, 48.0),
    "ventricles": (3.0, 2.0),
    "cerebellum": (4.0, 4.0),
    "deep_GM": (6.0, 5.5),
}
MIDLINE = {"eCSF": 40.0, "brainstem": 2.5, "total_brain": 160.0, "intracranial": 205.0}
TISSUES = STRUCTURES[:7]
CARD = {
    "seed": 7,
    "epochs": 30,
    "validation": {"dice_mean": 0.8123, "dice_per_tissue": {t: 0.8 for t in TISSUES}},
    "validation_unseen_contrast": {"dice_mean": 0.7341},
    "training_data": {"label_maps": {"simulated": 38, "atlas": 2, "extra": 0}},
}


def write_segmentation(root: Path, agreement: float | None, card: bool = True) -> dict:
    """QC JSON, volumes TSV, figure PNG and the weights (+ card) of a segmented session;
    returns the report keyword arguments, the PNG and the weights' SHA-256."""
    anat, figs, models = root / "anat", root / "figures", root / "models"
    for d in (anat, figs, models):
        d.mkdir(parents=True, exist_ok=True)
    weights = models / "unet3d_weights.pt"
    weights.write_bytes(b"not really weights")
    if card:
        (models / "card.json").write_text(json.dumps(CARD))
    lines = ["structure\tleft_ml\tright_ml\ttotal_ml\tasymmetry_index"]
    volumes_ml, ai = {}, {}
    for s in STRUCTURES:
        if s in SIDES:
            left, right = SIDES[s]
            volumes_ml[s], ai[s] = left + right, (left - right) / ((left + right) / 2)
            lines.append(f"{s}\t{left:.4f}\t{right:.4f}\t{left + right:.4f}\t{ai[s]:.4f}")
        else:
            volumes_ml[s] = MIDLINE[s]
            lines.append(f"{s}\tn/a\tn/a\t{MIDLINE[s]:.4f}\tn/a")
    prefix = "sub-f01_rec-svr"
    volumes = anat / f"{prefix}_desc-volumes.tsv"
    volumes.write_text("\n".join(lines) + "\n")
    sha = "ab12cd34ef56" + "0" * 52
    qc: dict = {
        "volumes_ml": volumes_ml,
        "asymmetry_index": ai,
        "parameters": {
            "weights": str(weights),
            "weights_sha256": sha,
            "device": "cpu",
            "test_time_augmentation": True,
            "keep_fraction": 0.2,
            "working_grid_mm": 1.0,
            "midsagittal_plane_x_mm": 0.0,
            "mask_margin_mm": 2.0,
        },
        "timings": {"network_s": 12.34, "total_s": 45.6},
    }
    if agreement is not None:
        qc["agreement_with_atlas_labels"] = {t: agreement for t in TISSUES}
    qc_path = anat / f"{prefix}_desc-segmentation_qc.json"
    qc_path.write_text(json.dumps(qc))
    png = input_figure(np.ones((8, 8, 4), dtype=np.float32), axis=2)
    figure = figs / f"{prefix}_desc-segmentation_dseg.png"
    figure.write_bytes(png)
    kwargs = {"segmentation_qc": qc_path, "volumes": volumes, "segmentation_figure": figure}
    return {"kwargs": kwargs, "png": png, "sha": sha}


def _report_with_segmentation(processed, tmp_path: Path, agreement, card=True):
    seg = write_segmentation(tmp_path / "sub-f01", agreement, card)
    html, stages = tmp_path / "sub-f01.html", tmp_path / "sub-f01_stages.json"
    outputs = SessionOutputs(*processed["sub-f01 inputs"], **seg["kwargs"])
    build_subject_report(outputs, html, stages)
    st = json.loads(stages.read_text())
    return html.read_text(), st, {s["key"]: s for s in st["stages"]}, seg


def test_segmentation_section_shows_figure_volumes_and_methods(processed, tmp_path) -> None:
    text, st, stages, seg = _report_with_segmentation(processed, tmp_path, agreement=0.8)
    row = stages["segmentation"]
    assert row["status"] == "done", row
    assert "total brain 160.0 mL, intracranial 205.0 mL" in row["detail"]
    assert "12.3 s on cpu" in row["detail"] and "mean Dice with atlas labels 0.80" in row["detail"]
    assert stages["brain_age"]["status"] == "skipped"  # not given its outputs here
    section = text.split("<h2>Segmentation</h2>", 1)[1].split("<h2", 1)[0]
    assert base64.b64encode(seg["png"]).decode() in IMG_RE.findall(section)
    assert f"<figcaption>{esc(FIGURE_CAPTION)}</figcaption>" in section
    for cells in (
        ["white matter", "50.00", "48.00", "98.00", "0.041"],
        ["ventricles", "3.00", "2.00", "5.00", "0.400"],
        ["external CSF", "n/a", "n/a", "40.00", "n/a"],
        ["intracranial", "n/a", "n/a", "205.00", "n/a"],
    ):
        assert "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>" in section, cells
    assert "Network 12.3 s on cpu" in section and "mirror averaging: yes" in section
    assert "Agreement with the atlas-propagated labels" in section
    assert '<td>mean</td><td class="ok">0.800</td>' in section
    assert 'class="warn"' not in section
    assert st["volumes_ml"]["total_brain"] == 160.0

    methods = _methods(text)
    for used in (
        "3D U-Net (Ronneberger et al. 2015) built with MONAI (Cardoso et al. 2022)",
        "random contrast per label, the approach of SynthSeg (Billot et al. 2023).",
        f"(unet3d_weights.pt, SHA-256 {seg['sha'][:12]}) were trained with seed 7 for 30 "
        "epochs on 40 label maps (simulated 38, atlas 2); their mean validation Dice was "
        "0.812 on simulated fetal T2w images and 0.734 on a contrast not seen in training.",
        "1 mm working grid and segmented by sliding-window inference",
        "left-right mirror image (test-time augmentation), in 12.34 s on the CPU",
        "midsagittal plane (x = 0 mm)",
        "largest connected component",
        "holes were filled",
        "measured there, in subject space",
        REFERENCES["synthseg"][1],
        REFERENCES["monai"][1],
        "torch ",
        "monai ",
    ):
        assert esc(used) in methods, used
    assert seg["sha"][12:] not in methods  # the short form only
    assert "flagged" not in methods


def test_low_agreement_with_atlas_labels_flags_the_segmentation(processed, tmp_path) -> None:
    text, st, stages, _ = _report_with_segmentation(processed, tmp_path, 0.3, card=False)
    row = stages["segmentation"]
    assert row["status"] == "flagged", row
    assert "mean Dice with the atlas-propagated labels 0.30 < 0.5" in row["detail"]
    assert "registration or the segmentation failed" in row["detail"]
    assert st["status"] == "ok"  # flagged for a person to check, not failed
    section = text.split("<h2>Segmentation</h2>", 1)[1].split("<h2", 1)[0]
    assert '<p class="warn">Check: mean Dice with the atlas-propagated labels 0.30' in section
    assert '<td>mean</td><td class="warn">0.300</td>' in section
    assert re.search(r"<td>Tissue segmentation[^<]*</td><td class=\"warn\">flagged<", text)
    methods = _methods(text)
    assert "The segmentation was flagged" in methods
    assert "have no model card beside them" in methods and "seed" not in methods


def test_cohort_has_the_segmentation_volumes(processed, tmp_path) -> None:
    _report_with_segmentation(processed, tmp_path, agreement=0.8)
    stages = [tmp_path / "sub-f01_stages.json", processed["sub-f02"][1]]
    reports = [tmp_path / "sub-f01.html", processed["sub-f02"][0]]
    tsv, html = tmp_path / "group" / "cohort.tsv", tmp_path / "group" / "cohort.html"
    write_cohort(stages, reports, tsv, html)
    rows = {r["participant_id"]: r for r in csv.DictReader(tsv.open(), delimiter="\t")}
    assert rows["sub-f01"]["total_brain_volume_ml"] == "160.00"
    assert rows["sub-f01"]["intracranial_volume_ml"] == "205.00"
    assert rows["sub-f02"]["total_brain_volume_ml"] == "n/a"  # failed validation: none
    assert rows["sub-f02"]["intracranial_volume_ml"] == "n/a"
    assert "<th>total_brain_volume_ml</th>" in html.read_text()


def salvage_failed_job(
    tmp_path: Path, processed: dict, rule: str, error: str, outputs: dict, inputs: dict
) -> dict:
    """Salvage sub-f01 after `rule` failed with `error` in its log, its `outputs` missing;
    `inputs` are the report inputs beside validation and N4. Returns the session."""
    for path in outputs.values():
        path.unlink()
    job_log = tmp_path / f"{rule}.log"
    job_log.write_text(f"loading weights\n{error}\n")
    run_log = tmp_path / "snakemake.log"
    run_log.write_text(
        f"Error in rule {rule}:\n    jobid: 7\n"
        f"    output: {', '.join(str(p) for p in outputs.values())}\n"
        f"    log: {job_log} (check log file(s) for error details)\n"
    )
    val, n4, bias, mask = processed["sub-f01 inputs"]
    session = {
        "prefix": "sub-f01",
        "html": tmp_path / "sub-f01.html",
        "stages": tmp_path / "stages" / "sub-f01_stages.json",
        "outputs": SessionOutputs(val, n4, bias, mask, **inputs),
    }  # fmt: skip
    tsv = tmp_path / "group" / "cohort.tsv"
    assert salvage_reports(run_log, [session], tsv, tsv.with_suffix(".html")) == ["sub-f01"]
    return session | {"tsv": tsv}


def test_a_failed_segmentation_job_gets_a_salvaged_report(processed, tmp_path) -> None:
    """The segment job failed: its QC is missing, the salvaged report names the stage."""
    seg = write_segmentation(tmp_path / "sub-f01", agreement=0.8)["kwargs"]
    outputs = {k: seg[k] for k in ("segmentation_qc", "volumes")}
    error = "SegmentationError: weights not found"
    session = salvage_failed_job(tmp_path, processed, "segment", error, outputs, seg)
    tsv = session["tsv"]
    st = json.loads(salvaged_stages(session["stages"]).read_text())
    assert st["status"] == "failed"
    assert st["failed_stage"] == "Tissue segmentation and volumetry"
    row = {s["key"]: s for s in st["stages"]}["segmentation"]
    assert row["status"] == "failed" and "see logs/segment" in row["detail"]
    text = session["html"].read_text()
    assert "rule segment failed: SegmentationError: weights not found" in text
    assert "<h2>Segmentation</h2>" not in text  # nothing made up
    (cohort_row,) = csv.DictReader(tsv.open(), delimiter="\t")
    assert cohort_row["total_brain_volume_ml"] == "n/a"
