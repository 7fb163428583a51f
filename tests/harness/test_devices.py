"""Device choice and the local GPU slot pool, on CPU with a fake pool of devices."""
import multiprocessing as mp
import threading
import time

import pytest

from lossbench import devices


def _hold(root, n_devices, per_device, seconds, out):
    pool = devices.SlotPool(root, list(range(n_devices)), per_device, poll_seconds=0.005)
    with pool.acquire(timeout=60) as slot:
        start = time.monotonic()
        time.sleep(seconds)
        out.put((slot.device, slot.slot, start, time.monotonic()))


def _max_overlap(intervals):
    """Most intervals open at once."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def _check(held, n_devices, per_device, jobs):
    assert len(held) == jobs  # every job got a slot eventually
    for d in range(n_devices):
        on_device = [(s, e) for dev, _, s, e in held if dev == d]
        assert on_device, f"device {d} was never used"
        assert _max_overlap(on_device) <= per_device  # never oversubscribed
        for k in range(per_device):  # a slot is never handed out twice at once
            assert _max_overlap([(s, e) for dev, slot, s, e in held if (dev, slot) == (d, k)]) <= 1
    # the pool was really shared: some jobs overlapped (otherwise the test proves nothing)
    assert _max_overlap([(s, e) for _, _, s, e in held]) > 1


def test_pool_hands_out_distinct_slots_to_concurrent_processes(tmp_path):
    ctx = mp.get_context("spawn")
    out, n_devices, per_device, jobs = ctx.Queue(), 3, 2, 14
    procs = [ctx.Process(target=_hold, args=(tmp_path, n_devices, per_device, 0.3, out)) for _ in range(jobs)]
    for p in procs:
        p.start()
    held = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    _check(held, n_devices, per_device, jobs)


def test_pool_hands_out_distinct_slots_to_threads(tmp_path):
    """Jobs that are threads of one Snakemake process (force-use-threads) share the lock files too."""
    import queue

    out, n_devices, per_device, jobs = queue.Queue(), 2, 1, 6
    threads = [threading.Thread(target=_hold, args=(tmp_path, n_devices, per_device, 0.1, out)) for _ in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _check([out.get() for _ in threads], n_devices, per_device, jobs)


def test_first_jobs_spread_over_devices(tmp_path):
    pool = devices.SlotPool(tmp_path, [0, 1, 2], runs_per_device=2)
    with pool.acquire() as a, pool.acquire() as b, pool.acquire() as c, pool.acquire() as d:
        assert [a.device, b.device, c.device] == [0, 1, 2] and (d.device, d.slot) == (0, 1)


def _hold_until_killed(root, ready):
    with devices.SlotPool(root, [0], 1).acquire(timeout=60):
        ready.set()
        time.sleep(600)


def test_slot_is_released_when_its_holder_dies(tmp_path):
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=_hold_until_killed, args=(tmp_path, ready))
    p.start()
    assert ready.wait(60)  # the child holds the only slot
    pool = devices.SlotPool(tmp_path, [0], 1)
    with pytest.raises(TimeoutError):
        with pool.acquire(timeout=0.2):
            pass
    p.kill()
    p.join()
    with pool.acquire(timeout=5) as slot:
        assert slot.device == 0


def test_auto_with_a_driver_but_no_cuda_is_an_error(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "nvidia_driver", lambda: "/proc/driver/nvidia/version: NVRM version 550.54")
    with pytest.raises(devices.DeviceError, match="found an NVIDIA driver.*set device: cpu"):
        devices.resolve("auto")
    monkeypatch.setattr(devices, "nvidia_driver", lambda: None)
    assert devices.resolve("auto") == "cpu"  # no driver: a CPU machine, CPU is what was meant


def test_cuda_requested_without_cuda_says_why(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(devices.DeviceError, match="requested but"):
        devices.resolve("cuda")
    with pytest.raises(devices.DeviceError, match="valid: cpu, cuda"):
        devices.resolve("tpu")


def test_pool_only_for_local_gpu_profiles(monkeypatch, tmp_path):
    assert devices.pool_for({"device": "cpu"}, tmp_path) is None
    monkeypatch.setenv("SLURM_JOB_ID", "42")  # SLURM binds GPUs itself
    assert devices.pool_for({"device": "cuda"}, tmp_path) is None


def test_a_run_records_its_device():
    info = devices.describe("cpu")
    assert info["device"] == "cpu" and info["device_type"] == "cpu" and info["host"]
