"""Fetal head motion: slow drift plus sudden jumps, sampled at slice acquisition times."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MotionLevel:
    drift_deg: float  # stationary std of the slow rotational drift
    drift_mm: float
    jump_rate_hz: float  # mean number of sudden jumps per second
    jump_deg: float  # max rotation of one jump
    jump_mm: float
    max_deg: float  # hard bound on |rotation| per axis
    max_mm: float


MOTION_LEVELS: dict[str, MotionLevel] = {
    "none": MotionLevel(0, 0, 0, 0, 0, 0, 0),
    # "up to about +-10 degrees / +-5 mm"
    "moderate": MotionLevel(2.5, 1.2, 1 / 30, 6.0, 3.0, 10.0, 5.0),
    "severe": MotionLevel(6.0, 3.0, 1 / 8, 15.0, 7.0, 20.0, 10.0),
}


def motion_trajectory(times_s: np.ndarray, level: str | MotionLevel, seed: int) -> np.ndarray:
    """Rigid pose (rx, ry, rz deg, tx, ty, tz mm) of the head at each time.

    Drift is an Ornstein-Uhlenbeck process (correlation time 8 s), jumps a Poisson
    process of step changes; the sum is bounded per axis. Poses are relative to the
    head's reference position, which is the position at the first time point plus the
    drift's stationary offset, as in a real scan where no moment is motion-free.
    """
    lv = MOTION_LEVELS[level] if isinstance(level, str) else level
    times_s = np.asarray(times_s, dtype=np.float64)
    out = np.zeros((times_s.size, 6))
    if lv.max_deg == 0 and lv.max_mm == 0:
        return out
    rng = np.random.default_rng(seed)
    dt = 0.1
    grid = np.arange(0.0, times_s.max() + dt, dt)
    tau = 8.0
    scale = np.array([lv.drift_deg] * 3 + [lv.drift_mm] * 3)
    drift = np.zeros((grid.size, 6))
    drift[0] = rng.normal(0, 1, 6) * scale
    a = np.exp(-dt / tau)
    noise = rng.normal(0, 1, (grid.size, 6)) * scale * np.sqrt(1 - a * a)
    for i in range(1, grid.size):
        drift[i] = a * drift[i - 1] + noise[i]
    jumps = np.zeros((grid.size, 6))
    n_jumps = rng.poisson(lv.jump_rate_hz * grid[-1]) if grid[-1] > 0 else 0
    jump_size = np.array([lv.jump_deg] * 3 + [lv.jump_mm] * 3)
    for t in np.sort(rng.uniform(0, grid[-1], n_jumps)):
        jumps[grid >= t] += rng.uniform(-1, 1, 6) * jump_size
    bound = np.array([lv.max_deg] * 3 + [lv.max_mm] * 3)
    jumps = np.clip(jumps, -0.7 * bound, 0.7 * bound)  # jumps wander, but not out of the womb
    traj = np.clip(drift + jumps, -bound, bound)
    for k in range(6):
        out[:, k] = np.interp(times_s, grid, traj[:, k])
    return out


def interleaved_order(n_slices: int, interleave: int) -> np.ndarray:
    """Slice indices in acquisition order of an interleaved sequence: 0, k, 2k, ..., 1, 1+k, ..."""
    return np.concatenate([np.arange(start, n_slices, interleave) for start in range(interleave)])
