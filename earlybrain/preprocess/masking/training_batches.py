"""The training batches of the masking networks, drawn from the simulated stacks
(`masking.training_data`): slices with their neighbours, augmented beyond what the
simulator varies (contrast, noise, rotation and mirroring, already brain-extracted
inputs), and placed as each network sees them at inference (the localiser: a whole
slice on its canvas; the segmenter: a window of the crop around the head).

Apart from the training loop (`earlybrain.preprocess.train_masking`) so what a network
is shown can be checked on its own; batch i depends only on (seed, i), so the batches
are the same with any number of loader workers.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage

from earlybrain.preprocess.masking.slices import normalise_stack


class SliceBank:
    """Every slice of a set of stacks, drawn with its neighbours and its target."""

    def __init__(self, stacks: list[tuple[np.ndarray, np.ndarray]], context: int) -> None:
        self.stacks = stacks
        self.context = context
        self.index = [(s, k) for s, (x, _) in enumerate(stacks) for k in range(x.shape[0])]

    def __len__(self) -> int:
        return len(self.index)

    def raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        s, k = self.index[i]
        x, y = self.stacks[s]
        idx = np.clip(np.arange(k - self.context, k + self.context + 1), 0, x.shape[0] - 1)
        return x[idx].astype(np.float32), y[k]


def _intensity(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Contrast and noise beyond the simulator's: gamma, gain, a little noise."""
    x = np.clip(x, 0, None) ** rng.uniform(0.75, 1.35) * rng.uniform(0.85, 1.15)
    sigma = rng.uniform(0, 0.03)
    if sigma > 0:
        x = np.abs(x + rng.normal(0, sigma, x.shape).astype(np.float32))
    return np.clip(x, 0, 2).astype(np.float32)


def _dihedral(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    k = int(rng.integers(4))
    x, y = np.rot90(x, k, axes=(-2, -1)), np.rot90(y, k, axes=(-2, -1))
    if rng.random() < 0.5:
        x, y = x[..., ::-1], y[..., ::-1]
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def _brain_only(
    x: np.ndarray, y: np.ndarray, rng: np.random.Generator, percentile: float
) -> np.ndarray:
    """The slice as a lab that already brain-extracted its stacks gives it: zero outside
    the mask (dilated by 0-2 pixels), scaled as inference scales such a stack. Without
    these the localiser, which knows heads by their surroundings, misses bare brains."""
    keep = y > 0.5
    grow = int(rng.integers(3))
    if grow:
        keep = ndimage.binary_dilation(keep, iterations=grow)
    return normalise_stack(x * keep, percentile)


def localiser_sample(
    x: np.ndarray,
    y: np.ndarray,
    canvas: int,
    rng: np.random.Generator,
    p_brain_only: float = 0.0,
    percentile: float = 99.0,
):
    """A whole slice placed anywhere on the zero canvas (inference centres it)."""
    if rng.random() < p_brain_only:
        x = _brain_only(x, y, rng, percentile)
    x = _intensity(x, rng)
    x, y = _dihedral(x, y, rng)
    h, w = x.shape[-2:]
    if h > canvas or w > canvas:  # larger than the canvas: a random part of it
        t, le = int(rng.integers(max(h - canvas, 0) + 1)), int(rng.integers(max(w - canvas, 0) + 1))
        x, y = x[..., t : t + canvas, le : le + canvas], y[t : t + canvas, le : le + canvas]
        h, w = x.shape[-2:]
    top, left = int(rng.integers(canvas - h + 1)), int(rng.integers(canvas - w + 1))
    X = np.zeros((x.shape[0], canvas, canvas), np.float32)
    Y = np.zeros((canvas, canvas), np.float32)
    X[:, top : top + h, left : left + w] = x
    Y[top : top + h, left : left + w] = y
    return X, Y


def segmenter_sample(x: np.ndarray, y: np.ndarray, window: int, rng: np.random.Generator):
    """A training window cut from the stored crop around the head."""
    h, w = x.shape[-2:]
    t, le = int(rng.integers(h - window + 1)), int(rng.integers(w - window + 1))
    x, y = x[..., t : t + window, le : le + window], y[t : t + window, le : le + window]
    x = _intensity(x, rng)
    x, y = _dihedral(x, y, rng)
    return x, y.astype(np.float32)


class Batches(torch.utils.data.Dataset):
    """Batches of one training run; batch i depends only on (seed, i), so the result
    does not depend on how many worker processes draw them."""

    def __init__(
        self,
        bank: SliceBank,
        sample: Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple],
        n_batches: int,
        batch_size: int,
        seed: int,
    ) -> None:
        self.bank, self.sample = bank, sample
        self.n, self.batch_size, self.seed = n_batches, batch_size, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 404, i]))
        ids = rng.integers(len(self.bank), size=self.batch_size)
        xs, ys = zip(*(self.sample(*self.bank.raw(int(j)), rng) for j in ids), strict=True)
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))[:, None]
