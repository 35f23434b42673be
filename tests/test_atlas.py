"""Atlas format (manifest + label table), age selection, atlas building, the shipped atlas."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from earlybrain.atlas.build import (
    BuildParams,
    build_atlas,
    build_templates,
    kernel_weights,
)
from earlybrain.atlas.frame import FrameError, standard_frame
from earlybrain.atlas.manifest import (
    AgeError,
    ManifestError,
    load_manifest,
    read_label_table,
    select_template,
)
from earlybrain.atlas.standardise import AtlasSubject
from earlybrain.atlas.templates import load_template
from earlybrain.atlas.write import week_tag, write_atlas
from earlybrain.geometry import voxel_grid_world
from earlybrain.io.nifti import save_nifti
from earlybrain.io.paths import Derivatives
from earlybrain.simulate.acquisition import random_head_pose
from earlybrain.simulate.contrast import intensity_image
from earlybrain.simulate.phantom import (
    Phantom,
    SubjectTraits,
    build_labels,
    fetal_anatomy,
    make_phantom,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "atlases" / "earlybrain-fetal"


# --- a minimal hand-written atlas for format tests -----------------------------------


def _write_tiny_atlas(root: Path, ages=(22.0, 23.0)) -> Path:
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    templates = []
    for a in ages:
        tag = week_tag(a)
        img = np.zeros((8, 8, 8), np.float32)
        img[2:6, 2:6, 2:6] = 100
        save_nifti(img, aff, root / f"w{tag}_T2w.nii.gz")
        save_nifti((img > 0).astype(np.uint8), aff, root / f"w{tag}_mask.nii.gz")
        lab = np.zeros((8, 8, 8), np.uint8)
        lab[2:6, 2:6, 2:6] = 1
        save_nifti(lab, aff, root / f"w{tag}_dseg.nii.gz")
        templates.append(
            {
                "age_weeks": a,
                "images": {"T2w": f"w{tag}_T2w.nii.gz"},
                "mask": f"w{tag}_mask.nii.gz",
                "dseg": f"w{tag}_dseg.nii.gz",
            }
        )
    (root / "labels.tsv").write_text(
        "index\tname\ttissue\themisphere\n1\twhite\tWM\tboth\n2\tskull\tn/a\tnone\n"
    )
    manifest = {
        "format": "earlybrain-atlas",
        "format_version": 1,
        "name": "tiny",
        "space": "tiny",
        "population": "fetal",
        "age_kind": "GA",
        "contrasts": ["T2w"],
        "resolution_mm": 2.0,
        "labels": "labels.tsv",
        "license": "CC0",
        "provenance": {"source": "unit test"},
        "templates": templates,
    }
    path = root / "manifest.json"
    path.write_text(json.dumps(manifest))
    return path


def _mutate(path: Path, change) -> Path:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


def test_tiny_manifest_reads(tmp_path: Path) -> None:
    m = load_manifest(_write_tiny_atlas(tmp_path))
    assert m.name == "tiny" and m.ages == [22.0, 23.0]
    assert m.resolution_mm == (2.0, 2.0, 2.0)
    assert m.templates[0].images["T2w"].is_file()
    assert load_manifest(tmp_path).path == m.path  # a folder is accepted


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.pop("license"), "missing required field(s): license"),
        (lambda d: d.update(licence="MIT"), "unknown field(s) licence"),
        (lambda d: d.update(format="other"), "format: must be 'earlybrain-atlas'"),
        (lambda d: d.update(format_version=2), "format_version"),
        (lambda d: d.update(space="bad-space"), "space: must be letters and digits"),
        (lambda d: d.update(age_kind="months"), "age_kind: must be GA"),
        (lambda d: d.update(resolution_mm=[1, 1]), "resolution_mm"),
        (lambda d: d.update(provenance={}), "provenance: must be a non-empty mapping"),
        (lambda d: d["templates"][1].update(mask="nope.nii.gz"), "templates[1].mask: file 'nope"),
        (lambda d: d["templates"][0].pop("images"), "templates[0].images: missing"),
        (lambda d: d["templates"][0].update(age_weeks="22"), "templates[0].age_weeks: must be"),
        (lambda d: d["templates"][1].update(age_weeks=22.0), "appear more than once"),
        (lambda d: d["templates"][0].update(ages=1), "templates[0]: unknown field(s) ages"),
        (
            lambda d: d["templates"][0]["images"].update(T1w="w22_T2w.nii.gz"),
            "templates[0].images.T1w: contrast not declared",
        ),
        (lambda d: d.pop("labels"), "no label table is given"),
    ],
)
def test_manifest_errors_name_file_and_field(tmp_path: Path, change, expected: str) -> None:
    path = _mutate(_write_tiny_atlas(tmp_path), change)
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_manifest_yaml_and_syntax_errors(tmp_path: Path) -> None:
    path = _write_tiny_atlas(tmp_path)
    ypath = tmp_path / "manifest.yaml"
    ypath.write_text(yaml.safe_dump(json.loads(path.read_text())))
    assert load_manifest(ypath).ages == load_manifest(path).ages
    ypath.write_text("name: [unclosed\n")
    with pytest.raises(ManifestError, match="not valid YAML"):
        load_manifest(ypath)
    path.write_text('{"name": ')
    with pytest.raises(ManifestError, match=r"not valid JSON \(line 1"):
        load_manifest(path)
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("1\twhite\tWhiteMatter\tboth", "tissue 'WhiteMatter' is not one of"),
        ("1\twhite\tWM\tmiddle", "hemisphere 'middle'"),
        ("x\twhite\tWM\tboth", "index 'x' is not an integer"),
        ("0\twhite\tWM\tboth", "must be positive"),
    ],
)
def test_label_table_errors(tmp_path: Path, row: str, expected: str) -> None:
    p = tmp_path / "labels.tsv"
    p.write_text("index\tname\ttissue\themisphere\n" + row + "\n")
    with pytest.raises(ManifestError, match=expected):
        read_label_table(p)
    p.write_text("index\tname\n1\ta\n")
    with pytest.raises(ManifestError, match="missing tissue, hemisphere"):
        read_label_table(p)


def test_external_labels_map_to_earlybrain_by_hemisphere_and_midline(tmp_path: Path) -> None:
    p = tmp_path / "labels.tsv"
    p.write_text(
        "index\tname\ttissue\themisphere\n"
        "10\tcortex\tcortical_GM\tboth\n"  # split by the midline
        "11\twm_l\tWM\tleft\n"
        "12\twm_r\tWM\tright\n"
        "13\tstem\tbrainstem\tboth\n"
        "99\tskull\tn/a\tnone\n"
    )
    table = read_label_table(p)
    dseg = np.array([10, 10, 11, 12, 13, 99, 0, 42])
    x = np.array([-5.0, 5.0, 3.0, -3.0, 1.0, 0.0, 0.0, 0.0])
    out = table.to_earlybrain(dseg, x, midline_x_mm=0.0)
    # cortical GM left/right = 2/3, WM left/right = 4/5 whatever the position, brainstem 12
    assert out.tolist() == [2, 3, 4, 5, 12, 0, 0, 0]


def test_select_template_nearest_and_says_which(tmp_path: Path) -> None:
    m = load_manifest(_write_tiny_atlas(tmp_path, ages=(22.0, 23.0, 24.0)))
    c = select_template(m, 23.4)
    assert c.template.age_weeks == 23.0 and c.distance_weeks == pytest.approx(0.4)
    assert "23-week" in c.message and "0.40 weeks away" in c.message
    assert select_template(m, 23.5).template.age_weeks == 23.0  # a tie goes to the younger
    assert select_template(m, 23.51).template.age_weeks == 24.0
    assert select_template(m, 20.5).template.age_weeks == 22.0  # within 2 weeks
    with pytest.raises(AgeError, match=r"covers 22-24 weeks"):
        select_template(m, 30.0)
    with pytest.raises(AgeError, match="no T1w template"):
        select_template(m, 23.0, contrast="T1w")


def test_load_template_converts_labels(tmp_path: Path) -> None:
    m = load_manifest(_write_tiny_atlas(tmp_path))
    t = load_template(m, m.templates[0])
    # label 1 = WM, 'both' hemispheres: split at x = 0 (this grid lies at x >= 0: right WM)
    assert set(np.unique(t.dseg)) == {0, 5}
    assert t.mask.sum() == 64 and t.space == "tiny"


# --- atlas building ------------------------------------------------------------------


def test_kernel_weights() -> None:
    p = BuildParams(sigma_weeks=1.0, min_weight=0.05, max_subjects=3)
    w = kernel_weights([20.0, 21.0, 22.0, 22.5, 30.0], 22.0, p)
    assert w[4] == 0.0  # 8 weeks away
    assert np.count_nonzero(w) == 3 and w[0] == 0.0  # only the 3 nearest
    assert w[2] == pytest.approx(1.0) and w[1] == pytest.approx(np.exp(-0.5))


def test_standard_frame_recovers_head_pose() -> None:
    ph = make_phantom(28.0, 5, voxel_mm=1.6)
    pose = random_head_pose(np.random.default_rng(3))
    S = standard_frame(ph.labels * (ph.labels <= 12), pose @ ph.affine)
    E = S @ pose  # head frame -> standard frame: close to identity
    angle = np.degrees(np.arccos(np.clip((np.trace(E[:3, :3]) - 1) / 2, -1, 1)))
    assert angle < 6.0 and np.linalg.norm(E[:3, 3]) < 2.5
    with pytest.raises(FrameError, match="no infratentorial"):
        standard_frame(np.where(np.isin(ph.labels, (8, 9, 12)), 0, ph.labels), ph.affine)


def typical_phantom(age: float, voxel_mm: float) -> Phantom:
    """An average-sized, average-shaped fetus (size, shape and contrast traits at their means)."""
    traits = SubjectTraits(1.0, (1.0, 1.0, 1.0), 1.0, 12345, dict.fromkeys(range(1, 17), 1.0), 0)
    anatomy = fetal_anatomy(age, traits)
    labels, affine = build_labels(anatomy, traits, voxel_mm)
    return Phantom(labels, affine, anatomy, traits, age, "fetal")


def affine_label_dice(tpl_img, tpl_aff, tpl_dseg, ph: Phantom) -> float:
    """Mean Dice (12 labels) of a phantom's labels, affinely aligned to a template."""
    import ants

    from earlybrain.register import antsio
    from earlybrain.register.metrics import label_dice, mean_dice

    labels = np.where(ph.labels <= 12, ph.labels, 0).astype(np.uint8)
    world = standard_frame(labels, ph.affine) @ ph.affine  # phantom voxels, standard frame
    img = intensity_image(ph) * (labels > 0)
    fixed = antsio.to_ants(tpl_img, tpl_aff)
    reg = ants.registration(
        fixed,
        antsio.to_ants(img, world),
        type_of_transform="Affine",
        initial_transform=["Identity"],
        aff_metric="GC",
        aff_iterations=(100, 50, 0),
        aff_shrink_factors=(4, 2, 1),
        aff_smoothing_sigmas=(2, 1, 0),
        random_seed=1,
    )
    warped = ants.apply_transforms(
        fixed,
        antsio.to_ants(labels.astype(np.float32), world),
        reg["fwdtransforms"],
        interpolator="genericLabel",
    ).numpy()
    return mean_dice(label_dice(tpl_dseg, np.rint(warped).astype(np.uint8), range(1, 13)))


def _subjects(ages, voxel_mm: float, seed0: int) -> list[AtlasSubject]:
    out = []
    for i, age in enumerate(ages):
        ph = make_phantom(float(age), seed0 + i, voxel_mm=voxel_mm)
        brain = (ph.labels >= 1) & (ph.labels <= 12)
        pose = random_head_pose(np.random.default_rng(seed0 + i))  # any orientation
        out.append(
            AtlasSubject(
                intensity_image(ph) * brain,
                pose @ ph.affine,
                float(age),
                np.where(brain, ph.labels, 0),
                name=f"s{i}",
            )
        )
    return out


@pytest.fixture(scope="module")
def small_build() -> list:
    subjects = _subjects([26.5, 27.3, 28.0, 28.6, 29.4], voxel_mm=1.6, seed0=300)
    params = BuildParams(voxel_mm=1.6, iterations=2, syn_iterations=(40, 20, 0))
    return build_templates(subjects, [28.0], params)


def test_small_build_labels_agree_with_phantom(small_build) -> None:
    (t,) = small_build
    info = t.build_info()
    assert len(info["subjects"]) == 5 and 27.5 < info["weighted_mean_age_weeks"] < 28.5
    assert set(np.unique(t.dseg)) == set(range(13))
    assert np.array_equal(t.mask > 0, t.dseg > 0)
    # same size as a typical 28-week brain (+-12 %) and the same anatomy after affine alignment
    ph = typical_phantom(28.0, 1.6)
    ratio = (t.dseg > 0).sum() / np.isin(ph.labels, range(1, 13)).sum()
    assert 0.88 < ratio < 1.12
    assert affine_label_dice(t.image, t.affine, t.dseg, ph) >= 0.75
    # left labels lie left of the midsagittal plane (RAS: x < 0)
    x = voxel_grid_world(t.dseg.shape, t.affine)[..., 0]
    assert np.median(x[np.isin(t.dseg, (2, 4))]) < -5 < 5 < np.median(x[np.isin(t.dseg, (3, 5))])


def test_written_atlas_reads_back(small_build, tmp_path: Path) -> None:
    path = write_atlas(
        small_build,
        tmp_path / "atlas",
        name="test-atlas",
        space="testAtlas",
        params=BuildParams(voxel_mm=1.6),
        provenance={"generated_by": "test"},
    )
    m = load_manifest(path)
    assert m.ages == [28.0] and m.license == "MIT" and (tmp_path / "atlas" / "LICENSE").is_file()
    t = load_template(m, m.templates[0])
    assert np.array_equal(t.dseg, small_build[0].dseg)
    assert m.provenance["software"]["antspyx"]
    assert m.templates[0].build["effective_n"] > 2


def test_build_atlas_file_entry_errors(tmp_path: Path) -> None:
    vol = save_nifti(np.ones((4, 4, 4), np.float32), np.eye(4), tmp_path / "v.nii.gz")
    with pytest.raises(ValueError, match="1 volumes but 2 ages"):
        build_atlas([vol], None, [22.0, 23.0], tmp_path / "out", [22.0])
    with pytest.raises(ValueError, match="no labels: give a reference atlas"):
        build_atlas([vol], None, [22.0], tmp_path / "out", [22.0])


# --- the atlas that ships ---------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    if not (SHIPPED / "manifest.json").is_file():
        pytest.fail(f"{SHIPPED}/manifest.json is missing: the atlas must ship with the repository")
    return load_manifest(SHIPPED)


def test_shipped_atlas_manifest(shipped) -> None:
    assert shipped.name == "earlybrain-fetal" and shipped.space == "earlybrainFetal"
    assert shipped.ages == [float(w) for w in range(21, 39)]
    assert shipped.license == "MIT" and (SHIPPED / "LICENSE").is_file()
    prov = shipped.provenance
    assert prov["command"].startswith("python -m earlybrain.atlas.default")
    assert prov["cohort_seed"] and len(prov["subjects"]) >= 20
    assert {"earlybrain", "antspyx", "numpy"} <= set(prov["software"])
    assert [e.hemisphere for e in shipped.labels.entries].count("left") == 5
    size = sum(p.stat().st_size for p in SHIPPED.iterdir())
    assert size < 12 * 2**20, f"shipped atlas is {size / 2**20:.1f} MB"


def _check_week(shipped, week: float) -> None:
    entry = next(t for t in shipped.templates if t.age_weeks == week)
    t = load_template(shipped, entry)
    ph = typical_phantom(week, float(shipped.resolution_mm[0]))
    ratio = (t.dseg > 0).sum() / np.isin(ph.labels, range(1, 13)).sum()
    assert 0.85 < ratio < 1.15, f"week {week}: brain volume ratio {ratio:.2f} to a typical phantom"
    dice = affine_label_dice(t.image, t.affine, t.dseg, ph)
    assert dice >= 0.80, f"week {week}: mean label Dice {dice:.3f} with a typical phantom"


@pytest.mark.parametrize("week", [21.0, 27.0, 33.0, 38.0])
def test_shipped_atlas_labels_agree_with_phantom(shipped, week: float) -> None:
    _check_week(shipped, week)


@pytest.mark.slow
def test_shipped_atlas_every_week_agrees_with_phantom(shipped) -> None:
    for week in shipped.ages:
        _check_week(shipped, week)
    # brains grow; a week may dip slightly where its few subjects happen to be small
    brain = [(load_template(shipped, e).mask > 0).sum() for e in shipped.templates]
    assert all(b2 > 0.97 * b1 for b1, b2 in itertools.pairwise(brain)), brain
    assert brain[-1] > 5 * brain[0], brain


@pytest.mark.slow
def test_unlabelled_subjects_are_oriented_by_a_reference_atlas(shipped, tmp_path: Path) -> None:
    """Without labels, subjects are aligned to the reference; the template mask lands on it."""
    subjects = _subjects([27.6, 28.0, 28.5], voxel_mm=1.6, seed0=610)
    paths = []
    for s in subjects:
        paths.append(save_nifti(s.image, s.affine, tmp_path / f"{s.name}_T2w.nii.gz"))
    params = {"voxel_mm": 1.6, "iterations": 1, "syn_iterations": [40, 20, 0]}
    manifest = build_atlas(
        paths,
        None,
        [s.age_weeks for s in subjects],
        tmp_path / "atlas",
        [28.0],
        params=params,
        reference_atlas=SHIPPED,
    )
    m = load_manifest(manifest)
    assert m.labels is None and m.templates[0].dseg is None
    built = load_template(m, m.templates[0])
    ref = load_template(shipped, select_template(shipped, 28.0).template)
    # resample the reference mask onto the new template's grid (both in the standard frame)
    from scipy import ndimage

    from earlybrain.geometry import apply as apply_affine
    from earlybrain.register.metrics import dice

    idx = np.argwhere(np.ones(built.mask.shape, bool)).astype(float)
    src = apply_affine(np.linalg.inv(ref.affine) @ built.affine, idx).T
    ref_mask = ndimage.map_coordinates(ref.mask, src, order=0).reshape(built.mask.shape)
    assert dice(built.mask > 0, ref_mask > 0) >= 0.85


def test_workflow_helpers(tmp_path: Path) -> None:
    from earlybrain.atlas import workflow as wf
    from earlybrain.atlas.build import _read_cohort, parse_weeks

    assert parse_weeks(["21-24"]) == [21.0, 22.0, 23.0, 24.0]
    assert parse_weeks(["22", "26.5"]) == [22.0, 26.5]
    assert (
        wf.resolve_manifest("atlases/x/manifest.json", "/repo") == "/repo/atlases/x/manifest.json"
    )
    assert wf.atlas_space(str(SHIPPED / "manifest.json")) == "earlybrainFetal"
    assert wf.atlas_space(str(tmp_path / "none.json"), "fallback") == "fallback"
    build = {"volumes": ["a.nii.gz", "b c.nii.gz"], "ages": [22, 23.5], "weeks": "22-23"}
    files = wf.build_inputs(build, "/repo")
    args = wf.build_args(build | {"params": {"voxel_mm": 1.6}}, files)
    assert "--volumes a.nii.gz 'b c.nii.gz' --ages 22 23.5 --weeks 22-23" in args
    assert """--params '{"voxel_mm": 1.6}'""" in args
    outs = wf.rule_outputs(Derivatives("d"), "earlybrainFetal")
    assert outs["dseg"] == "d/{sdir}/anat/{prefix}_rec-svr_desc-atlas_dseg.nii.gz"
    assert outs["warp"].startswith("d/{sdir}/xfm/")
    (tmp_path / "cohort.tsv").write_text(
        "volume\tage_weeks\tlabels\n v1.nii.gz\t22.5\tl1.nii.gz\nv2.nii.gz\t24\tn/a\n".replace(
            " ", ""
        )
    )
    vols, labs, ages, masks = _read_cohort(tmp_path / "cohort.tsv")
    assert ages == [22.5, 24.0] and labs[1] is None and masks == [None, None]
    assert vols[0] == str(tmp_path / "v1.nii.gz") and labs[0] == str(tmp_path / "l1.nii.gz")
