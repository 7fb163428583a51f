"""One training loop for every LM-pretraining method (docs/methods/README.md, LM-pretraining track).

The trainer owns batching and domain sampling, weighting and reduction, selection, the optimiser
and schedule, divergence checks, evaluation and weight diagnostics; a method only maps detached
losses (or reference features) to weights, penalties or a kept subset. Every method's token
losses come from the one loss layer, `lossbench.lm_loss.token_losses`.

Data: fixed-length chunks [N, L+1] of token ids (input = chunk[:-1], target = chunk[1:]), each with
a domain id and, on the embedded corpus, a ground-truth flag (0 clean, 1 redundant, 2 noise) that
only the diagnostics read. Method kinds and what the trainer does with them:

    sample_weight   w = fn(ℓ_i detached, progress)         loss = N·Σ_i w_i·(n_i/Σn)·ℓ_i
    token_weight    w = fn(ref_logp, mask, progress)        loss = Σ w·ce / Σ mask
    token_penalty   p = fn(lse, mask)                       loss = Σ (ce + p) / Σ mask
    reweight        w = fn(domain, class_counts, ...)       loss = mean_i w_i·ℓ_i (domain upweighting)
    sampler         q = fn(class_counts, progress)          batches drawn by domain q, plain loss
    selection       keep = fn(ratio, features...)           plain loss on the kept chunks only
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from lossbench.lm import eval_mode
from lossbench.lm_loss import resolve_impl, token_losses
from lossbench.seeding import generator
from lossbench.train import LossLog, batch_indices, build_optimizer, optimizer_step

FLAGS = ("clean", "redundant", "noise")
# weight histograms: w·N (1 = the uniform weight), fixed edges so runs and steps compare
WEIGHT_EDGES = (0.0, 0.25, 0.5, 0.75, 0.9, 1.1, 1.5, 2.0, 3.0, math.inf)


@dataclass
class Corpus:
    """Chunks on the training device. `flag` is ground truth for diagnostics, never for training."""

    train: torch.Tensor  # [N, L+1] long
    domain: torch.Tensor  # [N] long
    flag: torch.Tensor  # [N] long
    val: torch.Tensor
    val_domain: torch.Tensor
    test: torch.Tensor
    test_domain: torch.Tensor
    domain_names: list[str]

    @property
    def n_domains(self) -> int:
        return len(self.domain_names)

    def domain_counts(self) -> torch.Tensor:
        return torch.bincount(self.domain.cpu(), minlength=self.n_domains).float()


def train_pool(n: int, cap: int | None, seed: int) -> np.ndarray:
    """Indices of the training chunks a run may use: all of them, or a seeded subset of `cap`
    (sorted). The reference stage and every run of a seed call this with the same arguments, so
    per-chunk reference features line up with the pool."""
    if cap is None or cap >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))


def eval_subset(domains: np.ndarray, per_domain: int | None, seed: int) -> np.ndarray:
    """At most `per_domain` held-out chunks of each domain (seeded), so small domains keep theirs."""
    if per_domain is None:
        return np.arange(len(domains))
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(domains == d))[:per_domain] for d in np.unique(domains)]
    return np.sort(np.concatenate(keep))


def load_corpus(arrays: dict, proto: dict, data_seed: int, device="cpu") -> Corpus:
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.long, device=device)  # noqa: E731
    pool = train_pool(len(arrays["train_tokens"]), proto["data"].get("pool_chunks"), data_seed)
    per = proto["eval"].get("chunks_per_domain")
    val = eval_subset(arrays["val_domain"], per, data_seed + 1)
    test = eval_subset(arrays["test_domain"], per, data_seed + 2)
    return Corpus(train=t(arrays["train_tokens"][pool]), domain=t(arrays["train_domain"][pool]),
                  flag=t(arrays["train_flag"][pool]),
                  val=t(arrays["val_tokens"][val]), val_domain=t(arrays["val_domain"][val]),
                  test=t(arrays["test_tokens"][test]), test_domain=t(arrays["test_domain"][test]),
                  domain_names=[str(x) for x in arrays["domain_names"]])


# ---------------------------------------------------------------------------------------- pieces
def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over `warmup` steps to 1, then cosine decay to `min_ratio` at `total`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * frac))


def forward_losses(model, chunks, impl: str = "torch", with_lse: bool = False):
    """Per-token (ce, lse) [B, L] float32 of next-token prediction on chunks [B, L+1]; lse is None
    unless asked for (only a token penalty reads it)."""
    hidden = model.base_model(input_ids=chunks[:, :-1], use_cache=False).last_hidden_state
    head = model.get_output_embeddings()
    return token_losses(hidden, head.weight, chunks[:, 1:], impl=impl, bias=head.bias, with_lse=with_lse)


def batch_objective(spec, hp, ce, lse, *, progress, domain, counts, ref_logp=None):
    """(scalar loss, detached per-sample weights [B] summing to 1, or None) for one batch."""
    mask = torch.ones_like(ce, dtype=torch.bool)  # chunks are full: every position has a target
    if spec.kind == "sample_weight":
        per_sample = ce.mean(1)
        w = spec.fn(per_sample.detach(), progress=progress, **hp).detach()
        # N·Σ_i w_i·(n_i/Σ_j n_j)·ℓ_i with every n_i = L: Σ_i w_i·ℓ_i (the token mean at w = 1/N)
        return (w * per_sample).sum(), w
    if spec.kind == "token_weight":
        w = spec.fn(ref_logp, mask, progress=progress, **hp).detach()
        return (w * ce).sum() / mask.sum(), None
    if spec.kind == "token_penalty":
        return (ce + spec.fn(lse, mask, **hp)).sum() / mask.sum(), None
    if spec.kind == "reweight":
        w = spec.fn(domain, class_counts=counts, **hp).detach()
        return (w * ce.mean(1)).mean(), w / w.sum()
    return ce.mean(), None  # sampler / selection: the data is the method


@torch.no_grad()
def domain_losses(model, chunks, domains, n_domains: int, impl="torch", batch: int = 128) -> np.ndarray:
    """Mean token loss per domain [D] (NaN for a domain without chunks)."""
    total = torch.zeros(n_domains, dtype=torch.float64)
    count = torch.zeros(n_domains, dtype=torch.float64)
    with eval_mode(model):
        for i in range(0, len(chunks), batch):
            ce, _ = forward_losses(model, chunks[i:i + batch], impl)
            d = domains[i:i + batch].cpu()
            total.index_add_(0, d, ce.sum(1).double().cpu())
            count.index_add_(0, d, torch.full((len(d),), float(ce.shape[1]), dtype=torch.float64))
    return (total / count).numpy()  # 0/0 -> NaN for an absent domain


@dataclass
class WeightStats:
    """Running diagnostics of per-sample weights (card: ESS, entropy, max/min, mean per domain)."""

    n_domains: int
    rows: list = field(default_factory=list)
    hist: np.ndarray = field(default_factory=lambda: np.zeros(len(WEIGHT_EDGES) - 1))
    by_domain: np.ndarray | None = None
    by_flag: np.ndarray | None = None

    def __post_init__(self):
        self.by_domain = np.zeros((2, self.n_domains))  # sum of w·N, count
        self.by_flag = np.zeros((2, len(FLAGS)))

    def add(self, w: torch.Tensor, domain: torch.Tensor, flag: torch.Tensor) -> None:
        w = w.double().cpu()
        n = len(w)
        scaled = (w * n).numpy()
        ent = float(-(w * w.clamp_min(1e-300).log()).sum())
        self.rows.append((float(1.0 / (w ** 2).sum()) / n, ent / math.log(n) if n > 1 else 1.0,
                          float(w.max() / w.min().clamp_min(1e-300))))
        self.hist += np.histogram(scaled, bins=WEIGHT_EDGES)[0]
        for table, keys, k in ((self.by_domain, domain, self.n_domains), (self.by_flag, flag, len(FLAGS))):
            keys = keys.cpu().numpy()
            table[0] += np.bincount(keys, weights=scaled, minlength=k)
            table[1] += np.bincount(keys, minlength=k)

    def flush(self) -> dict:
        """Means since the last flush (and reset): ess_frac, entropy (normalised), max/min ratio,
        histogram fractions, mean w·N per domain and per flag."""
        if not self.rows:
            return {}
        ess, ent, ratio = np.mean(self.rows, 0)
        out = {"weights/ess_fraction": ess, "weights/entropy": ent, "weights/max_min_ratio": ratio}
        out.update({f"weights/hist_{i}": v for i, v in enumerate(self.hist / self.hist.sum())})
        with np.errstate(invalid="ignore", divide="ignore"):
            out.update({f"weights/domain_{i}": v for i, v in enumerate(self.by_domain[0] / self.by_domain[1])})
            out.update({f"weights/{f}": v for f, v in zip(FLAGS, self.by_flag[0] / self.by_flag[1])})
        self.__init__(self.n_domains)
        return out


# ---------------------------------------------------------------------------------------- the loop
@dataclass
class LMResult:
    status: str  # "ok" or "diverged"
    curves: list = field(default_factory=list)  # dicts: step, tokens, metric, value
    final: dict = field(default_factory=dict)  # val/test losses per domain at the end
    steps: int = 0
    tokens: int = 0
    train_seconds: float = 0.0
    tokens_per_second: float = 0.0
    diverged_at_step: int | None = None
    kept_chunks: int = 0
    kept_by_flag: dict = field(default_factory=dict)
    loss_impl: str = ""  # the token_losses implementation training used ("auto" resolved)


def select_pool(spec, hp, corpus: Corpus, features: dict | None, ratio: float) -> torch.Tensor:
    """Indices of the chunks a run trains on: the selection method's kept set, else all."""
    if spec.kind != "selection":
        return torch.arange(len(corpus.train), device=corpus.train.device)
    feats = {k: features[k] for k in spec.needs}
    keep = torch.as_tensor(np.asarray(spec.fn(ratio=ratio, **feats, **hp)), dtype=torch.bool)
    if keep.shape != (len(corpus.train),):
        raise RuntimeError(f"{spec.name}: keep mask has shape {tuple(keep.shape)}, pool has {len(corpus.train)} chunks")
    if not keep.any():
        raise RuntimeError(f"{spec.name}: selected no chunks")
    return torch.nonzero(keep).squeeze(1).to(corpus.train.device)


def _domain_record(prefix: str, losses: np.ndarray, names: list[str], step: int, tokens: int) -> list[dict]:
    rows = [{"step": step, "tokens": tokens, "metric": f"{prefix}/loss/{n}", "value": float(v)}
            for n, v in zip(names, losses) if not np.isnan(v)]  # train-only domains have no held-out chunks
    return rows + [{"step": step, "tokens": tokens, "metric": f"{prefix}/loss", "value": float(np.nanmean(losses))}]


def train_lm(model, corpus: Corpus, spec, hp: dict, proto: dict, *, order_seed: int, features=None,
             ref_logp=None, on_step=None, log=lambda msg: None) -> LMResult:
    """Train `model` in place under `proto` (budget, optimizer, schedule, eval) with method `spec`.

    `features`: the reference stage's arrays for selection methods; `ref_logp` [N, L]: reference
    log-probs of every pool chunk's targets for token-weight methods. Validation loss per domain is
    recorded every `eval.every` steps (curves vs tokens seen). `on_step(step, model)` is called after
    every optimiser step (the reference stage saves checkpoints there)."""
    device = corpus.train.device
    budget, sched, impl = proto["budget"], proto["schedule"], proto.get("loss_impl", "torch")
    total, batch = budget["steps"], budget["batch_size"]
    seq = corpus.train.shape[1] - 1
    # resolved once for the training batch; evaluation batches resolve "auto" for their own size
    train_impl = resolve_impl(impl, device, batch * seq, model.get_output_embeddings().weight.shape[0])
    opt = build_optimizer(model.parameters(), proto["optimizer"])
    base_lr = [g["lr"] for g in opt.param_groups]
    pool = select_pool(spec, hp, corpus, features, proto.get("selection", {}).get("ratio", 1.0))
    result = LMResult(status="ok", kept_chunks=len(pool), loss_impl=train_impl)
    log(f"loss layer: {train_impl}" + (" (auto)" if impl == "auto" else ""))
    result.kept_by_flag = {f: int((corpus.flag[pool] == i).sum()) for i, f in enumerate(FLAGS)}
    dom_cpu = corpus.domain[pool].cpu()
    counts_cpu = torch.bincount(dom_cpu, minlength=corpus.n_domains).float()
    counts = counts_cpu.to(device)
    gen = generator(order_seed)
    perm_state = {"perm": None, "pos": len(pool)}
    stats = WeightStats(corpus.n_domains)
    every = proto["eval"]["every"]
    # the objective (divergence) and the mean token CE (the curve), read back once per curve interval
    objective, token_ce = LossLog(every, device), LossLog(every, device)
    t0, train_time = time.perf_counter(), 0.0
    model.train()
    step = 0
    for step in range(total):
        progress = step / total
        for g, base in zip(opt.param_groups, base_lr):
            g["lr"] = base * lr_factor(step, total, sched["warmup_steps"], sched["min_lr_ratio"])
        local = batch_indices(spec, hp, dom_cpu, counts_cpu, progress, len(pool), batch, gen, perm_state).to(device)
        idx = pool[local]
        ce, lse = forward_losses(model, corpus.train[idx], train_impl, with_lse=spec.kind == "token_penalty")
        loss, w = batch_objective(spec, hp, ce, lse, progress=progress, domain=corpus.domain[idx], counts=counts,
                                  ref_logp=None if ref_logp is None else ref_logp[idx])
        if w is not None:
            stats.add(w, corpus.domain[idx], corpus.flag[idx])
        optimizer_step(opt, loss, clip=budget.get("grad_clip"), check=False)
        objective.add(loss)
        token_ce.add(ce.detach().mean())
        if on_step is not None:
            on_step(step + 1, model)
        if (step + 1) % every == 0 or step + 1 == total:
            train_time += time.perf_counter() - t0
            values, running = objective.flush(), token_ce.flush()
            bad = LossLog.first_bad(values)
            if bad is not None:  # the steps after it only touched a run that is recorded as diverged
                result.status, result.diverged_at_step = "diverged", step + 1 - len(values) + bad
                log(f"loss became {values[bad]} at step {result.diverged_at_step}: recorded as diverged")
                break
            tokens = (step + 1) * batch * seq
            val = domain_losses(model, corpus.val, corpus.val_domain, corpus.n_domains, impl)
            rows = _domain_record("val", val, corpus.domain_names, step + 1, tokens)
            rows.append({"step": step + 1, "tokens": tokens, "metric": "train/loss", "value": float(np.mean(running))})
            rows += [{"step": step + 1, "tokens": tokens, "metric": k, "value": float(v)}
                     for k, v in stats.flush().items()]
            result.curves += rows
            log(f"step {step + 1}/{total} tokens {tokens} train/loss {np.mean(running):.4f} "
                f"val/loss {np.nanmean(val):.4f}")
            t0 = time.perf_counter()
    result.steps = step + 1 if result.status == "ok" else result.diverged_at_step
    result.tokens = result.steps * batch * seq
    result.train_seconds = train_time
    result.tokens_per_second = result.tokens / max(train_time, 1e-9)
    if result.status == "ok":
        for split, chunks, doms in (("val", corpus.val, corpus.val_domain), ("test", corpus.test, corpus.test_domain)):
            losses = domain_losses(model, chunks, doms, corpus.n_domains, impl)
            result.final.update({f"{split}/loss/{n}": float(v) for n, v in zip(corpus.domain_names, losses)
                                 if not np.isnan(v)})
            result.final[f"{split}/loss"] = float(np.nanmean(losses))
            result.final[f"{split}/worst_domain_loss"] = float(np.nanmax(losses))
    return result
