"""Loss-layer kernels track (issue 5, card shared/methods/kernels.md): softmax variants (K2, K3),
linear cross-entropy implementations (K1, K4), their registry and the benchmark.

    python -m lossbench.kernels.bench --grid smoke --out kernels.csv
"""
from lossbench.kernels.registry import IMPLS, KernelImpl, get, names, unavailable

__all__ = ["IMPLS", "KernelImpl", "get", "names", "unavailable"]
