"""Timing and memory of one call, on CPU or CUDA (card "Measurement procedure").

Times: CUDA events on GPU (the host only queues work, so a host clock would time the queueing);
perf_counter after a synchronisation on CPU. Memory: on GPU the allocator's peak above what was
allocated before the call; on CPU torch keeps no such counter and tracemalloc does not see
torch's allocator, so the peak is replayed from the profiler's allocation events (NaN if the
profiler API is missing).
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, device: torch.device, *, warmup: int, reps: int, before=None) -> list[float]:
    """Wall times of `fn()` in ms over `reps` calls after `warmup` untimed ones.

    `before()` runs untimed ahead of every call (clearing gradients, as the CCE benchmark does).
    """
    before = before or (lambda: None)
    for _ in range(warmup):
        before()
        fn()
    synchronize(device)
    times = []
    for _ in range(reps):
        before()
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def median_iqr(times) -> tuple[float, float]:
    q25, q50, q75 = np.percentile(times, [25, 50, 75])
    return float(q50), float(q75 - q25)


def peak_bytes(fn, device: torch.device) -> float:
    """Bytes allocated at the peak of `fn()` above what was allocated when it started."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return float(torch.cuda.max_memory_allocated(device) - base)
    return _cpu_peak_bytes(fn)


def _cpu_peak_bytes(fn) -> float:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:
        events = []
        stack = list(prof.profiler.kineto_results.experimental_event_tree())
        while stack:
            event = stack.pop()
            stack.extend(event.children)
            if type(event.extra_fields).__name__ == "_ExtraFields_Allocation":
                events.append((event.start_time_ns, event.extra_fields.alloc_size))  # frees are negative
    except AttributeError:  # a private profiler API; say "unknown" rather than guess
        return float("nan")
    live = peak = 0
    for _, size in sorted(events):
        live += size
        peak = max(peak, live)
    return float(peak)


def median_ci(times, level: float = 0.95) -> tuple[float, float]:
    """Distribution-free CI of the median: the narrowest pair of order statistics (x_(k), x_(n+1-k))
    covering it with probability ≥ `level` (binomial, p = 1/2); timings are skewed, so no t-interval.
    Too few calls for the level give the full range (min, max)."""
    x = sorted(times)
    n = len(x)
    if n == 0:
        return float("nan"), float("nan")
    cdf = 1 / 2**n  # P(Bin(n, 1/2) <= k - 1) for the next k: (x_(k+1), x_(n-k)) covers with 1 - 2·cdf
    k = 1
    while k < (n + 1) // 2 and 1 - 2 * (cdf + math.comb(n, k) / 2**n) >= level:
        cdf += math.comb(n, k) / 2**n
        k += 1
    return float(x[k - 1]), float(x[n - k])
