"""The softmax variants of softmax.py as C loops (csoftmax.c), one loop per pass over memory, so a
CPU timing measures the algorithms' pass counts (card K2 (iii): "not the paper's hardware").

Built on first use with the system C compiler (`CC`, default cc) at -O3 -march=native into
resources/build/ (keyed by the source, the flags and the compiler), then loaded with ctypes.
`unavailable()` says why they cannot run (no compiler, or the build failed). float32, CPU,
single-threaded; inputs are made contiguous. The polynomial and ln2 split are softmax.py's.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from lossbench.kernels import softmax

SOURCE = Path(__file__).with_name("csoftmax.c")
BUILD_DIR = Path(__file__).resolve().parents[2] / "resources" / "build"
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC")
FUNCTIONS = ("softmax_3p_recompute", "softmax_3p_reload", "softmax_2p_extexp", "softmax_2p_online")


class _Consts(ctypes.Structure):
    _fields_ = [("poly", ctypes.c_float * 6), ("log2e", ctypes.c_float), ("ln2_hi", ctypes.c_float),
                ("ln2_mid", ctypes.c_float), ("ln2_lo", ctypes.c_float)]


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc"))


@functools.cache
def library() -> ctypes.CDLL:
    """The compiled library (built once per source/flags/compiler; the build is atomic)."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler (set CC or install gcc)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode() + version.encode()).hexdigest()[:12]
    target = BUILD_DIR / f"csoftmax-{key}.so"
    if not target.exists():
        BUILD_DIR.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=BUILD_DIR, suffix=".so")
        os.close(fd)
        try:
            out = subprocess.run([cc, *FLAGS, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(f"building {SOURCE.name} failed: {out.stderr[-500:]}")
            os.replace(tmp, target)  # parallel test workers may race: the last rename wins, same bytes
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(target))
    for name in FUNCTIONS:
        getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                       ctypes.POINTER(_Consts)]
        getattr(lib, name).restype = None
    return lib


@functools.cache
def _consts() -> _Consts:
    return _Consts((ctypes.c_float * 6)(*softmax._POLY), 1 / math.log(2), softmax._LN2_HI, softmax._LN2_MID,
                   softmax._LN2_LO)


def unavailable() -> str | None:
    """Why the C variants cannot run here, or None."""
    try:
        library()
    except (RuntimeError, OSError) as err:
        return f"C softmax: {err}"
    return None


def _call(name: str, x: torch.Tensor) -> torch.Tensor:
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 2:
        raise ValueError(f"C softmax {name}: needs a 2-D float32 CPU tensor, got {x.dim()}-D {x.dtype} on {x.device}")
    x = x.contiguous()
    y = torch.empty_like(x)
    getattr(library(), name)(x.data_ptr(), y.data_ptr(), x.shape[0], x.shape[1], ctypes.byref(_consts()))
    return y


def c_three_pass_recompute(x):
    return _call("softmax_3p_recompute", x)


def c_three_pass_reload(x):
    return _call("softmax_3p_reload", x)


def c_two_pass_extexp(x):
    return _call("softmax_2p_extexp", x)


def c_two_pass_online(x):
    return _call("softmax_2p_online", x)
