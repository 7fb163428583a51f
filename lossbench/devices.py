"""Which device a job trains on.

`resolve(device)` turns a profile's `device:` (cpu, cuda, cuda:N, auto) into a torch device string and
refuses to fall back to the CPU without a word: `auto` on a machine with an NVIDIA driver whose CUDA
torch cannot use is an error, not a weeks-long CPU run.

`SlotPool` hands each concurrent GPU job its own device on a multi-GPU box: `runs_per_device` slots
per GPU, one lock file per slot. A slot is held by an exclusive `flock` on its file for as long as the
job runs, so no slot is handed out twice and no device gets more than `runs_per_device` jobs, whether
the jobs are threads of one Snakemake process or processes of their own; a job that dies releases its
slot with its file descriptor. Under SLURM (SLURM_JOB_ID set) the scheduler binds GPUs itself
(CUDA_VISIBLE_DEVICES per job), so no pool is used.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path

DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl")


class DeviceError(RuntimeError):
    """The requested device cannot be used; the message says why and what to set instead."""


def nvidia_driver() -> str | None:
    """A description of the NVIDIA driver this machine has, or None (no GPU meant to be used)."""
    for path in DRIVER_FILES:
        if os.path.exists(path):
            try:
                with open(path) as f:
                    return f"{path}: {f.readline().strip()}"
            except OSError:
                return path
    return None


def _cuda_problem() -> str:
    """Why torch cannot use CUDA, in words a user can act on."""
    import torch

    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU-only build"
    try:
        torch.cuda.init()
    except Exception as e:  # the driver's own reason (version mismatch, no device visible, ...)
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}) failed to initialise CUDA: {e}"
    return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device " \
           f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})"


def resolve(device: str) -> str:
    """cpu | cuda | cuda:N | auto -> the torch device string a job uses. `cuda:N` also becomes the
    process's current device, so libraries that say plain "cuda" land on the same GPU."""
    import torch

    if device == "cpu":
        return "cpu"
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        driver = nvidia_driver()
        if driver:
            raise DeviceError(f"device: auto found an NVIDIA driver ({driver}) but {_cuda_problem()}. Fix the "
                              "CUDA install, or set device: cpu to run on the CPU on purpose.")
        return "cpu"
    if not device.startswith("cuda"):
        raise DeviceError(f"unknown device {device!r}; valid: cpu, cuda, cuda:N, auto")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {device} requested but {_cuda_problem()}")
    if ":" in device:
        index = int(device.split(":", 1)[1])
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device {device} requested but torch sees {torch.cuda.device_count()} CUDA devices")
        torch.cuda.set_device(index)
    return device


def describe(device: str) -> dict:
    """What a run records about the device it used (train.json, the report's provenance)."""
    import socket

    import torch

    out = {"device": "cpu", "device_type": "cpu", "host": socket.gethostname()}
    if device.startswith("cuda"):
        index = torch.device(device).index
        index = torch.cuda.current_device() if index is None else index
        out.update(device=torch.cuda.get_device_name(index), device_type="cuda", device_index=index,
                   cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))
    return out


@dataclass(frozen=True)
class Slot:
    device: int  # index among the devices this process sees
    slot: int  # which of the device's `runs_per_device` slots


class SlotPool:
    """`runs_per_device` slots on each of `devices`, shared by every job that uses the same `root`."""

    def __init__(self, root, devices, runs_per_device: int = 1, poll_seconds: float = 0.05):
        if runs_per_device < 1:
            raise ValueError(f"runs_per_device must be >= 1, got {runs_per_device}")
        if not devices:
            raise DeviceError("a device pool needs at least one device")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # slot-major order: the first jobs spread over the devices before any device takes a second job
        self.slots = [Slot(d, k) for k in range(runs_per_device) for d in devices]
        self.poll_seconds = poll_seconds

    def _try(self, slot: Slot):
        f = open(self.root / f"device{slot.device}.slot{slot.slot}.lock", "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return None
        return f

    @contextlib.contextmanager
    def acquire(self, timeout: float | None = None):
        """Hold a free slot for the `with` block; waits while every slot is busy."""
        start = time.monotonic()
        while True:
            for slot in self.slots:
                held = self._try(slot)
                if held is not None:
                    try:
                        yield slot
                    finally:
                        fcntl.flock(held, fcntl.LOCK_UN)
                        held.close()
                    return
            if timeout is not None and time.monotonic() - start > timeout:
                raise TimeoutError(f"no free device slot in {self.root} after {timeout} s")
            time.sleep(self.poll_seconds)


def pool_for(cfg: dict, root) -> SlotPool | None:
    """The profile's pool of local GPUs (`device_slots:` in the config), or None when jobs need no
    pool: a CPU profile, no usable CUDA device, or a SLURM job (the scheduler binds its GPUs)."""
    if cfg.get("device", "cpu") == "cpu" or os.environ.get("SLURM_JOB_ID"):
        return None
    import torch

    if not torch.cuda.is_available():
        return None  # resolve() in the job says why, or runs `auto` on the CPU where no driver exists
    opts, count = cfg.get("device_slots") or {}, torch.cuda.device_count()
    devices = opts.get("devices") or list(range(count))
    if any(d >= count for d in devices):
        raise DeviceError(f"device_slots/devices {devices} names a device torch does not see ({count} visible)")
    return SlotPool(root, devices, opts.get("runs_per_device", 1))
