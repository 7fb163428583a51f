"""Helpers of benchmarks/gpu_check.sh: the check's profile and its provenance.

    python benchmarks/gpu_check.py config OUT [--tiny] [--device cuda]   # OUT/config/: profile + tracks
    python benchmarks/gpu_check.py provenance OUT                        # OUT/provenance.json

The profile runs one seed of the full embedded classification protocol (mlp_adam) and the full
SynthPref protocol (synthpref_card) for a few methods covering every trainer path (reweighting,
noise-robust loss, adversarial, distillation from the teacher stage and self-distillation, the
optimizer axis; pairwise, listwise, unpaired, unlearning, reward-model and guided preference
losses), plus the kernels benchmark at the CCE claim's point (Gemma-2, 8,192 tokens, bf16) and the
out-of-cache softmax. The track files `extends` the full ones, so the protocols are the full
profile's own (and the throughput table's keys match). --tiny starts from the smoke tracks and
the smoke kernels slice instead: the same steps at a size a CPU runs in about a minute (tests).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lossbench import config as lbconfig  # noqa: E402

CLASSIFICATION = ["erm", "logit_adjust", "gce", "pgd_at", "kd", "self_distill"]
PREFERENCE = ["dpo", "cdpo", "rdpo", "madpo", "tgdpo", "npo", "kto", "spo", "lipo"]  # all take beta
DATASETS = ["mnist1d_lt100", "mnist1d_sym40", "synthpref"]
KERNEL_IMPLS = ["ce_eager", "lce_chunked", "cce", "cce_exact", "liger_flce", "softmax_3p_recompute",
                "softmax_3p_reload", "softmax_2p_extexp", "softmax_2p_online", "torch_softmax"]
KERNEL_SLICES = {"gemma2_2b_8k": {"bench": "linear_ce", "n": [8192], "vd": [[256000, 2304]], "dtype": ["bfloat16"]},
                 "softmax": {"bench": "softmax", "n": [8192], "v": [262144], "dtype": ["bfloat16"]}}


def _subset(base_path: str, methods: list[str], datasets: list[str], **over) -> dict:
    """A track file extending `base_path` with `methods` only (per-method entries pruned), the
    protocols running one of `datasets` (unchanged, so their cost-table keys are the base's), and `over`."""
    base = lbconfig.track_yaml(ROOT / base_path)
    keep = lambda d: {m: v for m, v in d.items() if m in methods}  # noqa: E731
    protocols = {n: p for n, p in base["protocols"].items() if set(p["datasets"]) & set(datasets)}
    out = {"extends": base_path, "methods": methods, "seeds": [0], "dataset_methods": {}, "protocols": protocols}
    if "method_hparams" in base:
        out["method_hparams"] = keep(base["method_hparams"])
    return {**out, **over}


def write_config(out: Path, tiny: bool, device: str) -> Path:
    size, datasets = ("smoke", ["mnist1d_lt100", "synthpref"]) if tiny else ("full", DATASETS)
    cls = _subset(f"config/tracks/classification/{size}.yaml", CLASSIFICATION, datasets)
    axis = lbconfig.track_yaml(ROOT / cls["extends"])["optimizer_axis"]
    cls["optimizer_axis"] = {**axis, "methods": ["erm"], "datasets": ["mnist1d_lt100"],
                             "optimizers": {k: axis["optimizers"][k] for k in ("adamw", "sgdp")}}
    point = {"beta": [0.1]} if tiny else {"beta": [0.1], "lr": [0.0003]}  # the guide's variant (tgdpo)
    grid = {m: point for m in PREFERENCE}
    # one point per method: the smoke track's sweep, or the full track's tuning at one trial (no trial
    # runs; each view's final variant on seed 0, the guide DPO's tuned_best as in the full protocol)
    pref = _subset(f"config/tracks/preference/{size}.yaml", PREFERENCE, datasets,
                   **({"sweep": grid} if tiny else {"tuning": {"trials": 1, "seeds": [100], "grid": grid}}))
    kernels = {"extends": f"config/tracks/kernels/{size}.yaml"}
    if tiny:
        kernels["slices"] = {"ce_weighted": lbconfig.track_yaml(ROOT / kernels["extends"])["slices"]["ce_weighted"]}
    else:
        kernels.update(slices=KERNEL_SLICES, impls=KERNEL_IMPLS,
                       measure={"warmup": 3, "reps": 10, "err_tokens": 256, "copy_bytes": 1 << 30, "gemm_n": 8192,
                                "chunk_size": 4096})
    folder = out / "config"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, track in {"classification": cls, "preference": pref, "kernels": kernels}.items():
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(track, sort_keys=False))
    profile = {"profile": "gpu_check", "device": device, "device_slots": {"runs_per_device": 4},  # gpu=4 in the .sh
               "datasets": datasets,
               "tracks": {"classification": str(paths["classification"].resolve()),
                          "preference": str(paths["preference"].resolve())},
               "benchmarks": {"kernels": str(paths["kernels"].resolve())}}
    (folder / "gpu_check.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    lbconfig.load_profile(folder / "gpu_check.yaml")  # validated before any GPU time is spent
    return folder / "gpu_check.yaml"


def _run(*cmd) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def write_provenance(out: Path) -> dict:
    """provenance.json: hardware (nvidia-smi, torch), commit, command, and each step's wall time and
    exit code (steps.tsv, written by gpu_check.sh)."""
    import torch

    steps = [dict(zip(("step", "seconds", "exit_code", "timeout_s"), line.split("\t")))
             for line in (out / "steps.tsv").read_text().splitlines()]
    for s in steps:
        s.update(seconds=float(s["seconds"]), exit_code=int(s["exit_code"]), timeout_s=int(s["timeout_s"]),
                 timed_out=int(s["exit_code"]) == 124)
    commit = _run("git", "-C", str(ROOT), "rev-parse", "HEAD") or os.environ.get("LOSSBENCH_COMMIT", "unknown")
    prov = {
        "command": os.environ.get("GPU_CHECK_COMMAND", "bash benchmarks/gpu_check.sh"), "commit": commit,
        "git_dirty": bool(_run("git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no")),
        "date": _run("date", "-u", "+%Y-%m-%dT%H:%M:%SZ"), "host": platform.node(), "python": platform.python_version(),
        "torch": str(torch.__version__), "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "nvidia_smi": _run("nvidia-smi", "--query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm",
                           "--format=csv,noheader"),
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "load_avg": os.getloadavg(), "steps": steps, "total_seconds": sum(s["seconds"] for s in steps),
        "all_ok": all(s["exit_code"] == 0 for s in steps),
    }
    (out / "provenance.json").write_text(json.dumps(prov, indent=2))
    return prov


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("config", "provenance"))
    ap.add_argument("out", type=Path)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args(argv)
    if args.what == "config":
        print(write_config(args.out, args.tiny, args.device))
    else:
        prov = write_provenance(args.out)
        for s in prov["steps"]:
            print(f"{s['step']:12s} {s['seconds']:7.1f} s  exit {s['exit_code']}" + ("  TIMED OUT" if s["timed_out"] else ""))
        print(f"total {prov['total_seconds']:.0f} s; provenance in {args.out / 'provenance.json'}")


if __name__ == "__main__":
    main()
