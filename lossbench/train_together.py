"""The seeds of one classification run trained together, as one stacked model.

A tiny model (the embedded MLPs) leaves a CPU core, and a GPU far more, mostly waiting on per-step
fixed costs: kernel launches, the optimiser's loop over parameters, Python. Training S seeds as one
model whose every weight has a leading seed axis pays those costs once per step instead of S times.
Each seed keeps everything that makes it a seed: its own initialisation (built exactly as a separate
run builds it), its own data (the seed's dataset draw), data order, sampler and attack generators,
per-example state, loss, divergence check, curve points and validation-selected checkpoint
(lossbench.train.SeedRun, the same object a separate run uses).

Why the results match separate runs: the seed slices of the stacked weights never mix. The batched
forward is one batched matmul per layer; the training loss is the sum of the seeds' own losses, so
the gradient of a seed's slice is that seed's gradient; Adam, AdamW and SGD are elementwise, so one
optimiser over the stacked tensors takes each seed's own step. What differs is floating-point
rounding: a batched matmul may sum in another order than a single one, so the curves agree with
separate runs to float32 rounding at first and drift apart slowly as any two trajectories do
(tests/harness/test_train_together.py measures it). Evaluation runs on each seed's own model (views
into the stacked weights), so it is exactly a separate run's evaluation of those weights.

What it refuses (with the reason, `why_not`): models other than a plain MLP (BatchNorm statistics,
convolutions), optimisers that are not elementwise (AdamP/SGDP project per parameter, FRUGAL draws
subspaces per parameter, the Weight Compander reparameterises), and methods that need more than the
batch (a teacher, self-distillation rounds, adversarial training inside the loop, an auxiliary head).
"""
from __future__ import annotations

import time

import torch
from torch import nn

from lossbench.methods.base import MethodSpec
from lossbench.optim import build_optimizer
from lossbench.train import SeedRun, TrainResult, optimizer_step

ELEMENTWISE_OPTIMIZERS = ("adam", "adamw", "sgd")


def why_not(spec: MethodSpec, proto: dict) -> str | None:
    """Why `spec` under `proto` cannot train its seeds together, or None when it can."""
    model = proto["model"]
    if model["name"] != "mlp" or model.get("norm", "none") != "none":
        return f"model {model['name']} (norm {model.get('norm', 'none')}): only a plain MLP is stacked"
    if proto["optimizer"]["name"] not in ELEMENTWISE_OPTIMIZERS:
        return (f"optimizer {proto['optimizer']['name']} is not elementwise (only {', '.join(ELEMENTWISE_OPTIMIZERS)} "
                f"take each seed's own step on stacked weights)")
    if spec.teacher:
        return f"{spec.name} distils from a teacher ({spec.teacher})"
    if spec.kind == "adversarial":
        return f"{spec.name} attacks each seed's model inside the loop"
    if "aux_logits" in spec.needs:
        return f"{spec.name} trains an auxiliary head"
    if proto.get("amp"):
        return "mixed precision (amp) is not stacked"
    return None


class StackedMLP(nn.Module):
    """S MLPs of one architecture as one model: each Linear's weight [S, out, in] and bias [S, out].
    The seeds' own modules keep working: their parameters become views of their slices (weights
    are updated in place by the optimiser, so the views always hold the seed's current weights)."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        layers = [self._linears(m) for m in models]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([ls[i].weight.detach() for ls in layers])) for i in range(len(layers[0])))
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([ls[i].bias.detach() for ls in layers])) for i in range(len(layers[0])))
        for s, ls in enumerate(layers):
            for lin, w, b in zip(ls, self.weights, self.biases):
                lin.weight = nn.Parameter(w.detach()[s], requires_grad=False)
                lin.bias = nn.Parameter(b.detach()[s], requires_grad=False)

    @staticmethod
    def _linears(model) -> list[nn.Linear]:
        """The Linears of a plain MLP (lossbench.models.mlp without norm), head last."""
        if model.aux_head is not None:
            raise ValueError("a model with an auxiliary head is not stacked")
        for m in model.body:
            if not isinstance(m, (nn.Flatten, nn.Linear, nn.ReLU)):
                raise ValueError(f"only Flatten/Linear/ReLU MLPs are stacked, not {type(m).__name__}")
        return [m for m in model.body if isinstance(m, nn.Linear)] + [model.head]

    def forward(self, x):
        """(features [S, B, F], logits [S, B, K]) of inputs [S, B, ...]."""
        h = x.flatten(2)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if i == last:
                return h, torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2)).relu()


def train_together(datas: list, spec: MethodSpec, hp: dict, proto: dict, init_seeds: list[int],
                   order_seeds: list[int], device: str = "cpu", logs=None) -> list[TrainResult]:
    """Train one run per seed (datas[s], init_seeds[s], order_seeds[s]) as one stacked model; the
    results are what lossbench.train.train returns for each seed, up to float rounding."""
    reason = why_not(spec, proto)
    if reason:
        raise ValueError(f"{spec.name}: its seeds cannot train together: {reason}")
    logs = logs or [lambda msg: None] * len(datas)
    runs = [SeedRun(d, spec, hp, proto, o, device, log) for d, o, log in zip(datas, order_seeds, logs)]
    shapes = {(tuple(r.x_tr.shape), r.total, r.batch) for r in runs}
    if len(shapes) > 1:
        raise ValueError(f"{spec.name}: the seeds' training sets differ in shape or budget {sorted(shapes)}; "
                         "train them separately")
    models = [r.build_model(s) for r, s in zip(runs, init_seeds)]
    stacked = StackedMLP(models)
    for r, m in zip(runs, models):
        r.model = m
    opt = build_optimizer(stacked.parameters(), proto["optimizer"])
    live = list(range(len(runs)))  # seeds still training (a diverged seed stops being evaluated)
    lead = runs[0]
    set_lr = lead.lr_setter(opt)  # one schedule for all seeds
    t0 = time.perf_counter()
    for step in range(lead.total):
        set_lr(step)
        batches = [r.next_batch(step) for r in runs]
        xb = torch.stack([r.pipe.normalize(x_raw) for r, (_, x_raw, _) in zip(runs, batches)])
        feats, logits = stacked(xb)
        # the sum of the seeds' own losses: each slice's gradient is its seed's own
        losses = [r.loss(step, idx, yb, feats[s], logits[s]) for s, (r, (idx, _, yb)) in enumerate(zip(runs, batches))]
        optimizer_step(opt, torch.stack(losses).sum(), check=False)
        for s in live:
            runs[s].losses.add(losses[s])
        if lead.at_curve_point(step):
            elapsed = time.perf_counter() - t0
            for s in list(live):
                runs[s].train_time += elapsed / len(runs)  # each seed's share of the stacked steps
                if not runs[s].curve_point(step):
                    live.remove(s)
            if not live:
                break
            t0 = time.perf_counter()
    return [r.finish(opt, share=len(runs)) for r in runs]
