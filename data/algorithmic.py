"""Algorithmic datasets of the grokking track (Prieto et al., ICLR 2025, arXiv:2501.04697): modular arithmetic
and sparse parity, generated exactly, with no randomness except sparse parity's fixed draw.

A prepared source holds every example of the task: `x` float32 [N, D] (the model's input), `y`
int64 [N] and `num_classes`. A dataset splits it at run time with the run's data seed, so every
method of a seed trains and is evaluated on the same examples (paired comparisons):
`split_train_val_test` gives train/val/test, a partition of all examples. Train is the first
floor(train_fraction·N) of one seeded permutation (`split`, the reference code's train set, so the
training set does not depend on the validation size); val is the next floor(val_fraction·N) of the
same permutation, a seeded slice of the held-out examples; test is the rest. Val is what a sweep's
variant is chosen on (lossbench/tasks/grokking.py: SELECTION); test is never used for selection.

- modular: all p² pairs (a, b), a, b ∈ 0..p−1, label `a ∘ b mod p` for ∘ ∈ {add, sub, mul};
  input = concat(one-hot(a), one-hot(b)), 2p dims (the reference MLP setup).
- sparse_parity: `samples` distinct vectors of `bits` uniform bits, label = XOR of the first
  `parity_bits` (the rest is noise); input = the bits as 0/1 floats, 2 classes.
"""
from __future__ import annotations

import numpy as np

OPERATIONS = {
    "add": lambda a, b, p: (a + b) % p,
    "sub": lambda a, b, p: (a - b) % p,
    "mul": lambda a, b, p: (a * b) % p,
}


def modular(p: int, op: str) -> dict:
    if op not in OPERATIONS:
        raise KeyError(f"unknown modular operation {op!r}; valid: {sorted(OPERATIONS)}")
    a, b = (v.ravel() for v in np.meshgrid(np.arange(p), np.arange(p), indexing="ij"))
    x = np.zeros((p * p, 2 * p), dtype=np.float32)
    rows = np.arange(p * p)
    x[rows, a] = 1.0
    x[rows, p + b] = 1.0
    return {"x": x, "y": OPERATIONS[op](a, b, p).astype(np.int64), "num_classes": np.int64(p)}


def sparse_parity(bits: int, parity_bits: int, samples: int, seed: int) -> dict:
    if not 0 < parity_bits <= bits or samples > 2 ** bits:
        raise ValueError(f"sparse parity needs 0 < parity_bits <= bits and samples <= 2^bits; got "
                         f"{parity_bits}, {bits}, {samples}")
    rng = np.random.default_rng(seed)
    seen: dict[bytes, np.ndarray] = {}
    while len(seen) < samples:  # distinct vectors: a test example is never a train example
        for row in rng.integers(0, 2, (samples, bits), dtype=np.int8):
            seen.setdefault(row.tobytes(), row)
            if len(seen) == samples:
                break
    x = np.stack(list(seen.values()))
    return {"x": x.astype(np.float32), "y": (x[:, :parity_bits].sum(1) % 2).astype(np.int64),
            "num_classes": np.int64(2)}


def prepare(params: dict, raw_dir=None) -> dict:
    params = dict(params)
    kind = params.pop("task")
    if kind == "modular":
        return modular(int(params["p"]), params["op"])
    if kind == "sparse_parity":
        return sparse_parity(int(params["bits"]), int(params["parity_bits"]), int(params["samples"]),
                             int(params["seed"]))
    raise KeyError(f"unknown algorithmic task {kind!r}; valid: modular, sparse_parity")


VAL_FRACTION = 0.1  # default share of all examples held out for validation (protocol key `val_fraction`)


def _permutation(prepared: dict, train_fraction: float, seed: int) -> tuple[np.ndarray, int]:
    n = len(prepared["y"])
    n_train = int(np.floor(train_fraction * n))
    if not 0 < n_train < n:
        raise ValueError(f"train_fraction {train_fraction} leaves an empty split of {n} examples")
    return np.random.default_rng(seed).permutation(n), n_train


def split(prepared: dict, train_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices) of a seeded random split; floor(fraction·N) train examples,
    as in the reference code (p = 113, fraction 0.4: 5 107 train, 7 662 held out). Runs carve a
    validation slice out of the held-out part (`split_train_val_test`); train stays this one."""
    perm, n_train = _permutation(prepared, train_fraction, seed)
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])


def split_train_val_test(prepared: dict, train_fraction: float, val_fraction: float,
                         seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) indices, sorted, partitioning all N examples: train as in `split` (same
    seed, same examples), val the next floor(val_fraction·N) examples of the same seeded
    permutation (a random slice of the held-out ones), test the rest (p = 113, train 0.4, val 0.1:
    5 107 / 1 276 / 6 386). Refuses a val_fraction that leaves val or test empty."""
    perm, n_train = _permutation(prepared, train_fraction, seed)
    n = len(perm)
    n_val = int(np.floor(val_fraction * n))
    if n_val < 1:
        raise ValueError(f"val_fraction {val_fraction} leaves an empty validation split of {n} examples")
    if n_train + n_val >= n:
        raise ValueError(f"val_fraction {val_fraction} with train_fraction {train_fraction} leaves no test "
                         f"examples of {n}")
    return np.sort(perm[:n_train]), np.sort(perm[n_train:n_train + n_val]), np.sort(perm[n_train + n_val:])
