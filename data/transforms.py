"""Dataset variants: long-tailed subsampling, label noise and the balanced val/test split.

All randomness comes from an explicit numpy Generator seeded with the run's data seed.
"""
from __future__ import annotations

import numpy as np


def long_tail_counts(n_max: int, num_classes: int, imbalance: float) -> np.ndarray:
    """Exponential profile n_k = floor(n_max * rho^(-k/(K-1))) (Cao et al. 2019; card P1)."""
    k = np.arange(num_classes)
    return np.floor(n_max * float(imbalance) ** (-k / (num_classes - 1))).astype(int)


def long_tail_indices(y: np.ndarray, num_classes: int, imbalance: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of a seeded long-tailed subsample; class k keeps n_k examples.

    n_max is the smallest per-class count available, so every class can supply its quota.
    """
    by_class = [np.flatnonzero(y == k) for k in range(num_classes)]
    n_max = min(len(ix) for ix in by_class)
    counts = long_tail_counts(n_max, num_classes, imbalance)
    kept = [rng.permutation(ix)[:n] for ix, n in zip(by_class, counts)]
    return np.sort(np.concatenate(kept))


def symmetric_noise(y, num_classes, rate, rng, include_true=False):
    """With probability `rate` replace the label by a uniform draw.

    include_true=False draws among the other K-1 classes (every corrupted label is wrong);
    include_true=True draws among all K (the LDR code's convention, flip rate rate*(K-1)/K).
    """
    y = np.asarray(y)
    corrupt = rng.random(len(y)) < rate
    if include_true:
        new = rng.integers(0, num_classes, len(y))
    else:
        new = (y + rng.integers(1, num_classes, len(y))) % num_classes
    return np.where(corrupt, new, y)


# Patrini et al. 2017 convention: truck->automobile, bird->airplane, deer->horse, cat<->dog.
_CIFAR10_ASYM = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}


def asymmetric_cifar10_noise(y, num_classes, rate, rng):
    y = np.asarray(y)
    target = np.array([_CIFAR10_ASYM.get(k, k) for k in range(num_classes)])
    flip = rng.random(len(y)) < rate
    return np.where(flip, target[y], y)


def pair_flip_noise(y, num_classes, rate, rng):
    y = np.asarray(y)
    flip = rng.random(len(y)) < rate
    return np.where(flip, (y + 1) % num_classes, y)


NOISE = {
    "symmetric": symmetric_noise,
    "asymmetric_cifar10": asymmetric_cifar10_noise,
    "pair_flip": pair_flip_noise,
}


def balanced_halves(y: np.ndarray, num_classes: int, rng: np.random.Generator):
    """Split a held-out set into val / test with (nearly) equal counts of every class."""
    val, test = [], []
    for k in range(num_classes):
        ix = rng.permutation(np.flatnonzero(y == k))
        half = len(ix) // 2
        val.append(ix[:half])
        test.append(ix[half:])
    return np.sort(np.concatenate(val)), np.sort(np.concatenate(test))
