"""Loss-layer kernels track (issue 5, lossbench/kernels/registry.py): softmax variants (K2, K3),
linear cross-entropy implementations (K1, K4), their registry and the benchmark.

Every softmax variant (Python and C) treats non-finite logits the same way (softmax.py's docstring):
NaN or +inf anywhere gives a NaN row, as torch.softmax; a fully masked row (all −inf) gives zeros,
where torch gives NaN; finite rows of any magnitude match torch.softmax.

    python -m lossbench.kernels.bench --grid smoke --out kernels.csv
"""
from lossbench.kernels.registry import IMPLS, KernelImpl, get, names, unavailable

__all__ = ["IMPLS", "KernelImpl", "get", "names", "unavailable"]
