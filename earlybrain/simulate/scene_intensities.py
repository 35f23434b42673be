"""The tissue classes of a simulated pregnancy and the intensities a scene gives them.

A scene's anatomy is a label map (`uterus`); what the scanner makes of it is drawn per
scene here: each class an intensity within its range for a single-shot fast spin echo
(HASTE/SSFSE) or a balanced SSFP (TRUFI/FIESTA), or entirely at random, and each fetal
brain either random per tissue (SynthSeg-style) or its own image through a random
gamma, floor and gain. Keeping the look apart from the anatomy lets one be varied
without redrawing the other.
"""

from __future__ import annotations

import numpy as np

from earlybrain.simulate.fetal_head import FetalHead

# scene classes: (HASTE range, bSSFP range, texture amplitude); amniotic fluid ~ 1
CLASSES: dict[str, tuple[tuple[float, float], tuple[float, float], float]] = {
    "air": ((0.0, 0.015), (0.0, 0.015), 0.0),
    "fat": ((0.45, 0.85), (0.7, 1.0), 0.08),
    "muscle": ((0.08, 0.28), (0.15, 0.35), 0.1),
    "liver": ((0.12, 0.3), (0.25, 0.45), 0.06),
    "kidney": ((0.3, 0.55), (0.35, 0.6), 0.1),
    "bowel_wall": ((0.15, 0.35), (0.2, 0.45), 0.1),
    "bowel_fluid": ((0.55, 1.0), (0.6, 1.0), 0.1),
    "bowel_solid": ((0.2, 0.55), (0.25, 0.55), 0.25),
    "gas": ((0.0, 0.06), (0.0, 0.06), 0.2),
    "mesentery": ((0.35, 0.8), (0.55, 0.95), 0.15),
    "bladder": ((0.85, 1.05), (0.8, 1.0), 0.02),
    "vessel": ((0.0, 0.12), (0.75, 1.0), 0.1),
    "bone": ((0.15, 0.4), (0.2, 0.45), 0.15),
    "disc": ((0.45, 0.75), (0.4, 0.7), 0.05),
    "csf": ((0.85, 1.05), (0.85, 1.05), 0.02),
    "myometrium": ((0.28, 0.55), (0.3, 0.55), 0.12),
    "placenta": ((0.35, 0.65), (0.4, 0.7), 0.14),
    "amniotic": ((0.9, 1.1), (0.9, 1.1), 0.01),
    "f_skin": ((0.35, 0.6), (0.4, 0.65), 0.06),
    "f_tissue": ((0.25, 0.5), (0.25, 0.5), 0.08),
    "f_lung": ((0.5, 0.85), (0.45, 0.75), 0.05),
    "f_heart": ((0.05, 0.3), (0.7, 1.0), 0.1),
    "f_liver": ((0.15, 0.35), (0.3, 0.5), 0.05),
    "f_fluid": ((0.85, 1.05), (0.85, 1.05), 0.02),
    "f_bone": ((0.06, 0.25), (0.15, 0.3), 0.1),
    "cord": ((0.3, 0.65), (0.5, 0.85), 0.1),
    "skull": ((0.04, 0.25), (0.1, 0.3), 0.1),
    "scalp": ((0.3, 0.6), (0.4, 0.7), 0.06),
    "face": ((0.3, 0.55), (0.35, 0.6), 0.08),
    "eye": ((0.75, 1.05), (0.8, 1.05), 0.02),
}
CLASS_ID = {name: i for i, name in enumerate(CLASSES)}
RANDOM_BASE = 64  # random-partition labels: RANDOM_BASE + cell % RANDOM_CELLS
RANDOM_CELLS = 190
N_LABELS = RANDOM_BASE + RANDOM_CELLS


def draw_intensities(
    rng: np.random.Generator,
    contrast: str,
    heads: list[FetalHead],
    p_random_contrast: float,
    p_random_brain: float,
) -> tuple[np.ndarray, np.ndarray, float, list[tuple[str, object]]]:
    """(intensity per label, texture amplitude per label, amniotic fluid intensity, one
    brain map per head) of one scene with `contrast` ("haste" or "bssfp")."""
    col = 1 if contrast == "bssfp" else 0
    lut = np.zeros(N_LABELS, np.float32)
    amp = np.zeros(N_LABELS, np.float32)
    random_all = rng.random() < p_random_contrast
    for name, (haste, bssfp, tex) in CLASSES.items():
        lo, hi = (haste, bssfp)[col]
        lut[CLASS_ID[name]] = rng.uniform(0.0, 1.0) if random_all else rng.uniform(lo, hi)
        amp[CLASS_ID[name]] = tex * rng.uniform(0.5, 2.0)
    lut[CLASS_ID["air"]] = rng.uniform(0.0, 0.015)
    amp[CLASS_ID["air"]] = 0.0
    lut[RANDOM_BASE:] = rng.uniform(0.0, 1.0, RANDOM_CELLS)
    amp[RANDOM_BASE:] = rng.uniform(0.0, 0.25, RANDOM_CELLS)
    fluid = float(lut[CLASS_ID["amniotic"]])
    # per head: its brain tissues at random (SynthSeg-style), or its own image
    # through a random gamma, floor (bSSFP flattens brain contrast) and gain
    brain_maps: list[tuple[str, object]] = []
    for head in heads:
        if rng.random() < p_random_brain or random_all:
            table = rng.uniform(0.02, 1.05, head.n_tissues + 1).astype(np.float32)
            brain_maps.append(("labels", table))
        else:
            gamma = rng.uniform(0.75, 1.3)
            bssfp = contrast == "bssfp"
            floor = rng.uniform(0.3, 0.55) if bssfp else rng.uniform(0.0, 0.1)
            gain = fluid * rng.uniform(0.85, 1.08)
            brain_maps.append(("image", (gamma, floor, gain)))
    return lut, amp, fluid, brain_maps
