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


_ORPHAN_PARENT = """
import sys, time
from lossbench import workers

def main():
    workers.call(time.sleep, 120, workers=1)

if __name__ == "__main__":
    main()
"""


def _children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc")
def test_workers_exit_when_their_parent_is_killed(tmp_path):
    """A hard kill of the Snakemake process alone must not leave workers finishing runs as orphans."""
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(_ORPHAN_PARENT)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parent = subprocess.Popen([sys.executable, str(script)], cwd=root, env={**os.environ, "PYTHONPATH": root})
    try:
        deadline = time.time() + 60
        worker = None
        while time.time() < deadline and worker is None:  # the spawned worker (not the resource tracker)
            for c in _children(parent.pid):
                with open(f"/proc/{c}/cmdline", "rb") as f:
                    if b"spawn_main" in f.read():
                        worker = c
            time.sleep(0.2)
        assert worker is not None, "the pool never started its worker"
        time.sleep(1)  # the worker's watch thread is running once its initializer has run
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 10
        while time.time() < deadline and _alive(worker):
            time.sleep(0.1)
        assert not _alive(worker), "the worker outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
