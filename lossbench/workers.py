"""A process pool for Snakemake jobs that run as threads of one Snakemake process.

The smoke profile runs jobs as threads (`force-use-threads`) so torch is not imported once per
job (about 3 s each here), but tiny-model training in threads is throttled by the GIL. So the
threads hand their work to this pool: `cores` worker processes, started once with `spawn`
(safe in a threaded parent), each importing torch once and running one job at a time.

A job's exception comes back as JobError carrying the worker's full traceback as text (the pool's
own traceback ends in concurrent.futures and hides the failing line). A worker that dies (killed,
out of host memory) breaks the pool: the jobs it held fail with WorkerDied and the next job starts
a fresh pool.

A worker exits as soon as its parent dies (a hard kill of Snakemake alone): it watches its parent
pid, so no orphan goes on writing runs into the results folder. (PR_SET_PDEATHSIG would fire when
the *thread* that started the worker ends, i.e. the Snakemake job thread that happened to start it.)
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import threading
import time
import traceback
from concurrent.futures.process import BrokenProcessPool

_pool: cf.ProcessPoolExecutor | None = None
_lock = threading.Lock()


class JobError(RuntimeError):
    """An exception raised by a job in a worker, with the worker's traceback in its message."""


class WorkerDied(RuntimeError):
    """The worker process running a job died without raising (killed by a signal or the OOM killer)."""


PARENT_POLL_SECONDS = 0.5


def _exit_when_orphaned(parent: int):
    """Exit the worker at once when its parent is gone (re-parented to init or a subreaper). A run
    cut short leaves no half-written file (writes are atomic) and no train.json, so Snakemake
    reruns it; os._exit skips cleanup that could block on the dead parent's pipes."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)


def _init_worker(parent: int):
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True, name="parent-watch").start()
    import torch

    torch.set_num_threads(1)


def _call(fn, args, kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        raise JobError(f"{type(e).__name__}: {e}\n--- traceback in the worker process ---\n"
                       f"{traceback.format_exc()}") from None


def call(fn, *args, workers: int, **kwargs):
    """Run `fn(*args, **kwargs)` (a picklable, module-level function) in a pool worker and return
    its result; its exceptions reach the calling thread as JobError, so the Snakemake job fails."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                           initializer=_init_worker, initargs=(os.getpid(),))
        pool = _pool
    try:
        return pool.submit(_call, fn, args, kwargs).result()
    except BrokenProcessPool as e:
        with _lock:
            if _pool is pool:
                _pool = None
        raise WorkerDied(f"the worker process running {fn.__module__}.{fn.__qualname__} died ({e}); "
                         "killed by a signal or the out-of-memory killer?") from None
