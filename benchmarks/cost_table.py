"""The throughput table `lossbench plan` prices jobs with (config/throughput.yaml), with provenance.

    python benchmarks/cost_table.py                        # CPU figures for every profile in PROFILES
    python benchmarks/cost_table.py --only 'train_run/grokking/*'      # re-measure some keys, keep the rest
    python benchmarks/cost_table.py --device cuda --profiles config/tier_embedded_gpu.yaml \\
        --out results/gpu_check/throughput.yaml            # on a GPU box: measured cuda entries

The keys are those `lossbench plan` gives the jobs of each profile's dry run (lossbench/plan.py), so
the table covers exactly what the plan looks up. Per key, one representative job (the track's
baseline method, the protocol's first dataset, the first seed) is measured:

  measured  the function the DAG job calls, in one scratch folder (inputs made once, at one step):
            a training job (run or stage) at k0 steps and then at k0 + 1, 8, 64, ... more until the
            extra steps take TARGET_S: the slope is unit_s (evaluation every N steps is amortised
            into it), the intercept fixed_s (set-up, final evaluation); other rules once (fixed_s).
            On the CPU the figure is the process's CPU time (one torch thread, as DAG jobs run), so
            other users of the machine do not inflate it much; the load average is recorded beside
            it. On a GPU it is wall time.
            Classification runs are measured with one validation point (curve_points 1): the full
            runs' other curve points are not counted (about 3% of a CIFAR run). CIFAR runs read
            random images with CIFAR's class counts and a 2-per-class held-out split (no network
            here); their fixed_s is scaled to the real 10,000 held-out images.
  derived   (cuda, from a CPU run) the same calls counted under a torch dispatch mode: aten kernels
            (views excluded) and FLOPs (torch.utils.flop_counter) per step and per job; seconds =
            kernels × LAUNCH_S + FLOPs / (MFU × peak) on H100 (bf16 peak for amp protocols, fp32
            otherwise: torch leaves TF32 off for matmuls), marked estimate: true.
  job_start_s (per device) what a job that is its own process pays before it works: the CPU time of
            importing torch and lossbench, measured; on the GPU box plus a CUDA context (assumed).
  estimated where nothing can run here (hub models and corpora, downloads, the GPU kernel grid,
            aggregation and report): ESTIMATES, each with its derivation, marked estimate: true.
Host-side rules (metrics, labels, data preparation, aggregation) cost the same on the GPU box: their
cuda figure is the CPU one (host: true).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import fnmatch
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lossbench import data  # noqa: E402
from lossbench import config as lbconfig  # noqa: E402
from lossbench import io, plan, runner, tasks  # noqa: E402

PROFILES = ("config/smoke.yaml", "config/full.yaml", "config/tier_embedded_gpu.yaml", "config/tier_core_claims.yaml",
            "config/full_cpu.yaml", "config/grokking_40k_cpu.yaml", "config/lm_t0_study_cpu.yaml",
            "config/synthpref_study_cpu.yaml")  # the tiers and the published CPU studies
TARGET_S = 3.0  # seconds of stepping a measurement adds steps until
# H100 SXM datasheet (dense) and the assumptions that turn counts into seconds
H100 = {"bf16_tflops": 989.0, "fp32_tflops": 67.0, "mfu": 0.4, "launch_s": 10e-6, "cuda_init_s": 2.0}
CIFAR = {"cifar10": (10, 5000, 1000), "cifar100": (100, 500, 100)}  # classes, train and held-out images per class
HELDOUT_PER_CLASS = 2  # of the random stand-in for CIFAR
HOST_RULES = {"evaluate_run", "pref_label", "prepare_source", "download_source", "aggregate_results",
              "aggregate_kernels", "aggregate_overopt", "build_report", "all", "pref_reference", "choose_trial"}
STAGE = r"results/(?P<profile>\w+)/stages/(?P<track>\w+)/(?P<protocol>\w+)/seed(?P<seed>\d+)/"
RUN = r"results/(?P<profile>\w+)/runs/(?P<track>\w+)/(?P<dataset>\w+)/(?P<method>\w+)/(?P<variant>[^/]+)/seed(?P<seed>\d+)/"
PRODUCERS = [  # an input file -> the rule that writes it (as in workflows/*.smk)
    (r"resources/data/(?P<source>\w+)/prepared\.npz", "prepare_source"),
    (STAGE + r"teacher_(?P<dataset>\w+)\.pt", "classification_teacher"),
    (STAGE + r"reference_(?P<dataset>\w+)\.npz", "lm_reference"),
    (STAGE + r"(sft\.pt|forget\.npz)", "pref_sft"),
    (STAGE + r"samples\.npz", "pref_sample"),
    (STAGE + r"labels_(?P<dataset>\w+)\.npz", "pref_label"),
    (STAGE + r"reward_model_(?P<dataset>\w+)\.pt", "pref_reward_model"),
    (STAGE + r"reward_ensemble_(?P<dataset>\w+)\.pt", "pref_overopt"),  # beside overopt_<dataset>.csv
    (RUN + r"train\.json", "train_run"),
    (RUN + r"eval\.npz", "pref_sample_eval"),
]


# ------------------------------------------------------------------------------- one call, timed or counted
@dataclass
class Call:
    seconds: float  # CPU time of this process on the CPU (what a job costs, whatever else runs), else wall
    wall: float
    load: float
    kernels: int = 0
    flops: float = 0.0


class _Counter(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts aten calls that launch work (views excluded: about one GPU kernel each) and their FLOPs
    (torch.utils.flop_counter's formulas; FlopCounterMode itself hooks modules, which breaks
    optimisers that call autograd.grad)."""

    def __init__(self):
        super().__init__()
        self.kernels, self.flops = 0, 0.0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch.utils.flop_counter import flop_registry

        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.kernels += not func.is_view
        if func._overloadpacket in flop_registry:
            self.flops += flop_registry[func._overloadpacket](*args, **kwargs, out_val=out)
        return out


def call(fn, count=False, device="cpu") -> Call:
    load, counter = os.getloadavg()[0], _Counter()
    t0, c0 = time.perf_counter(), time.process_time()
    with counter if count else contextlib.nullcontext():
        out = fn()
    if device != "cpu":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if isinstance(out, dict) and out.get("status") not in (None, "ok"):  # a training run's train.json
        raise RuntimeError(f"measurement run {out['status']}: {out.get('error') or out}")
    return Call(cpu if device == "cpu" else wall, wall, load, counter.kernels, counter.flops)


# ------------------------------------------------------------------------------- the jobs, run by hand
def short_track(track: dict, k: int) -> dict:
    """The track with every step knob of its protocols at k (and one classification curve point)."""
    t = copy.deepcopy(track)
    for proto in t["protocols"].values():
        if t["task"] == "classification":
            proto["budget"] = {"steps": k, "batch_size": proto["budget"]["batch_size"]}
            proto["curve_points"] = 1
            if "teacher" in proto:
                proto["teacher"]["budget"] = {"steps": k, "batch_size": proto["teacher"].get("budget", proto["budget"])["batch_size"]}
        for block in {"preference": ("sft", "reward_model", "train"), "lm_pretraining": ("budget", "reference"),
                      "grokking": ("budget",)}.get(t["task"], ()):
            if block in proto:
                proto[block]["steps"] = k
    return t


def write_cifar_standin(source: str, out) -> None:
    """Random images with CIFAR's class counts (train) and HELDOUT_PER_CLASS held-out images per class."""
    k, n_train, _ = CIFAR[data.source_entry(source)["params"]["variant"]]
    rng = np.random.default_rng(0)
    y_tr, y_ho = np.repeat(np.arange(k), n_train), np.repeat(np.arange(k), HELDOUT_PER_CLASS)
    io.write_npz(out, x_train=rng.integers(0, 256, (len(y_tr), 32, 32, 3), dtype=np.uint8), y_train=y_tr,
                 x_heldout=rng.integers(0, 256, (len(y_ho), 32, 32, 3), dtype=np.uint8), y_heldout=y_ho,
                 num_classes=np.array(k))


def eval_scale(job: plan.Job, tracks: dict) -> float:
    """Real held-out images over the stand-in's, for training jobs (which evaluate) on a CIFAR stand-in."""
    dataset = job.wildcards.get("dataset")
    if job.wildcards.get("track") not in tracks or dataset is None or job.rule not in plan.UNITS:
        return 1.0
    variant = data.source_entry(data.source_of(dataset)).get("params", {}).get("variant")
    return CIFAR[variant][2] / HELDOUT_PER_CLASS if variant in CIFAR else 1.0


class Workspace:
    """A scratch folder (the working directory while it runs) where jobs run by hand, each after
    the jobs writing its inputs (run at one step: they are inputs, not measurements)."""

    def __init__(self, tracks: dict, benches: dict, device: str):
        self.tracks, self.benches, self.device = tracks, benches, device

    def ensure(self, paths) -> None:
        for path in map(str, paths):
            if os.path.exists(path):
                continue
            for pattern, rule in PRODUCERS:
                if m := re.fullmatch(pattern, path):
                    job = plan.Job(rule, {k: v for k, v in m.groupdict().items() if v is not None})
                    call(self.job(job, first_steps(job, self)), device=self.device)
                    break
            else:
                raise RuntimeError(f"no producer for input {path}")

    def job(self, job: plan.Job, k: int):
        """A zero-argument function running `job` at k steps, its inputs made first."""
        wc = {**job.wildcards, "profile": job.wildcards.get("profile", "cost")}
        return getattr(self, f"_{job.rule}")(wc, k)

    def _track(self, wc, k):
        return short_track(self.tracks[wc["track"]], k)

    def _stage(self, wc, k, *names):
        """(short track, its protocol block, the seed's stage folder, the stage files `names`)."""
        t = self._track(wc, k)
        stage = f"results/{wc['profile']}/stages/{wc['track']}/{wc['protocol']}/seed{wc['seed']}"
        return t, t["protocols"][wc["protocol"]], stage, [f"{stage}/{n}" for n in names]

    def _run(self, wc, k):
        run = lbconfig.resolve_run(self._track(wc, k), wc["dataset"], wc["method"], int(wc["seed"]), wc["variant"])
        run_dir = f"results/{wc['profile']}/runs/{wc['track']}/{wc['dataset']}/{wc['method']}/{wc['variant']}/seed{wc['seed']}"
        return run, run_dir, f"results/{wc['profile']}/stages/{wc['track']}/{run['protocol_name']}/seed{wc['seed']}"

    def _prepare_source(self, wc, k):
        out = f"resources/data/{wc['source']}/prepared.npz"
        if data.source_entry(wc["source"])["kind"] == "download":
            return lambda: write_cifar_standin(wc["source"], out)
        return lambda: runner.prepare_source(wc["source"], out)

    def _train_run(self, wc, k):
        run, run_dir, stage = self._run(wc, k)
        inputs = tasks.get(run["task"]).train_inputs(run, stage, wc["profile"])
        self.ensure(inputs.values())
        return lambda: runner.train_run(run, inputs, run_dir, device=self.device)

    def _evaluate_run(self, wc, k):
        run, run_dir, stage = self._run(wc, k)
        self.ensure([f"{run_dir}/train.json", *tasks.get(run["task"]).eval_inputs(run, run_dir, stage).values()])
        return lambda: runner.evaluate_run(run_dir)

    def _pref_sample_eval(self, wc, k):
        from lossbench.tasks import preference as pref

        run, run_dir, stage = self._run(wc, k)
        inputs = pref.sample_eval_inputs(run, run_dir, stage)
        self.ensure(inputs.values())
        return lambda: pref.sample_eval(run, inputs, f"{run_dir}/eval.npz", device=self.device)

    def _classification_teacher(self, wc, k):
        from lossbench.tasks import classification

        t, proto, stage, (out,) = self._stage(wc, k, f"teacher_{wc['dataset']}.pt")
        data_path = f"resources/data/{data.source_of(wc['dataset'])}/prepared.npz"
        self.ensure([data_path])
        proto = {key: v for key, v in proto.items() if key != "datasets"}
        return lambda: classification.build_teacher(wc["track"], proto, int(wc["seed"]), wc["dataset"], data_path,
                                                    out, device=self.device)

    def _lm_reference(self, wc, k):
        from lossbench.tasks import lm_pretraining

        t, proto, stage, (out,) = self._stage(wc, k, f"reference_{wc['dataset']}.npz")
        data_path = lm_pretraining.prepared_path(wc["dataset"])
        self.ensure([data_path])
        proto = {key: v for key, v in proto.items() if key != "datasets"}
        return lambda: lm_pretraining.build_reference(wc["track"], proto, int(wc["seed"]), wc["dataset"], data_path,
                                                      out, device=self.device)

    def _pref_sft(self, wc, k):
        from lossbench.tasks import preference as pref

        t, proto, stage, _ = self._stage(wc, k)
        # twin=True: the unit the plan prices is a step of π_ref and its retain-only twin (plan._stage_steps)
        return lambda: pref.build_sft(wc["track"], wc["protocol"], proto, int(wc["seed"]), stage, device=self.device,
                                      twin=True)

    def _pref_sample(self, wc, k):
        from lossbench.tasks import preference as pref

        t, proto, stage, (sft, out) = self._stage(wc, k, "sft.pt", "samples.npz")
        self.ensure([sft])
        return lambda: pref.build_samples(wc["track"], wc["protocol"], proto, int(wc["seed"]), sft, out, device=self.device)

    def _pref_label(self, wc, k):
        from lossbench.tasks import preference as pref

        t, proto, stage, (samples, out) = self._stage(wc, k, "samples.npz", f"labels_{wc['dataset']}.npz")
        self.ensure([samples])
        return lambda: pref.build_labels(wc["track"], wc["protocol"], proto, int(wc["seed"]), wc["dataset"], samples, out)

    def _pref_reward_model(self, wc, k):
        from lossbench.tasks import preference as pref

        names = ("sft.pt", "samples.npz", f"labels_{wc['dataset']}.npz", f"reward_model_{wc['dataset']}.pt")
        t, proto, stage, (sft, samples, labels, out) = self._stage(wc, k, *names)
        self.ensure([sft, samples, labels])
        return lambda: pref.build_reward_model(wc["track"], wc["protocol"], proto, int(wc["seed"]), wc["dataset"], sft,
                                               samples, labels, out, device=self.device)

    def _pref_overopt(self, wc, k):
        from lossbench.tasks import preference as pref

        names = ("sft.pt", "samples.npz", f"labels_{wc['dataset']}.npz", f"overopt_{wc['dataset']}.csv")
        t, proto, stage, (sft, samples, labels, out) = self._stage(wc, k, *names)
        self.ensure([sft, samples, labels])
        return lambda: pref.build_overopt(wc["track"], wc["protocol"], proto, int(wc["seed"]), wc["dataset"], sft,
                                          samples, labels, out, device=self.device)

    def _kernel_bench(self, wc, k):
        from lossbench.kernels import bench

        return lambda: bench.run_slice(self.benches[wc["bench"]], wc["slice"], self.device, f"kernels/{wc['slice']}.csv")


TOO_SLOW = {"cpu": ["lm_reference/lm_pretraining/t0_card-*"]}  # minutes per call on a CPU: ESTIMATES instead


def measurable(job: plan.Job, tracks: dict, device: str, profile_device: str, key: str) -> bool:
    """Whether `job` can run here: no hub model or corpus, no download, a kernel grid on its device,
    not TOO_SLOW for the device."""
    wc = job.wildcards
    if any(fnmatch.fnmatchcase(key, p) for p in TOO_SLOW.get(device, [])):
        return False
    if job.rule == "prepare_source":
        return data.source_entry(wc["source"])["kind"] in ("generated", "packaged")
    if job.rule == "kernel_bench":
        return (profile_device == "cpu") == (device == "cpu")
    if not hasattr(Workspace, f"_{job.rule}"):
        return False
    dataset = wc.get("dataset") or tracks[wc["track"]]["protocols"][wc["protocol"]]["datasets"][0]
    return data.source_entry(data.source_of(dataset))["kind"] != "hub"


# ------------------------------------------------------------------------------- figures
def seconds_on_h100(kernels: float, flops: float, amp: bool) -> float:
    peak = H100["bf16_tflops" if amp else "fp32_tflops"] * 1e12
    return kernels * H100["launch_s"] + flops / (H100["mfu"] * peak)


def first_steps(job: plan.Job, ws: Workspace) -> int:
    """The fewest steps a job runs with: 1, or for the LM reference stage 2^(checkpoints − 1), the
    first count with distinct geometric checkpoints (lossbench.lm_reference.checkpoint_steps)."""
    if job.rule != "lm_reference":
        return 1
    return 2 ** (ws.tracks[job.wildcards["track"]]["protocols"][job.wildcards["protocol"]]["reference"]["checkpoints"] - 1)


def measure(ws: Workspace, job: plan.Job, units: int, scale: float) -> tuple[dict, dict]:
    """(measured figures on the workspace's device, aten kernels and FLOPs per unit and per job).
    A step rule runs at k0 steps and then at k0 + 1, 8, 64, ... more until the extra steps take
    TARGET_S (or the job's own count is reached): the slope is unit_s (evaluation every N steps is
    amortised into it), the intercept fixed_s (set-up, final evaluation)."""
    run = lambda k, count=False: call(ws.job(job, k), count, ws.device)  # noqa: E731
    if plan.UNITS.get(job.rule) != "step":
        c = run(0)
        n = run(0, count=True) if job.rule not in HOST_RULES else c  # host rules need no GPU figures
        return {"fixed_s": round(c.seconds * scale, 4), "load": round(c.load, 2)}, \
            {"per_unit": (0, 0.0), "kernels": n.kernels * scale, "flops": n.flops * scale}
    k0 = first_steps(job, ws)
    a, b, first = run(k0, True), run(k0 + 1, True), run(k0)  # a also warms up (imports, caches)
    extra = 1
    while (last := run(k0 + extra)).seconds - first.seconds < TARGET_S and k0 + extra < units:
        extra = min(8 * extra, units - k0)
    unit_s = max((last.seconds - first.seconds) / extra, 0.0)
    fig = {"unit": "step", "unit_s": round(unit_s, 6), "fixed_s": round(max(first.seconds - k0 * unit_s, 0.0) * scale, 3),
           "measured_steps": k0 + extra, "load": round((first.load + last.load) / 2, 2)}
    per_unit = (b.kernels - a.kernels, b.flops - a.flops)
    return fig, {"per_unit": per_unit, "kernels": (a.kernels - k0 * per_unit[0]) * scale,
                 "flops": (a.flops - k0 * per_unit[1]) * scale}


def derived_cuda(job: plan.Job, fig: dict, counts: dict, amp: bool) -> dict:
    out = {"fixed_s": round(seconds_on_h100(counts["kernels"], counts["flops"], amp), 3)}
    if "unit_s" in fig:
        out.update(unit="step", unit_s=round(seconds_on_h100(*counts["per_unit"], amp), 7))
    return {**out, "estimate": True, "derived": f"CPU-counted aten kernels {counts['per_unit'][0]}/step and "
            f"FLOPs {counts['per_unit'][1]:.3g}/step" if "unit_s" in fig else "CPU-counted aten kernels"}


# ------------------------------------------------------------------------------- estimates (nothing runs here)
HUB_POLICY_PARAMS = 135e6  # SmolLM2-135M-Instruct, the hub preference protocol's π_ref


def _lm_params(m: dict) -> float:
    """Parameters of a GPT-2-shaped model (blocks + tied 50,257-token embedding): 124M for GPT-2 small."""
    return 12 * m["layers"] * m["d_model"] ** 2 + 50257 * m["d_model"]


def _hub_lm(proto: dict, rule: str) -> tuple[float, float]:
    """(FLOPs per step, FLOPs per job) of a hub LM-pretraining job: 6·P·tokens per step; per job the
    forward passes of evaluation (a run) or of the pool at each checkpoint (the reference stage)."""
    m, p = proto["model"], _lm_params(proto["model"])
    if rule == "lm_reference":
        fwd_tokens = proto["reference"]["checkpoints"] * proto["data"]["pool_chunks"] * m["context"]
    else:
        evals = proto["budget"]["steps"] // proto["eval"]["every"] + 1
        fwd_tokens = evals * proto["eval"]["chunks_per_domain"] * 7 * m["context"]
    return 6.0 * p * proto["budget"]["batch_size"] * m["context"], 2.0 * p * fwd_tokens


def _hub_pref(proto: dict, rule: str) -> tuple[float, float]:
    """(FLOPs per step, 0) of hub preference training: 6·P·tokens of a batch of pairs (two responses)."""
    block = proto["reward_model" if rule == "pref_reward_model" else "train"]
    pairs = proto["pairs"]
    tokens = block["batch_size"] * 2 * (pairs["max_prompt_tokens"] + pairs["max_response_tokens"])
    return 6.0 * HUB_POLICY_PARAMS * tokens, 0.0


def _kernel_slice(bench: dict, slice_name: str) -> tuple[float, float]:
    """(0, FLOPs of the slice): every point's 6·N·V·D per call × implementations × calls."""
    from lossbench.kernels.bench import MEASURE_DEFAULTS, slice_points

    m = {**MEASURE_DEFAULTS, **bench["measure"]}
    calls = len(bench.get("impls") or []) or 8
    calls *= m["warmup"] + m["reps"] + 2
    return 0.0, sum(6.0 * p.n * p.v * (p.d or 1) for p in slice_points(bench["slices"][slice_name])) * calls


def estimated(job: plan.Job, pricer: plan.Pricer, cpu_tflops: float) -> dict | None:
    """{cpu: figures, cuda: figures} for a job that cannot run here, from ESTIMATES, or None."""
    key = pricer.key(job)
    for pattern, rule_fn, extra, why in ESTIMATES:
        if not fnmatch.fnmatchcase(key, pattern):
            continue
        if callable(rule_fn):  # FLOPs from the protocol: CPU at half its measured GEMM rate, H100 as derived
            src = pricer.benches[job.wildcards["bench"]] if job.rule == "kernel_bench" else pricer.protocol(job)[1]
            per_unit, per_job = rule_fn(src, job.wildcards["slice"] if job.rule == "kernel_bench" else job.rule)
            amp = job.rule == "kernel_bench"
            rate = {"cpu": lambda f: f / (0.5 * cpu_tflops * 1e12), "cuda": lambda f: seconds_on_h100(0, f, amp)}
            figs = {d: {"fixed_s": round(r(per_job) + extra[i], 3),
                        **({"unit": "step", "unit_s": round(r(per_unit), 6)} if per_unit else {})}
                    for i, (d, r) in enumerate(rate.items())}
            why = f"{why}: {per_unit:.3g} FLOPs per step, {per_job:.3g} per job"
        else:  # {"fixed_s": (cpu, cuda)} per job or {"unit_s": (cpu, cuda)} per unit of the rule
            field, (cpu_s, cuda_s) = next(iter(rule_fn.items()))
            unit = {"unit": plan.UNITS[job.rule]} if field == "unit_s" else {}
            figs = {"cpu": {**unit, field: cpu_s}, "cuda": {**unit, field: cuda_s}}
        out = {d: {**f, "estimate": True, "derived": why, **({"host": True} if d == "cuda" and job.rule in HOST_RULES else {})}
               for d, f in figs.items()}
        if job.rule == "kernel_bench":  # a GPU grid (CPU grids are measured): what it would cost on a CPU is moot
            out["cpu"] = {"not_applicable": "a GPU benchmark grid (bf16/fp16, GB-sized inputs); the CPU grid is "
                                            "config/tracks/kernels/cpu.yaml"}
        return out
    return None


# (key pattern, a FLOP model (FLOPs per step, per job) or seconds {"fixed_s" | "unit_s": (cpu, cuda)},
#  extra (cpu, cuda) seconds per job for a FLOP model, derivation)
ESTIMATES = [
    ("download_source/*", {"fixed_s": (60, 60)}, None, "CIFAR archive (163 MB) at ~3 MB/s; guess"),
    ("prepare_source/data/cifar*", {"fixed_s": (20, 20)}, None, "unpickle 60,000 images; guess"),
    ("prepare_source/data/*", {"fixed_s": (1800, 1800)}, None, "hub corpus: stream and tokenise ~400M tokens; guess"),
    ("lm_reference/lm_pretraining/t0_card-*", {"fixed_s": (1500, 120)}, None, "too slow to measure here: a partial "
     "CPU run spent ~200 s per checkpoint (losses of the whole pool; 6 checkpoints + 2 feature passes) + 300 "
     "steps; H100 guess"),
    ("train_run/lm_pretraining/*", _hub_lm, (600, 600), "GPT-2-sized LM, fp32 (the LM trainer has no autocast); "
     "6·P·tokens per step, 2·P per evaluated token; + 600 s of lm-eval tasks (guess)"),
    ("lm_reference/lm_pretraining/*", _hub_lm, (0, 0), "reference LM steps, then per-chunk losses of the whole "
     "pool at each checkpoint (2·P per token), fp32"),
    ("train_run/preference/*", _hub_pref, (60, 30), "SmolLM2-135M pairs, fp32: 6·P·tokens per step (reference "
     "log-probs cached); + probes (guess)"),
    ("pref_reward_model/preference/*", _hub_pref, (60, 30), "proxy reward model on the policy's backbone; guess"),
    ("evaluate_run/*", {"fixed_s": (2, 2)}, None, "metrics of one run; guess"),
    ("choose_trial/*", {"fixed_s": (0.5, 0.5)}, None, "reads its trials' metrics inside the Snakemake process "
     "(a run: block); guess"),
    ("pref_reference/*", {"fixed_s": (120, 120)}, None, "resolve and download π_ref and the judge (~1.5 GB); guess"),
    ("pref_*capability/*", {"fixed_s": (1800, 90)}, None, "lm-eval ARC-Easy + HellaSwag, 500 docs each, 135M model; guess"),
    ("pref_sample/preference/*", {"fixed_s": (3600, 180)}, None, "π_ref samples and judge scores on held-out prompts; guess"),
    ("pref_sample_eval/preference/*", {"fixed_s": (3600, 180)}, None, "policy samples, judge and KL on 768 prompts; guess"),
    ("pref_label/*", {"fixed_s": (1, 1)}, None, "numpy; guess"),
    ("kernel_bench/*", _kernel_slice, (0, 300), "6·N·V·D FLOPs per call × implementations × (warm-up + reps + 2) "
     "calls, bf16 on H100; + 300 s of ceilings and torch.compile (guess)"),
    ("aggregate_results/*", {"unit_s": (0.05, 0.05)}, None, "reading each run's tables; guess"),
    ("aggregate_kernels/*", {"fixed_s": (5, 5)}, None, "guess"),
    ("aggregate_overopt/*", {"fixed_s": (1, 1)}, None, "concatenates one small csv per (seed, dataset); guess"),
    ("build_report/*", {"fixed_s": (120, 120)}, None, "tables, plots and claims; guess"),
    ("all/*", {"fixed_s": (0, 0)}, None, "a target: no work"),
]


# ------------------------------------------------------------------------------- the table
def representatives(profiles) -> dict:
    """{key: (job, tracks, benches, units, amp)}: per key the baseline method's job on the protocol's
    first dataset and the first seed; two profiles giving one key must agree on its protocol."""
    out = {}
    for cfg_path in profiles:
        cfg, tracks = lbconfig.load_profile(ROOT / cfg_path)
        benches = lbconfig.load_benchmarks(cfg)
        jobs = plan.dag_jobs(ROOT / cfg_path)
        pricer = plan.Pricer(tracks, benches, {"train_examples": train_examples(tracks)}, 0)

        def rank(job):
            wc = job.wildcards
            t = tracks.get(wc.get("track"))
            ds = t and lbconfig.track_datasets(t)
            at = ds.index(wc["dataset"]) if ds and wc.get("dataset") in ds else len(ds or [])  # a stage-only dataset last
            return (t is not None and wc.get("method") != t["baseline"], at, int(wc.get("seed", 0)), wc.get("variant", ""))

        for job in sorted(jobs, key=rank):
            if job.rule == "train_together":  # priced as its seeds' separate runs (plan.Pricer.seconds)
                continue
            key = pricer.key(job)
            if key not in out:
                amp = bool((pricer.protocol(job) or ("", {}))[1].get("amp"))
                out[key] = (job, tracks, benches, pricer.units(job), amp, cfg["device"])
    return out


_N_TRAIN: dict = {}


def train_examples(tracks: dict) -> dict:
    """Training-set size of every classification dataset (what an epoch budget means): the real
    variant built from its prepared source, CIFAR from its stand-in with CIFAR's class counts."""
    wanted = [d for t in tracks.values() if t["task"] == "classification" for p in t["protocols"].values()
              for d in p["datasets"]]
    with tempfile.TemporaryDirectory() as tmp:
        for d in (d for d in wanted if d not in _N_TRAIN):
            source, path = data.source_of(d), Path(tmp) / f"{data.source_of(d)}.npz"
            if not path.exists():
                (write_cifar_standin(source, path) if data.source_entry(source)["kind"] == "download"
                 else runner.prepare_source(source, path))
            _N_TRAIN[d] = len(data.build(d, data.load_prepared(path), 0).y_train)
    return {d: _N_TRAIN[d] for d in wanted}


def job_start_seconds(device: str) -> float:
    """What a job that is its own process pays before it works: a fresh process importing torch,
    transformers and lossbench (CPU time on the CPU; wall time with a CUDA context on a GPU)."""
    import resource

    code = "import torch, transformers, lossbench.runner, lossbench.train"
    code += "" if device == "cpu" else f"; torch.zeros(1, device={device!r})"
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if device != "cpu":
        return round(time.perf_counter() - t0, 2)
    return round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2)


def device_info(device: str, cpu_tflops: float) -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip())
    info = {"measured_on": io.hardware() if device == "cpu" else torch.cuda.get_device_name(),
            "date": datetime.date.today().isoformat(), "commit": commit + ("+dirty" if dirty else ""),
            "command": " ".join(["python", *sys.argv]), "torch": str(torch.__version__), "python": platform.python_version(),
            "threads": torch.get_num_threads(), "load_at_start": [round(x, 2) for x in os.getloadavg()]}
    info["job_start_s"] = job_start_seconds(device)
    if device == "cpu":
        info["gemm_fp32_tflops_1_thread"] = round(cpu_tflops, 4)
        info["summary"] = (f"{info['measured_on']}, 1 thread per job, measured {info['date']} at commit {info['commit']} "
                           f"(load {info['load_at_start'][0]} of 2 cores at start; each entry records its own)")
    else:
        info["summary"] = f"{info['measured_on']}, measured {info['date']} at commit {info['commit']}"
    return info


def write_table(table: dict, out: Path) -> None:
    header = ("# Throughput table for `lossbench plan` (lossbench/plan.py): per job key, fixed_s + units × unit_s\n"
              "# on each device class. Written by benchmarks/cost_table.py (its docstring says how each figure\n"
              "# is made); `measured: true` figures ran here, `estimate: true` ones did not. Regenerate, don't edit.\n")
    io.write_text(out, header + yaml.safe_dump(table, sort_keys=False, width=120, allow_unicode=True))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profiles", nargs="+", default=list(PROFILES))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=plan.TABLE)
    ap.add_argument("--base", type=Path, default=plan.TABLE, help="table whose other entries are kept")
    ap.add_argument("--only", nargs="+", help="key patterns to (re)measure; other keys keep the base table's figures")
    ap.add_argument("--missing", action="store_true", help="measure only keys the base table lacks")
    ap.add_argument("--time-limit", type=float, help="start no measurement after this many seconds")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from lossbench.kernels import roofline

    cpu_tflops = roofline.gemm_tflops(torch.device("cpu"), torch.float32, 1024)
    table = yaml.safe_load(args.base.read_text()) if args.base.exists() else {"devices": {}, "jobs": {}}
    earlier = table["devices"].get(args.device, {})
    table["devices"][args.device] = device_info(args.device, cpu_tflops)
    if (args.missing or args.only) and earlier.get("command"):  # figures from both runs stay: say so
        table["devices"][args.device]["earlier_runs"] = [
            *earlier.get("earlier_runs", []), {k: earlier[k] for k in ("date", "commit", "command", "load_at_start")}]
    if args.device == "cpu":
        table["devices"]["cuda"] = {"summary": (
            f"NVIDIA H100 SXM, estimated from CPU-counted kernels and FLOPs: kernels × {H100['launch_s'] * 1e6:.0f} µs + "
            f"FLOPs / ({H100['mfu']:.0%} of {H100['bf16_tflops']:.0f} (bf16, amp protocols) or {H100['fp32_tflops']:.0f} "
            f"(fp32) TFLOP/s); entries with measured: true come from a GPU (benchmarks/gpu_check.sh)"),
            "assumptions": H100, "job_start_s": table["devices"]["cpu"]["job_start_s"] + H100["cuda_init_s"]}
    reps = representatives(args.profiles)  # training runs first: they dominate, and --time-limit may stop early
    reps = dict(sorted(reps.items(), key=lambda kv: (kv[1][0].rule != "train_run", kv[1][0].rule not in plan.UNITS)))
    stop_at = time.perf_counter() + (args.time_limit or float("inf"))
    table.setdefault("train_examples", {}).update({d: n for _, tracks, *_ in reps.values() for d, n in train_examples(tracks).items()})
    home, work = os.getcwd(), tempfile.mkdtemp(prefix="lossbench-cost-")  # one scratch folder: inputs are reused
    for key, (job, tracks, benches, units, amp, profile_device) in reps.items():
        if (args.only and not any(fnmatch.fnmatchcase(key, p) for p in args.only)) or (args.missing and key in table["jobs"]):
            continue
        entry, t0 = table["jobs"].get(key, {}), time.perf_counter()
        if t0 > stop_at:
            print(f"{key}: not measured (--time-limit); keeps the base table's figures")
            continue
        if measurable(job, tracks, args.device, profile_device, key):
            os.chdir(work)
            try:
                fig, counts = measure(Workspace(tracks, benches, args.device), job, units, eval_scale(job, tracks))
            finally:
                os.chdir(home)
            entry[args.device] = {**fig, "measured": True}
            if args.device == "cpu":
                entry["cuda"] = ({**fig, "host": True, "measured": True} if job.rule in HOST_RULES
                                 else derived_cuda(job, fig, counts, amp))
        elif est := estimated(job, plan.Pricer(tracks, benches, {}, 0), cpu_tflops):
            entry = {**est, **{d: e for d, e in entry.items() if e.get("measured")}}
        else:
            print(f"{key}: neither measurable here nor estimated: left out (plan reports it unpriced)")
            continue
        table["jobs"][key] = entry
        print(f"{key} ({time.perf_counter() - t0:.0f} s): {entry}", flush=True)
        write_table(table, args.out)  # after every key: an interrupted run keeps what it measured
    write_table(table, args.out)
    shutil.rmtree(work)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
