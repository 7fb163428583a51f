"""The worker pool of threaded Snakemake jobs: a job's exception keeps its real traceback, and a
worker that dies fails only the jobs it held."""
import os
import signal

import pytest

from lossbench import workers


def _raise_deep(x):
    return {"a": 1}[x]  # KeyError raised here, in the worker


def _die(_):
    os.kill(os.getpid(), signal.SIGKILL)


def _square(x):
    return x * x


def test_exception_carries_the_worker_traceback():
    with pytest.raises(workers.JobError) as e:
        workers.call(_raise_deep, "b", workers=1)
    text = str(e.value)
    assert text.startswith("KeyError: 'b'")
    assert "test_workers.py" in text and "_raise_deep" in text and 'return {"a": 1}[x]' in text


def test_a_dead_worker_fails_its_job_and_the_pool_recovers():
    assert workers.call(_square, 3, workers=1) == 9
    with pytest.raises(workers.WorkerDied, match="died"):
        workers.call(_die, 0, workers=1)
    assert workers.call(_square, 4, workers=1) == 16  # a fresh pool
