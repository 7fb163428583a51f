"""Random selection: a seeded uniform subset of the training pool, the fair baseline of every
`selection` method (PreSelect card L4 and TAROT card L5 name random selection as their baseline).

It keeps the same number of chunks as the method it is compared with and draws from the run's
selection seed (the `seed` feature), never from the global RNG, so a seed always keeps the same
chunks.
"""
import torch

from lossbench.methods.base import MethodSpec
from lossbench.methods.selection import budget


def random_select(*, ratio: float, num_chunks: int, seed: int):
    """Keep mask [num_chunks] with round(ratio·num_chunks) chunks drawn without replacement."""
    g = torch.Generator().manual_seed(int(seed))
    keep = torch.zeros(int(num_chunks), dtype=torch.bool)
    keep[torch.randperm(int(num_chunks), generator=g)[:budget(ratio, int(num_chunks))]] = True
    return keep


def _reference():
    # Pinned draw, not hand math: torch.randperm(6) under manual_seed(0) is [2, 5, 3, 0, 1, 4] on the
    # CPU generator (printed on torch 2.14); ratio 0.5 of 6 keeps its first 3 entries, {2, 3, 5}.
    return dict(ratio=0.5, num_chunks=6, seed=0), torch.tensor([False, False, True, True, False, True])


SPEC = MethodSpec(
    name="random_select", kind="selection", fn=random_select, defaults={},
    paper="random-selection baseline (PreSelect/TAROT)", url="https://arxiv.org/abs/2503.00808", docs="random_select",
    reference=_reference, needs=("num_chunks", "seed"),
    summary="uniform random subset of the training chunks at the track's selection ratio (seeded)",
)
