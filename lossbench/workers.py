"""A process pool for Snakemake jobs that run as threads of one Snakemake process.

The smoke profile runs jobs as threads (`force-use-threads`) so torch is not imported once per
job (about 3 s each here), but tiny-model training in threads is throttled by the GIL. So the
threads hand their work to this pool: `cores` worker processes, started once with `spawn`
(safe in a threaded parent), each importing torch once and running one job at a time.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import threading

_pool: cf.ProcessPoolExecutor | None = None
_lock = threading.Lock()


def _init_worker():
    import torch

    torch.set_num_threads(1)


def call(fn, *args, workers: int, **kwargs):
    """Run `fn(*args, **kwargs)` (a picklable, module-level function) in a pool worker and return
    its result; exceptions propagate to the calling thread, so the Snakemake job fails."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                           initializer=_init_worker)
    return _pool.submit(fn, *args, **kwargs).result()
