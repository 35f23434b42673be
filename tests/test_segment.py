"""Tissue segmentation: synthetic training data, post-processing, volumes, the shipped
network's accuracy on held-out simulated subjects, and training/fine-tuning runs."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from shared_data import fidon_or_skip

from earlybrain import shared_data
from earlybrain.anatomy.labels import LABELS, TISSUES, to_tissues
from earlybrain.segment import train as train_mod
from earlybrain.segment.evaluate import (
    fidon_volumes,
    network_vs_atlas,
    simulated_volume,
    tissue_dice,
)
from earlybrain.segment.inference import (
    SegmentationError,
    default_weights_path,
    load_model,
    predict_probabilities,
    save_weights,
)
from earlybrain.segment.labelmaps import file_map
from earlybrain.segment.network import DEFAULT_ARCH, N_CLASSES, build_network
from earlybrain.segment.pipeline import segment_array
from earlybrain.segment.postprocess import clean_labels, split_hemispheres
from earlybrain.segment.synth import SynthConfig, deform_labels, synthesize
from earlybrain.segment.train import train_segmentation
from earlybrain.segment.train_data import PatchSampler, subject_seeds
from earlybrain.segment.volumes import asymmetry_index, volume_rows, volumes_tsv
from earlybrain.simulate.phantom import make_phantom

REPO = Path(__file__).resolve().parents[1]
# held-out subjects: seeds the training never used (checked against the card below)
HELD_OUT = [(22.0, 9101), (25.0, 9102), (28.0, 9103), (31.0, 9104), (34.0, 9105), (36.0, 9106)]


@pytest.fixture(scope="module")
def model():
    return load_model(device="cpu")


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((default_weights_path().parent / "card.json").read_text())


def _segment(vol, model, tta: bool = False) -> np.ndarray:
    return segment_array(vol.image, vol.affine, vol.image > 0, model, 0.0, tta)


def test_synthesis_is_seeded_and_covers_the_classes() -> None:
    labels = make_phantom(30.0, 3, voxel_mm=1.0).labels
    sampler = PatchSampler({"simulated": [labels]}, {"simulated": 1.0}, 96)
    cfg = SynthConfig()

    def draw(seed: int):
        rng = np.random.default_rng(seed)
        return synthesize(deform_labels(sampler.sample(rng, 2), rng, cfg), rng, cfg)

    (x1, y1), (x2, y2), (x3, _) = draw(5), draw(5), draw(6)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)
    assert x1.shape == (2, 1, 64, 64, 64) and y1.shape == (2, 64, 64, 64)
    assert torch.isfinite(x1).all() and x1.min() >= 0 and x1.max() <= 2.0**1.5
    assert set(torch.unique(y1).tolist()) <= set(range(N_CLASSES))
    assert len(torch.unique(y1)) >= 4  # patches centred in the brain hold several tissues


def test_volumes_of_the_true_labels_equal_the_ground_truth() -> None:
    ph = make_phantom(27.0, 4, voxel_mm=1.0)
    rows = {r["structure"]: r for r in volume_rows(ph.labels, ph.affine)}
    truth = ph.volumes_ml()
    for t, tissue in TISSUES.items():
        expected = sum(truth[name] for name, tt, _ in LABELS.values() if tt == t)
        assert rows[tissue]["total_ml"] == pytest.approx(expected, rel=1e-9), tissue
    assert rows["WM"]["left_ml"] == pytest.approx(truth["WM_left"])
    assert rows["WM"]["right_ml"] == pytest.approx(truth["WM_right"])
    ai = rows["ventricles"]["asymmetry_index"]
    left, right = truth["ventricle_left"], truth["ventricle_right"]
    assert ai == pytest.approx((left - right) / ((left + right) / 2))
    assert rows["total_brain"]["total_ml"] == pytest.approx(ph.brain_volume_ml())
    assert rows["intracranial"]["total_ml"] == pytest.approx(sum(truth.values()))
    assert rows["eCSF"]["left_ml"] is None
    text = volumes_tsv(list(rows.values()))
    assert text.splitlines()[0].split("\t") == [
        "structure", "left_ml", "right_ml", "total_ml", "asymmetry_index"
    ]  # fmt: skip
    assert "eCSF\tn/a\tn/a\t" in text
    assert asymmetry_index(0.0, 0.0) != asymmetry_index(0.0, 0.0)  # NaN: no tissue at all


def test_hemispheres_and_clean_up() -> None:
    tissues = np.zeros((20, 10, 10), np.uint8)
    tissues[2:18, 2:8, 2:8] = 3  # WM across the midline
    tissues[5, 5, 5] = 0  # a hole
    tissues[3:5, 3:5, 3:5] = 4  # a ventricle
    tissues[15:17, 3:5, 3:5] = 4  # its mirror twin (kept: same size)
    tissues[12, 5, 5] = 4  # a speck inside the WM (removed, refilled)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[0, 3] = -10.0  # x < 0 for the first 10 columns
    labels = clean_labels(split_hemispheres(tissues, affine, 0.0))
    assert labels[5, 5, 5] == 4 and labels[12, 5, 5] == 5  # hole filled, speck -> WM right
    assert labels[3, 3, 3] == 6 and labels[15, 3, 3] == 7  # ventricle left / right
    assert labels[8, 2, 2] == 4 and labels[11, 2, 2] == 5  # WM left / right of x = 0


def test_bad_weights_and_inputs_are_named(tmp_path: Path, model) -> None:
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(SegmentationError, match=r"weights\.pt"):
        load_model(bad, device="cpu")
    with pytest.raises(SegmentationError, match="not found"):
        load_model(tmp_path / "missing.pt", device="cpu")
    with pytest.raises(SegmentationError, match="3D"):
        predict_probabilities(np.zeros((10, 10)), np.eye(4), model)
    lab = tmp_path / "sub-x_dseg.nii.gz"
    nib.save(nib.Nifti1Image(np.full((8, 8, 8), 9, np.uint8), np.eye(4)), lab)
    with pytest.raises(ValueError, match=r"sub-x_dseg\.nii\.gz.*feta"):
        file_map(lab, 1.0, "feta")


def test_foreign_label_schemes_map_to_the_tissues(tmp_path: Path) -> None:
    """FeTA's and Fidon's label orders (the corpus callosum is white matter)."""
    tissues = {
        "feta": [1, 2, 3, 4, 5, 6, 7],
        "fidon": [3, 4, 5, 1, 2, 6, 7, 3],
    }
    for scheme, expected in tissues.items():
        data = np.zeros((len(expected) + 2, 3, 3), np.uint8)
        data[1:-1, 1, 1] = np.arange(1, len(expected) + 1)
        path = tmp_path / f"{scheme}_dseg.nii.gz"
        nib.save(nib.Nifti1Image(data, np.eye(4)), path)
        mapped = file_map(path, 1.0, scheme)
        assert list(to_tissues(mapped[mapped > 0])) == expected, scheme


def test_small_volume_is_padded_to_one_window(model) -> None:
    vol = simulated_volume(22.0, 9101, voxel_mm=1.6)  # smaller than a 64-voxel window
    prob = predict_probabilities(vol.image, vol.affine, model)
    assert prob.shape == (N_CLASSES, *vol.image.shape)
    assert np.allclose(prob.sum(0), 1.0, atol=1e-4)


def test_shipped_network_on_held_out_subjects(model, card) -> None:
    """Issue check (#6, #25): seeds never used in training, 22-36 w, the simulator's T2w
    contrast: mean Dice >= 0.88 (measured 0.909 after the real-anatomy training), no
    tissue below 0.75 (0.8 mm volumes, like reconstructions)."""
    trained = set(card["training_data"]["simulated"]["seeds"])
    assert not trained & {s for _, s in HELD_OUT}
    per_tissue = {t: [] for t in TISSUES.values()}
    for age, seed in HELD_OUT:
        vol = simulated_volume(age, seed, voxel_mm=0.8)
        dice = tissue_dice(_segment(vol, model), vol.labels)
        print(f"{age:.0f} w: " + " ".join(f"{k} {v:.3f}" for k, v in dice.items()))
        for k, v in dice.items():
            per_tissue[k].append(v)
    means = {k: float(np.mean(v)) for k, v in per_tissue.items()}
    print("mean per tissue:", {k: round(v, 3) for k, v in means.items()})
    assert np.mean(list(means.values())) >= 0.88
    assert min(means.values()) >= 0.75


def test_unseen_contrast(model) -> None:
    """Issue check: a contrast no training sample was drawn from (T1w-like, CSF dark)
    keeps the mean Dice >= 0.80 (measured 0.831 at 22 / 28 / 34 weeks; the cortex, 0.47-0.69,
    is the weak tissue: part of it is called eCSF, as the first bright layer inside a dark
    rim is CSF in T2w)."""
    dice = []
    for age, seed in HELD_OUT[::2]:
        vol = simulated_volume(age, seed, voxel_mm=0.8, unseen_contrast=True)
        d = tissue_dice(_segment(vol, model), vol.labels)
        print(f"unseen contrast {age:.0f} w: mean {np.mean(list(d.values())):.3f}", d)
        dice.append(np.mean(list(d.values())))
    assert np.mean(dice) >= 0.80


@pytest.mark.slow
def test_network_beats_atlas_propagation(model) -> None:
    """Issue check: on the same held-out subjects (22 / 28 / 34 weeks, random scanner pose,
    both label maps pulled back to the subject through the registration's transforms) the
    network's mean tissue Dice beats the atlas labels of the registration stage (measured
    0.881 vs 0.875: better at 28 and 34 weeks, 0.899 vs 0.886 and 0.903 vs 0.876, worse at 22
    weeks, 0.842 vs 0.863, since the weights also learned real anatomy; the shipped atlas is
    built from the simulator these subjects come from)."""
    rows = [
        network_vs_atlas(age, seed, model, REPO / "atlases" / "earlybrain-fetal")
        for age, seed in HELD_OUT[::2]
    ]
    net = [float(np.mean(list(n.values()))) for n, _ in rows]
    atlas = [float(np.mean(list(a.values()))) for _, a in rows]
    print("network", np.round(net, 4), "atlas propagation", np.round(atlas, 4))
    assert np.mean(net) > np.mean(atlas)


@pytest.mark.shared_data
def test_training_and_fine_tuning_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The training entry point end to end (tiny): weights load, the card records the
    data; fine-tuning from those weights on a lab's own FeTA-style label map and the real
    anatomies' training weeks, validated on the held-out weeks' real images."""
    card = train_segmentation(
        tmp_path / "a", seed=1, epochs=1, steps_per_epoch=2, n_train_subjects=2,
        n_val_subjects=1, n_infant_subjects=1, device="cpu", workers=1, threads=2,
    )  # fmt: skip
    weights = tmp_path / "a" / "unet3d_weights.pt"
    assert load_model(weights, device="cpu").arch == DEFAULT_ARCH
    assert card["training_data"]["label_maps"] == {
        "simulated": 2, "infant": 1, "atlas": 0, "extra": 0, "real": 0,
    }  # fmt: skip
    assert len(card["validation_infant"]["subjects"]) == 1
    assert set(card["training_data"]["simulated"]["seeds"]) == set(subject_seeds(1, 2, "train"))
    assert set(card["validation"]["dice_per_tissue"]) == set(TISSUES.values())
    fidon_or_skip()
    # one real image per split keeps this test short; the shipped card has them all
    monkeypatch.setattr(train_mod, "fidon_volumes", lambda split: fidon_volumes(split)[:1])
    ph = make_phantom(30.0, 77, voxel_mm=1.2)
    feta = np.zeros(ph.labels.shape, np.uint8)
    brain = (ph.labels >= 1) & (ph.labels <= 12)
    feta[brain] = to_tissues(ph.labels)[brain]
    own = tmp_path / "lab_dseg.nii.gz"
    nib.save(nib.Nifti1Image(feta, ph.affine), own)
    tuned = train_segmentation(
        tmp_path / "b", seed=1, epochs=1, steps_per_epoch=2, n_train_subjects=1,
        n_val_subjects=1, n_infant_subjects=1, label_maps=[own], label_scheme="feta",
        init_weights=weights, real_anatomy=True, device="cpu", workers=1, threads=2,
    )  # fmt: skip
    assert tuned["init_weights"] == str(weights)
    maps = tuned["training_data"]["label_maps"]
    assert maps["extra"] == 1 and maps["real"] == len(shared_data.fidon_split("train"))
    # half to the lab's own maps, half of the rest to the real anatomies
    weights = tuned["training_data"]["sampling_weights"]
    assert weights["extra"] == pytest.approx(0.5) and weights["real"] == pytest.approx(0.25)
    for key, split in (("validation_real", "val"), ("validation_real_training_weeks", "train")):
        real = tuned[key]
        assert [s["time_point"] for s in real["subjects"]] == [shared_data.fidon_split(split)[0]]
        assert 0.0 <= real["dice_mean"] <= 1.0
    assert card["validation_real_training_weeks"] is None


def test_weights_round_trip_in_half_precision(tmp_path: Path) -> None:
    net = build_network()
    path = save_weights(tmp_path / "w.pt", net, DEFAULT_ARCH, 1.0, 99.0)
    loaded = load_model(path, device="cpu")
    x = torch.rand(1, 1, 64, 64, 64)
    with torch.no_grad():
        a, b = net.eval()(x), loaded.net(x)
    assert torch.allclose(a, b, atol=0.05)
