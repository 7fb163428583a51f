"""Benchmark of the loss-layer kernels (lossbench/kernels/registry.py): time, memory, traffic
against the device's ceilings, and error against float64, per grid point and implementation.

    python -m lossbench.kernels.bench --grid smoke --out results/kernels/smoke.csv
    python -m lossbench.kernels.bench --grid full --out full.csv --slices gemma2_2b --impls cce,ce_eager \
        --dtypes bfloat16 --tokens 8192 --reps 20     # a slice: the whole full grid at 50 reps takes hours

The grids are the DAG's benchmark configs (config/tracks/kernels/<grid>.yaml: slices of points,
implementations, measurement settings); the DAG runs one slice per job (`run_slice`,
workflows/kernels.smk). Writes one tidy CSV (COLUMNS; one row per grid point × implementation × metric, METRICS says
what each metric is), a JSON of provenance next to it (same name, .json), and prints a table.

Inputs are seeded randn scaled by D^(-1/4) for E and C (as CCE's benchmark generator, so logits
have unit variance), uniform labels with a seeded `ignore_frac` set to IGNORE_INDEX, and for
reduction "none" detached per-token weights U(0, 2)/N_valid; softmax inputs are seeded 4·randn.
Errors are measured on a sub-problem of at most `err_tokens` tokens (rows) with the same V and D
against float64, since a float64 reference of the full problem is out of reach on the full grid;
they depend on (V, D, dtype, reduction, ignore fraction), not on N, so each is computed once.
Implementations that cannot run here get one row with status "skipped" and the reason;
an out-of-memory is a result (status "oom"), as the card asks.
"""
from __future__ import annotations

import argparse
import functools
import math
import sys
import time
import traceback
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path

import pandas as pd
import torch

from lossbench import io
from lossbench.kernels import registry, roofline
from lossbench.kernels.linear_ce import ce_eager
from lossbench.kernels.measure import median_ci, median_iqr, peak_bytes, synchronize, time_ms
from lossbench.kernels.softmax import softmax_float64
from lossbench.lm_loss import IGNORE_INDEX
from lossbench.seeding import derive_seed, generator

COLUMNS = ("slice", "bench", "impl", "device", "dtype", "n", "v", "d", "reduction", "ignore_frac", "seed",
           "metric", "value", "unit", "status", "note")

# metric -> (unit, meaning). bench "device" rows carry the ceilings; the others one (point, impl).
METRICS = {
    "copy_gbps": ("GB/s", "measured copy bandwidth, 2·bytes/t of dst.copy_(src) (device row)"),
    "gemm_tflops": ("TFLOP/s", "measured n³ matmul throughput in `dtype` (device row)"),
    "datasheet_gbps": ("GB/s", "vendor HBM bandwidth of a known GPU, unverified (device row)"),
    "datasheet_tflops": ("TFLOP/s", "vendor dense BF16 throughput of a known GPU, unverified (device row)"),
    "first_call_s": ("s", "first call (fw+bw for linear_ce), compile time included"),
    "t_fw_ms": ("ms", "median forward time (softmax: the whole op; liger_flce's mean computes the gradients here)"),
    "t_fw_iqr_ms": ("ms", "interquartile range of the forward time"),
    "t_fw_ci_low_ms": ("ms", "lower end of the median forward time's distribution-free CI (order statistics)"),
    "t_fw_ci_high_ms": ("ms", "upper end of the median forward time's CI"),
    "t_fwbw_ms": ("ms", "median forward + backward time (linear_ce)"),
    "t_fwbw_iqr_ms": ("ms", "interquartile range of the forward + backward time"),
    "t_fwbw_ci_low_ms": ("ms", "lower end of the median forward + backward time's CI"),
    "t_fwbw_ci_high_ms": ("ms", "upper end of the median forward + backward time's CI"),
    "op_mem_mb": ("MB", "peak bytes allocated during one fw+bw (softmax: one op) above those before, /1e6"),
    "excess_mem_mb": ("MB", "op_mem minus the outputs (dE, dC and the loss; softmax: y), /1e6"),
    "out_mem_mb": ("MB", "the unavoidable outputs (dE, dC and the loss; softmax: y): the memory floor, /1e6"),
    "bytes_floor": ("B", "minimum traffic: 3·s·(N+V)·D + 8N (linear_ce), 2·R·V·s (softmax)"),
    "bytes_model": ("B", "the algorithm's traffic: floor + 4·s·N·V if logits go through memory; passes·R·V·s"),
    "gbps": ("GB/s", "bytes_model / median time"),
    "bw_frac": ("1", "gbps / copy_gbps"),
    "tflops": ("TFLOP/s", "useful FLOPs 6·N·V·D / median fw+bw time (linear_ce)"),
    "flops_frac": ("1", "tflops / gemm_tflops of the dtype"),
    "t_bound_ms": ("ms", "max(bytes_floor / copy bandwidth, FLOPs / GEMM throughput): the physical floor"),
    "roofline_eff": ("1", "t_bound_ms / median time"),
    "err_loss_abs": ("1", "|loss − loss_fp64| (reduction none: of Σ w·ℓ)"),
    "err_loss_rel": ("1", "err_loss_abs / |loss_fp64|"),
    "err_dE_abs": ("1", "max |dE − dE_fp64|"),
    "err_dE_rel": ("1", "err_dE_abs / max |dE_fp64|"),
    "cos_dE": ("1", "cosine similarity of dE and dE_fp64"),
    "err_dC_abs": ("1", "max |dC − dC_fp64|"),
    "err_dC_rel": ("1", "err_dC_abs / max |dC_fp64|"),
    "cos_dC": ("1", "cosine similarity of dC and dC_fp64"),
    "err_abs": ("1", "softmax: max |y − y_fp64|"),
    "err_rel": ("1", "softmax: max |y − y_fp64| / y_fp64 over entries ≥ 1e-6 of their row's largest"),
    "err_rowsum": ("1", "softmax: max |Σ_j y_j − 1| over rows"),
    "status": ("", "a row of its own when the combination did not run: status and note say why"),
}


@dataclass(frozen=True)
class Point:
    bench: str  # "linear_ce" (n tokens, v, d) or "softmax" (n rows of length v)
    n: int
    v: int
    d: int | None
    dtype: str
    reduction: str = "mean"
    ignore_frac: float = 0.0


@dataclass(frozen=True)
class Grid:
    points: tuple[Point, ...]
    warmup: int
    reps: int
    err_tokens: int  # size of the float64-checked sub-problem (tokens or rows)
    copy_bytes: int  # size of the copy measuring the bandwidth bound
    gemm_n: int
    chunk_size: int = 4096  # token chunk of the chunked implementations
    ci: float = 0.95  # level of each median time's CI
    slices: tuple[str, ...] = ()  # the config slice of each point ("" when built by hand)


def slice_points(spec: dict) -> tuple[Point, ...]:
    """The grid points of one slice of a benchmark config: the product of its lists, with N
    innermost so consecutive points share the float64-checked sub-problem (it does not depend on N)."""
    if spec["bench"] == "softmax":
        return tuple(Point("softmax", n, v, None, dt) for v in spec["v"] for dt in spec["dtype"] for n in spec["n"])
    pairs = [tuple(p) for p in spec["vd"]] if "vd" in spec else [(v, d) for v in spec["v"] for d in spec["d"]]
    return tuple(Point("linear_ce", n, v, d, dt, red, float(ign)) for v, d in pairs for dt in spec["dtype"]
                 for red in spec.get("reduction", ["mean"]) for ign in spec.get("ignore_frac", [0.0])
                 for n in spec["n"])


def grid_of(track: dict, slices=None) -> Grid:
    """The Grid of a validated benchmark config (lossbench.config.load_benchmark), restricted to `slices`."""
    names = list(track["slices"]) if slices is None else list(slices)
    for name in names:
        if name not in track["slices"]:
            raise KeyError(f"unknown slice {name!r}; valid: {', '.join(track['slices'])}")
    m = {**MEASURE_DEFAULTS, **track["measure"]}
    points = tuple((name, p) for name in names for p in slice_points(track["slices"][name]))
    return Grid(points=tuple(p for _, p in points), slices=tuple(name for name, _ in points),
                warmup=m["warmup"], reps=m["reps"], err_tokens=m["err_tokens"], copy_bytes=m["copy_bytes"],
                gemm_n=m["gemm_n"], chunk_size=m["chunk_size"], ci=m["ci"])


# the schema's defaults (config/schema/benchmark_kernels.schema.yaml), for keys a config leaves out
MEASURE_DEFAULTS = {"err_tokens": 256, "copy_bytes": 256 << 20, "gemm_n": 1024, "chunk_size": 4096,
                    "compile": False, "seed": 0, "ci": 0.95}
ROOT = Path(__file__).resolve().parents[2]
GRID_CONFIGS = {name: ROOT / "config" / "tracks" / "kernels" / f"{name}.yaml" for name in ("smoke", "full")}


# ---------------------------------------------------------------------------------------- inputs

def linear_ce_inputs(n, v, d, dtype, ignore_frac, device, seed, tag="timed"):
    """(E [n, D], C [V, D] leaves requiring grad, labels [n], per-token weights [n]), seeded."""
    g = generator(derive_seed("kernels", "linear_ce", n, v, d, dtype, ignore_frac, seed, tag), device)
    scale = d ** -0.25
    hidden = (torch.randn(n, d, generator=g, device=device) * scale).to(dtype).requires_grad_()
    weight = (torch.randn(v, d, generator=g, device=device) * scale).to(dtype).requires_grad_()
    labels = torch.randint(0, v, (n,), generator=g, device=device)
    labels[torch.rand(n, generator=g, device=device) < ignore_frac] = IGNORE_INDEX
    valid = labels != IGNORE_INDEX
    w = torch.rand(n, generator=g, device=device) * 2 * valid / valid.sum().clamp_min(1)
    return hidden, weight, labels, w


def softmax_inputs(rows, v, dtype, device, seed):
    g = generator(derive_seed("kernels", "softmax", rows, v, dtype, seed), device)
    return (4 * torch.randn(rows, v, generator=g, device=device)).to(dtype)


def loss_and_grads(fn, hidden, weight, labels, w, reduction):
    """The scalar loss (Σ w·ℓ for reduction "none") and its gradients wrt hidden and weight."""
    hidden, weight = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
    out = fn(hidden, weight, labels, reduction)
    loss = out if reduction == "mean" else (out * w.to(out.dtype)).sum()
    loss.backward()
    return loss.detach(), hidden.grad, weight.grad


def _max_err(x, ref):
    err = (x.double() - ref).abs().max().item()
    return err, err / max(ref.abs().max().item(), 1e-300), torch.nn.functional.cosine_similarity(
        x.double().flatten(), ref.flatten(), dim=0).item()


# ---------------------------------------------------------------------------------- measurement

class Runner:
    def __init__(self, grid: Grid, device: torch.device, seed: int):
        self.grid, self.device, self.seed = grid, device, seed
        self._errors = {}  # (impl, sub-problem key) -> error metrics
        self._ref = (None, None)  # (sub-problem key, float64 (loss, dE, dC)): dC is V×D float64, keep one
        self.ceilings = {}  # copy_gbps, gemm_tflops per dtype

    def device_rows(self, dtypes):
        dev = self.device
        self.ceilings["copy_gbps"] = roofline.copy_gbps(dev, self.grid.copy_bytes)
        rows = [("", "copy_gbps", self.ceilings["copy_gbps"])]
        for dt in sorted(dtypes):
            self.ceilings[dt] = roofline.gemm_tflops(dev, getattr(torch, dt), self.grid.gemm_n)
            rows.append((dt, "gemm_tflops", self.ceilings[dt]))
        sheet = roofline.datasheet(dev)
        if sheet:
            rows += [("", "datasheet_gbps", sheet[0]), ("bfloat16", "datasheet_tflops", sheet[1])]
        return [dict(bench="device", dtype=dt, metric=m, value=v, status="ok") for dt, m, v in rows]

    def _timings(self, fn, prefix, before=None):
        times = time_ms(fn, self.device, warmup=self.grid.warmup, reps=self.grid.reps, before=before)
        q50, iqr = median_iqr(times)
        low, high = median_ci(times, self.grid.ci)
        return {f"t_{prefix}_ms": q50, f"t_{prefix}_iqr_ms": iqr, f"t_{prefix}_ci_low_ms": low,
                f"t_{prefix}_ci_high_ms": high}

    def _first_call(self, fn):
        synchronize(self.device)
        t0 = time.perf_counter()
        out = fn()
        synchronize(self.device)
        return out, time.perf_counter() - t0

    def _limits(self, t_ms, floor, model, flops, dtype):
        bw, peak = self.ceilings["copy_gbps"] * 1e9, self.ceilings[dtype] * 1e12
        t_bound = max(floor / bw, flops / peak) * 1e3
        out = {"bytes_floor": floor, "bytes_model": model, "gbps": model / (t_ms * 1e-3) / 1e9,
               "t_bound_ms": t_bound, "roofline_eff": t_bound / t_ms}
        out["bw_frac"] = out["gbps"] * 1e9 / bw
        if flops:
            out["tflops"] = flops / (t_ms * 1e-3) / 1e12
            out["flops_frac"] = out["tflops"] * 1e12 / peak
        return out

    def _fn(self, impl):
        """The implementation's function, with the grid's chunk size where it takes one."""
        return functools.partial(impl.fn, chunk_size=self.grid.chunk_size) if impl.chunked else impl.fn

    def linear_ce(self, impl, p: Point, inputs):
        hidden, weight, labels, w = inputs
        dtype = getattr(torch, p.dtype)
        fn = self._fn(impl)

        def forward():
            out = fn(hidden, weight, labels, p.reduction)
            return out if p.reduction == "mean" else (out * w).sum()

        def clear():
            hidden.grad = weight.grad = None

        clear()
        _, first = self._first_call(lambda: forward().backward())
        m = {"first_call_s": first, **self._timings(forward, "fw"),
             **self._timings(lambda: forward().backward(), "fwbw", before=clear)}
        clear()
        mem = peak_bytes(lambda: forward().backward(), self.device)
        outputs = dtype.itemsize * (p.n + p.v) * p.d + 4 * (p.n if p.reduction == "none" else 1)
        m |= {"op_mem_mb": mem / 1e6, "excess_mem_mb": (mem - outputs) / 1e6, "out_mem_mb": outputs / 1e6}
        floor, model = roofline.linear_ce_bytes(p.n, p.v, p.d, dtype.itemsize, impl.materialises_logits)
        m |= self._limits(m["t_fwbw_ms"], floor, model, roofline.linear_ce_flops(p.n, p.v, p.d), p.dtype)
        return m | self._linear_ce_errors(impl, p)

    def _linear_ce_errors(self, impl, p: Point):
        n = min(self.grid.err_tokens, p.n)
        key = (impl.name, n, p.v, p.d, p.dtype, p.reduction, p.ignore_frac)
        if key not in self._errors:
            sub = linear_ce_inputs(n, p.v, p.d, getattr(torch, p.dtype), p.ignore_frac, self.device, self.seed,
                                   tag="error")
            if self._ref[0] != key[1:]:
                self._ref = (None, None)  # free the old one first
                as64 = [sub[0].double(), sub[1].double(), sub[2], sub[3].double()]
                self._ref = (key[1:], loss_and_grads(ce_eager, *as64, p.reduction))
            ref_loss, ref_de, ref_dc = self._ref[1]
            loss, de, dc = loss_and_grads(self._fn(impl), *sub, p.reduction)
            err = abs(loss.double().item() - ref_loss.item())
            e_abs, e_rel, e_cos = _max_err(de, ref_de)
            c_abs, c_rel, c_cos = _max_err(dc, ref_dc)
            self._errors[key] = {"err_loss_abs": err, "err_loss_rel": err / abs(ref_loss.item()),
                                 "err_dE_abs": e_abs, "err_dE_rel": e_rel, "cos_dE": e_cos,
                                 "err_dC_abs": c_abs, "err_dC_rel": c_rel, "cos_dC": c_cos}
        return self._errors[key]

    def softmax(self, impl, p: Point, x):
        itemsize = x.dtype.itemsize
        y, first = self._first_call(lambda: impl.fn(x))
        m = {"first_call_s": first, **self._timings(lambda: impl.fn(x), "fw")}
        mem = peak_bytes(lambda: impl.fn(x), self.device)
        out = x.numel() * itemsize
        m |= {"op_mem_mb": mem / 1e6, "excess_mem_mb": (mem - out) / 1e6, "out_mem_mb": out / 1e6}
        m |= self._limits(m["t_fw_ms"], *roofline.softmax_bytes(p.n, p.v, itemsize, impl.passes), 0.0, p.dtype)
        k = min(self.grid.err_tokens, p.n)  # rows are independent: check the first k against float64
        ref, got = softmax_float64(x[:k]), y[:k].double()
        big = ref >= 1e-6 * ref.amax(-1, keepdim=True)
        m |= {"err_abs": (got - ref).abs().max().item(),
              "err_rel": ((got - ref).abs()[big] / ref[big]).max().item(),
              "err_rowsum": (got.sum(-1) - 1).abs().max().item()}
        return m


def run(grid: Grid, device, *, impls=None, compile_on_cpu=False, seed=0, dtypes=None, benches=None, log=print):
    """All rows (dicts with COLUMNS) of `grid` on `device`, for `impls` (default: all registered)."""
    device = torch.device(device)
    slices = grid.slices or ("",) * len(grid.points)
    points = [(name, p) for name, p in zip(slices, grid.points) if (dtypes is None or p.dtype in dtypes) and
              (benches is None or p.bench in benches)]
    chosen = [registry.get(name) for name in (impls or registry.names())]
    runner = Runner(grid, device, seed)
    rows = [r | {"slice": ",".join(dict.fromkeys(name for name, _ in points))}  # the ceilings of these slices
            for r in runner.device_rows({p.dtype for _, p in points})]
    for name, p in points:
        log(f"{name}: {p.bench} n={p.n} v={p.v} d={p.d} {p.dtype} {p.reduction} ignore={p.ignore_frac}")
        key = asdict(p) | {"seed": seed, "slice": name}
        if p.bench == "softmax":  # no hidden size, reduction or targets: empty, not a made-up value
            key |= {"d": "", "reduction": "", "ignore_frac": ""}
        try:
            inputs = (linear_ce_inputs(p.n, p.v, p.d, getattr(torch, p.dtype), p.ignore_frac, device, seed)
                      if p.bench == "linear_ce" else softmax_inputs(p.n, p.v, getattr(torch, p.dtype), device, seed))
        except torch.OutOfMemoryError:
            inputs = None
        for impl in (i for i in chosen if i.kind == p.bench):
            rows += _rows_for(runner, impl, p, inputs, key, compile_on_cpu, log)
        del inputs
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return [{c: r.get(c, "") for c in COLUMNS} | {"device": str(device), "seed": seed, "unit": METRICS[r["metric"]][0]}
            for r in rows]


def _rows_for(runner, impl, p, inputs, key, compile_on_cpu, log):
    reason = registry.unavailable(impl, runner.device, getattr(torch, p.dtype))
    if reason is None and impl.compiled and runner.device.type == "cpu" and not compile_on_cpu:
        reason = "compiled: opt-in on CPU (--compile), compiling takes minutes there"
    if reason is None and inputs is None:
        return [key | dict(impl=impl.name, metric="status", value=math.nan, status="oom", note="inputs do not fit")]
    if reason:
        return [key | dict(impl=impl.name, metric="status", value=math.nan, status="skipped", note=reason)]
    try:
        metrics = getattr(runner, p.bench)(impl, p, inputs)
    except torch.OutOfMemoryError as err:
        status, note = "oom", str(err).splitlines()[0][:200]
    except Exception as err:  # noqa: BLE001 - one failing implementation must not stop the grid
        traceback.print_exc(file=sys.stderr)
        status, note = "error", f"{type(err).__name__}: {err}"[:200]
    else:
        log(f"  {impl.name:22s} " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k in _SHOWN))
        return [key | dict(impl=impl.name, metric=k, value=v, status="ok") for k, v in metrics.items()]
    finally:
        if runner.device.type == "cuda":
            torch.cuda.empty_cache()
    log(f"  {impl.name:22s} {status}: {note}")
    return [key | dict(impl=impl.name, metric="status", value=math.nan, status=status, note=note)]


# -------------------------------------------------------------------------------------- output

_SHOWN = ("t_fw_ms", "t_fwbw_ms", "op_mem_mb", "gbps", "bw_frac", "tflops", "roofline_eff",
          "err_loss_rel", "err_dE_rel", "err_dC_rel", "err_rel")


def table(df: pd.DataFrame) -> str:
    """The printed summary: one line per (point, impl) with the main metrics as columns."""
    ok = df[(df.status == "ok") & (df.bench != "device")]
    keys = ["bench", "dtype", "n", "v", "d", "reduction", "ignore_frac", "impl"]
    wide = ok.pivot_table(index=keys, columns="metric", values="value", sort=False)
    wide = wide[[m for m in _SHOWN if m in wide.columns]]
    ceilings = df[df.bench == "device"]
    head = "ceilings: " + ", ".join(f"{r.metric}{'[' + r.dtype + ']' if r.dtype else ''}={r.value:.4g}"
                                    for r in ceilings.itertuples())
    not_run = df[df.status != "ok"].groupby(["impl", "status", "note"]).size().rename("points")
    tail = "" if not_run.empty else "\nnot run:\n" + not_run.reset_index().to_string(index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4g}".format):
        return f"{head}\n{wide.to_string()}{tail}"


def provenance(config_name, grid, device, options: dict, wall_s):
    versions = io.package_versions()
    for name in ("triton", "cut-cross-entropy", "liger-kernel"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    device = torch.device(device)
    return {"config": config_name, "slices": sorted(set(grid.slices)), "warmup": grid.warmup, "reps": grid.reps,
            "err_tokens": grid.err_tokens, "copy_bytes": grid.copy_bytes, "gemm_n": grid.gemm_n,
            "chunk_size": grid.chunk_size, "ci": grid.ci, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else io.hardware(),
            "torch_threads": torch.get_num_threads(), "hardware": io.hardware(), "versions": versions,
            **io.git_state(), "options": options, "wall_s": wall_s,
            "metrics": {k: {"unit": u, "meaning": m} for k, (u, m) in METRICS.items()}}


def write_results(out: Path, rows, meta) -> pd.DataFrame:
    """The tidy CSV and its provenance JSON (same name, .json), each written atomically."""
    df = pd.DataFrame(rows, columns=COLUMNS)
    io.write_csv(out, df)
    io.write_json(Path(out).with_suffix(".json"), meta)
    return df


def run_slice(track: dict, slice_name: str, device: str, out_csv, log_path=None) -> None:
    """One DAG job: slice `slice_name` of benchmark config `track` on `device`, to `out_csv` (+ .json).
    The config's `threads` apply for the job only (a pool worker keeps its own setting afterwards)."""
    measure = {**MEASURE_DEFAULTS, **track["measure"]}
    threads = torch.get_num_threads()
    log_file = open(log_path, "w") if log_path else sys.stderr
    t0 = time.perf_counter()
    try:
        if measure.get("threads"):
            torch.set_num_threads(measure["threads"])
        grid = grid_of(track, [slice_name])
        rows = run(grid, device, impls=track.get("impls"), compile_on_cpu=measure["compile"],
                   seed=measure["seed"], log=lambda s: print(s, file=log_file, flush=True))
        meta = provenance(track["track"], grid, device, {"slice": slice_name, "measure": measure},
                          time.perf_counter() - t0)
        write_results(Path(out_csv), rows, meta)
    finally:
        torch.set_num_threads(threads)
        if log_path:
            log_file.close()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m lossbench.kernels.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", choices=sorted(GRID_CONFIGS), default="smoke",
                    help="config/tracks/kernels/<grid>.yaml, the DAG's own benchmark configs")
    ap.add_argument("--config", type=Path, help="another benchmark config (instead of --grid)")
    ap.add_argument("--slices", help="comma-separated subset of the config's slices")
    ap.add_argument("--out", required=True, type=Path, help="CSV path; provenance goes next to it as .json")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--impls", help=f"comma-separated subset of: {', '.join(registry.names())}")
    ap.add_argument("--dtypes", help="comma-separated subset of the grid's dtypes, e.g. bfloat16")
    ap.add_argument("--bench", choices=("linear_ce", "softmax"), help="only one of the two benchmarks")
    ap.add_argument("--tokens", help="comma-separated subset of the grid's N (tokens, or softmax rows)")
    ap.add_argument("--warmup", type=int, help="override the config's warm-up calls")
    ap.add_argument("--reps", type=int, help="override the config's timed calls")
    ap.add_argument("--compile", action="store_true", help="also run the torch.compile'd implementations on CPU")
    ap.add_argument("--seed", type=int, help="override the config's input seed")
    ap.add_argument("--threads", type=int,
                    help="torch CPU threads (on a busy shared machine, 1 thread times more steadily)")
    args = ap.parse_args(argv)
    from lossbench import config

    track = config.load_benchmark(args.config or GRID_CONFIGS[args.grid])
    measure = {**MEASURE_DEFAULTS, **track["measure"]}
    threads = args.threads or measure.get("threads")
    if threads:
        torch.set_num_threads(threads)
    impls = args.impls.split(",") if args.impls else track.get("impls")
    for name in impls or ():
        registry.get(name)  # an unknown name fails here, listing the valid ones
    t0 = time.perf_counter()
    grid = grid_of(track, args.slices.split(",") if args.slices else None)
    tokens = {int(n) for n in args.tokens.split(",")} if args.tokens else None
    keep = [i for i, p in enumerate(grid.points) if tokens is None or p.n in tokens]
    grid = replace(grid, warmup=grid.warmup if args.warmup is None else args.warmup,
                   reps=grid.reps if args.reps is None else args.reps,
                   points=tuple(grid.points[i] for i in keep), slices=tuple(grid.slices[i] for i in keep))
    seed = measure["seed"] if args.seed is None else args.seed
    rows = run(grid, args.device, impls=impls, compile_on_cpu=args.compile or measure["compile"], seed=seed,
               dtypes=args.dtypes.split(",") if args.dtypes else None,
               benches=[args.bench] if args.bench else None, log=lambda s: print(s, file=sys.stderr))
    meta = provenance(track["track"], grid, args.device, vars(args) | {"config": str(args.config or args.grid)},
                      time.perf_counter() - t0)
    df = write_results(args.out, rows, meta)
    print(table(df))
    print(f"wrote {args.out} ({len(df)} rows) in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
