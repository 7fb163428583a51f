"""Seeds derived by hashing, so every randomness consumer gets its own stable stream.

Runs with the same (track, dataset, seed) share the data seed whatever the method, which makes
comparisons with the baseline paired.
"""
from __future__ import annotations

import hashlib
import threading

import torch

# Snakemake runs jobs as threads of one process (profile `force-use-threads`) to avoid paying the
# torch import per job; torch's default parameter init draws from the global RNG, so building a
# model is serialised behind this lock. Everything else uses explicit generators.
_GLOBAL_RNG_LOCK = threading.Lock()


def derive_seed(*parts) -> int:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFF_FFFF


def generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def seeded_build(build, seed: int):
    """Call `build()` with the global torch RNG seeded to `seed`, restoring it afterwards."""
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()
