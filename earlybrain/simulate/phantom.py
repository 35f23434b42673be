"""Spatiotemporal brain phantom: label map and MR contrast for a fetus or an infant.

The head is built in a head frame (RAS millimetres, origin at the brain centre) from
ellipsoids sized by published biometry (see `biometry`), with:
- cortical folding: the cerebral surface is pushed inward along the zero set of a
  random smooth field on the sphere (a network of sulci), with depth and density
  growing with age, plus a Sylvian fissure that deepens from 20 weeks;
- a cortical ribbon of age-dependent thickness that follows the folded surface
  (distance transform), so the cortex folds with it;
- lateral ventricles whose size relative to the brain shrinks with age;
- per-subject variation of shape, size and tissue intensities drawn from the
  subject seed only, so the same subject seen at several ages differs only by age.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from earlybrain.anatomy import biometry
from earlybrain.anatomy.labels import BODY, FLUID, SCALP, SKULL, label_volumes_ml

# between-subject SD of the rate of myelination (a fraction of postnatal age): an
# assumption; published milestone ranges (e.g. "4-7 months") mix it with observer spread
MATURATION_SD = 0.05
MATURATION_STREAM = 8


@dataclass(frozen=True)
class SubjectTraits:
    """What makes one subject differ from another at the same age (age-independent)."""

    size: float  # global scale factor
    aspect: tuple[float, float, float]  # x, y, z shape factors
    ventricle: float  # ventricle size factor (1 = typical)
    fold_seed: int  # seed of the folding pattern
    intensity: dict[int, float]  # multiplicative per-class contrast variation
    texture_seed: int
    # infants: the myelination clock runs at this rate (1 = typical; `simulate.contrast`)
    maturation: float = 1.0

    @classmethod
    def draw(cls, seed: int, ventricle_factor: float = 1.0) -> SubjectTraits:
        rng = np.random.default_rng(seed)
        # its own stream, so that adding it left every other trait of every seed as it was
        maturation = np.random.default_rng([seed, MATURATION_STREAM]).normal(1.0, MATURATION_SD)
        return cls(
            size=float(rng.normal(1.0, 0.035)),
            aspect=tuple(float(v) for v in rng.normal(1.0, 0.025, 3)),
            ventricle=float(ventricle_factor * rng.normal(1.0, 0.08)),
            fold_seed=int(rng.integers(2**31)),
            intensity={k: float(rng.normal(1.0, 0.05)) for k in range(1, 17)},
            texture_seed=int(rng.integers(2**31)),
            maturation=float(maturation),
        )


@dataclass(frozen=True)
class Anatomy:
    """Geometric parameters of one head at one age (millimetres)."""

    semi_axes: tuple[float, float, float]  # cerebrum half-width, half-length, half-height
    ecsf_mm: float
    skull_mm: float
    scalp_mm: float
    cortex_mm: float
    tcd_mm: float
    ventricle_scale: float  # relative to cerebrum
    fold_depth: float  # fraction of the radius
    fold_frequency: float
    sylvian_depth: float
    myelination: float = 0.0  # 0 unmyelinated .. 1 adult-like WM (infants)


@dataclass
class Phantom:
    """A head on a grid: detailed labels (0..16) and its head-frame affine."""

    labels: np.ndarray
    affine: np.ndarray  # voxel -> head frame (mm)
    anatomy: Anatomy
    traits: SubjectTraits
    age_weeks: float
    kind: str  # "fetal" | "infant"
    extras: dict = field(default_factory=dict)

    def volumes_ml(self) -> dict[str, float]:
        return label_volumes_ml(self.labels, self.affine)

    def brain_volume_ml(self) -> float:
        """Brain tissue, excluding CSF spaces (eCSF, ventricles)."""
        v = self.volumes_ml()
        return sum(val for name, val in v.items() if name != "eCSF" and "ventricle" not in name)


def fetal_anatomy(ga_weeks: float, traits: SubjectTraits) -> Anatomy:
    """Head geometry of a fetus of `ga_weeks` from biparietal and transcerebellar diameters."""
    maturity = float(np.clip((ga_weeks - 23.0) / 15.0, 0.0, 1.0))
    ecsf = 3.6 - 1.2 * float(np.clip((ga_weeks - 21) / 17, 0, 1))
    skull = 1.5
    bpd = biometry.bpd_mm(ga_weeks) * traits.size
    half_w = bpd / 2 - ecsf - skull
    half_l = (bpd / 0.80) / 2 - ecsf - skull  # cephalic index ~0.80
    half_h = 0.80 * half_w
    sx, sy, sz = traits.aspect
    return Anatomy(
        semi_axes=(half_w * sx, half_l * sy, half_h * sz),
        ecsf_mm=ecsf,
        skull_mm=skull,
        scalp_mm=2.5,
        cortex_mm=1.4 + 0.04 * (ga_weeks - 21.0),
        tcd_mm=biometry.tcd_mm(ga_weeks) * traits.size,
        # atrial width stays ~7 mm while the brain grows: relative size falls with age
        ventricle_scale=(1.25 - 0.45 * float(np.clip((ga_weeks - 21) / 17, 0, 1)))
        * traits.ventricle,
        fold_depth=0.22 * maturity**1.2,
        fold_frequency=1.4 + 2.2 * maturity,
        sylvian_depth=0.05 + 0.13 * float(np.clip((ga_weeks - 20.0) / 12.0, 0, 1)),
    )


def infant_anatomy(months: float, traits: SubjectTraits) -> Anatomy:
    """Head geometry of a term-born infant `months` after birth."""
    vol_mm3 = biometry.infant_brain_volume_ml(months) * 1000.0 * traits.size**3
    # brain ellipsoid with L/W 1.2 and H/W 0.82; tissue fills ~93 % of it
    half_w = (vol_mm3 / 0.93 / (4.0 / 3.0 * np.pi * 1.2 * 0.82)) ** (1.0 / 3.0)
    sx, sy, sz = traits.aspect
    return Anatomy(
        semi_axes=(half_w * sx, 1.2 * half_w * sy, 0.82 * half_w * sz),
        ecsf_mm=3.0 + 0.5 * min(months, 12) / 12,
        skull_mm=2.5 + 1.0 * min(months, 24) / 24,
        scalp_mm=3.5,
        cortex_mm=2.3 + 0.3 * min(months, 24) / 24,
        tcd_mm=biometry.infant_tcd_mm(months) * traits.size,
        ventricle_scale=0.75 * traits.ventricle,
        fold_depth=0.24,
        fold_frequency=3.8,
        sylvian_depth=0.18,
        myelination=float(1.0 / (1.0 + np.exp(-(months - 7.0) / 2.5))),
    )


def _fold_field(directions: np.ndarray, frequency: float, seed: int) -> np.ndarray:
    """A smooth random field on the unit sphere (unit variance); its zero set is the sulci."""
    rng = np.random.default_rng(seed)
    n_waves = 32
    u = rng.normal(size=(n_waves, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    # each wave gets its own frequency around the mean so the pattern is not periodic
    freqs = frequency * rng.uniform(0.7, 1.3, n_waves)
    phase = rng.uniform(0, 2 * np.pi, n_waves)
    flat = directions.reshape(-1, 3)
    f = np.empty(flat.shape[0])
    chunk = 1 << 18  # bounds memory: the (points x waves) product is large at 0.8 mm
    for start in range(0, flat.shape[0], chunk):
        proj = flat[start : start + chunk] @ u.T
        f[start : start + chunk] = np.cos(2 * np.pi * proj * freqs + phase).sum(axis=-1)
    return (f / np.sqrt(n_waves / 2.0)).reshape(directions.shape[:-1])


def _ellipsoid(pts: np.ndarray, centre: tuple[float, ...], semi: tuple[float, ...]) -> np.ndarray:
    d = (pts - np.asarray(centre)) / np.asarray(semi)
    return (d**2).sum(axis=-1)


def head_extent_mm(anat: Anatomy) -> np.ndarray:
    """Half-size of a box that contains the whole head (scalp included) plus margin."""
    a, b, c = anat.semi_axes
    pad = anat.ecsf_mm + anat.skull_mm + anat.scalp_mm + 6.0
    return np.array([a + pad, b + pad, 1.12 * c + pad])


def body_mask(pts: np.ndarray, anat: Anatomy) -> np.ndarray:
    """The fetal/infant neck and trunk: an analytic shape below and behind the head."""
    a, b, c = anat.semi_axes
    neck = _ellipsoid(pts, (0, -0.35 * b, -1.15 * c), (0.55 * a, 0.5 * b, 0.6 * c)) <= 1
    trunk = _ellipsoid(pts, (0, -0.5 * b, -2.6 * c), (1.25 * a, 1.0 * b, 1.5 * c)) <= 1
    return neck | trunk


def build_labels(
    anat: Anatomy, traits: SubjectTraits, voxel_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise the head on an isotropic grid; returns (labels, voxel->head-frame affine)."""
    half = head_extent_mm(anat)
    shape = tuple(int(np.ceil(2 * h / voxel_mm)) + 1 for h in half)
    # centre the grid on the head, shifted down to make room for the posterior fossa
    zshift = -0.12 * anat.semi_axes[2]
    origin = np.array([-(shape[0] - 1) / 2, -(shape[1] - 1) / 2, -(shape[2] - 1) / 2]) * voxel_mm
    origin[2] += zshift
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = origin
    axes = [origin[i] + voxel_mm * np.arange(shape[i]) for i in range(3)]
    X, Y, Z = np.meshgrid(*axes, indexing="ij")
    pts = np.stack([X, Y, Z], axis=-1)
    a, b, c = anat.semi_axes

    # --- infratentorial structures -------------------------------------------------
    tcd = anat.tcd_mm
    cb_centre = (0.0, -0.62 * b, -0.70 * c)
    cb_semi = (tcd / 2, 0.26 * tcd, 0.30 * tcd)
    cerebellum = _ellipsoid(pts, cb_centre, cb_semi) <= 1
    bs_centre = (0.0, -0.18 * b, -0.78 * c)
    bs_semi = (0.15 * a, 0.17 * b, 0.45 * c)
    brainstem = (_ellipsoid(pts, bs_centre, bs_semi) <= 1) & ~cerebellum
    infra = cerebellum | brainstem

    # --- cerebrum with folding --------------------------------------------------------
    rel = pts / np.array([a, b, c])
    rho = np.linalg.norm(rel, axis=-1)
    dirs = rel / np.maximum(rho[..., None], 1e-6)
    fold = _fold_field(dirs, anat.fold_frequency, traits.fold_seed)
    sulci = np.exp(-((fold / 0.28) ** 2))
    nx, ny, nz = dirs[..., 0], dirs[..., 1], dirs[..., 2]
    lateral = np.clip((np.abs(nx) - 0.35) / 0.3, 0, 1)
    sylvian = np.exp(-(((nz - (-0.05 - 0.35 * ny)) / 0.09) ** 2)) * lateral * (ny > -0.55)
    surface = 1.0 - anat.fold_depth * sulci - anat.sylvian_depth * sylvian
    cerebrum = rho <= surface
    # interhemispheric fissure, down to the level of the corpus callosum
    fissure_half = 0.6 + 0.012 * a
    cerebrum &= ~((np.abs(X) < fissure_half) & (rho > 0.42))
    # tentorium: a thin CSF gap between cerebrum and posterior fossa structures
    dist_infra = ndimage.distance_transform_edt(~infra, sampling=voxel_mm)
    cerebrum &= dist_infra > 1.2

    dist_out = ndimage.distance_transform_edt(cerebrum, sampling=voxel_mm)
    # a voxel centre at distance d from the nearest outside centre lies d - voxel/2 deep
    cortex = cerebrum & (dist_out < anat.cortex_mm + voxel_mm / 2)
    inner = cerebrum & ~cortex

    v = anat.ventricle_scale
    ventricles = np.zeros_like(cerebrum)
    deep_gm = np.zeros_like(cerebrum)
    for s in (-1.0, 1.0):
        body = _ellipsoid(
            pts, (s * 0.19 * a, 0.0, 0.17 * c), (0.12 * a * v, 0.52 * b * v, 0.13 * c * v)
        )
        atrium = _ellipsoid(
            pts, (s * 0.27 * a, -0.40 * b, 0.02 * c), (0.14 * a * v, 0.24 * b * v, 0.20 * c * v)
        )
        temporal = _ellipsoid(
            pts, (s * 0.40 * a, -0.22 * b, -0.22 * c), (0.07 * a * v, 0.26 * b * v, 0.08 * c * v)
        )
        ventricles |= (body <= 1) | (atrium <= 1) | (temporal <= 1)
        deep_gm |= (
            _ellipsoid(pts, (s * 0.20 * a, -0.08 * b, -0.18 * c), (0.17 * a, 0.26 * b, 0.19 * c))
            <= 1
        )
    ventricles &= inner
    deep_gm &= inner & ~ventricles
    wm = inner & ~ventricles & ~deep_gm

    # --- intracranial envelope, skull, scalp -----------------------------------------
    e = anat.ecsf_mm
    envelope = _ellipsoid(pts, (0, 0, 0), (a + e, b + e, c + e)) <= 1
    envelope |= _ellipsoid(pts, cb_centre, tuple(s + e for s in cb_semi)) <= 1
    envelope |= _ellipsoid(pts, bs_centre, (bs_semi[0] + e, bs_semi[1] + e, bs_semi[2] + e)) <= 1
    envelope = ndimage.binary_closing(envelope, iterations=2) | envelope
    dist_env = ndimage.distance_transform_edt(~envelope, sampling=voxel_mm)
    skull = ~envelope & (dist_env <= anat.skull_mm)
    scalp = ~envelope & (dist_env > anat.skull_mm) & (dist_env <= anat.skull_mm + anat.scalp_mm)

    labels = np.full(shape, FLUID, dtype=np.uint8)
    labels[body_mask(pts, anat)] = BODY
    labels[scalp] = SCALP
    labels[skull] = SKULL
    labels[envelope] = 1  # eCSF fills whatever tissue does not
    left = X < 0  # RAS: +x is the subject's right
    for lab_l, lab_r, mask in (
        (2, 3, cortex),
        (4, 5, wm),
        (6, 7, ventricles),
        (10, 11, deep_gm),
        (8, 9, cerebellum & envelope),
    ):
        labels[mask & left] = lab_l
        labels[mask & ~left] = lab_r
    labels[brainstem & envelope] = 12
    return labels, affine


def make_phantom(
    age: float,
    seed: int,
    *,
    kind: str = "fetal",
    voxel_mm: float = 0.8,
    ventricle_factor: float = 1.0,
) -> Phantom:
    """Phantom of one subject (`seed`) at one age: weeks GA for fetuses, months for infants."""
    traits = SubjectTraits.draw(seed, ventricle_factor)
    if kind == "fetal":
        if not 18.0 <= age <= 42.0:
            raise ValueError(f"fetal phantom needs 18-42 weeks GA, got {age}")
        anat = fetal_anatomy(age, traits)
        age_weeks = age
    elif kind == "infant":
        if not 0.0 <= age <= 30.0:
            raise ValueError(f"infant phantom needs 0-30 months, got {age}")
        anat = infant_anatomy(age, traits)
        age_weeks = biometry.months_to_pma_weeks(age)
    else:
        raise ValueError(f"kind must be 'fetal' or 'infant', got {kind!r}")
    labels, affine = build_labels(anat, traits, voxel_mm)
    return Phantom(labels, affine, anat, traits, age_weeks, kind, {"anatomy": asdict(anat)})
