"""Overhead of lossbench's trainers: each against a minimal hand-written PyTorch loop doing the same
work, over the optimisation steps alone and over the whole training job. Prints figures; asserts
nothing. Every change to a trainer is measured with it (issue 22), and figures quoted of the
trainers' speed come from it.

    python benchmarks/trainer_overhead.py                      # every workload: ~10 min on 2 busy cores
    python benchmarks/trainer_overhead.py --only lm --repeats 9
    python benchmarks/trainer_overhead.py --only logit         # matches "<workload> <method>", any case

Workloads, sized by the shipped configs (config/tracks/<track>/{smoke,full}.yaml), seed 0:
  classification  smoke protocol (MLP 40-128-128-10, 400 steps of 128) on mnist1d_lt100: erm,
                  logit_adjust, cb_inverse; card P4 (full.yaml: MLP 40-256-256-10, 40 epochs): erm,
                  logit_adjust
  lm_pretraining  smoke (GPT-2 d 48, 80 steps of 16 x 64 tokens) and card T0 (full.yaml: d 128,
                  vocab 4096, 500 steps of 16 x 128 tokens, --t0-steps of them timed): uniform
  preference      SynthPref smoke (d 32, 40 DPO steps of 16 pairs, reference log-probs cached): dpo,
                  on the smoke DAG's stage (--pref-stage; skipped when it is not built)
  grokking        smoke protocol (bias-free MLP 226-200-200-113, 200 full-batch steps): erm

How the figures are made. lossbench's side is the DAG's training job: the task's `train_run`
(lossbench/tasks/<task>.py: read the prepared data, build the model, train, evaluate, write the
artefacts, here into a temporary folder) for the run `resolve_run` gives, without the runner's
checksums and provenance or the job's process start. Its "loop" time is the trainer's own
`train_seconds`, which stops while it evaluates; its "end to end" time is the whole job's. Two
exceptions, noted under the table: grokking's trainer clock runs through its logging, so its loop
time is that of `train_grokking` over 100 steps logged at steps 0 and 100 only (the least it
logs); T0 trains --t0-steps steps, evaluating every 50 * t0_steps / 500 steps (as many evaluations
as the 500-step run), and its end-to-end time is that job's time outside the loop (every
evaluation, the lm-eval tasks, setup) plus 500 x its loop time per step.

The minimal side is written here: the same model built by the same function and seed, the same
optimizer (fused Adam/AdamW as lossbench.optim builds them; the preference trainer's default Adam),
batch size and loss value (logit adjustment's shifted CE, cb_inverse's class weights, uniform's
token-mean CE, DPO's margin against the same cached reference log-probs), gradient clipping where
the protocol clips, the data as tensors in memory, and nothing else: no evaluation, logging or lr
schedule (a few scalar operations a step). It runs as many steps as lossbench's timed loop. Both
ratios divide the minimal loop's time per step by lossbench's: "loop" is the trainer's overhead on
the same work, "end to end" what the whole job costs beyond the training work it must do, its
evaluation included. The DAG's other jobs (evaluate_run's metrics, the preference samples of
pref_sample_eval) are in neither.

Clock: the process's CPU time by default (one torch thread, so it is the work done; other users of
the machine inflate it less than wall time, as in benchmarks/cost_table.py), --clock wall for wall
time; the trainers' own clocks (time.perf_counter) read the same clock while a job runs. Each
workload but T0 and grokking (a minute and half a minute a repeat) runs once untimed, then each
runs --repeats times (T0 and grokking: --heavy-repeats) interleaved: lossbench and minimal, each
first in turn, workload after workload, in one process with torch.set_num_threads(1), so drift in
machine load hits both sides alike. Per repeat the ratio is minimal / lossbench (1 = no overhead;
0.8 = lossbench takes 1.25x as long); the table gives ms per step and ratios as median (min-max)
over the n repeats.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lossbench import config, data, io, tasks  # noqa: E402
from lossbench.runner import run_logger  # noqa: E402

TRACKS = ROOT / "config" / "tracks"
PREF_STAGE = ROOT / "results" / "smoke" / "stages" / "preference" / "synthpref_tiny" / "seed0"
# full-batch steps all cost the same: 100 time grokking's loop well, its two logged steps 2% of it
GROK_LOOP_STEPS = 100
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]  # main() sets it from --clock


@dataclass
class Case:
    workload: str
    method: str
    steps: int  # the run's budget
    lossbench: Callable[[], tuple[float, float]]  # () -> (loop s/step, end-to-end s/step)
    minimal: Callable[[], float]  # () -> s/step
    heavy: bool = False  # --heavy-repeats and no warm-up run: its builder imports what the job imports lazily
    note: str = ""  # printed under the table


# ---------------------------------------------------------------------------------------- shared
@contextlib.contextmanager
def trainer_clock():
    """The trainers time their loops with time.perf_counter: it reads `clock` while they run, so
    both sides of a ratio read the same clock."""
    saved, time.perf_counter = time.perf_counter, clock
    try:
        yield
    finally:
        time.perf_counter = saved


_PREPARED: dict[str, Path] = {}


def prepared(source: str) -> str:
    """The DAG's prepared.npz of `source`; where this checkout has not built it, one prepared here
    (once, into a temporary folder)."""
    path = ROOT / "resources" / "data" / source / "prepared.npz"
    if path.exists():
        return str(path)
    if source not in _PREPARED:
        print(f"(preparing {source}: resources/data/{source}/prepared.npz is not built)", flush=True)
        folder = Path(tempfile.mkdtemp(prefix=f"overhead-{source}-"))
        atexit.register(shutil.rmtree, folder, True)
        io.write_npz(folder / "prepared.npz", **data.prepare_source(source))
        _PREPARED[source] = folder / "prepared.npz"
    return str(_PREPARED[source])


def resolved_run(track_file: str, dataset: str, method: str) -> dict:
    """The run the DAG trains for (track, dataset, method, seed 0) at the method's defaults: its
    first variant (a swept track's first grid point, a tuned one's trial00)."""
    track = config.load_track(TRACKS / track_file)
    grid = config.variants(config.protocol_track(track, config.protocol_name(track, dataset)), method, dataset)
    return config.resolve_run(track, dataset, method, 0, next(iter(grid)))


def dag_job(run: dict, inputs: dict) -> Callable[[], tuple[float, float, int]]:
    """() -> (trainer's train_seconds, job seconds, steps) of the task's train_run into a fresh folder."""
    task = tasks.get(run["task"])

    def job():
        # lm-eval's progress bars go to sys.stderr: into a sink here, as into a job's log file in the DAG
        with tempfile.TemporaryDirectory(prefix="overhead-run-") as out, open(os.devnull, "w") as sink, \
                contextlib.redirect_stderr(sink), trainer_clock():
            log = run_logger(Path(out) / "train.log")
            t0 = clock()
            result = task.train_run(run, inputs, Path(out), "cpu", log)
            seconds = clock() - t0
            for h in list(log.handlers):  # close the log before its folder goes
                h.close()
                log.removeHandler(h)
        return result["train_seconds"], seconds, result["steps"]
    return job


def per_step(job) -> Callable[[], tuple[float, float]]:
    def run():
        loop, total, steps = job()
        return loop / steps, total / steps
    return run


def adam(params, cfg: dict) -> torch.optim.Optimizer:
    """What lossbench.optim.build_optimizer makes of an adam/adamw config: the fused kernels."""
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg["name"]]
    return cls(params, lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.0),
               betas=tuple(cfg.get("betas", (0.9, 0.999))), eps=cfg.get("eps", 1e-8), fused=True)


def epochs_of(n: int, batch: int, seed: int):
    """Index batches: consecutive slices of a fresh permutation per epoch, the last partial one dropped."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        yield from torch.randperm(n, generator=gen)[:n - n % batch].split(batch)


def seconds_per_step(step: Callable[[], None], steps: int) -> float:
    t0 = clock()
    for _ in range(steps):
        step()
    return (clock() - t0) / steps


def sgd_step(opt, loss, clip_params=None, clip=None):
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(clip_params, clip)
    opt.step()


# ---------------------------------------------------------------------------------------- classification
def classification_loss(method: str, hp: dict, counts: torch.Tensor):
    """The method's training loss as a plain function of (logits, labels); `counts` [K] all > 0."""
    if method == "erm":
        return F.cross_entropy
    if method == "logit_adjust":  # CE(z + τ log π, y)
        shift = hp["tau"] * (counts / counts.sum()).log()
        return lambda z, y: F.cross_entropy(z + shift, y)
    if method == "cb_inverse":  # batch mean of w_y·CE, class weights 1/n_y scaled to sum K
        w = 1.0 / counts
        w = w * (len(counts) / w.sum())
        return lambda z, y: (w[y] * F.cross_entropy(z, y, reduction="none")).mean()
    raise KeyError(f"no minimal loss for {method!r}")


def classification_case(workload: str, track_file: str, method: str, dataset: str = "mnist1d_lt100") -> Case:
    from lossbench.models import build_model
    from lossbench.seeding import seeded_build

    run = resolved_run(track_file, dataset, method)
    proto, inputs = run["protocol"], {"data": prepared(data.source_of(dataset))}
    ds = data.build(dataset, io.read_npz(inputs["data"]), run["seeds"]["data"])
    x, y = torch.from_numpy(ds.x_train).float(), torch.from_numpy(ds.y_train).long()
    counts = torch.bincount(y, minlength=ds.num_classes).float()
    budget = proto["budget"]
    batch = min(budget["batch_size"], len(y))
    steps = budget["steps"] if "steps" in budget else budget["epochs"] * max(1, len(y) // batch)
    loss_of = classification_loss(method, run["hparams"], counts)

    def minimal():
        model = seeded_build(lambda: build_model(proto["model"], tuple(x.shape[1:]), ds.num_classes),
                             run["seeds"]["init"])
        opt = adam(model.parameters(), proto["optimizer"])
        batches = epochs_of(len(y), batch, run["seeds"]["order"])

        def step():
            idx = next(batches)
            sgd_step(opt, loss_of(model(x[idx]), y[idx]))
        return seconds_per_step(step, steps)
    return Case(workload, method, steps, per_step(dag_job(run, inputs)), minimal)


# ---------------------------------------------------------------------------------------- LM pretraining
def lm_case(workload: str, track_file: str, dataset: str, timed_steps: int | None = None) -> Case:
    """`timed_steps`: train that many steps, evaluating as many times as the full budget does, and
    give end to end as (the job's time outside its loop) + budget x (its loop time per step)."""
    from lossbench.data import lm_corpus
    from lossbench.lm import build_causal_lm
    from lossbench.lm_pretrain import load_corpus
    from lossbench.tasks.lm_pretraining import shared_seed

    run = resolved_run(track_file, dataset, "uniform")
    proto = run["protocol"]
    if proto["eval"].get("lm_eval"):  # the job imports lm-eval when it first evaluates: here, untimed
        import lm_eval.evaluator  # noqa: F401
        import lm_eval.models.huggingface  # noqa: F401
        import lm_eval.tasks  # noqa: F401
    budget, clip = proto["budget"]["steps"], proto["budget"]["grad_clip"]
    steps = timed_steps or budget
    if steps != budget:
        every = max(1, round(proto["eval"]["every"] * steps / budget))
        proto.update(budget={**proto["budget"], "steps": steps}, eval={**proto["eval"], "every": every})
    inputs = {"data": prepared(data.source_of(dataset))}
    arrays = io.read_npz(inputs["data"])
    chunks = load_corpus(arrays, proto, run["seeds"]["data"]).train  # [N, L+1]: inputs [:-1], targets [1:]
    vocab = len(lm_corpus.load_tokenizer(arrays))
    job = dag_job(run, inputs)

    def lossbench():
        loop, total, done = job()
        return loop / done, (total - loop + loop * budget / done) / budget

    def minimal():
        model = build_causal_lm(proto["model"], vocab, shared_seed(run, "init")).train()
        opt = adam(model.parameters(), proto["optimizer"])
        params = list(model.parameters())
        batches = epochs_of(len(chunks), proto["budget"]["batch_size"], shared_seed(run, "order"))

        def step():
            c = chunks[next(batches)]
            logits = model(input_ids=c[:, :-1], use_cache=False).logits
            loss = F.cross_entropy(logits.flatten(0, 1), c[:, 1:].flatten())  # the token mean: uniform's loss
            sgd_step(opt, loss, params, clip)
        return seconds_per_step(step, steps)
    note = (f"{steps} of its {budget} steps timed, as many evaluations as the full run; end to end = the job's "
            f"time outside its loop + {budget} x its loop time per step") if steps != budget else ""
    return Case(workload, "uniform", budget, lossbench, minimal, heavy=steps != budget, note=note)


# ---------------------------------------------------------------------------------------- preference
def seq_logps(model, ids, attn, resp):
    """Σ over the response tokens of log π(token | prefix) [B]."""
    logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits
    tok = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (tok * resp[:, 1:]).sum(-1)


def preference_case(workload: str, stage: Path) -> Case:
    from lossbench.lm import join_prompt_response
    from lossbench.tasks.preference import testbed, train_inputs

    run = resolved_run("preference/smoke.yaml", "synthpref", "dpo")
    proto, beta = run["protocol"], run["hparams"]["beta"]
    inputs = train_inputs(run, stage, "smoke")
    tb = testbed(proto)
    pairs, _ = tb.labelled_pairs(data.load_prepared(inputs["samples"]), data.load_prepared(inputs["labels"]), "train")
    # pair-major rows, packed once: row 2i is pair i's y_w, row 2i + 1 its y_l
    ids, attn, resp = join_prompt_response(pairs.prompts.repeat_interleave(2, 0), pairs.responses.flatten(0, 1),
                                           pairs.eos_id)
    ref = tb.load_lm(inputs["sft"]).eval()
    with torch.no_grad():  # the reference cache: π_ref's summed log-probs of every response, once
        ref_logps = torch.cat([seq_logps(ref, ids[i:i + 256], attn[i:i + 256], resp[i:i + 256])
                               for i in range(0, len(ids), 256)]).view(-1, 2)
    steps, batch = proto["train"]["steps"], proto["train"]["batch_size"]

    def minimal():
        policy = tb.load_lm(inputs["sft"]).train()
        opt = torch.optim.Adam(policy.parameters(), lr=proto["optimizer"]["lr"])  # as train_policy builds it
        batches = epochs_of(len(pairs), batch, run["seeds"]["order"])

        def step():
            idx = next(batches)
            rows = torch.stack([2 * idx, 2 * idx + 1], 1).flatten()
            ratio = seq_logps(policy, ids[rows], attn[rows], resp[rows]).view(-1, 2) - ref_logps[idx]
            sgd_step(opt, F.softplus(-beta * (ratio[:, 0] - ratio[:, 1])).mean())
        return seconds_per_step(step, steps)
    return Case(workload, "dpo", steps, per_step(dag_job(run, inputs)), minimal)


# ---------------------------------------------------------------------------------------- grokking
def grokking_case(workload: str, dataset: str = "mod113_add_f40") -> Case:
    from lossbench import grokking, methods
    from lossbench.data import algorithmic
    from lossbench.seeding import derive_seed
    from lossbench.tasks.grokking import val_fraction

    run = resolved_run("grokking/smoke.yaml", dataset, "erm")
    proto, inputs = run["protocol"], {"data": prepared(data.source_of(dataset))}
    arrays = io.read_npz(inputs["data"])
    train, val, test = algorithmic.split_train_val_test(arrays, data.dataset_entry(dataset)["train_fraction"],
                                                        val_fraction(proto), run["seeds"]["data"])
    x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
    k, init = int(arrays["num_classes"]), derive_seed(run["seeds"]["data"], "init")  # as train_run seeds it
    steps = proto["budget"]["steps"]
    # the loop logged at its first and last step only (the least it logs), over GROK_LOOP_STEPS steps
    quiet = {**proto, "budget": {"steps": GROK_LOOP_STEPS}, "eval": {"every": GROK_LOOP_STEPS, "early_points": 0}}
    job = dag_job(run, inputs)

    def lossbench():
        with trainer_clock():
            res = grokking.train_grokking(x[train], y[train], x[test], y[test], k, methods.get("erm"), run["hparams"],
                                          quiet, init, x_val=x[val], y_val=y[val])
        _, total, done = job()
        return res.train_seconds / res.steps, total / done

    def minimal():
        model = grokking.build_model(x.shape[1], proto["model"]["hidden"], k, init)
        opt = adam(model.parameters(), proto["optimizer"])
        xt, yt = x[train], y[train]
        return seconds_per_step(lambda: sgd_step(opt, F.cross_entropy(model(xt), yt)), GROK_LOOP_STEPS)
    return Case(workload, "erm", steps, lossbench, minimal, heavy=True,
                note=f"loop: train_grokking's {GROK_LOOP_STEPS} steps logged at steps 0 and {GROK_LOOP_STEPS} only "
                     f"(minimal: {GROK_LOOP_STEPS} steps)")


# ---------------------------------------------------------------------------------------- driver
def workloads(args) -> list[tuple[str, Callable[[], Case]]]:
    """("<workload> <method>", builder) of each workload: built only when --only selects it."""
    cls = [("classification smoke 128x2", "classification/smoke.yaml", m)
           for m in ("erm", "logit_adjust", "cb_inverse")]
    cls += [("classification P4 256x2", "classification/full.yaml", m) for m in ("erm", "logit_adjust")]
    out = [(f"{label} {m}", lambda a=(label, track, m): classification_case(*a)) for label, track, m in cls]
    out += [("lm_pretraining smoke d48 uniform",
             lambda: lm_case("lm_pretraining smoke d48", "lm_pretraining/smoke.yaml", "shakespeare_mix")),
            ("lm_pretraining T0 d128 uniform",
             lambda: lm_case("lm_pretraining T0 d128", "lm_pretraining/full.yaml", "shakespeare_mix_t0",
                             args.t0_steps)),
            ("preference SynthPref smoke dpo", lambda: preference_case("preference SynthPref smoke", args.pref_stage)),
            ("grokking smoke 200x2 erm", lambda: grokking_case("grokking smoke 200x2"))]
    return [(name, build) for name, build in out if args.only is None or args.only.lower() in name.lower()]


def measure(built: list[Case], repeats: int, heavy_repeats: int) -> list[dict]:
    """Per case: its loop, end-to-end and minimal s/step, one each per repeat."""
    for case in built:  # warm-up: lazy imports, first-call caches, the allocator
        if not case.heavy:
            case.lossbench()
            case.minimal()
    times = [{"loop": [], "e2e": [], "minimal": []} for _ in built]
    for r in range(repeats):
        for case, t in zip(built, times):
            if case.heavy and r >= heavy_repeats:
                continue
            got = {}
            # in turn first: what one side leaves behind (caches, the allocator's state) favours neither
            for side in ("lossbench", "minimal") if r % 2 == 0 else ("minimal", "lossbench"):
                gc.collect()
                got[side] = getattr(case, side)()
            (loop, e2e), minimal = got["lossbench"], got["minimal"]
            t["loop"].append(loop)
            t["e2e"].append(e2e)
            t["minimal"].append(minimal)
    return times


def fmt(values: list[float], scale: float = 1e3) -> str:
    v = sorted(values)
    return f"{scale * statistics.median(v):.2f} ({scale * v[0]:.2f}-{scale * v[-1]:.2f})"


def report(built: list[Case], times: list[dict], clock_name: str) -> None:
    print(f"\n{clock_name} time, torch {torch.__version__}, 1 thread; n interleaved repeats; ms per step and "
          "ratios as median (min-max); ratio = minimal / lossbench per repeat (1 = no overhead)")
    cols = (f"{'workload':26s} {'method':12s} {'steps':>5s} {'n':>2s}  {'minimal':21s} {'lossbench loop':21s} "
            f"{'loop ratio':17s} {'lossbench end to end':21s} {'e2e ratio':17s}")
    print(cols)
    print("-" * len(cols))
    for case, t in zip(built, times):
        r_loop = [m / lb for m, lb in zip(t["minimal"], t["loop"])]
        r_e2e = [m / lb for m, lb in zip(t["minimal"], t["e2e"])]
        print(f"{case.workload:26s} {case.method:12s} {case.steps:5d} {len(r_loop):2d}  {fmt(t['minimal']):21s} "
              f"{fmt(t['loop']):21s} {fmt(r_loop, 1):17s} {fmt(t['e2e']):21s} {fmt(r_e2e, 1):17s}")
    for case in built:
        if case.note:
            print(f"{case.workload}: {case.note}")


def quiet_libraries() -> None:
    """No warnings from lm-eval and the datasets it builds on the terminal (their handlers hold the
    original stderr); the runs' own logs still go to their files."""
    for name in ("lm_eval", "lm-eval", "datasets", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv=None):
    global clock
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--heavy-repeats", type=int, default=3, help="repeats of T0 and grokking (at most --repeats)")
    ap.add_argument("--only", help='the workloads whose "<workload> <method>" contains this, e.g. lm, P4, logit, dpo')
    ap.add_argument("--t0-steps", type=int, default=20,
                    help="T0 steps timed (a divisor of 500 keeps its 10 evaluations exact; 500: the whole run)")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                    help="process CPU time (default: other users of the machine inflate it less) or wall time")
    ap.add_argument("--pref-stage", type=Path, default=PREF_STAGE,
                    help="a SynthPref seed's stage folder as the smoke DAG builds it (sft.pt, samples.npz, labels)")
    args = ap.parse_args(argv)
    clock = CLOCKS[args.clock]
    torch.set_num_threads(1)
    quiet_libraries()
    selected = workloads(args)
    if not (args.pref_stage / "sft.pt").exists() and any(n.startswith("preference") for n, _ in selected):
        print(f"(no SynthPref stage at {args.pref_stage}: preference skipped; run the smoke DAG or pass --pref-stage)")
        selected = [(n, b) for n, b in selected if not n.startswith("preference")]
    built = [build() for _, build in selected]
    report(built, measure(built, args.repeats, args.heavy_repeats), args.clock)


if __name__ == "__main__":
    main()
