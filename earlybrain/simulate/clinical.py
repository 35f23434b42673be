"""Clinical fetal stacks of a simulated uterus, as they come off the scanner.

A stack is planned like a radiographer plans one: mostly on the fetal head (its axial,
coronal or sagittal plane, with planning error), sometimes on the mother; a square or
rectangular field of view of 200-450 mm with the head anywhere in it; 2-6 mm slices
with or without a gap, interleaved, while the fetus moves and the mother breathes.
Each slice integrates the scene through its slice profile (Gaussian, FWHM = thickness)
and is blurred in plane (FWHM 1.2 pixels) and, for single-shot sequences, along the
phase-encoding direction (partial Fourier, echo-train decay). The receive coil shades
the image (brighter near the skin), 3 T scanners darken its centre (dielectric
effect), anatomy outside a short phase field of view folds over, and some slices lose
signal. The image is stored as a scanner would: int16, uint16 or float, at any scale,
with its array axes in any order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from earlybrain.geometry import rigid_matrix
from earlybrain.simulate.acquisition import FWHM_TO_SIGMA, rician_noise
from earlybrain.simulate.motion import interleaved_order, motion_trajectory
from earlybrain.simulate.uterus import UterusScene

# rows: in-plane u, in-plane v, slice normal, in the head frame (x R-L, y A-P, z S-I)
PLANES = {
    "axial": np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1]]),
    "coronal": np.array([[1.0, 0, 0], [0, 0, 1], [0, 1, 0]]),
    "sagittal": np.array([[0.0, 1, 0], [0, 0, 1], [1, 0, 0]]),
}


@dataclass(frozen=True)
class ClinicalProtocol:
    """Ranges the acquisition parameters are drawn from."""

    fov_mm: tuple[float, float] = (200.0, 450.0)
    inplane_mm: tuple[float, float] = (0.7, 1.6)
    max_matrix: int = 400
    thickness_mm: tuple[float, float] = (2.0, 6.0)
    gap: tuple[float, float] = (0.0, 0.25)  # slice spacing = thickness * (1 + gap)
    p_head_planned: float = 0.75
    max_planning_error_deg: float = 15.0
    p_head_centred: float = 0.5  # else anywhere in the field of view
    coverage: tuple[float, float] = (-0.3, 0.9)  # slab beyond the head, in head lengths
    motion_p: tuple[float, float, float] = (0.25, 0.45, 0.3)  # none, moderate, severe
    p_partial_fourier: float = 0.75
    p_fold: float = 0.2
    p_3t: float = 0.4
    noise: tuple[float, float] = (0.008, 0.06)  # Rician sigma, amniotic fluid ~ 1
    p_dropout: float = 0.3
    p_permute: float = 0.5  # array axes stored in another order
    orientations: tuple[str, ...] = field(default=("axial", "coronal", "sagittal"))
    miss_head: bool = False  # plan the slab beside the head (a stack without a brain)


@dataclass
class ClinicalStack:
    data: np.ndarray  # as stored (int16, uint16 or float32)
    affine: np.ndarray
    mask: np.ndarray  # uint8 intracranial volume of every fetus in the scene
    info: dict[str, Any]


def _half_extent(half_axes: np.ndarray, rot: np.ndarray, direction: np.ndarray) -> float:
    """Half-extent of an ellipsoid (semi-axes in the head frame) along a scanner direction."""
    return float(np.sqrt(((rot.T @ direction) ** 2 * half_axes**2).sum()))


def _plan(
    scene: UterusScene, proto: ClinicalProtocol, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[int, int, int], dict[str, Any]]:
    placed = scene.placed[0]
    head_rot = placed.to_scene[:3, :3]
    centre = placed.to_scene[:3, 3]
    half = np.asarray(placed.head.half_axes_mm)
    if rng.random() < proto.p_head_planned:
        plane = str(rng.choice(proto.orientations))
        err = Rotation.from_euler(
            "xyz", rng.uniform(-1, 1, 3) * proto.max_planning_error_deg, degrees=True
        ).as_matrix()
        R = head_rot @ err @ PLANES[plane].T
        planning = f"fetal {plane}"
    else:
        R = Rotation.random(random_state=rng).as_matrix()
        planning = "oblique to the fetus"
    u, v, n = R[:, 0], R[:, 1], R[:, 2]
    fov = rng.uniform(*proto.fov_mm)
    s = max(rng.uniform(*proto.inplane_mm), fov / proto.max_matrix)
    phase = 1.0 if rng.random() < 0.5 else rng.uniform(0.75, 1.0)
    nu, nv = round(fov / s), round(fov * phase / s)
    spread = 0.12 if rng.random() < proto.p_head_centred else 0.38
    ou = rng.uniform(-spread, spread) * nu * s
    ov = rng.uniform(-spread, spread) * nv * s
    thick = rng.uniform(*proto.thickness_mm)
    spacing = thick * (1.0 + rng.uniform(*proto.gap))
    e_n = _half_extent(half, head_rot, n)
    if proto.miss_head:
        slab = 2 * e_n * rng.uniform(0.5, 1.2)
        off = (e_n + slab / 2 + rng.uniform(15, 60)) * rng.choice([-1.0, 1.0])
    else:
        slab = 2 * e_n * (1.0 + rng.uniform(*proto.coverage))
        off = rng.uniform(-0.15, 0.15) * 2 * e_n
    ns = int(np.clip(np.ceil(slab / spacing), 6, 60))
    A = np.eye(4)
    A[:3, :3] = np.stack([u * s, v * s, n * spacing], axis=1)
    stack_centre = centre - ou * u - ov * v - off * n
    A[:3, 3] = stack_centre - A[:3, :3] @ ((np.array([nu, nv, ns]) - 1) / 2.0)
    info = {
        "planning": planning,
        "fov_mm": round(fov, 1),
        "phase_fov": round(phase, 3),
        "inplane_mm": round(s, 3),
        "thickness_mm": round(thick, 2),
        "spacing_mm": round(spacing, 2),
    }
    return A, (nu, nv, ns), info


def _phase_blur(img: np.ndarray, keep: float, decay: float) -> np.ndarray:
    """Low-pass along the phase axis (axis 1): partial Fourier and T2 decay blur."""
    n = img.shape[1]
    k = np.abs(np.fft.fftfreq(n)) * 2  # 0 .. 1 (Nyquist)
    window = np.exp(-decay * k) * np.clip((keep - k) / 0.1 + 0.5, 0, 1)
    return np.abs(np.fft.ifft(np.fft.fft(img, axis=1) * window, axis=1)).astype(np.float32)


def _store(data: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    kind = str(rng.choice(["int16", "uint16", "float32"], p=[0.4, 0.3, 0.3]))
    if kind == "float32":
        return (data * 10 ** rng.uniform(-3, 4)).astype(np.float32), kind
    top = 32767 if kind == "int16" else 65535
    scale = 10 ** rng.uniform(1.7, np.log10(top / max(float(data.max()), 1e-6)))
    return np.clip(np.rint(data * scale), 0, top).astype(kind), kind


def _permute(
    data: np.ndarray, mask: np.ndarray, A: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same image with its array axes reordered and flipped (affine follows)."""
    perm = rng.permutation(3)
    flips = rng.random(3) < 0.5
    data, mask = np.transpose(data, perm), np.transpose(mask, perm)
    B = np.eye(4)
    B[:3, :3] = A[:3, :3][:, perm]
    B[:3, 3] = A[:3, 3]
    for ax in range(3):
        if flips[ax]:
            data, mask = np.flip(data, ax), np.flip(mask, ax)
            B[:3, 3] = B[:3, 3] + B[:3, ax] * (data.shape[ax] - 1)
            B[:3, ax] = -B[:3, ax]
    return np.ascontiguousarray(data), np.ascontiguousarray(mask), B


def simulate_clinical_stack(
    scene: UterusScene, rng: np.random.Generator, proto: ClinicalProtocol = ClinicalProtocol()
) -> ClinicalStack:
    """One stack of the scene, planned on its (first) fetal head."""
    A, shape, info = _plan(scene, proto, rng)
    nu, nv, ns = shape
    centre = scene.placed[0].to_scene[:3, 3]
    n = A[:3, 2] / np.linalg.norm(A[:3, 2])
    # acquisition order, times, fetal motion, maternal breathing
    interleave = int(rng.choice([1, 2, 3]))
    order = interleaved_order(ns, interleave)
    times = np.empty(ns)
    times[order] = rng.uniform(0.6, 1.3) * np.arange(ns)
    level = str(rng.choice(["none", "moderate", "severe"], p=list(proto.motion_p)))
    poses = motion_trajectory(times, level, int(rng.integers(2**31)))
    breath_dir = np.array([0.0, rng.uniform(0.3, 1.0), 1.0])
    breath = scene.breath_mm * np.sin(
        2 * np.pi * times / rng.uniform(3.0, 5.0) + rng.uniform(0, 6.3)
    )
    # through-plane profile, fold-over rows
    thick = info["thickness_mm"]
    nodes, weights = np.polynomial.hermite_e.hermegauss(3)
    weights = weights / weights.sum()
    offsets = nodes * thick * FWHM_TO_SIGMA
    fold = rng.random() < proto.p_fold
    ext = int(rng.uniform(0.1, 0.3) * nv) if fold else 0
    ii, jj = np.meshgrid(np.arange(nu), np.arange(-ext, nv + ext), indexing="ij")
    # shading: polynomial bias, receive coil near the skin, 3 T dielectric shading
    coef = rng.normal(0, rng.uniform(0.05, 0.35), 9)
    coil, coil_len = rng.uniform(0.0, 1.2), rng.uniform(40, 140)
    is_3t = rng.random() < proto.p_3t
    diel = rng.uniform(0.2, 0.55) if is_3t else 0.0
    diel_c = scene.uterus_centre + rng.normal(0, 30, 3)
    diel_w = rng.uniform(70, 140)
    pf = rng.random() < proto.p_partial_fourier
    keep, decay = (rng.uniform(0.45, 0.85), rng.uniform(0.0, 2.0)) if pf else (1.1, 0.0)
    sigma = rng.uniform(*proto.noise) * scene.fluid
    slice_gain = rng.normal(1.0, 0.04, ns)
    if rng.random() < proto.p_dropout:
        drop = rng.random(ns) < rng.uniform(0.03, 0.12)
        slice_gain[drop] *= rng.uniform(0.2, 0.6, int(drop.sum()))

    data = np.zeros(shape, np.float32)
    mask = np.zeros(shape, np.uint8)
    for k in range(ns):
        base = (
            A[:3, 3] + ii[..., None] * A[:3, 0] + jj[..., None] * A[:3, 1] + k * A[:3, 2]
        ).reshape(-1, 3)
        pts = np.stack([base + o * n for o in offsets])
        M = rigid_matrix(poses[k], centre)
        vals, frac = scene.sample(pts, M, breath[k] * breath_dir)
        img, fr = weights @ vals, weights @ frac
        rel = (base - scene.uterus_centre) / 150.0
        x, y, z = rel[:, 0], rel[:, 1], rel[:, 2]
        terms = np.stack([x, y, z, x * x, y * y, z * z, x * y, x * z, y * z], axis=1)
        gain = np.exp(terms @ coef)
        depth = np.clip(scene.body_depth(base.T.astype(np.float32)), 0, None)
        gain *= 1.0 + coil * np.exp(-depth / coil_len)
        if diel:
            gain *= 1.0 - diel * np.exp(-(((base - diel_c) ** 2).sum(1)) / diel_w**2)
        img = (img * gain).reshape(ii.shape)
        fr = fr.reshape(ii.shape)
        if ext:
            folded = img[:, ext : ext + nv].copy()
            att = rng.uniform(0.4, 1.0)
            folded[:, nv - ext :] += att * img[:, :ext]
            folded[:, :ext] += att * img[:, nv + ext :]
            img, fr = folded, fr[:, ext : ext + nv]
        img = ndimage.gaussian_filter(img, 1.2 * FWHM_TO_SIGMA)
        if pf:
            img = _phase_blur(img, keep, decay)
        data[..., k] = img * slice_gain[k]
        mask[..., k] = fr >= 0.5
    noisy = rician_noise(data, sigma, rng)
    stored, dtype = _store(noisy.astype(np.float32), rng)
    if rng.random() < proto.p_permute:
        stored, mask, A = _permute(stored, mask, A, rng)
    heads = [
        {
            "ga_weeks": p.head.ga_weeks,
            "source": p.head.source,
            "centre_mm": p.to_scene[:3, 3].round(1).tolist(),
        }
        for p in scene.placed
    ]
    info |= {
        "heads": heads,
        "contrast": scene.contrast,
        "background": scene.synth,
        "motion": level,
        "interleave": interleave,
        "fold_over": bool(fold),
        "field": "3T" if is_3t else "1.5T",
        "partial_fourier": bool(pf),
        "noise_sigma": round(float(sigma), 4),
        "dtype": dtype,
    }
    return ClinicalStack(stored, A, mask, info)
