"""One training loop for every classification method.

The trainer owns everything a method must not do: batching and sampling, weighting and reduction,
per-example state, the optimiser and schedule, divergence checks and evaluation. Small datasets
live on the training device as tensors; batches are index slices, not a per-sample DataLoader.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from lossbench.models import build_model
from lossbench.seeding import generator, seeded_build
from methods.base import MethodSpec
from methods.erm import cross_entropy

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


@dataclass
class TrainResult:
    status: str  # "ok" or "diverged"
    val_scores: np.ndarray | None
    test_scores: np.ndarray | None
    curves: list = field(default_factory=list)  # dicts: step, epoch, metric, value
    steps: int = 0
    train_seconds: float = 0.0
    samples_per_second: float = 0.0
    diverged_at_step: int | None = None


# ---------------------------------------------------------------- inputs and augmentation
class InputPipeline:
    """Turns stored arrays into model inputs on the device; images get the CIFAR recipe
    (random crop with 4-pixel padding + horizontal flip, then normalisation) when training."""

    def __init__(self, modality: str, augment: str, device, seed: int):
        self.modality, self.augment, self.device = modality, augment, device
        self.gen = generator(seed, device)
        if modality == "image":
            self.mean = torch.tensor(CIFAR_MEAN, device=device).view(1, 3, 1, 1)
            self.std = torch.tensor(CIFAR_STD, device=device).view(1, 3, 1, 1)

    def to_device(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x))
        if self.modality == "image":
            t = t.permute(0, 3, 1, 2).contiguous()  # stored NHWC uint8 -> NCHW uint8
        return t.to(self.device)

    def __call__(self, xb: torch.Tensor, train: bool) -> torch.Tensor:
        if self.modality != "image":
            return xb.float()
        x = xb.float() / 255.0
        if train and self.augment == "crop_flip":
            x = self._crop_flip(x)
        return (x - self.mean) / self.std

    def _crop_flip(self, x):
        b, _, h, w = x.shape
        padded = F.pad(x, (4, 4, 4, 4))
        dy = torch.randint(0, 9, (b,), device=x.device, generator=self.gen)
        dx = torch.randint(0, 9, (b,), device=x.device, generator=self.gen)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        out = padded[batch, chan, rows, cols]
        flip = torch.rand(b, device=x.device, generator=self.gen) < 0.5
        return torch.where(flip[:, None, None, None], out.flip(3), out)


# ---------------------------------------------------------------- optimiser and schedule
def build_optimizer(params, cfg: dict):
    cfg = dict(cfg)
    name = cfg.pop("name")
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg.get("momentum", 0.0),
                               nesterov=cfg.get("nesterov", False), weight_decay=cfg.get("weight_decay", 0.0))
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        # fused kernels: about half the per-step optimiser overhead of the default for tiny models
        return cls(params, lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.0),
                   betas=tuple(cfg.get("betas", (0.9, 0.999))), eps=cfg.get("eps", 1e-8), fused=True)
    raise KeyError(f"unknown optimizer {name!r}; valid: sgd, adam, adamw")


def optimizer_step(opt, loss, clip: float | None = None) -> bool:
    """One optimiser step on `loss`, the gradient norm clipped to `clip` if given; False, with no
    step taken, when the loss is NaN or infinite (the caller records the run as diverged instead
    of crashing the DAG)."""
    if not torch.isfinite(loss):
        return False
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], clip)
    opt.step()
    return True


def lr_factor(schedule: dict, epoch: float, total_epochs: float) -> float:
    """Multiplier of the base lr at (fractional) `epoch`: linear warm-up, then the schedule."""
    warm = schedule.get("warmup_epochs", 0)
    if warm and epoch < warm:
        return (epoch + 1e-9) / warm if epoch > 0 else 1.0 / max(1, warm * 10)
    name = schedule["name"]
    if name == "constant":
        return 1.0
    if name == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, epoch / total_epochs)))
    if name == "step":  # LDAM-DRW: lr x factors[i] once epoch >= milestones[i]
        factor = 1.0
        for m, f in zip(schedule["milestones"], schedule["factors"]):
            if epoch >= m:
                factor = f
        return factor
    raise KeyError(f"unknown schedule {name!r}; valid: constant, cosine, step")


# ---------------------------------------------------------------- the loop
def batch_indices(spec, hp, y, counts, progress, n, batch, gen, perm_state):
    """Indices (on CPU) of the next batch: the method's class probabilities for samplers, else
    consecutive slices of a fresh permutation per epoch (last partial batch dropped)."""
    if spec.kind == "sampler":
        q = spec.fn(counts, progress=progress, **hp)
        p = (q / counts.clamp_min(1))[y]
        return torch.multinomial(p, batch, replacement=True, generator=gen)
    if perm_state["pos"] + batch > n:
        perm_state["perm"] = torch.randperm(n, generator=gen)
        perm_state["pos"] = 0
    idx = perm_state["perm"][perm_state["pos"]: perm_state["pos"] + batch]
    perm_state["pos"] += batch
    return idx


def _loss(spec: MethodSpec, hp, logits, yb, needs: dict, state, idx):
    """Scalar training loss for one batch, dispatching on the method's kind."""
    kw = {k: needs[k] for k in spec.needs if k != "example_state"}
    if spec.kind == "loss":
        if "example_state" in spec.needs:
            per, new_state = spec.fn(logits, yb, example_state=state[idx], **kw, **hp)
            state[idx] = new_state.detach().to(state.dtype)
        else:
            per = spec.fn(logits, yb, **kw, **hp)
        return per.mean()
    if spec.kind == "batch_loss":
        return spec.fn(logits, yb, **kw, **hp)
    if spec.kind == "reweight":
        w = spec.fn(yb, **kw, **hp).detach()
        return (w * cross_entropy(logits, yb)).mean()
    return cross_entropy(logits, yb).mean()  # sampler: the sampling is the method


@torch.no_grad()
def predict_scores(model, pipe, x, spec, hp, counts, batch=1024):
    model.eval()
    out = []
    for i in range(0, len(x), batch):
        out.append(model(pipe(x[i:i + batch], train=False)).float())
    scores = torch.cat(out)
    if spec.predict is not None:
        scores = spec.predict(scores, counts, **{k: v for k, v in hp.items()})
    model.train()
    return scores


def balanced_accuracy_t(scores, y, k):
    pred = scores.argmax(1)
    present = torch.bincount(y, minlength=k) > 0
    hits = torch.bincount(y[pred == y], minlength=k).float()
    return float((hits[present] / torch.bincount(y, minlength=k)[present]).mean())


def train(data, spec: MethodSpec, hp: dict, proto: dict, init_seed: int, order_seed: int,
          device: str = "cpu", log=lambda msg: None) -> TrainResult:
    k = data.num_classes
    pipe = InputPipeline(data.modality, proto.get("augment", "none"), device, order_seed + 1)
    x_tr, x_val, x_te = (pipe.to_device(a) for a in (data.x_train, data.x_val, data.x_test))
    y_tr = torch.from_numpy(data.y_train).to(device)
    y_val = torch.from_numpy(data.y_val).to(device)
    y_cpu = torch.from_numpy(data.y_train)
    counts_cpu = torch.bincount(y_cpu, minlength=k).float()
    counts = counts_cpu.to(device)
    model = seeded_build(lambda: build_model(proto["model"], tuple(x_tr.shape[1:]), k), init_seed).to(device)
    opt = build_optimizer(model.parameters(), proto["optimizer"])
    base_lrs = [g["lr"] for g in opt.param_groups]

    n, batch = len(y_tr), min(proto["budget"]["batch_size"], len(y_tr))
    steps_per_epoch = max(1, n // batch)
    budget = proto["budget"]
    total = budget["steps"] if "steps" in budget else budget["epochs"] * steps_per_epoch
    total_epochs = total / steps_per_epoch
    eval_every = max(1, total // proto.get("curve_points", 20))
    gen = generator(order_seed)  # data order / sampling, on CPU for portability
    perm_state = {"perm": None, "pos": n}
    state = None
    if "example_state" in spec.needs:
        state = torch.full((n,), float(spec.init_state(hp)), device=device)
    use_amp = device.startswith("cuda") and proto.get("amp", False)

    result = TrainResult(status="ok", val_scores=None, test_scores=None)
    running, running_n, train_time = 0.0, 0, 0.0
    t0 = time.perf_counter()
    for step in range(total):
        progress = step / total
        epoch = step / steps_per_epoch
        for g, base in zip(opt.param_groups, base_lrs):
            g["lr"] = base * lr_factor(proto.get("schedule", {"name": "constant"}), epoch, total_epochs)
        idx = batch_indices(spec, hp, y_cpu, counts_cpu, progress, n, batch, gen, perm_state).to(device)
        xb, yb = pipe(x_tr[idx], train=True), y_tr[idx]
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
            logits = model(xb)
        loss = _loss(spec, hp, logits.float(), yb, {"class_counts": counts, "progress": progress}, state, idx)
        if not optimizer_step(opt, loss):
            train_time += time.perf_counter() - t0
            result.status, result.diverged_at_step = "diverged", step
            log(f"loss became {loss.item()} at step {step}: recorded as diverged")
            break
        running += float(loss.detach())
        running_n += 1
        if (step + 1) % eval_every == 0 or step + 1 == total:
            train_time += time.perf_counter() - t0
            val_scores = predict_scores(model, pipe, x_val, spec, hp, counts)
            bal = balanced_accuracy_t(val_scores, y_val, k)
            ep = (step + 1) / steps_per_epoch
            result.curves += [
                {"step": step + 1, "epoch": ep, "metric": "train/loss", "value": running / running_n},
                {"step": step + 1, "epoch": ep, "metric": "val/balanced_accuracy", "value": bal},
            ]
            log(f"step {step + 1}/{total} epoch {ep:.1f} train/loss {running / running_n:.4f} val/bal_acc {bal:.4f}")
            running, running_n = 0.0, 0
            t0 = time.perf_counter()
    else:
        result.val_scores = predict_scores(model, pipe, x_val, spec, hp, counts).cpu().numpy()
        result.test_scores = predict_scores(model, pipe, x_te, spec, hp, counts).cpu().numpy()
    result.steps = step + 1 if total else 0
    result.train_seconds = train_time
    result.samples_per_second = result.steps * batch / max(train_time, 1e-9)
    return result
