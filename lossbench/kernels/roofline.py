"""Physical limits (card "Physical limits to compare against"): analytic bytes and FLOPs of each
algorithm, and the device's ceilings, measured (copy bandwidth, GEMM throughput) and from the datasheet.
"""
from __future__ import annotations

import torch

from lossbench.kernels.measure import median_iqr, time_ms

# name substring -> (HBM GB/s, dense BF16 TFLOP/s): vendor datasheet values, not measured here.
# Checked in order, so "H100 PCIe" must come before "H100".
DATASHEET = (
    ("H100 PCIe", 2000.0, 756.0),
    ("H100", 3350.0, 989.0),
    ("H200", 4800.0, 989.0),
    ("A100", 2039.0, 312.0),
)


def linear_ce_flops(n: int, v: int, d: int) -> float:
    """Useful FLOPs of forward + backward: 2NVD forward, 4NVD backward."""
    return 6.0 * n * v * d


def linear_ce_bytes(n: int, v: int, d: int, itemsize: int, materialises_logits: bool) -> tuple[float, float]:
    """(floor, model) bytes of forward + backward.

    floor: read E and C and write loss and lse (forward), read them again and write dE and dC
    (backward): 3·s·(N+V)·D + 8N. model: the floor, plus for an implementation whose logits go
    through memory the ideal unfused traffic 4·s·N·V (write Z, read it; read it, write G); the
    float32 upcasts of a real implementation add more, so this is a lower bound.
    """
    floor = 3.0 * itemsize * (n + v) * d + 8.0 * n
    return floor, floor + (4.0 * itemsize * n * v if materialises_logits else 0.0)


def softmax_bytes(rows: int, v: int, itemsize: int, passes: tuple[int, int]) -> tuple[float, float]:
    """(floor, model) bytes: one read and one write of [rows, V], and the algorithm's passes."""
    return 2.0 * rows * v * itemsize, float(sum(passes)) * rows * v * itemsize


def copy_gbps(device: torch.device, nbytes: int, reps: int = 10) -> float:
    """Measured copy bandwidth: `dst.copy_(src)` reads and writes nbytes, so 2·nbytes / t."""
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    t_ms, _ = median_iqr(time_ms(lambda: dst.copy_(src), device, warmup=2, reps=reps))
    return 2.0 * nbytes / (t_ms * 1e-3) / 1e9


def gemm_tflops(device: torch.device, dtype: torch.dtype, n: int, reps: int = 10) -> float:
    """Measured dense matmul throughput of an n×n×n product in `dtype`."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, generator=g, device=device).to(dtype)
    b = torch.randn(n, n, generator=g, device=device).to(dtype)
    t_ms, _ = median_iqr(time_ms(lambda: a @ b, device, warmup=2, reps=reps))
    return 2.0 * n**3 / (t_ms * 1e-3) / 1e12


def datasheet(device: torch.device) -> tuple[float, float] | None:
    """(GB/s, BF16 TFLOP/s) for a known GPU, else None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next(((gbps, tflops) for key, gbps, tflops in DATASHEET if key in name), None)
