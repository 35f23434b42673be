"""A pregnant abdomen around a fetus, as a clinical fetal stack sees it.

Clinical stacks are planned on the fetal head but show the whole uterus and more: the
maternal abdominal wall (subcutaneous fat, muscle), the maternal spine with its
paraspinal muscles, psoas, aorta and vena cava, kidneys, liver, bladder and loops of
bowel (fluid, solid content or gas behind a thin wall, in mesenteric fat), the uterine
wall, the placenta, amniotic fluid of any amount, and the fetal body (skin, spine,
lungs, heart, liver, stomach, bladder, kidneys, limbs, umbilical cord) besides the
head. A masking network that never saw them finds bowel instead of brain.

The scene is a set of analytic shapes in scanner millimetres (mother supine: x left-
right, y posterior to anterior, z inferior to superior), bent by a smooth random warp
and evaluated at any points, so stacks of any orientation and resolution sample one
scene. The fetus (head, body, limbs, cord) moves rigidly about the head's centre from
slice to slice; the mother only breathes. This module draws the anatomy, a class
per point; the intensities of the classes are drawn per scene (`scene_intensities`)
around a single-shot fast spin echo (HASTE/SSFSE) or a balanced SSFP (TRUFI/FIESTA)
appearance, or entirely at random, and the fetal heads are sampled from their own
images (`placed_head`). SynthStrip-style backgrounds (random label maps of random
shapes with random intensities) replace the maternal organs, or everything but the
fetal head, in some scenes, so a network learns the brain rather than our background.

Points are handled as (3, n) arrays (one row per coordinate): elementwise arithmetic on
contiguous rows is several times faster than reductions over (n, 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from earlybrain.simulate.fetal_head import FetalHead
from earlybrain.simulate.fields import SmoothField
from earlybrain.simulate.placed_head import PlacedHead, paint_head, place_head
from earlybrain.simulate.scene_intensities import (
    CLASS_ID,
    RANDOM_BASE,
    RANDOM_CELLS,
    draw_intensities,
)
from earlybrain.simulate.shapes import (
    bezier,
    in_box,
    in_cavity,
    in_ellipsoid,
    norm2,
    ray_depth,
    rel,
    rotation_taking,
    segment_distance,
    unit,
)


@dataclass(frozen=True)
class SceneConfig:
    """The ranges scenes are drawn from (training draws them all; tests fix some)."""

    p_bssfp: float = 0.3
    p_random_contrast: float = 0.12  # every class an intensity in [0, 1]
    p_random_brain: float = 0.25  # brain tissues a random intensity each (SynthSeg-style)
    p_synth_maternal: float = 0.2  # random label map instead of the maternal organs
    p_synth_all: float = 0.06  # ... instead of everything but the fetal head
    p_body_texture: float = 0.6  # fetal trunk of random cells (real bodies are not uniform)
    fluid_range: tuple[float, float] = (0.75, 1.45)  # uterine cavity / fetal head size
    warp_mm: tuple[float, float] = (2.0, 12.0)


# scenes as a scanner shows them: no random backgrounds or contrasts (held-out tests)
REALISTIC = SceneConfig(
    p_random_contrast=0.0, p_random_brain=0.0, p_synth_maternal=0.0, p_synth_all=0.0
)


class UterusScene:
    """One pregnant abdomen with a fetus (or twins) in it, drawn from a random generator.

    `heads[0]` is the fetus the stacks are planned on; further heads are twins placed
    elsewhere in the uterus (heads only)."""

    def __init__(
        self,
        heads: list[FetalHead],
        rng: np.random.Generator,
        cfg: SceneConfig = SceneConfig(),
        contrast: str | None = None,
    ) -> None:
        if not heads:
            raise ValueError("a scene needs at least one fetal head")
        self.rng = rng
        self.cfg = cfg
        hb = max(heads[0].half_axes_mm)  # intracranial half-length
        self.contrast = contrast or ("bssfp" if rng.random() < cfg.p_bssfp else "haste")
        self._draw_mother(hb, len(heads))
        self._draw_fetus(heads[0])
        self.placed = [place_head(heads[0], self.head_centre, self.head_rot)]
        for extra in heads[1:]:
            self.placed.append(self._place_twin(extra))
        self.lut, self.amp, self.fluid, self.brain_maps = draw_intensities(
            rng, self.contrast, heads, cfg.p_random_contrast, cfg.p_random_brain
        )
        ext = 1.6 * float(max(self.uterus_semi)) + 150.0
        self.warp = SmoothField(rng, self.uterus_centre, ext, 45.0, 3)
        self.warp_mm = rng.uniform(*cfg.warp_mm)
        self.texture = SmoothField(rng, self.uterus_centre, ext, 7.0, 1)
        self._draw_bowel()
        mode = rng.random()
        self.synth = (
            "all" if mode < cfg.p_synth_all
            else "maternal" if mode < cfg.p_synth_all + cfg.p_synth_maternal
            else "none"
        )  # fmt: skip
        cell = rng.uniform(12.0, 60.0)
        n = int(np.clip((2 * ext / cell) ** 3 * 0.5, 200, 6000))
        self.synth_tree = cKDTree(self.uterus_centre + rng.uniform(-ext, ext, (n, 3)))
        self._draw_body_texture(rng.spawn(1)[0])

    def _draw_body_texture(self, rng: np.random.Generator) -> None:
        """The fetal trunk's interior as random cells of random intensity (most scenes):
        a real fetal thorax and abdomen are heterogeneous, and a uniform one teaches a
        network that everything textured beside the head is brain. Its own random
        stream, so every other draw of a scene is as before."""
        self.body_tree = None
        if rng.random() < self.cfg.p_body_texture:
            cell = rng.uniform(4.0, 15.0)
            lo, hi = self.body_box
            n = int(np.clip(np.prod((hi - lo) / cell), 50, 30000))
            self.body_tree = cKDTree(rng.uniform(lo, hi, (n, 3)))
            self.body_cells = (RANDOM_BASE + rng.integers(RANDOM_CELLS, size=n)).astype(np.int16)

    # ------------------------------------------------------------------ mother --
    def _draw_mother(self, hb: float, n_fetuses: int) -> None:
        rng = self.rng
        fluid = rng.uniform(*self.cfg.fluid_range) * (1.25 if n_fetuses > 1 else 1.0)
        self.uterus_semi = (
            hb
            * fluid
            * np.array([rng.uniform(1.4, 2.2), rng.uniform(1.2, 1.9), rng.uniform(1.8, 2.7)])
        )
        self.wall_mm = rng.uniform(5.0, 14.0)
        self.fat_mm = rng.uniform(6.0, 45.0)
        self.muscle_mm = rng.uniform(4.0, 12.0)
        self.body_semi = np.array(
            [max(rng.uniform(130, 190), self.uterus_semi[0] + 40), rng.uniform(85, 125)]
        )
        outer = self.wall_mm + self.fat_mm + self.muscle_mm
        self.uterus_centre = np.array(
            [
                rng.uniform(-25, 25),
                self.body_semi[1] * rng.uniform(0.1, 0.6) + 0.2 * outer,
                rng.uniform(-40, 40),
            ]
        )
        self.uterus_rot = Rotation.from_euler("xyz", rng.uniform(-15, 15, 3), degrees=True)
        self.uterus_rot = self.uterus_rot.as_matrix()
        self.abdomen_semi = self.uterus_semi + outer
        # spine and what lies along it (posterior midline)
        back = -self.body_semi[1] + self.fat_mm + self.muscle_mm
        self.vb_radius = rng.uniform(15, 22)
        self.vb_y = back + rng.uniform(35, 55)
        self.vb_period = rng.uniform(30, 38)
        self.vb_phase = rng.uniform(0, self.vb_period)
        self.disc_mm = rng.uniform(5, 10)
        self.x_flip = 1.0 if rng.random() < 0.5 else -1.0
        zu, su = self.uterus_centre[2], self.uterus_semi
        self.kidney_z = zu + rng.uniform(40, 200)
        self.liver_c = np.array(
            [-60 * self.x_flip, self.vb_y + 70, zu + su[2] + rng.uniform(0, 120)]
        )
        self.liver_semi = np.array(
            [rng.uniform(80, 120), rng.uniform(60, 90), rng.uniform(70, 100)]
        )
        fill = rng.uniform(0.3, 1.2)
        self.bladder_c = np.array(
            [0.0, self.uterus_centre[1] - 0.3 * su[1], zu - su[2] - 20 * fill]
        )
        self.bladder_semi = np.array([45, 30, 28]) * fill
        # placenta: a cap of the cavity wall
        self.placenta_dir = unit(rng.normal(0, 1, 3))
        self.placenta_cos = np.cos(np.radians(rng.uniform(35, 65)))
        self.placenta_mm = rng.uniform(12, 20) + 0.35 * hb
        self.breath_mm = rng.uniform(0.0, 3.0)

    def _draw_bowel(self) -> None:
        """Loops of bowel: round lumens (fluid, solid content or gas) behind a thin wall,
        in mesenteric fat, filling the abdomen around the organs."""
        rng = self.rng
        cell = rng.uniform(16.0, 32.0)
        zu = self.uterus_centre[2]
        lo = np.array([-self.body_semi[0], -self.body_semi[1], zu - 260])
        hi = np.array([self.body_semi[0], self.uterus_centre[1] + self.abdomen_semi[1], zu + 260])
        n = int(np.clip(np.prod((hi - lo) / cell), 300, 15000))
        self.bowel_tree = cKDTree(rng.uniform(lo, hi, (n, 3)))
        kinds = np.array([CLASS_ID["bowel_fluid"], CLASS_ID["bowel_solid"], CLASS_ID["gas"]])
        self.bowel_kind = kinds[rng.choice(3, n, p=rng.dirichlet([3, 4, 1.5]))]
        self.bowel_radius = (cell * rng.uniform(0.3, 0.6, n)).astype(np.float32)
        self.bowel_wall = rng.uniform(1.5, 4.0)

    # ------------------------------------------------------------------- fetus --
    def _draw_fetus(self, head: FetalHead) -> None:
        """Head position and orientation, and a body hanging from its neck: a bent trunk
        with organs, four limbs and usually the cord."""
        rng = self.rng
        a, b, c = head.half_axes_mm
        room = in_cavity(rng, self.uterus_semi, head.radius_mm * rng.uniform(0.6, 1.0))
        self.head_centre = self.uterus_centre + self.uterus_rot @ room
        to_centre = self.uterus_centre - self.head_centre
        if np.linalg.norm(to_centre) > 1:
            trunk_dir = unit(unit(to_centre) + rng.normal(0, 0.6, 3))
        else:
            trunk_dir = unit(rng.normal(0, 1, 3))
        neck = unit(np.array([0.0, -0.3, -1.0]))
        twist = Rotation.from_rotvec(trunk_dir * rng.uniform(0, 2 * np.pi)).as_matrix()
        self.head_rot = R = twist @ rotation_taking(neck, trunk_dir)
        self.trunk_len = L = rng.uniform(2.8, 3.8) * b
        self.trunk_r = rt = rng.uniform(0.85, 1.1) * a
        p0 = self.head_centre + R @ np.array([0.0, -0.35 * b, -1.25 * c])
        side = unit(np.cross(trunk_dir, rng.normal(0, 1, 3)))
        p2 = p0 + trunk_dir * L
        p1 = (p0 + p2) / 2 + side * rng.uniform(0, 0.3) * L
        self.trunk_axis = bezier(p0, p1, p2)
        self.neck_axis = np.stack([self.head_centre + R @ np.array([0, -0.2 * b, -0.6 * c]), p0])
        dorsal = R @ np.array([0.0, -1.0, 0.0])
        self.dorsal = unit(dorsal - np.dot(dorsal, trunk_dir) * trunk_dir)
        self.lateral = np.cross(trunk_dir, self.dorsal)
        self.trunk_dir = trunk_dir
        # organs in the trunk's frame: centre (along, dorsal, lateral) as fractions of the
        # trunk's length and radius, semi-axes (along, dorsal, lateral) in mm
        b_ = rng.uniform(0.3, 1.2)  # how full the fetal bladder is
        self.organs = [
            ("f_lung", (0.22, 0.05, -0.45), (0.17 * L, 0.4 * rt, 0.42 * rt)),
            ("f_lung", (0.22, 0.05, 0.45), (0.17 * L, 0.4 * rt, 0.42 * rt)),
            ("f_heart", (0.27, -0.3, 0.1), (0.1 * L, 0.3 * rt, 0.35 * rt)),
            ("f_liver", (0.5, -0.1, -0.1), (0.14 * L, 0.55 * rt, 0.7 * rt)),
            ("f_fluid", (0.47, -0.1, 0.45), (0.08 * L, 0.2 * rt, 0.22 * rt)),
            ("f_tissue", (0.62, 0.45, -0.45), (0.08 * L, 0.18 * rt, 0.18 * rt)),
            ("f_tissue", (0.62, 0.45, 0.45), (0.08 * L, 0.18 * rt, 0.18 * rt)),
            ("f_fluid", (0.9, -0.35, 0.0), (0.07 * b_ * L, 0.2 * b_ * rt, 0.22 * b_ * rt)),
        ]  # fmt: skip
        self.limbs = []
        for s, lat, scale in (
            (0.12, -1, 0.28),
            (0.12, 1, 0.28),
            (0.95, -0.6, 0.34),
            (0.95, 0.6, 0.34),
        ):
            root = p0 + trunk_dir * s * L + self.lateral * lat * rt
            d1 = unit(
                trunk_dir * rng.uniform(-0.2, 1.0)
                + self.lateral * lat * rng.uniform(0.2, 1.0)
                - self.dorsal * rng.uniform(0, 1.0)
            )
            joint = root + d1 * rng.uniform(0.35, 0.55) * L
            end = joint + unit(d1 + rng.normal(0, 0.8, 3)) * rng.uniform(0.35, 0.55) * L
            self.limbs.append((np.stack([root, joint, end]), scale * rt))
        self.cord = None
        if rng.random() < 0.7:
            start = p0 + trunk_dir * 0.7 * L - self.dorsal * rt
            end = self.uterus_centre + self.uterus_rot @ (
                self.placenta_dir * self.uterus_semi * 0.9
            )
            mid = (start + end) / 2 + rng.normal(0, 0.4, 3) * np.linalg.norm(end - start) / 2
            self.cord = (bezier(start, mid, end, 10), rng.uniform(4.0, 8.0))
        polys = [self.trunk_axis, self.neck_axis] + [p for p, _ in self.limbs]
        polys += [self.cord[0]] if self.cord is not None else []
        allp = np.concatenate(polys)
        reach = rt + 2
        self.body_box = (allp.min(0) - reach, allp.max(0) + reach)

    def _place_twin(self, head: FetalHead) -> PlacedHead:
        """A second fetal head elsewhere in the uterus, not overlapping the first."""
        rng = self.rng
        first = self.placed[0]
        for _ in range(50):
            c = self.uterus_centre + self.uterus_rot @ in_cavity(
                rng, self.uterus_semi, head.radius_mm
            )
            if np.linalg.norm(c - first.centre) > first.head.radius_mm + head.radius_mm + 5:
                break
        return place_head(head, c, Rotation.random(random_state=rng).as_matrix())

    # ---------------------------------------------------------------- sampling --
    def body_depth(self, P: np.ndarray) -> np.ndarray:
        """Depth (mm) below the maternal skin (negative outside) at points (3, n): the
        union of an elliptic cylinder along z and the uterus under wall, muscle, fat."""
        d_trunk = ray_depth(P[:2], self.body_semi)
        d_abd = ray_depth(rel(P, self.uterus_centre, self.uterus_rot), self.abdomen_semi)
        return np.maximum(d_trunk, d_abd)

    def _maternal(self, P: np.ndarray) -> np.ndarray:
        """Class of each (warped, breathing-corrected) point, the fetus left out."""
        lab = np.full(P.shape[1], CLASS_ID["air"], np.int16)
        depth = self.body_depth(P)
        lab[depth > 0] = CLASS_ID["fat"]
        deep = np.flatnonzero(depth > self.fat_mm)
        if deep.size == 0:
            return lab
        lab[deep] = CLASS_ID["muscle"]
        Q = P[:, deep]
        sub = lab[deep]
        cavity = depth[deep] > self.fat_mm + self.muscle_mm
        if cavity.any():
            inner = Q[:, cavity]
            sub[cavity] = (
                self._synth_labels(inner) if self.synth == "maternal" else self._organs(inner)
            )
        x, y = Q[0], Q[1]
        for sx in (-1.0, 1.0):  # paraspinal muscles, from the spine to the back's fat
            para = ((x - sx * 38) / 26) ** 2 + ((y - (self.vb_y - 40)) / 24) ** 2 <= 1
            sub[para] = CLASS_ID["muscle"]
        self._spine(Q, sub)
        self._uterus(Q, sub)
        lab[deep] = sub
        return lab

    def _organs(self, Q: np.ndarray) -> np.ndarray:
        """Inside the abdominal wall: bowel everywhere, then kidneys, psoas, liver,
        bladder, aorta and vena cava."""
        x, y, z = Q
        d, i = self.bowel_tree.query(Q.T, k=1, workers=1)
        radius = self.bowel_radius[i]
        lab = np.where(d <= radius, self.bowel_kind[i], CLASS_ID["mesentery"]).astype(np.int16)
        lab[(d > radius) & (d <= radius + self.bowel_wall)] = CLASS_ID["bowel_wall"]
        for sx in (-1.0, 1.0):
            kidney = np.array([sx * 72, self.vb_y + 5, self.kidney_z])
            lab[in_ellipsoid(Q, kidney, np.array([26.0, 20, 52]))] = CLASS_ID["kidney"]
            psoas = ((x - sx * 38) / 16) ** 2 + ((y - (self.vb_y + 8)) / 18) ** 2 <= 1
            lab[psoas & (z < self.kidney_z)] = CLASS_ID["muscle"]
        lab[in_ellipsoid(Q, self.liver_c, self.liver_semi)] = CLASS_ID["liver"]
        lab[in_ellipsoid(Q, self.bladder_c, self.bladder_semi)] = CLASS_ID["bladder"]
        front = self.vb_y + self.vb_radius + 12
        fx = self.x_flip
        aorta = (x + 14 * fx) ** 2 + (y - front) ** 2 <= 10**2
        ivc = ((x - 22 * fx) / 14) ** 2 + ((y - front) / 9) ** 2 <= 1
        lab[aorta | ivc] = CLASS_ID["vessel"]
        return lab

    def _spine(self, Q: np.ndarray, lab: np.ndarray) -> None:
        """Vertebral bodies and discs, the canal behind them and its bony ring."""
        x, y = Q[0], Q[1]
        vb = x * x + (y - self.vb_y) ** 2 <= self.vb_radius**2
        disc = np.mod(Q[2] - self.vb_phase, self.vb_period) < self.disc_mm
        lab[vb] = np.where(disc[vb], CLASS_ID["disc"], CLASS_ID["bone"])
        r2 = x * x + (y - (self.vb_y - self.vb_radius - 9)) ** 2
        lab[(r2 <= 14**2) & (r2 > 7.5**2)] = CLASS_ID["bone"]
        lab[r2 <= 7.5**2] = CLASS_ID["csf"]

    def _uterus(self, Q: np.ndarray, lab: np.ndarray) -> None:
        """Uterine wall, placenta (a cap of the wall, thickest at its centre), fluid."""
        D = rel(Q, self.uterus_centre, self.uterus_rot)
        depth = ray_depth(D, self.uterus_semi)  # < 0 outside the cavity
        lab[(depth < 0) & (depth >= -self.wall_mm)] = CLASS_ID["myometrium"]
        cav = depth >= 0
        lab[cav] = CLASS_ID["amniotic"]
        n = self.placenta_dir
        cosang = (n[0] * D[0] + n[1] * D[1] + n[2] * D[2]) / np.sqrt(np.maximum(norm2(D), 1e-6))
        taper = np.clip((cosang - self.placenta_cos) / (1 - self.placenta_cos) * 3, 0, 1)
        lab[cav & (depth < self.placenta_mm * taper)] = CLASS_ID["placenta"]

    def _synth_labels(self, Q: np.ndarray) -> np.ndarray:
        _, i = self.synth_tree.query(Q.T, k=1, workers=1)
        return (RANDOM_BASE + np.asarray(i) % RANDOM_CELLS).astype(np.int16)

    def _fetal_body(self, Q: np.ndarray, lab: np.ndarray) -> None:
        """Paint the fetal body (trunk, organs, limbs, cord) at fetal-frame points Q."""
        rt, L = self.trunk_r, self.trunk_len
        near = np.flatnonzero(in_box(Q, *self.body_box))
        if near.size == 0:
            return
        P = Q[:, near]
        sub = lab[near]
        D = rel(P, self.uterus_centre, self.uterus_rot)
        in_uterus = norm2(D, self.uterus_semi + self.wall_mm) <= 1.0
        if self.cord is not None:
            dc, _ = segment_distance(P, self.cord[0], self.cord[1])
            sub[np.isfinite(dc) & in_uterus] = CLASS_ID["cord"]
        for poly, radius in self.limbs:
            dl, _ = segment_distance(P, poly, radius)
            limb = np.isfinite(dl) & in_uterus
            sub[limb] = CLASS_ID["f_skin"]
            sub[limb & (dl <= radius - 1.5)] = CLASS_ID["f_tissue"]
            sub[limb & (dl <= 0.35 * radius)] = CLASS_ID["f_bone"]
        dn, _ = segment_distance(P, self.neck_axis, 0.8 * rt)
        sub[np.isfinite(dn) & in_uterus] = CLASS_ID["f_tissue"]
        dt, s = segment_distance(P, self.trunk_axis, rt)
        trunk = np.isfinite(dt) & in_uterus
        sub[trunk] = CLASS_ID["f_skin"]
        core = trunk & (dt <= rt - 2.0)
        sub[core] = CLASS_ID["f_tissue"]
        if self.body_tree is not None and core.any():
            _, i = self.body_tree.query(P[:, core].T, k=1, workers=1)
            sub[core] = self.body_cells[i]
        frame = np.stack([self.trunk_dir, self.dorsal, self.lateral], axis=1)
        local = rel(P, self.trunk_axis[0], frame)  # rows: along, dorsal, lateral (mm)
        for name, (s0, dd, ll), semi in self.organs:
            inside = norm2(local - np.array([[s0 * L], [dd * rt], [ll * rt]], np.float32), semi)
            sub[core & (inside <= 1)] = CLASS_ID[name]
        # fetal spine: vertebrae along the dorsal side, a bright canal inside
        spine_d = np.sqrt((local[1] - 0.62 * rt) ** 2 + local[2] ** 2)
        spine = core & (spine_d <= 0.14 * rt) & (s < 0.97)
        sub[spine] = CLASS_ID["f_bone"]
        sub[spine & (spine_d <= 0.05 * rt)] = CLASS_ID["f_fluid"]
        lab[near] = sub

    def sample(
        self, pts: np.ndarray, fetal_motion: np.ndarray, maternal_shift: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(intensity, intracranial fraction) at scanner points (k, m, 3): k samples
        through a slice's profile of m pixels, while the fetus has pose `fetal_motion`
        (4x4, scene mm) and the mother is shifted by breathing. The smooth fields are
        evaluated at the profile's middle only (they barely change across a slice)."""
        k, m = pts.shape[:2]
        P = np.ascontiguousarray(pts.reshape(-1, 3).T, dtype=np.float32)
        Pm = P - np.asarray(maternal_shift, np.float32)[:, None]
        mid = Pm[:, (k // 2) * m : (k // 2 + 1) * m]
        warp = np.tile(self.warp_mm * self.warp(mid.T).T.astype(np.float32), (1, k))
        lab = self._synth_labels(Pm + warp) if self.synth == "all" else self._maternal(Pm + warp)
        inv = np.linalg.inv(fetal_motion).astype(np.float32)
        Q = inv[:3, :3] @ P + inv[:3, 3:4]
        if self.synth != "all":
            self._fetal_body(Q + 0.3 * warp, lab)
        tex = np.tile(self.texture(mid.T)[:, 0].astype(np.float32), k)
        values = self.lut[lab] * (1.0 + self.amp[lab] * tex)
        frac = np.zeros(P.shape[1], np.float32)
        for placed, brain_map in zip(self.placed, self.brain_maps, strict=True):
            paint_head(Q, placed, brain_map, self.lut, self.amp, values, tex, frac)
        return np.clip(values, 0.0, None).reshape(k, m), frac.reshape(k, m)
