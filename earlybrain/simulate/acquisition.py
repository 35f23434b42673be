"""MRI acquisition simulator: thick-slice 2D stacks of a moving fetal head, or 3D infant volumes.

Forward model of one stack voxel v of slice k (scanner millimetres):

    y(v) = bias(x_v) * PSF * scene( M_k^-1 (x_v) ) (+ Rician noise),   x_v = A_stack @ v

where M_k is the head's rigid pose while slice k was acquired (`earlybrain.geometry`
convention, about the head centre), the scene is the ground-truth volume in the
reference scanner space with amniotic fluid, the fetal body and the static maternal
tissue around it, and the PSF is Gaussian: in-plane FWHM 1.2 x pixel spacing,
through-plane FWHM = slice thickness. The isotropic in-plane part commutes with rigid
motion, so the volume is blurred by it once and only the remaining through-plane part
is integrated per slice (Gauss-Hermite quadrature).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from earlybrain.anatomy.labels import BODY, FLUID
from earlybrain.geometry import apply, rigid_matrix
from earlybrain.simulate.contrast import intensity_image, scene_value
from earlybrain.simulate.motion import interleaved_order, motion_trajectory
from earlybrain.simulate.phantom import Phantom, body_mask, head_extent_mm

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
ORIENTATIONS = ("axial", "coronal", "sagittal")
# slice-normal axis of each orientation in the head frame (x: R-L, y: A-P, z: S-I)
_PLANE_AXES = {
    "axial": np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float),
    "coronal": np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]], dtype=float),
    "sagittal": np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=float),
}


@dataclass(frozen=True)
class StackProtocol:
    """Sequence parameters of the fetal single-shot T2w stacks."""

    inplane_mm: float = 1.0
    thickness_mm: float = 3.0
    fov_margin_mm: float = 60.0  # field of view beyond the head, showing maternal tissue
    interleave: int = 2
    slice_time_s: float = 0.8
    stack_pause_s: float = 15.0
    noise_sigma: float = 18.0  # Rician sigma in image units (amniotic fluid ~1000)
    bias_amplitude: float = 0.25  # std of the log bias field's coefficients
    planning_error_deg: float = 6.0
    dropout_fraction: float = 0.0  # fraction of slices with signal drop-out


@dataclass
class SimulatedStack:
    data: np.ndarray  # int16 image
    affine: np.ndarray
    orientation: str
    mask: np.ndarray  # true brain (intracranial) mask, uint8
    bias: np.ndarray  # multiplicative bias field, float32
    slice_order: np.ndarray  # acquisition order of slice indices
    slice_times: np.ndarray  # seconds from session start, per slice index
    poses: np.ndarray  # (n_slices, 6) per slice index
    intensity_factor: np.ndarray  # 1, or <1 for slices with signal drop-out


@dataclass
class SimulatedSession:
    stacks: list[SimulatedStack]
    truth_image: np.ndarray  # noise-free volume in the reference scanner space
    truth_affine: np.ndarray  # voxel -> reference scanner mm
    head_centre: np.ndarray  # scanner mm; centre of pose rotations
    protocol: dict = field(default_factory=dict)


class Scene:
    """Everything the scanner sees, for the reference head pose."""

    def __init__(
        self,
        phantom: Phantom,
        head_to_scanner: np.ndarray,
        contrast: str,
        psf_sigma_mm: float,
        rng: np.random.Generator,
        maternal: bool,
    ) -> None:
        self.phantom = phantom
        self.head_to_scanner = head_to_scanner
        self.scanner_to_head = np.linalg.inv(head_to_scanner)
        self.truth = intensity_image(phantom, contrast)
        self.truth_affine = head_to_scanner @ phantom.affine
        voxel = float(abs(phantom.affine[0, 0]))
        self.blurred = ndimage.gaussian_filter(self.truth, psf_sigma_mm / voxel, mode="nearest")
        self.world_to_vox = np.linalg.inv(self.truth_affine)
        self.brain = ((phantom.labels >= 1) & (phantom.labels <= 12)).astype(np.float32)
        self.body_value = scene_value(BODY, phantom, contrast)
        self.fluid_value = scene_value(FLUID, phantom, contrast)
        self.maternal = maternal
        centre = head_to_scanner[:3, 3]
        if maternal:
            # uterus: fluid-filled ellipsoid that contains the whole head grid
            radius = float(np.linalg.norm(head_extent_mm(phantom.anatomy)))
            self.uterus_centre = centre + rng.uniform(-10, 10, 3)
            self.uterus_semi = radius + 25 + rng.uniform(0, 30, 3)
            # maternal tissue texture on a coarse grid, smooth and heterogeneous
            self.tex_origin = centre - 240.0
            self.tex_step = 8.0
            tex = ndimage.gaussian_filter(rng.standard_normal((61, 61, 61)), 1.2)
            self.texture = (tex / tex.std()).astype(np.float32)

    def environment(self, pts: np.ndarray) -> np.ndarray:
        """Static surroundings at scanner points: amniotic fluid, maternal tissue, or air."""
        if not self.maternal:
            return np.full(pts.shape[:-1], self.fluid_value, dtype=np.float32)
        d = ((pts - self.uterus_centre) / self.uterus_semi) ** 2
        inside = d.sum(axis=-1) <= 1.0
        idx = ((pts - self.tex_origin) / self.tex_step).reshape(-1, 3).T
        tex = ndimage.map_coordinates(self.texture, idx, order=1, mode="nearest").reshape(
            pts.shape[:-1]
        )
        tissue = 420.0 * (1.0 + 0.35 * tex)
        return np.where(inside, self.fluid_value, np.clip(tissue, 40.0, None)).astype(np.float32)

    def sample(
        self, pts_scanner: np.ndarray, motion: np.ndarray, image: np.ndarray | None = None
    ) -> np.ndarray:
        """Scene values at scanner points while the head has pose `motion` (4x4)."""
        ref = apply(np.linalg.inv(motion), pts_scanner)  # where the point lies in the reference
        vox = apply(self.world_to_vox, ref).reshape(-1, 3).T
        img = self.blurred if image is None else image
        vals = ndimage.map_coordinates(img, vox, order=1, mode="constant", cval=np.nan)
        vals = vals.reshape(pts_scanner.shape[:-1])
        outside = np.isnan(vals)
        if outside.any():
            head = apply(self.scanner_to_head, ref[outside])
            in_body = body_mask(head, self.phantom.anatomy)
            env = self.environment(pts_scanner[outside])
            vals[outside] = np.where(in_body, self.body_value, env)
        return vals

    def brain_fraction(self, pts_scanner: np.ndarray, motion: np.ndarray) -> np.ndarray:
        ref = apply(np.linalg.inv(motion), pts_scanner)
        vox = apply(self.world_to_vox, ref).reshape(-1, 3).T
        frac = ndimage.map_coordinates(self.brain, vox, order=1, mode="constant", cval=0.0)
        return frac.reshape(pts_scanner.shape[:-1])


def random_head_pose(rng: np.random.Generator, max_angle_deg: float | None = None) -> np.ndarray:
    """Head frame -> scanner: any orientation (fetus) or near-standard (infant)."""
    if max_angle_deg is None:
        R = Rotation.random(random_state=rng).as_matrix()
    else:
        R = Rotation.from_euler(
            "xyz", rng.uniform(-max_angle_deg, max_angle_deg, 3), degrees=True
        ).as_matrix()
    M = np.eye(4)
    M[:3, :3] = R
    M[:3, 3] = rng.uniform(-25, 25, 3)
    return M


def plan_stack(
    orientation: str,
    head_to_scanner: np.ndarray,
    half_extent: np.ndarray,
    proto: StackProtocol,
    rng: np.random.Generator,
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Stack affine planned on the fetal head like a radiographer would, with planning error."""
    axes_head = _PLANE_AXES[orientation]  # rows: in-plane u, in-plane v, slice normal
    err = Rotation.from_euler("xyz", rng.uniform(-1, 1, 3) * proto.planning_error_deg, degrees=True)
    R = head_to_scanner[:3, :3] @ err.as_matrix() @ axes_head.T  # columns: u, v, n in scanner
    # extents of the head along the stack axes
    ext = np.abs(axes_head @ half_extent)
    n_u = int(np.ceil((2 * ext[0] + 2 * proto.fov_margin_mm) / proto.inplane_mm))
    n_v = int(np.ceil((2 * ext[1] + 2 * proto.fov_margin_mm) / proto.inplane_mm))
    n_s = int(np.ceil(2 * ext[2] / proto.thickness_mm)) + 2
    shape = (n_u, n_v, n_s)
    spacing = np.array([proto.inplane_mm, proto.inplane_mm, proto.thickness_mm])
    A = np.eye(4)
    A[:3, :3] = R * spacing
    centre = head_to_scanner[:3, 3] + rng.uniform(-4, 4, 3)
    A[:3, 3] = centre - A[:3, :3] @ ((np.array(shape) - 1) / 2.0)
    return A, shape


def _bias_coefficients(amplitude: float, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0, amplitude, 9)


def _bias_field(pts: np.ndarray, centre: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """Smooth multiplicative field: exp of a quadratic polynomial in scanner space."""
    u = (pts - centre) / 100.0
    x, y, z = u[..., 0], u[..., 1], u[..., 2]
    terms = [x, y, z, x * x, y * y, z * z, x * y, x * z, y * z]
    log_b = sum(c * t for c, t in zip(coef, terms, strict=True))
    return np.exp(log_b).astype(np.float32)


def rician_noise(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of `sigma` per channel."""
    if sigma <= 0:
        return signal
    n1 = rng.normal(0, sigma, signal.shape)
    n2 = rng.normal(0, sigma, signal.shape)
    return np.sqrt((signal + n1) ** 2 + n2**2)


def simulate_stacks(
    phantom: Phantom,
    n_stacks: int,
    motion: str,
    seed: int,
    proto: StackProtocol = StackProtocol(),
) -> SimulatedSession:
    """Acquire `n_stacks` interleaved thick-slice T2w stacks of a moving fetal head."""
    if n_stacks < 1:
        raise ValueError("need at least one stack")
    rng = np.random.default_rng(seed)
    head_to_scanner = random_head_pose(rng)
    sigma_ip = 1.2 * proto.inplane_mm * FWHM_TO_SIGMA
    sigma_tp = proto.thickness_mm * FWHM_TO_SIGMA
    sigma_rest = float(np.sqrt(max(sigma_tp**2 - sigma_ip**2, 0.0)))
    nodes, weights = np.polynomial.hermite_e.hermegauss(7)
    weights = weights / weights.sum()
    scene = Scene(phantom, head_to_scanner, "T2w", sigma_ip, rng, maternal=True)
    centre = head_to_scanner[:3, 3].copy()
    half = head_extent_mm(phantom.anatomy)

    plans = []
    t0 = 0.0
    for s in range(n_stacks):
        orientation = ORIENTATIONS[s % 3]
        A, shape = plan_stack(orientation, head_to_scanner, half, proto, rng)
        order = interleaved_order(shape[2], proto.interleave)
        times = np.empty(shape[2])
        times[order] = t0 + proto.slice_time_s * np.arange(shape[2])
        t0 = times.max() + proto.stack_pause_s
        plans.append((orientation, A, shape, order, times))
    all_times = np.concatenate([p[4] for p in plans])
    poses_all = motion_trajectory(all_times, motion, int(rng.integers(2**31)))

    stacks = []
    offset = 0
    for orientation, A, shape, order, times in plans:
        poses = poses_all[offset : offset + shape[2]]
        offset += shape[2]
        ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
        normal = A[:3, 2] / np.linalg.norm(A[:3, 2])
        data = np.zeros(shape, dtype=np.float32)
        mask = np.zeros(shape, dtype=np.uint8)
        bias = np.zeros(shape, dtype=np.float32)
        bias_coef = _bias_coefficients(proto.bias_amplitude, rng)
        factor = np.ones(shape[2])
        n_drop = round(proto.dropout_fraction * shape[2])
        if n_drop:
            dropped = rng.choice(shape[2], n_drop, replace=False)
            factor[dropped] = rng.uniform(0.15, 0.5, n_drop)
        for k in range(shape[2]):
            M = rigid_matrix(poses[k], centre)
            vox = np.stack([ii, jj, np.full_like(ii, k)], axis=-1).astype(np.float64)
            pts = apply(A, vox)
            acc = np.zeros(ii.shape, dtype=np.float64)
            for node, w in zip(nodes, weights, strict=True):
                acc += w * scene.sample(pts + node * sigma_rest * normal, M)
            b = _bias_field(pts, centre, bias_coef)
            data[..., k] = acc * b * factor[k]
            bias[..., k] = b
            mask[..., k] = scene.brain_fraction(pts, M) >= 0.5
        noisy = rician_noise(data, proto.noise_sigma, rng)
        stacks.append(
            SimulatedStack(
                data=np.clip(np.rint(noisy), 0, 32767).astype(np.int16),
                affine=A,
                orientation=orientation,
                mask=mask,
                bias=bias,
                slice_order=order,
                slice_times=times,
                poses=poses,
                intensity_factor=factor,
            )
        )
    return SimulatedSession(
        stacks=stacks,
        truth_image=scene.truth,
        truth_affine=scene.truth_affine,
        head_centre=centre,
        protocol={
            "inplane_mm": proto.inplane_mm,
            "thickness_mm": proto.thickness_mm,
            "interleave": proto.interleave,
            "slice_time_s": proto.slice_time_s,
            "noise_sigma": proto.noise_sigma,
            "psf": "Gaussian; in-plane FWHM 1.2 x pixel spacing, "
            "through-plane FWHM = slice thickness",
            "psf_sigma_inplane_mm": sigma_ip,
            "psf_sigma_throughplane_mm": sigma_tp,
            "motion": motion,
            "dropout_fraction": proto.dropout_fraction,
        },
    )


def simulate_volume(
    phantom: Phantom,
    contrasts: tuple[str, ...],
    voxel_mm: float,
    seed: int,
    noise_sigma: float = 15.0,
    bias_amplitude: float = 0.15,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, dict[str, np.ndarray], SimulatedSession]:
    """Acquire motion-free 3D volumes of an infant head (one per contrast).

    Returns (images by contrast as int16, affine, true brain mask, truth images by
    contrast, session metadata).
    """
    rng = np.random.default_rng(seed)
    head_to_scanner = random_head_pose(rng, max_angle_deg=12.0)
    half = head_extent_mm(phantom.anatomy) + 8.0
    shape = tuple(int(np.ceil(2 * h / voxel_mm)) for h in half)
    A = np.eye(4)
    A[:3, :3] = head_to_scanner[:3, :3] @ np.diag([voxel_mm] * 3)
    A[:3, 3] = head_to_scanner[:3, 3] - A[:3, :3] @ ((np.array(shape) - 1) / 2.0)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(
        float
    )
    pts = apply(A, idx)
    sigma = 1.2 * voxel_mm * FWHM_TO_SIGMA
    identity = np.eye(4)
    bias = _bias_field(pts, head_to_scanner[:3, 3], _bias_coefficients(bias_amplitude, rng))
    images, truths = {}, {}
    mask = None
    for contrast in contrasts:
        scene = Scene(phantom, head_to_scanner, contrast, sigma, rng, maternal=False)
        signal = scene.sample(pts, identity) * bias
        images[contrast] = np.clip(
            np.rint(rician_noise(signal, noise_sigma, rng)), 0, 32767
        ).astype(np.int16)
        truths[contrast] = scene.truth
        if mask is None:
            mask = (scene.brain_fraction(pts, identity) >= 0.5).astype(np.uint8)
            truth_affine = scene.truth_affine
    meta = SimulatedSession(
        stacks=[],
        truth_image=truths[contrasts[0]],
        truth_affine=truth_affine,
        head_centre=head_to_scanner[:3, 3].copy(),
        protocol={"voxel_mm": voxel_mm, "noise_sigma": noise_sigma, "psf_sigma_mm": sigma},
    )
    return images, A, mask, truths, meta
