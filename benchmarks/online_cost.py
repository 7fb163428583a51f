"""Cost of one training step of the online preference methods (ReMax, RLOO, REINFORCE) and of SRPO
(whose step adds four answer-conditioned rows per pair and π_ref's no-grad forward on them) beside the
offline DPO step, on a SynthPref stage the DAG built (π_ref, its samples and labels, the proxy RM).
Prints figures; asserts nothing.

    python benchmarks/online_cost.py results/smoke/stages/preference/synthpref_tiny/seed0
    python benchmarks/online_cost.py STAGE --batch 64 --repeats 30     # the full protocol's batch

Per method: the median wall time of a step (optimiser step included; interleaved repeats, one
thread), the bytes of tensors autograd saves for the backward pass (the step's activation memory,
counted with saved-tensor hooks, the same on any device), and the models the step holds (parameters
plus Adam's two moments for the trained one). PPO is not implemented: the last line states what its
value model would add by the same count, which is the comparison the ReMax paper makes.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lossbench import methods  # noqa: E402
from lossbench import preference as pe  # noqa: E402
from lossbench import synthpref_testbed as tb  # noqa: E402
from lossbench.data import load_prepared  # noqa: E402
from lossbench.online import OnlineStep  # noqa: E402

METHODS = ("dpo", "srpo", "remax", "rloo", "reinforce")


def saved_bytes(fn):
    """(fn(), bytes of every tensor autograd saved while fn ran)."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total[0]


def nbytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stage", type=Path, help="a SynthPref seed's stage folder (sft.pt, samples.npz, ...)")
    ap.add_argument("--dataset", default="synthpref")
    ap.add_argument("--batch", type=int, default=16, help="prompts (DPO: pairs) per step (smoke: 16, full: 64)")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    samples = load_prepared(args.stage / "samples.npz")
    labels = load_prepared(args.stage / f"labels_{args.dataset}.npz")
    pairs, _ = tb.labelled_pairs(samples, labels, "train")
    ref = pe.frozen_copy(tb.load_lm(args.stage / "sft.pt"))
    rm = tb.load_reward_model(args.stage / f"reward_model_{args.dataset}.pt", args.stage / "sft.pt")
    cache = pe.reference_cache(ref, pairs)
    gen = torch.Generator().manual_seed(0)
    batches = pe.epoch_batches(len(pairs), args.batch, gen)
    steps, held = {}, {}
    for name in METHODS:
        spec = methods.get(name)
        policy = tb.load_lm(args.stage / "sft.pt").train()
        opt = torch.optim.Adam(policy.parameters(), lr=1e-4)
        if spec.kind == "online":
            loss_of = OnlineStep(spec, spec.hparams(), ref, rm, max_new_tokens=tb.T_RESPONSE, eos_id=tb.VOCAB.EOS,
                                 pad_id=tb.VOCAB.PAD, generator=torch.Generator().manual_seed(1))
            models = [policy, ref, rm]
        else:
            hooks = pe.Hooks(reference=ref, revise=tb.revise)  # SRPO's revision rows; DPO reads the cache only

            def loss_of(model, batch, spec=spec, hooks=hooks):
                return pe.preference_loss(spec, spec.hparams(), model, cache, batch, hooks=hooks), {}
            # π_ref's log-probs are cached once per dataset; SRPO scores its revision rows with π_ref live
            models = [policy, ref] if "revision_logps" in spec.needs else [policy]
        steps[name] = (policy, opt, loss_of)
        held[name] = sum(nbytes(m) for m in models) + 2 * nbytes(policy)  # + Adam's moments
    times = {name: [] for name in METHODS}
    acts = {}
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits every method alike
        for name, (policy, opt, loss_of) in steps.items():
            batch = pairs.take(next(batches))
            t0 = time.perf_counter()
            (loss, _), acts[name] = saved_bytes(lambda: loss_of(policy, batch))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["dpo"])
    print(f"stage {args.stage}, {args.batch} prompts per step, {args.repeats} interleaved repeats, 1 thread, "
          f"torch {torch.__version__}")
    print(f"{'method':10s} {'ms/step':>9s} {'range':>15s} {'x DPO':>6s} {'activations':>12s} {'models held':>12s}")
    for name in METHODS:
        t = sorted(times[name])
        print(f"{name:10s} {1e3 * statistics.median(t):9.1f} {1e3 * t[0]:7.1f}-{1e3 * t[-1]:<7.1f} "
              f"{statistics.median(t) / base:6.2f} {acts[name] / 2**20:10.2f}MB {held[name] / 2**20:10.2f}MB")
    value = nbytes(rm) * 3  # a critic the size of the RM, with its own Adam moments
    print(f"PPO (not run) would hold a value model besides these: +{value / 2**20:.2f}MB with its Adam moments "
          f"({(held['remax'] + value) / held['remax']:.2f}x ReMax's models), plus its activations")


if __name__ == "__main__":
    main()
