"""Training throughput of each model (samples/s) with the shared trainer, and optionally the smoke
DAG's wall time. Prints figures; asserts nothing (speed targets live here, not in tests).

    python benchmarks/throughput.py                 # models only
    python benchmarks/throughput.py --smoke-dag     # also time `snakemake --cores 2` (smoke) in a temp dir
    python benchmarks/throughput.py --device cuda   # on a GPU box
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lossbench import methods  # noqa: E402
from lossbench.data import ClassificationData  # noqa: E402
from lossbench.train import train  # noqa: E402

CASES = {
    # name: (modality, input shape, classes, model config, batch)
    "mlp_128x2 (smoke)": ("vector", (40,), 10, {"name": "mlp", "hidden": [128, 128]}, 128),
    "mlp_256x2 (card P4)": ("vector", (40,), 10, {"name": "mlp", "hidden": [256, 256]}, 128),
    "cnn1d": ("vector", (40,), 10, {"name": "cnn1d"}, 128),
    "resnet32 (CIFAR)": ("image", (32, 32, 3), 10, {"name": "resnet32"}, 128),
}


def _data(modality, shape, k, n, rng):
    if modality == "image":
        x = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    else:
        x = rng.normal(size=(n, *shape)).astype(np.float32)
    y = rng.integers(0, k, n)
    return ClassificationData("bench", modality, k, x, y, y, x[:256], y[:256], x[:256], y[:256])


def bench_models(device, steps, names):
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'model':22s} {'batch':>5s} {'steps':>6s} {'samples/s':>11s}")
    rng = np.random.default_rng(0)
    for name in names:
        modality, shape, k, model, batch = CASES[name]
        is_image = modality == "image"
        n_steps = max(5, steps // 20) if is_image and device == "cpu" else steps
        ds = _data(modality, shape, k, batch * 8, rng)
        proto = {"model": model, "optimizer": {"name": "sgd" if is_image else "adam", "lr": 0.01, "momentum": 0.9},
                 "schedule": {"name": "constant"}, "budget": {"steps": n_steps, "batch_size": batch},
                 "curve_points": 1, "augment": "crop_flip" if is_image else "none", "amp": device == "cuda"}
        if not is_image:
            proto["optimizer"].pop("momentum")
        train(ds, methods.get("erm"), {}, {**proto, "budget": {"steps": 3, "batch_size": batch}}, 0, 0, device=device)  # warm-up
        res = train(ds, methods.get("erm"), {}, proto, 0, 0, device=device)
        print(f"{name:22s} {batch:5d} {n_steps:6d} {res.samples_per_second:11.0f}")


def bench_smoke_dag(cores):
    work = Path(tempfile.mkdtemp(prefix="lossbench-smoke-"))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
           "--workflow-profile", str(ROOT / "profiles" / "default"), "--cores", str(cores), "--quiet"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode:
        print(out.stderr[-3000:])
        raise SystemExit("smoke DAG failed")
    n = len(list((work / "results" / "smoke" / "runs").glob("*/*/*/seed*/run.json")))
    print(f"smoke DAG (cold: data generation, {n} runs, report): {wall:.1f} s wall with --cores {cores}")
    shutil.rmtree(work)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--models", nargs="*", default=list(CASES), choices=list(CASES))
    p.add_argument("--smoke-dag", action="store_true")
    p.add_argument("--cores", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1 if args.device == "cpu" else torch.get_num_threads())
    bench_models(args.device, args.steps, args.models)
    if args.smoke_dag:
        bench_smoke_dag(args.cores)


if __name__ == "__main__":
    main()
