"""One training loop for every classification method.

The trainer owns everything a method must not do: batching and sampling, weighting and reduction,
per-example state, the optimiser and schedule, divergence checks and evaluation. Small datasets
live on the training device as tensors; batches are index slices, not a per-sample DataLoader.
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from lossbench.adversarial import pgd_attack
from lossbench.models import build_model
from lossbench.optim import build_optimizer, state_bytes
from lossbench.retrieval import recall_at_1_t
from lossbench.seeding import derive_seed, generator, seeded_build
from lossbench.methods.base import MethodSpec
from lossbench.methods.erm import SPEC as ERM, cross_entropy

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


@dataclass
class TrainResult:
    status: str  # "ok" or "diverged"
    # test-time outputs: the scores (logits after the method's `predict`), or on an open-world
    # dataset (data.retrieval) the embeddings, i.e. the penultimate features [N, D]
    val_scores: np.ndarray | None
    test_scores: np.ndarray | None
    curves: list = field(default_factory=list)  # dicts: step, epoch, metric, value
    steps: int = 0
    train_seconds: float = 0.0
    samples_per_second: float = 0.0
    diverged_at_step: int | None = None
    robust_test_scores: np.ndarray | None = None  # scores of PGD test inputs (protocol `attack`)
    optimizer_state_bytes: int = 0
    rounds: int = 1  # training runs this result took (self-distillation: rounds + 1)
    model: torch.nn.Module | None = None  # the trained model (a later round's teacher), not saved
    # the validation-selected checkpoint: the state at the curve point with the highest validation
    # balanced accuracy (open world: validation Recall@1; the earlier step on ties), its val/test
    # scores and its (global) step; None where there is none (a diverged run)
    valsel_val_scores: np.ndarray | None = None
    valsel_test_scores: np.ndarray | None = None
    valsel_step: int | None = None


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

    @property
    def bounds(self) -> tuple[float, float] | None:
        """Valid range of raw inputs (an attack must stay inside): pixels in [0, 1]."""
        return (0.0, 1.0) if self.modality == "image" else None

    def raw(self, xb: torch.Tensor, train: bool) -> torch.Tensor:
        """Float inputs before normalisation (augmented when training): what an attack perturbs."""
        if self.modality != "image":
            return xb.float()
        x = xb.float() / 255.0
        return self._crop_flip(x) if train and self.augment == "crop_flip" else x

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std if self.modality == "image" else x

    def __call__(self, xb: torch.Tensor, train: bool) -> torch.Tensor:
        return self.normalize(self.raw(xb, train))

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


# ---------------------------------------------------------------- optimiser step and schedule
def optimizer_step(opt, loss, clip: float | None = None, check: bool = True) -> bool:
    """One optimiser step on `loss`, the gradient norm clipped to `clip` if given; False, with no
    step taken, when the loss is NaN or infinite (the caller records the run as diverged instead
    of crashing the DAG). `check=False` skips that test, which reads the loss back to the host
    every step: the caller then watches the losses itself (LossLog)."""
    if check and not torch.isfinite(loss):
        return False
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], clip)
    opt.step()
    return True


class LossLog:
    """A trainer's per-step losses, kept on the device and read back once per interval.

    Reading each loss back (`float(loss)`, a finiteness test) synchronises host and device every
    step; on a GPU running a tiny model that wait is most of the step. Instead each step writes its
    loss into a device buffer, and `flush()` (at the trainer's evaluation points, which read the
    device anyway) returns the interval's losses as Python floats. A non-finite loss is found there,
    at the step it happened (`first_bad`): the steps taken after it only touch a run that is
    recorded as diverged. The values are the float32 losses widened exactly to float64, so their
    sequential sum equals the old per-step `running += float(loss)`."""

    def __init__(self, size: int, device):
        self.buf = torch.empty(max(1, size), dtype=torch.float64, device=device)
        self.n = 0

    def add(self, loss) -> None:
        if self.n == len(self.buf):  # a longer interval than announced: grow rather than fail
            self.buf = torch.cat([self.buf, torch.empty_like(self.buf)])
        self.buf[self.n] = loss.detach()
        self.n += 1

    def flush(self) -> list[float]:
        values, self.n = self.buf[:self.n].tolist(), 0
        return values

    @staticmethod
    def total(values: list[float]) -> float:
        """Their sum, added left to right as the per-step `running += v` did (Python ≥ 3.12's
        `sum` compensates float rounding, which would move the last digits)."""
        out = 0.0
        for v in values:
            out += v
        return out

    @staticmethod
    def first_bad(values: list[float]) -> int | None:
        """Index of the first NaN or infinite loss, or None."""
        return next((i for i, v in enumerate(values) if not math.isfinite(v)), None)


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
    if spec.kind in ("loss", "adversarial"):  # adversarial: logits of the PGD inputs
        if "example_state" in spec.needs:
            per, new_state = spec.fn(logits, yb, example_state=state[idx], **kw, **hp)
            state[idx] = new_state.detach().to(state.dtype)
        else:
            per = spec.fn(logits, yb, **kw, **hp)
        return per.mean()
    if spec.kind == "batch_loss":
        return spec.fn(logits, yb, **kw, **hp)
    if spec.kind == "embedding":  # pairs or relations of the batch's penultimate features
        return spec.fn(needs["features"], yb, **kw, **hp)
    if spec.kind == "reweight":
        w = spec.fn(yb, **kw, **hp).detach()
        return (w * cross_entropy(logits, yb)).mean()
    return cross_entropy(logits, yb).mean()  # sampler: the sampling is the method


def attack_inputs(model, pipe, x_raw, y, attack: dict, steps: int, gen) -> torch.Tensor:
    """PGD inputs against `model` (in eval mode while attacking, so BatchNorm statistics only see
    clean training batches; the mode is restored)."""
    was_training = model.training
    model.eval()
    x_adv = pgd_attack(lambda x: model(pipe.normalize(x)), x_raw, y, eps=attack["eps"],
                       step_size=attack["step_size"], steps=steps,
                       random_start=attack.get("random_start", True), gen=gen, bounds=pipe.bounds)
    model.train(was_training)
    return x_adv


@torch.no_grad()
def predict_scores(model, pipe, x, spec, hp, counts, batch=1024, attack: dict | None = None, y=None, gen=None,
                   embed: bool = False):
    """Test-time scores (the method's `predict` applied); with `attack`, of PGD inputs made
    against the raw logits with `attack["eval_steps"]` steps; with `embed`, the penultimate
    features instead (the embeddings an open-world dataset is scored on)."""
    model.eval()
    out = []
    for i in range(0, len(x), batch):
        xb = pipe.raw(x[i:i + batch], train=False)
        if attack is not None:
            xb = attack_inputs(model, pipe, xb, y[i:i + batch], attack, attack["eval_steps"], gen)
        out.append((model.features if embed else model)(pipe.normalize(xb)).float())
    scores = torch.cat(out)
    if spec.predict is not None and not embed:
        scores = spec.predict(scores, counts, **{k: v for k, v in hp.items()})
    model.train()
    return scores


def _state_copy(model: torch.nn.Module) -> dict:
    """A detached copy of the model's parameters and buffers (BatchNorm statistics included), on
    its device: what load_state_dict restores the validation-selected checkpoint from."""
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def balanced_accuracy_t(scores, y, k):
    pred = scores.argmax(1)
    present = torch.bincount(y, minlength=k) > 0
    hits = torch.bincount(y[pred == y], minlength=k).float()
    return float((hits[present] / torch.bincount(y, minlength=k)[present]).mean())


def train(data, spec: MethodSpec, hp: dict, proto: dict, init_seed: int, order_seed: int,
          device: str = "cpu", log=lambda msg: None, teacher: torch.nn.Module | None = None) -> TrainResult:
    """Train one run of `spec` on `data` under `proto`. `teacher`: the frozen model whose logits a
    `teacher="stage"` method reads; a `teacher="self"` method runs hp["rounds"] rounds after a
    plain-CE round 0, each round's teacher the previous round's model (fresh init per round).

    Besides the last step's scores, the result holds those of the validation-selected checkpoint
    (`valsel_*`): the model state at the curve point with the highest validation balanced accuracy
    (on an open-world dataset, `data.retrieval`: validation Recall@1 of the embeddings),
    the earlier one on ties; with self-distillation rounds, within the last round (the method's own
    model; earlier rounds are its teachers, which stay their rounds' last states). Training itself
    is unchanged: no extra randomness, one state copy per improvement."""
    if spec.teacher == "stage" and teacher is None:
        raise ValueError(f"{spec.name}: needs the track's teacher (protocol `teacher` block)")
    if spec.teacher != "self":
        return _train_once(data, spec, hp, proto, init_seed, order_seed, device, log, teacher)
    rounds = int(hp["rounds"])
    results = []
    for r in range(rounds + 1):
        log(f"round {r}/{rounds}" + (" (plain CE: the first teacher)" if r == 0 else ""))
        res = _train_once(data, spec if r else ERM, hp if r else {}, proto,
                          derive_seed(init_seed, "round", r) if r else init_seed, order_seed, device, log,
                          results[-1].model if r else None, step_offset=sum(x.steps for x in results))
        results.append(res)
        if res.status != "ok":
            break
    last = results[-1]
    last.curves = [row for res in results for row in res.curves]
    last.rounds = len(results)
    last.train_seconds = sum(x.train_seconds for x in results)
    return last


class SeedRun:
    """One seed's side of a classification run: its data on the device, data order and sampling,
    per-example state, losses, curve points, validation-selected checkpoint and final scores.

    `_train_once` drives one with its own model and optimiser; lossbench.train_together drives several
    whose models are views of one stacked model (each seed still draws from its own generators)."""

    def __init__(self, data, spec: MethodSpec, hp: dict, proto: dict, order_seed: int, device: str, log,
                 teacher=None, step_offset: int = 0):
        self.data, self.spec, self.proto, self.log, self.teacher = data, spec, proto, log, teacher
        self.order_seed = order_seed
        self.k, self.step_offset = data.num_classes, step_offset
        self.fn_hp = spec.split_hparams(hp)[0]
        self.pipe = InputPipeline(data.modality, proto.get("augment", "none"), device, order_seed + 1)
        self.x_tr, self.x_val, self.x_te = (self.pipe.to_device(a) for a in (data.x_train, data.x_val, data.x_test))
        self.y_tr = torch.from_numpy(data.y_train).to(device)
        self.y_val = torch.from_numpy(data.y_val).to(device)
        self.y_cpu = torch.from_numpy(data.y_train)
        self.counts_cpu = torch.bincount(self.y_cpu, minlength=self.k).float()
        self.counts = self.counts_cpu.to(device)
        self.attack = proto.get("attack")
        if spec.kind == "adversarial" and not self.attack:
            raise ValueError(f"{spec.name}: adversarial training needs the protocol's `attack` block")
        self.embed = data.retrieval  # open world: every method is scored on its embeddings, not its logits
        if spec.kind == "embedding" and not self.embed:
            raise ValueError(f"{spec.name}: an embedding method trains no classifier head; run it on an open-world dataset")
        if self.embed and self.attack:
            raise ValueError(f"{data.name}: an open-world dataset is scored by retrieval; its protocol takes no `attack`")
        self.val_metric = "val/recall_at_1" if self.embed else "val/balanced_accuracy"
        if teacher is not None:
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
        self.n = len(self.y_tr)
        self.batch = min(proto["budget"]["batch_size"], self.n)
        self.steps_per_epoch = max(1, self.n // self.batch)
        budget = proto["budget"]
        self.total = budget["steps"] if "steps" in budget else budget["epochs"] * self.steps_per_epoch
        self.total_epochs = self.total / self.steps_per_epoch
        self.eval_every = max(1, self.total // proto.get("curve_points", 20))
        self.gen = generator(order_seed)  # data order / sampling, on CPU for portability
        self.perm_state = {"perm": None, "pos": self.n}
        self.state = None
        if "example_state" in spec.needs:
            self.state = torch.full((self.n,), float(spec.init_state(self.fn_hp)), device=device)
        self.result = TrainResult(status="ok", val_scores=None, test_scores=None)
        self.best = {"val": -math.inf, "step": None, "state": None}  # the validation-selected checkpoint
        self.losses, self.train_time, self.steps_done = LossLog(self.eval_every, device), 0.0, 0
        self.model = None  # set by the driver

    def build_model(self, init_seed: int) -> torch.nn.Module:
        return seeded_build(lambda: build_model(self.proto["model"], tuple(self.x_tr.shape[1:]), self.k,
                                                aux_head="aux_logits" in self.spec.needs), init_seed).to(self.x_tr.device)

    def schedules_lr(self) -> bool:
        """Whether the lr ever differs from the base lr (a constant schedule without warm-up never does)."""
        sched = self.proto.get("schedule", {"name": "constant"})
        return sched["name"] != "constant" or bool(sched.get("warmup_epochs"))

    def lr_factor(self, step: int) -> float:
        return lr_factor(self.proto.get("schedule", {"name": "constant"}), step / self.steps_per_epoch, self.total_epochs)

    def lr_setter(self, opt):
        """A function of the step that sets `opt`'s lrs from their base values by the schedule; one that
        does nothing under a constant lr (the param-group loop costs Python time every step)."""
        if not self.schedules_lr():
            return lambda step: None
        base_lrs = [g["lr"] for g in opt.param_groups]

        def set_lr(step: int) -> None:
            factor = self.lr_factor(step)
            for g, base in zip(opt.param_groups, base_lrs):
                g["lr"] = base * factor

        return set_lr

    def next_batch(self, step: int):
        """(idx, raw inputs, labels) of the step's batch; PGD inputs for an adversarial method."""
        idx = batch_indices(self.spec, self.fn_hp, self.y_cpu, self.counts_cpu, step / self.total, self.n,
                            self.batch, self.gen, self.perm_state).to(self.x_tr.device)
        x_raw, yb = self.pipe.raw(self.x_tr[idx], train=True), self.y_tr[idx]
        if self.spec.kind == "adversarial":
            x_raw = attack_inputs(self.model, self.pipe, x_raw, yb, self.attack, self.attack["steps"], self.pipe.gen)
        return idx, x_raw, yb

    def loss(self, step: int, idx, yb, feats, logits, aux=None, t_logits=None):
        needs = {"class_counts": self.counts, "progress": step / self.total, "features": feats.float(),
                 "logits": logits.float(), "aux_logits": None if aux is None else aux.float(),
                 "teacher_logits": None if t_logits is None else t_logits.float()}
        return _loss(self.spec, self.fn_hp, logits.float(), yb, needs, self.state, idx)

    def at_curve_point(self, step: int) -> bool:
        return (step + 1) % self.eval_every == 0 or step + 1 == self.total

    def outputs(self, m, x):  # what evaluation reads: scores, or embeddings on an open-world dataset
        return predict_scores(m, self.pipe, x, self.spec, self.fn_hp, self.counts, embed=self.embed)

    def curve_point(self, step: int) -> bool:
        """Read back the interval's losses and record the curve point after `step`; False (the run is
        recorded as diverged, at the step of its first non-finite loss) when training must stop."""
        values = self.losses.flush()
        self.steps_done = step + 1
        bad = LossLog.first_bad(values)
        if bad is not None:
            self.result.status, self.result.diverged_at_step = "diverged", step + 1 - len(values) + bad
            self.log(f"loss became {values[bad]} at step {self.result.diverged_at_step}: recorded as diverged")
            return False
        running, running_n = LossLog.total(values), len(values)
        val_scores = self.outputs(self.model, self.x_val)
        val = recall_at_1_t(val_scores, self.y_val) if self.embed else balanced_accuracy_t(val_scores, self.y_val, self.k)
        ep = (step + 1) / self.steps_per_epoch
        at = self.step_offset + step + 1
        self.result.curves += [
            {"step": at, "epoch": ep, "metric": "train/loss", "value": running / running_n},
            {"step": at, "epoch": ep, "metric": self.val_metric, "value": val},
        ]
        if val > self.best["val"]:  # strictly: a tie keeps the earlier step; NaN never selects
            self.best.update(val=val, step=at, state=None if step + 1 == self.total else _state_copy(self.model))
        self.log(f"step {step + 1}/{self.total} epoch {ep:.1f} train/loss {running / running_n:.4f} "
                 f"{self.val_metric} {val:.4f}")
        return True

    def finish(self, opt, share: int = 1) -> TrainResult:
        """The result: the last step's and the validation-selected checkpoint's scores (a run that
        finished), robust scores under the protocol's attack, timing and optimiser state (`share`:
        the number of seeds `opt` holds, of which this run's state is one)."""
        result, model, data = self.result, self.model, self.data
        device = self.x_tr.device
        if result.status == "ok":
            result.val_scores = self.outputs(model, self.x_val).cpu().numpy()
            result.test_scores = self.outputs(model, self.x_te).cpu().numpy()
            if self.best["step"] is not None:
                result.valsel_step = self.best["step"]
                if self.best["state"] is None:  # the last step is the best: its scores are the last ones
                    result.valsel_val_scores, result.valsel_test_scores = result.val_scores, result.test_scores
                else:  # a copy of the model holds the best state; `model` stays the last one (a next round's teacher)
                    chosen = copy.deepcopy(model)
                    chosen.load_state_dict(self.best["state"])
                    result.valsel_val_scores = self.outputs(chosen, self.x_val).cpu().numpy()
                    result.valsel_test_scores = self.outputs(chosen, self.x_te).cpu().numpy()
                    del chosen
            if self.attack:  # every method's robust accuracy, under one fixed attack stream per seed
                y_te = torch.from_numpy(data.y_test).to(device)
                result.robust_test_scores = predict_scores(
                    model, self.pipe, self.x_te, self.spec, self.fn_hp, self.counts, attack=self.attack, y=y_te,
                    gen=generator(derive_seed(self.order_seed, "eval_attack"), device)).cpu().numpy()
        result.steps = self.steps_done
        result.train_seconds = self.train_time
        result.samples_per_second = result.steps * self.batch / max(self.train_time, 1e-9)
        result.optimizer_state_bytes = state_bytes(opt) // share
        result.model = model
        return result


def _train_once(data, spec: MethodSpec, hp: dict, proto: dict, init_seed: int, order_seed: int,
                device: str, log, teacher, step_offset: int = 0) -> TrainResult:
    run = SeedRun(data, spec, hp, proto, order_seed, device, log, teacher, step_offset)
    run.order_seed_for_attack = order_seed
    model = run.model = run.build_model(init_seed)
    # FRUGAL draws its subspaces from its own generator: seeded by the run, like the data order
    opt = build_optimizer(model.parameters(), {"seed": derive_seed(order_seed, "optimizer"), **proto["optimizer"]}
                          if proto["optimizer"]["name"] == "frugal" else proto["optimizer"])
    use_amp = device.startswith("cuda") and proto.get("amp", False)
    # contexts cost Python time every step: entered only where they do something
    amp = (lambda: torch.autocast(device_type="cuda", dtype=torch.bfloat16)) if use_amp else contextlib.nullcontext
    set_lr = run.lr_setter(opt)
    t0 = time.perf_counter()
    for step in range(run.total):
        set_lr(step)
        idx, x_raw, yb = run.next_batch(step)
        xb = run.pipe.normalize(x_raw)
        with amp():
            feats = model.features(xb)
            logits = model.head(feats)
            aux = model.aux_head(feats) if model.aux_head is not None else None
            t_logits = None
            if teacher is not None:
                with torch.no_grad():
                    t_logits = teacher(xb)
        loss = run.loss(step, idx, yb, feats, logits, aux, t_logits)
        optimizer_step(opt, loss, check=False)
        run.losses.add(loss)
        if run.at_curve_point(step):
            run.train_time += time.perf_counter() - t0
            if not run.curve_point(step):
                break
            t0 = time.perf_counter()
    return run.finish(opt)
