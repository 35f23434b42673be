"""Benchmark fetal brain masking: Dice per stack on real and simulated sets, seconds per
stack and peak memory.

Usage: python bench/masking.py [--weights PATH] [--threads 2] [--device cpu]
                               [--sets mial,fetpype,clinical,real-anatomy,head-centred]
                               [--subjects 16]

Sets (the data each figure is measured on is named in its line):
- mial: ../shared/data/mial-sub01, six real clinical stacks (1.5 T HASTE, 320 x 320 x
  22, 36 cm field of view) against their hand-drawn masks. Validation only: never
  trained on, no parameter chosen on it.
- fetpype: ../shared/data/fetpype-simu001 (FaBiAN-simulated, skull-stripped).
- clinical: held-out simulated fetuses of 21-38 weeks (phantom brains) in a simulated
  clinical field of view (realistic scenes, one stack each).
- real-anatomy: the held-out weeks (32-34) of Fidon's atlas in simulated clinical stacks.
- head-centred: the older simulator's head-centred stacks (demo protocol).
Prints one line per stack and a JSON summary per set; the speed target is <= 10 s per
320 x 320 x 22 stack on 2 CPU cores (the mial stacks). With --card, the real-data
figures (mial, fetpype) are recorded in the weights' card.json under
"validation_real" (measured after training; nothing there was used to train or tune).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from earlybrain import shared_data
from earlybrain.io.atomic import write_json_atomic
from earlybrain.preprocess.masking import load_model, mask_stack
from earlybrain.preprocess.masking.training_data import (
    SubjectMix,
    real_anatomies,
    simulate_subject_stacks,
)
from earlybrain.preprocess.train_masking import dice
from earlybrain.simulate.acquisition import simulate_stacks
from earlybrain.simulate.cohort import PRESETS
from earlybrain.simulate.phantom import make_phantom
from earlybrain.simulate.uterus import REALISTIC
from earlybrain.training import derived_seeds
from earlybrain.weights import CARD_NAME

BENCH_CODE = 444  # seed-derivation code of the bench's simulated subjects (held out)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def real_sets() -> dict[str, list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]]:
    out = {}
    for name, key, pairs in (
        (shared_data.MIAL, "mial", shared_data.mial_pairs),
        (shared_data.FETPYPE, "fetpype", shared_data.fetpype_pairs),
    ):
        root = shared_data.dataset(name)
        if root is None:
            continue
        rows = []
        for r, (stack, mask) in enumerate(pairs(root), start=1):
            img = nib.load(stack)
            truth = np.asanyarray(nib.load(mask).dataobj) > 0
            rows.append((f"run-{r}", np.asanyarray(img.dataobj), img.affine, truth))
        out[key] = rows
    return out


def simulated_sets(n: int) -> dict[str, list]:
    seeds = derived_seeds(0, BENCH_CODE, n)
    ages = np.linspace(21, 38, n)
    clinical, real, centred = [], [], []
    base = SubjectMix(p_head_centred=0.0, p_twins=0.0, p_missed_head=0.0, stacks=1, scene=REALISTIC)
    for ga, seed in zip(ages, seeds, strict=True):
        mix = SubjectMix(
            **{**base.__dict__, "ga_range": (float(ga), float(ga)), "p_real_anatomy": 0.0}
        )
        st = simulate_subject_stacks(seed, mix, [])[0]
        clinical.append(
            (f"{ga:.1f}w {st['info']['contrast']}", st["data"], st["affine"], st["mask"] > 0)
        )
    anat = real_anatomies("val")
    for i, folder in enumerate(anat):
        mix = SubjectMix(**{**base.__dict__, "p_real_anatomy": 1.0, "real_split": "val"})
        for k in range(2):
            st = simulate_subject_stacks(seeds[i] + 7 * k + 1, mix, [folder])[0]
            real.append((f"{folder.name} #{k}", st["data"], st["affine"], st["mask"] > 0))
    preset = PRESETS["demo"]
    for ga, seed in zip(ages[:: max(1, n // 4)], seeds[:: max(1, n // 4)], strict=False):
        ph = make_phantom(float(ga), seed, kind="fetal", voxel_mm=preset.truth_voxel_mm)
        st = simulate_stacks(ph, 1, "moderate", seed + 1, preset.protocol).stacks[0]
        centred.append((f"{ga:.1f}w", st.data, st.affine, st.mask > 0))
    return {"clinical": clinical, "real-anatomy": real, "head-centred": centred}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sets", default="mial,fetpype,clinical,real-anatomy,head-centred")
    ap.add_argument("--subjects", type=int, default=16, help="simulated clinical subjects")
    ap.add_argument("--card", action="store_true", help="record real-data figures in card.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    wanted = args.sets.split(",")
    model = load_model(args.weights, args.device)
    sets = real_sets()
    if {"clinical", "real-anatomy", "head-centred"} & set(wanted):
        sets |= simulated_sets(args.subjects)
    real: dict[str, dict] = {}
    for name in wanted:
        rows = sets.get(name)
        if not rows:
            print(f"{name}: not available")
            continue
        scores, secs = [], []
        for label, data, affine, truth in rows:
            t = time.perf_counter()
            res = mask_stack(data, affine, weights=model)
            secs.append(time.perf_counter() - t)
            scores.append(dice(res.mask, truth))
            print(
                f"{name} {label} {data.shape}: Dice {scores[-1]:.4f}, {secs[-1]:.1f} s"
                + (f" [{res.reason}]" if res.reason else "")
            )
        summary = {
            "set": name,
            "n_stacks": len(rows),
            "dice_mean": round(float(np.mean(scores)), 4),
            "dice_min": round(float(np.min(scores)), 4),
            "seconds_per_stack": round(float(np.mean(secs)), 2),
            "seconds_max": round(float(np.max(secs)), 2),
            "threads": args.threads,
            "device": args.device,
            "peak_rss_mb": round(peak_mb()),
        }
        print(json.dumps(summary))
        if name in ("mial", "fetpype"):
            real[name] = summary | {
                "per_stack": {r[0]: round(d, 4) for r, d in zip(rows, scores, strict=True)}
            }
    if args.card and real:
        record_real(Path(model.path).with_name(CARD_NAME), real, model.sha256)


DESCRIPTIONS = {
    "mial": "mial-sub01 (CC0): six real clinical 1.5 T HASTE stacks, 36 cm field of view, "
    "against hand-drawn intracranial masks; validation only (never trained on, no threshold "
    "or parameter chosen on it)",
    "fetpype": "fetpype-simu001 (MIT): three FaBiAN-simulated skull-stripped stacks; their "
    "masks are image > 0",
}


def record_real(card_path: Path, real: dict[str, dict], sha256: str) -> None:
    """Add the real-data figures to the weights' card (bench/masking.py --card)."""
    card = json.loads(card_path.read_text())
    card["validation_real"] = {
        name: {"data": DESCRIPTIONS[name], "weights_sha256": sha256, **fig}
        for name, fig in real.items()
    }
    write_json_atomic(card_path, card)
    print(f"recorded in {card_path}")


if __name__ == "__main__":
    main()
