"""Full-batch trainer of the grokking track (Prieto et al., ICLR 2025, arXiv:2501.04697).

A bias-free ReLU MLP (the reference 226-200-200-113; positively homogeneous, so scaling θ only
scales the logits — the NLM direction of card §1.2) trained on every training example at each
step. A `loss` method gives the per-example loss (the optimiser may take its `optimizer_hparams`);
a `grad_transform` method rewrites the gradients of softmax CE before the protocol's optimiser
steps. Iteration s computes the logits and gradient at θ_s (after s updates) once and logs from
them, so the train metrics and the gradient diagnostics of an evaluation step cost no extra pass.

Logged at log-spaced early steps and every `eval.every` steps (card §4): train, val and test
accuracy and loss (val and test from one forward pass over the held-out examples, as many as the
test set alone had before the split; val is the slice a sweep selects on, data/algorithmic.py),
the Softmax Collapse fraction (shifted exp-sum exactly 1 in the run's softmax precision), the
fraction of exactly-zero losses, the fraction whose top-2 logit gap exceeds the absorption gap
ln(2/eps) of that precision, the top-2 gap, weight norms, cos(−∇L, θ) and ‖g⊥‖/‖g‖, per layer and
overall. A non-finite loss stops the run as diverged; the curves up to it are kept.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from lossbench.seeding import seeded_build
from lossbench.train import LossLog, build_optimizer
from lossbench.methods.base import MethodSpec
from lossbench.methods.erm import cross_entropy
from lossbench.methods.softmax_ce import PRECISIONS

GROK, GROK_STRICT, MEMORIZE, COLLAPSED = 0.95, 0.99, 0.99, 0.5  # card §4 thresholds
PROGRESS = ("train/accuracy", "val/accuracy", "test/accuracy", "train/sc_fraction", "weights/l2")  # the log prints


@dataclass
class GrokResult:
    status: str  # "ok" or "diverged"
    curves: list = field(default_factory=list)  # dicts: step, metric, value
    final: dict = field(default_factory=dict)  # summary metrics (metric -> value; NaN = not reached)
    steps: int = 0
    diverged_at_step: int | None = None
    train_seconds: float = 0.0
    stopped_early: bool = False  # budget/stop_when_solved ended the run before its last step


class Solved:
    """budget/stop_when_solved: a run whose train and validation accuracy both reach `accuracy` at
    `evals` logged steps in a row has nothing left to show (it has grokked and stays there), so it
    stops; the rule reads validation, never test, and is off (never stops) without the block.
    It saves the long budget a fast method (⊥AdamW: ~10^2-10^4 steps) would spend idling."""

    def __init__(self, rule: dict | None):
        rule = rule or {}
        self.accuracy, self.evals = rule.get("accuracy", 1.0), rule.get("evals")
        self.streak = 0

    def update(self, now: dict) -> bool:
        """Reads one logged step's metrics (metric -> value); True once the run is solved."""
        if not self.evals:
            return False
        ok = all(now.get(m, -1.0) >= self.accuracy for m in ("train/accuracy", "val/accuracy"))
        self.streak = self.streak + 1 if ok else 0
        return self.streak >= self.evals


def build_model(in_dim: int, hidden: list[int], num_classes: int, seed: int) -> nn.Sequential:
    """Bias-free ReLU MLP with PyTorch's default Linear init, seeded; layers named fc1.., out."""
    def build():
        widths, layers = [in_dim, *hidden], OrderedDict()
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]), 1):
            layers[f"fc{i}"], layers[f"relu{i}"] = nn.Linear(a, b, bias=False), nn.ReLU()
        layers["out"] = nn.Linear(widths[-1], num_classes, bias=False)
        return nn.Sequential(layers)
    return seeded_build(build, seed)


def eval_steps(total: int, every: int, early_points: int) -> list[int]:
    """0, `early_points` log-spaced steps in [1, every), then every `every` steps, and `total`."""
    early = np.unique(np.round(np.geomspace(1, every, early_points + 1)[:-1]).astype(int)) if early_points else []
    steps = {0, total, *(int(s) for s in early if s < total), *range(every, total + 1, every)}
    return sorted(steps)


def step_with(opt, spec: MethodSpec | None, hp: dict) -> None:
    """One step of `opt` on the gradients in place, first rewritten by a `grad_transform` spec."""
    if spec is not None and spec.kind == "grad_transform":
        params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
        with torch.no_grad():
            for p, new in zip(params, spec.fn(params, [p.grad for p in params], **hp)):
                p.grad.copy_(new)
    opt.step()


def method_loss(spec: MethodSpec, fn_hp: dict):
    """Per-example loss of the run: the method's for `loss` kinds, float32 softmax CE otherwise."""
    if spec.kind == "loss":
        return lambda logits, y: spec.fn(logits, y, **fn_hp)
    return cross_entropy


def softmax_precision(fn_hp: dict) -> torch.dtype:
    """The precision the run's softmax is evaluated in; float32 of the raw logits for methods
    without a softmax (StableMax: the card's sanity plot, collapsed while StableMax learns)."""
    return PRECISIONS[fn_hp.get("softmax_precision", "float32")]


@torch.no_grad()
def collapse_stats(logits: torch.Tensor, per_example_loss: torch.Tensor, dtype: torch.dtype) -> dict:
    """Softmax Collapse diagnostics of train logits [N, K] (card §1.1, reference `logger.py`)."""
    z = logits.to(dtype)
    shifted_sum = torch.exp(z - z.amax(1, keepdim=True)).sum(1)
    top2 = logits.double().topk(2, dim=1).values
    gap = top2[:, 0] - top2[:, 1]
    return {"train/sc_fraction": float((shifted_sum == 1).double().mean()),
            "train/zero_loss_fraction": float((per_example_loss == 0).double().mean()),
            "train/absorbed_fraction": float((gap > math.log(2 / torch.finfo(dtype).eps)).double().mean()),
            "logits/top_gap_mean": float(gap.mean()), "logits/top_gap_max": float(gap.max())}


@torch.no_grad()
def weight_grad_stats(named_params) -> dict:
    """Weight norms, cos(−∇L, θ) and ‖g⊥‖/‖g‖ (per-tensor projection), per layer and overall."""
    out, dot, ww, gg, perp2 = {}, 0.0, 0.0, 0.0, 0.0
    for name, p in named_params:
        layer = name.removesuffix(".weight")
        w, g = p.detach().double().flatten(), p.grad.double().flatten()
        w2, g2, wg = float(w @ w), float(g @ g), float(w @ g)
        cos = -wg / math.sqrt(w2 * g2) if w2 and g2 else float("nan")
        out[f"weights/l2/{layer}"], out[f"grad/nlm_cosine/{layer}"] = math.sqrt(w2), cos
        dot, ww, gg = dot + wg, ww + w2, gg + g2
        perp2 += g2 - (wg * wg / w2 if w2 else 0.0)
    out["weights/l2"] = math.sqrt(ww)
    out["grad/nlm_cosine"] = -dot / math.sqrt(ww * gg) if ww and gg else float("nan")
    out["grad/orth_ratio"] = math.sqrt(max(perp2, 0.0) / gg) if gg else float("nan")
    return out


def first_step(curves: list, metric: str, threshold: float) -> float:
    """First logged step with `metric` ≥ threshold (> for the collapse fraction), else NaN."""
    for row in curves:
        if row["metric"] == metric and (row["value"] > threshold if metric == "train/sc_fraction"
                                        else row["value"] >= threshold):
            return float(row["step"])
    return float("nan")


def summarize(curves: list) -> dict:
    """Final and time-to-target metrics from the logged curves (NaN = never reached)."""
    last = {}
    for row in curves:
        last[row["metric"]] = row["value"]
    test_acc = [r["value"] for r in curves if r["metric"] == "test/accuracy"]
    val_acc = [r["value"] for r in curves if r["metric"] == "val/accuracy"]
    sc = [r["value"] for r in curves if r["metric"] == "train/sc_fraction"]
    final = {k: last[k] for k in ("test/accuracy", "val/accuracy", "train/accuracy", "test/loss", "val/loss",
                                  "train/loss", "train/sc_fraction", "train/zero_loss_fraction", "weights/l2",
                                  "grad/nlm_cosine") if k in last}
    grok, memorize = first_step(curves, "test/accuracy", GROK), first_step(curves, "train/accuracy", MEMORIZE)
    final.update({
        "test/max_accuracy": max(test_acc, default=float("nan")),
        "val/max_accuracy": max(val_acc, default=float("nan")),  # a sweep's selection metric
        "test/steps_to_grok": grok, "test/grokked": float(not math.isnan(grok)),
        "test/steps_to_grok_99": first_step(curves, "test/accuracy", GROK_STRICT),
        "train/steps_to_memorize": memorize, "test/grok_delay": grok - memorize,
        "train/first_collapse_step": first_step(curves, "train/sc_fraction", COLLAPSED),
        "train/max_sc_fraction": max(sc, default=float("nan")),
    })
    return final


def train_grokking(x_train, y_train, x_test, y_test, num_classes: int, spec: MethodSpec, hp: dict, proto: dict,
                   init_seed: int, log=lambda msg: None, x_val=None, y_val=None) -> GrokResult:
    """Train one run (tensors on the training device); see the module docstring. With x_val/y_val
    (the validation slice) the curves also log val/accuracy and val/loss, evaluated with the test
    examples in one batched forward pass."""
    fn_hp, opt_hp = spec.split_hparams(hp)
    model = build_model(x_train.shape[1], proto["model"]["hidden"], num_classes, init_seed).to(x_train.device)
    opt = build_optimizer(model.parameters(), {**proto["optimizer"], **opt_hp})
    loss_fn, precision = method_loss(spec, fn_hp), softmax_precision(fn_hp)
    total = proto["budget"]["steps"]
    logged = set(eval_steps(total, proto["eval"]["every"], proto["eval"]["early_points"]))
    named = [(n, p) for n, p in model.named_parameters()]
    held = _Held(x_val, y_val, x_test, y_test)
    res = GrokResult(status="ok")
    solved = Solved(proto["budget"].get("stop_when_solved"))
    losses = LossLog(proto["eval"]["every"], x_train.device)  # read back at logged steps: no host sync per step
    t0 = time.perf_counter()
    for step in range(total + 1):
        logits = model(x_train)
        per_example = loss_fn(logits, y_train)
        loss = per_example.mean()
        losses.add(loss)
        if step in logged or step == total:
            values = losses.flush()
            bad = LossLog.first_bad(values)
            if bad is not None:  # the steps since only touched a run that is recorded as diverged
                res.status = "diverged"
                res.diverged_at_step = step = step + 1 - len(values) + bad
                log(f"loss became {values[bad]} at step {step}: recorded as diverged")
                break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if step in logged:
            rows = _log_step(step, model, named, logits, per_example, y_train, held, loss_fn, precision)
            res.curves += rows
            now = {r["metric"]: r["value"] for r in rows}
            if step % (proto["eval"]["every"] * 10) == 0 or step == total:
                log(f"step {step}/{total} " + " ".join(f"{m} {now[m]:.4g}" for m in PROGRESS if m in now))
            if solved.update(now):
                res.stopped_early = True
                log(f"solved at step {step}: train and val accuracy >= {solved.accuracy} at {solved.evals} "
                    "logged steps in a row; stopped (budget/stop_when_solved)")
                break
        if step < total:
            step_with(opt, spec, fn_hp)
    res.train_seconds = time.perf_counter() - t0
    res.steps = step
    res.final = summarize(res.curves)
    return res


class _Held:
    """The held-out examples evaluated at a logged step: the val slice (if any) and the test
    examples, concatenated once so one forward pass gives both."""

    def __init__(self, x_val, y_val, x_test, y_test):
        self.n_val = 0 if x_val is None else len(x_val)
        self.x = x_test if not self.n_val else torch.cat([x_val, x_test])
        self.parts = {"test": (slice(self.n_val, None), y_test)}
        if self.n_val:
            self.parts = {"val": (slice(0, self.n_val), y_val), **self.parts}

    def metrics(self, model, loss_fn) -> dict:
        held_logits, out = model(self.x), {}
        for name, (rows, y) in self.parts.items():
            z = held_logits[rows]
            out[f"{name}/accuracy"] = float((z.argmax(1) == y).double().mean())
            out[f"{name}/loss"] = float(loss_fn(z, y).double().mean())
        return out


def _log_step(step, model, named, logits, per_example, y_train, held: _Held, loss_fn, precision) -> list:
    with torch.no_grad():
        values = {"train/accuracy": float((logits.argmax(1) == y_train).double().mean()),
                  "train/loss": float(per_example.double().mean()),
                  **held.metrics(model, loss_fn)}
    values.update(collapse_stats(logits.detach(), per_example.detach(), precision))
    values.update(weight_grad_stats(named))
    return [{"step": step, "metric": k, "value": v} for k, v in values.items()]
