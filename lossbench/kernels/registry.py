"""The one list of kernel implementations, with what each can run on.

`IMPLS[name]` is a KernelImpl; `get(name)` raises a KeyError listing the valid names;
`unavailable(impl, device)` says why an implementation cannot run here (None when it can).
Names are the benchmark's registry ids.
"""
from __future__ import annotations

import difflib
import importlib.util
from dataclasses import dataclass
from typing import Callable

import torch

from lossbench.kernels import csoftmax, linear_ce, softmax

LOW = (torch.bfloat16, torch.float16, torch.float32)


@dataclass(frozen=True)
class KernelImpl:
    name: str
    kind: str  # "linear_ce": fn(hidden, weight, labels, reduction); "softmax": fn(x [R, V]) -> y
    fn: Callable
    card: str
    devices: tuple[str, ...] = ("cpu", "cuda")
    dtypes: tuple[torch.dtype, ...] = LOW
    grads: bool = True  # differentiable wrt its inputs (hidden and weight for linear_ce)
    package: str | None = None  # module that must import
    compiled: bool = False  # torch.compile inside: the first call per shape compiles (opt-in on CPU)
    chunked: bool = False  # takes a `chunk_size` (tokens per chunk)
    requires: Callable[[], str | None] | None = None  # another check: why it cannot run, or None
    min_capability: tuple[int, int] | None = None  # CUDA compute capability the kernels need
    # Traffic model: linear_ce materialises the [N, V] logits in memory or keeps tiles on chip;
    # softmax makes (reads, writes) passes over the [R, V] array.
    materialises_logits: bool = False
    passes: tuple[int, int] | None = None


def _ce(name, fn, card, **kw):
    return KernelImpl(name, "linear_ce", fn, card, **kw)


def _sm(name, fn, card, **kw):
    return KernelImpl(name, "softmax", fn, card, grads=False, passes=softmax.PASSES[fn.__name__.removeprefix("c_")],
                      **kw)


def _c_sm(name, fn, card):
    """A C loop per pass (csoftmax.c): float32 on the CPU, built with the system compiler."""
    return _sm(name, fn, card, devices=("cpu",), dtypes=(torch.float32,), requires=csoftmax.unavailable)


IMPLS: dict[str, KernelImpl] = {impl.name: impl for impl in (
    _ce("ce_eager", linear_ce.ce_eager, "K4a", materialises_logits=True),
    _ce("ce_compiled", linear_ce.ce_compiled, "K4a", compiled=True, materialises_logits=True),
    _ce("lce_chunked", linear_ce.lce_chunked, "K4b-ii", materialises_logits=True, chunked=True),
    _ce("lce_chunked_compiled", linear_ce.lce_chunked_compiled, "K4b-ii", compiled=True,
        materialises_logits=True, chunked=True),
    _ce("cce", linear_ce.cce, "K1", devices=("cuda",), package="cut_cross_entropy",
        min_capability=(8, 0)),
    _ce("cce_exact", linear_ce.cce_exact, "K1", devices=("cuda",), package="cut_cross_entropy",
        min_capability=(8, 0)),
    _ce("cce_torch_compile", linear_ce.cce_torch_compile, "K1/K4d", package="cut_cross_entropy", compiled=True,
        materialises_logits=True),
    _ce("liger_flce", linear_ce.liger_flce, "K4c", devices=("cuda",), package="liger_kernel",
        materialises_logits=True),  # one chunk of logits at a time, but through memory
    _sm("softmax_3p_recompute", softmax.three_pass_recompute, "K2"),
    _sm("softmax_3p_reload", softmax.three_pass_reload, "K2"),
    _sm("softmax_2p_extexp", softmax.two_pass_extexp, "K2"),
    _sm("softmax_2p_online", softmax.two_pass_online, "K3"),
    _sm("torch_softmax", softmax.torch_softmax, "K2/K3 baseline"),
    _c_sm("softmax_c_3p_recompute", csoftmax.c_three_pass_recompute, "K2"),
    _c_sm("softmax_c_3p_reload", csoftmax.c_three_pass_reload, "K2"),
    _c_sm("softmax_c_2p_extexp", csoftmax.c_two_pass_extexp, "K2"),
    _c_sm("softmax_c_2p_online", csoftmax.c_two_pass_online, "K3"),
)}


def get(name: str) -> KernelImpl:
    if name not in IMPLS:
        close = difflib.get_close_matches(name, IMPLS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown kernel implementation {name!r}.{hint} Valid: {', '.join(IMPLS)}")
    return IMPLS[name]


def names(kind: str | None = None) -> list[str]:
    return [n for n, impl in IMPLS.items() if kind is None or impl.kind == kind]


def unavailable(impl: KernelImpl, device: str | torch.device, dtype: torch.dtype | None = None) -> str | None:
    """Why `impl` cannot run on `device` (with `dtype`), or None when it can."""
    device = torch.device(device)
    if device.type not in impl.devices:
        return f"{impl.name} runs on {', '.join(impl.devices)} only"
    if dtype is not None and dtype not in impl.dtypes:
        return f"{impl.name} does not take {dtype}"
    if impl.package and importlib.util.find_spec(impl.package) is None:
        return f"{impl.name} needs the {impl.package} package"
    if impl.requires and (reason := impl.requires()):
        return reason
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available"
        if impl.min_capability and torch.cuda.get_device_capability(device) < impl.min_capability:
            return f"{impl.name} needs compute capability {impl.min_capability} or newer"
    return None
