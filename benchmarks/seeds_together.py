"""Seeds trained together against the same seeds trained one after another (issue 22). Prints
figures; asserts nothing.

    python benchmarks/seeds_together.py                  # smoke protocol, 3 seeds, 5 methods, 3 repeats
    python benchmarks/seeds_together.py --repeats 5 --methods erm focal
    python benchmarks/seeds_together.py --device cuda --resources results/gpu_check/dag/resources   # GPU check

Workload: the smoke classification protocol (config/tracks/classification/smoke.yaml, `mlp_adam`:
MLP 40-128-128-10, Adam, 400 steps of 128, 10 curve points) on mnist1d_lt100, each seed its own
dataset draw, initialisation and data order, as the DAG's runs. For each method, interleaved
repeats of (a) lossbench.train.train once per seed and (b) lossbench.train_together.train_together
for all seeds, in one process with one thread. Reported: the median wall time of each (the whole
training call: every seed's training, curve-point evaluations and final scores), their ratio
(separate / together: > 1 means together is faster), the training loop's samples per second (steps
x batch x seeds over the trainers' own `train_seconds`, which excludes evaluation) and the largest
test balanced-accuracy difference between the two paths (float rounding only).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from lossbench import config as lbconfig, data, io, methods  # noqa: E402
from lossbench.train import balanced_accuracy_t, train  # noqa: E402
from lossbench.train_together import train_together  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", nargs="+", default=["erm", "logit_adjust", "cb_inverse", "resample", "aldr_kl"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dataset", default="mnist1d_lt100")
    ap.add_argument("--device", default="cpu", help="cuda: the GPU check's measurement (benchmarks/gpu_check.sh)")
    ap.add_argument("--resources", type=Path, default=ROOT / "resources",
                    help="the DAG's resources folder holding data/<source>/prepared.npz")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    track = yaml.safe_load((ROOT / "config/tracks/classification/smoke.yaml").read_text())
    source = args.resources / "data" / data.source_of(args.dataset) / "prepared.npz"
    if not source.exists():
        sys.exit(f"{source} is missing: build it with `snakemake --cores 2 resources/data/{data.source_of(args.dataset)}/prepared.npz`")
    raw = io.read_npz(source)
    print(f"{'method':14s} {'separate s':>10s} {'together s':>10s} {'ratio':>6s} {'loop samples/s sep':>19s} "
          f"{'together':>9s} {'max |Δ bal. acc.|':>17s}")
    for name in args.methods:
        runs = [lbconfig.resolve_run(track, args.dataset, name, s, "default") for s in args.seeds]
        proto, spec, hp = runs[0]["protocol"], methods.get(name), runs[0]["hparams"]
        datas = [data.build(args.dataset, raw, r["seeds"]["data"]) for r in runs]
        inits, orders = [r["seeds"]["init"] for r in runs], [r["seeds"]["order"] for r in runs]
        times = {"separate": [], "together": []}
        for _ in range(args.repeats):
            t = time.perf_counter()
            sep = [train(d, spec, hp, proto, i, o, device=args.device) for d, i, o in zip(datas, inits, orders)]
            times["separate"].append(time.perf_counter() - t)
            t = time.perf_counter()
            tog = train_together(datas, spec, hp, proto, inits, orders, device=args.device)
            times["together"].append(time.perf_counter() - t)
        samples = sum(r.steps for r in sep) * proto["budget"]["batch_size"]
        rate = {k: samples / sum(r.train_seconds for r in res) for k, res in (("separate", sep), ("together", tog))}
        diff = max(abs(balanced_accuracy_t(torch.from_numpy(a.test_scores), torch.from_numpy(d.y_test), d.num_classes)
                       - balanced_accuracy_t(torch.from_numpy(b.test_scores), torch.from_numpy(d.y_test), d.num_classes))
                   for a, b, d in zip(sep, tog, datas))
        s, g = statistics.median(times["separate"]), statistics.median(times["together"])
        print(f"{name:14s} {s:10.2f} {g:10.2f} {s / g:6.2f} {rate['separate']:19.0f} {rate['together']:9.0f} "
              f"{diff:17.4f}   (range sep {min(times['separate']):.2f}-{max(times['separate']):.2f}, "
              f"together {min(times['together']):.2f}-{max(times['together']):.2f})")
    print(f"\n{len(args.seeds)} seeds, {args.repeats} interleaved repeats, device {args.device}, 1 thread, "
          f"torch {torch.__version__}; ratio = separate / together wall time")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
