"""The preference-optimisation engine and its shared metrics (docs/methods/README.md, preference track).

Methods stay pure (methods/base.py): they receive log-probs and return per-example losses. This module
owns everything with a model in it: packing, the one policy forward per step, the reference cache,
frozen and auxiliary modules ("hooks"), reduction, the training loop, sampling and the metrics.

Data (`PrefData`): unpadded equal-length prompts [N, P] (real data: right-padded, with `prompt_mask`) and K
responses per prompt [N, K, T] in `lm.sample` layout (tokens, EOS, then padding). The columns mean, by kind:
  pairwise    (y_w, y_l)                   + p (clean P(y_w ≻ y_l), E1), keys (key tokens of y_w, SPO)
  listwise    K list items                 + scores ψ [N, K] (NaN = absent slot)
  unpaired    (y, y' of another prompt)    + desirable [N]; column 1 feeds KTO's mismatched KL estimate
  unlearning  (forget-set answer,)
Rows are packed with the shared `lm.join_prompt_response` (identical to `synthpref.pack`) and scored
with the shared `lm.token_logps`, so every method sees the same float32 numbers.

Reference log-probs: `reference_cache` stores, once per dataset, the summed and per-token reference
log-probs of every response ([N, K] and [N, K, L] floats: 1.5 MB for 8k SynthPref pairs). That removes
the reference forward from every step for all methods except the two that need more than log-probs
of the observed tokens. Those (token_kl: full next-token distribution; token_masks: hidden states)
recompute the reference under no_grad in the step, in ONE forward that yields both: caching them would
cost O(N·L·V) floats for κ (113 MB for SynthPref, impossible for a 150k vocabulary) and O(N·L·layers·d)
for hidden states (~380 MB at the card's size), against one no-grad forward (~1/3 of a training step).
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.special import expit
from scipy.stats import ks_2samp

from lossbench.lm import (eval_mode, join_prompt_response, pack_rows, response_mask_of, sample, token_kl,
                          token_logps)
from lossbench.seeding import seeded_build
from lossbench.train import LossLog, optimizer_step
from lossbench.methods.base import MethodSpec, PairBatch
from lossbench.methods.spo import degrade

OFFLINE_KINDS = ("pairwise", "listwise", "unpaired", "unlearning")  # trained on fixed data by `preference_loss`
PREFERENCE_KINDS = OFFLINE_KINDS + ("online", "decoding")  # online, decoding: lossbench/online.py
KIND_ARGS = {  # what each kind's fn receives besides hyperparameters (methods/base.py)
    "pairwise": {"batch"},
    "listwise": {"policy", "ref", "scores"},
    "unpaired": {"policy", "ref", "desirable", "kl_ref"},
    "unlearning": {"policy", "ref"},
    "online": {"policy", "ref", "reward", "greedy_policy", "greedy_ref", "greedy_reward"},  # lossbench/online.py
    "decoding": {"scores"},
}
NEED_ARGS = {"template_answers": {"tokens", "mask"}}  # extra inputs some needs add to their kind's
# PairBatch fields each `needs` entry fills; the response masks come with any token-level need
NEED_FIELDS = {
    "token_logps": ("policy_chosen_tok", "policy_rejected_tok", "ref_chosen_tok", "ref_rejected_tok"),
    "token_kl": ("kl_chosen_tok", "kl_rejected_tok"),
    "guide_token_logps": ("guide_chosen_tok", "guide_rejected_tok"),
    "rm_margin": ("rm_margin",),
    "token_masks": ("mask_u_chosen", "mask_u_rejected", "mask_d_chosen", "mask_d_rejected"),
    "degree_logits": ("degree_logits", "degree_labels"),
    "revision_logps": tuple(f"{who}_rev_{pair}" for who in ("policy", "ref") for pair in ("wl", "ll", "ww", "lw")),
}
TOKEN_LEVEL = {"token_logps", "token_kl", "guide_token_logps", "token_masks"}
MASK_FIELDS = ("chosen_mask", "rejected_mask")


# ============================================================================================ data
@dataclass
class PrefData:
    """Prompts [N, P] and K responses each [N, K, T] plus the kind's extras (see the module docstring).

    `index` is None for a dataset as built; `take` records the rows it selected, so a batch finds its
    reference log-probs in the cache built from the full dataset."""

    prompts: torch.Tensor
    responses: torch.Tensor
    eos_id: int
    pad_id: int
    scores: torch.Tensor | None = None
    desirable: torch.Tensor | None = None
    p: torch.Tensor | None = None
    keys: torch.Tensor | None = None
    prompt_mask: torch.Tensor | None = None  # [N, P], 1 = real token: right-padded variable-length prompts
    index: torch.Tensor | None = None

    def __len__(self):
        return self.prompts.shape[0]

    def take(self, idx) -> "PrefData":
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.prompts.device)
        rows = {f.name: getattr(self, f.name)[idx] for f in fields(self)
                if f.name not in ("eos_id", "pad_id", "index") and getattr(self, f.name) is not None}
        return replace(self, **rows, index=idx if self.index is None else self.index[idx])

    def to(self, device) -> "PrefData":
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if isinstance(getattr(self, f.name), torch.Tensor)})


def _long(x):
    return torch.as_tensor(np.asarray(x), dtype=torch.long)


def pref_data(prompts, responses, *, eos_id: int, pad_id: int, **extras) -> PrefData:
    """PrefData from array-likes: prompts [N, P], responses [N, K, T]; extras as named in PrefData."""
    conv = {"scores": torch.float32, "p": torch.float64, "desirable": torch.bool, "keys": torch.bool,
            "prompt_mask": torch.long}
    extras = {k: torch.as_tensor(np.asarray(v), dtype=conv[k]) for k, v in extras.items() if v is not None}
    return PrefData(_long(prompts), _long(responses), eos_id, pad_id, **extras)


def synthpref_pairs(prompts, chosen, rejected, vocab, *, p=None) -> PrefData:
    """Pairs from SynthPref arrays (`orient` output). `keys` marks prompt keywords inside y_w: the tokens
    the SPO-style degradation deletes (card M13; positions 2..4 of a SynthPref prompt are keywords)."""
    chosen, prompts = _long(chosen), _long(prompts)
    inside = response_mask_of(chosen, vocab.EOS).bool() & (chosen != vocab.EOS)
    keys = (chosen[:, :, None] == prompts[:, None, 2:5]).any(-1) & inside
    return pref_data(prompts, torch.stack([chosen, _long(rejected)], 1), eos_id=vocab.EOS,
                     pad_id=vocab.PAD, p=p, keys=keys)


def unpaired_from_pairs(pairs: PrefData) -> PrefData:
    """KTO data (card M14): every y_w desirable, every y_l undesirable. Column 1 holds another prompt's
    response (rows rolled by one, fixed at build time as in TRL's KL dataset) for the mismatched
    (x, y') pairs of the KL reference point; fixing it lets the reference cache cover it."""
    n = len(pairs)
    responses = torch.cat([pairs.responses[:, 0], pairs.responses[:, 1]])
    mask = None if pairs.prompt_mask is None else torch.cat([pairs.prompt_mask, pairs.prompt_mask])
    return PrefData(torch.cat([pairs.prompts, pairs.prompts]),
                    torch.stack([responses, responses.roll(1, 0)], 1), pairs.eos_id, pairs.pad_id,
                    desirable=torch.arange(2 * n) < n, prompt_mask=mask)


# ============================================================================================ hooks
@dataclass
class Hooks:
    """The frozen or auxiliary modules a method needs, passed explicitly.

    reference    frozen π_ref; recomputed under no_grad only for token_kl and token_masks
    guide        frozen guidance LM π_g (TGDPO, M9)
    reward       frozen reward model: (input_ids, attention_mask, response_mask) -> scores [B] (MADPO, M7)
    mask         trainable SparseTokenMask on π_ref's hidden states (SparsePO M8; reward mask, and the KL
                 mask in "common" mode); mask_d: the second, KL mask of "indp" mode
    degree_head  trainable head: policy's final hidden state [.., d] -> num_degrees logits (SPO-style, M13)
    revise       the testbed's revision format: (prompts, previous answers, prompt_mask=) -> (context,
                 context mask), the prompt followed by an earlier answer (`revision_prompts`; SRPO)
    """

    reference: Any = None
    guide: Any = None
    reward: Callable | None = None
    mask: nn.Module | None = None
    mask_d: nn.Module | None = None
    degree_head: nn.Module | None = None
    revise: Callable | None = None

    def trainable(self) -> list:
        mods = (self.mask, self.mask_d, self.degree_head)
        return [p for m in mods if m is not None for p in m.parameters() if p.requires_grad]


def frozen_copy(model):
    """A copy of `model` in eval mode without gradients (π_ref, a guide)."""
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def build_degree_head(d_model: int, num_degrees: int, seed: int) -> nn.Linear:
    """SPO-style degree classifier, a linear head (our construction, card M13), seeded like every model."""
    return seeded_build(lambda: nn.Linear(d_model, num_degrees), seed)


def check_setup(spec: MethodSpec, hooks: Hooks, data: PrefData):
    """Raise before training if the method's kind or needs lack a hook or a data field."""
    if spec.kind not in PREFERENCE_KINDS:
        raise ValueError(f"{spec.name}: kind {spec.kind!r} is not a preference kind {PREFERENCE_KINDS}")
    want = {"token_kl": ("reference",), "token_masks": ("reference", "mask"), "guide_token_logps": ("guide",),
            "rm_margin": ("reward",), "degree_logits": ("degree_head",), "proxy_reward": ("reward",),
            "reward_ensemble": ("reward",), "revision_logps": ("reference", "revise")}
    missing = [h for n in spec.needs for h in want.get(n, ()) if getattr(hooks, h) is None]
    fields_needed = {"listwise": ["scores"], "unpaired": ["desirable"]}.get(spec.kind, [])
    fields_needed += ["keys"] if "degree_logits" in spec.needs else []
    missing += [f"data.{f}" for f in fields_needed if getattr(data, f) is None]
    if (spec.kind in ("pairwise", "unpaired") or "template_answers" in spec.needs) and data.responses.shape[1] != 2:
        raise ValueError(f"{spec.name}: {spec.kind} data needs 2 responses per prompt"
                         + (" (the forget answer and a template answer)" if spec.kind == "unlearning" else ""))
    if missing:
        raise ValueError(f"{spec.name} (needs {spec.needs}) is missing {sorted(set(missing))}")


# ============================================================================================ forwards
def join_rows(prompts, responses, eos_id, prompt_mask=None):
    """[B, K, T] responses as B·K packed rows (row b·K + k = response k of prompt b): the one packing
    every preference forward uses (engine, reference cache, reward model)."""
    B, K, T = responses.shape
    mask = None if prompt_mask is None else prompt_mask.repeat_interleave(K, 0)
    return join_prompt_response(prompts.repeat_interleave(K, 0), responses.reshape(B * K, T), eos_id, mask)


class _KeepHidden:
    """Stands in for a causal LM inside `token_logps` and keeps the hidden states of that same call,
    so log-probs and hidden states come from one forward."""

    def __init__(self, model):
        self.model, self.hidden = model, None

    def __call__(self, **kw):
        out = self.model(**kw, output_hidden_states=True)
        self.hidden = out.hidden_states
        return out


@contextlib.contextmanager
def _frozen(module):
    """no_grad, and eval mode for nn.Modules (no dropout) restored afterwards."""
    mode = eval_mode(module) if isinstance(module, nn.Module) else contextlib.nullcontext()
    with torch.no_grad(), mode:
        yield


def revision_prompts(prompts, previous, *, eos_id: int, sep_id: int, pad_id: int, prompt_mask=None):
    """A self-improvement context (SRPO): the prompt's real tokens, the earlier answer y′'s tokens, EOS,
    then `sep_id` (where the next answer starts), right-padded with `pad_id`. Returns (context [B, P + T + 2],
    context mask [B, P + T + 2], 1 = real token): a right-padded prompt for `join_rows` and `sample`.
    y′ is everything before its first EOS or PAD, so a truncated answer still gets its EOS here."""
    stop = (previous == eos_id) | (previous == pad_id)
    valid = (stop.long().cumsum(1) == 0).long()
    ids, attn, _ = pack_rows(prompts, previous, valid, prompt_mask)
    ids = F.pad(torch.where(attn.bool(), ids, pad_id), (0, 2), value=pad_id)
    attn = F.pad(attn, (0, 2))
    n = attn.sum(1, keepdim=True)
    ids = ids.scatter(1, n, eos_id).scatter(1, n + 1, sep_id)
    return ids, attn.scatter(1, n, 1).scatter(1, n + 1, 1)


def _sequence_logps(model, prompts, responses, eos_id, prompt_mask=None):
    """(Σ_t log π(y_t|s_t) [B, K], lengths |y| incl. EOS [B, K]) for K responses per prompt, one forward."""
    ids, attn, resp = join_rows(prompts, responses, eos_id, prompt_mask)
    shape = responses.shape[:2]
    return token_logps(model, ids, attn, resp).sum(-1).view(shape), resp.sum(-1).float().view(shape)


def _split(x, B):
    """Pair-major rows [2B, ...] -> (chosen [B, ...], rejected [B, ...])."""
    x = x.reshape(B, 2, *x.shape[1:])
    return x[:, 0], x[:, 1]


# ============================================================================================ reference cache
@dataclass
class RefCache:
    """Reference log-probs of every response of a dataset: summed [N, K] and per token [N, K, L]."""

    seq: torch.Tensor
    tok: torch.Tensor

    def rows(self, batch: PrefData):
        if self.tok.shape[1:] != (batch.responses.shape[1], batch.prompts.shape[1] + batch.responses.shape[2]):
            raise ValueError(f"reference cache {tuple(self.tok.shape)} does not fit the data layout")
        if batch.index is None:
            return self.seq, self.tok
        return self.seq[batch.index], self.tok[batch.index]

    def to(self, device) -> "RefCache":
        return RefCache(self.seq.to(device), self.tok.to(device))


def reference_cache(ref_model, data: PrefData, *, batch_size: int = 256) -> RefCache:
    """π_ref's log-probs of every response in `data`, once per dataset (no_grad, eval mode)."""
    if data.index is not None:
        raise ValueError("build the cache on the full dataset (a `take` slice would misalign rows)")
    toks, data = [], data.to(next(ref_model.parameters()).device)
    with _frozen(ref_model):
        for i in range(0, len(data), batch_size):
            p, r = data.prompts[i:i + batch_size], data.responses[i:i + batch_size]
            m = None if data.prompt_mask is None else data.prompt_mask[i:i + batch_size]
            toks.append(token_logps(ref_model, *join_rows(p, r, data.eos_id, m)).view(*r.shape[:2], -1))
    tok = torch.cat(toks)
    return RefCache(seq=tok.sum(-1), tok=tok)


# ============================================================================================ pair batch
def _revision_terms(pb: PairBatch, policy, hooks: Hooks, batch: PrefData):
    """SRPO's answer-conditioned log-probs: y_w and y_l scored after the context (x, y_l), then after
    (x, y_w), by the policy (with graph) and π_ref (no_grad), one forward each over the 4B rows."""
    B = len(batch)
    y_w, y_l = batch.responses[:, 0], batch.responses[:, 1]
    mask = None if batch.prompt_mask is None else batch.prompt_mask.repeat(2, 1)
    context, context_mask = hooks.revise(batch.prompts.repeat(2, 1), torch.cat([y_l, y_w]), prompt_mask=mask)
    answers = batch.responses.repeat(2, 1, 1)  # each context scores (y_w, y_l)
    # [context (y_l, y_w), pair, answer (y_w, y_l)]
    pol = _sequence_logps(policy, context, answers, batch.eos_id, context_mask)[0].view(2, B, 2)
    with _frozen(hooks.reference):
        ref = _sequence_logps(hooks.reference, context, answers, batch.eos_id, context_mask)[0].view(2, B, 2)
    for who, x in (("policy", pol), ("ref", ref)):
        for pair, (c, a) in {"wl": (0, 0), "ll": (0, 1), "ww": (1, 0), "lw": (1, 1)}.items():
            setattr(pb, f"{who}_rev_{pair}", x[c, :, a])


def _degree_rows(batch: PrefData, num_degrees: int, generator):
    """SPO-style copies of y_w (card M13, our construction): pair b gets a degree d_b ~ U{0..K−1} from
    `generator` and loses round(n_key·d_b/(K−1)) key tokens. Returns packed rows whose response mask is
    empty (they are not scored), the labels d and each row's last real position."""
    if generator is None:
        raise ValueError("SPO-style degradation draws degrees: pass a generator")
    y_w = batch.responses[:, 0]
    degree = torch.randint(0, num_degrees, (len(y_w),), generator=generator).to(y_w.device)
    tokens, kept = degrade(y_w, response_mask_of(y_w, batch.eos_id).bool(), batch.keys, degree,
                           num_degrees=num_degrees, generator=generator, pad_id=batch.pad_id)
    ids, attn, _ = pack_rows(batch.prompts, tokens, kept, batch.prompt_mask)
    return (ids, attn, torch.zeros_like(attn)), degree, attn.sum(1) - 1


def _token_mask(module, layers, resp, generator):
    """Mask weight of token t from the hidden states at t−1, the position that predicts it (as the
    official hook feeds them); zero outside the response."""
    m = module(layers, generator=generator)
    return torch.where(resp.bool(), F.pad(m[:, :-1], (1, 0)), 0.0)


def _reference_terms(pb: PairBatch, needs, hooks: Hooks, rows, pol_logp, B, generator):
    """token_kl and token_masks from one no-grad reference forward (full log-softmax + hidden states)."""
    ref = _KeepHidden(hooks.reference)
    with _frozen(hooks.reference):
        _, ref_logp = token_logps(ref, *rows, return_logits=True)
    if "token_kl" in needs:  # κ_t = KL(π_ref ‖ π_θ), gradient into the policy side only
        pb.kl_chosen_tok, pb.kl_rejected_tok = _split(token_kl(ref_logp, pol_logp, rows[2]), B)
    if "token_masks" in needs:
        layers = ref.hidden[1:]  # block outputs, not the embeddings (official "simple_all" hook)
        pb.mask_u_chosen, pb.mask_u_rejected = _split(_token_mask(hooks.mask, layers, rows[2], generator), B)
        if hooks.mask_d is not None:
            pb.mask_d_chosen, pb.mask_d_rejected = _split(_token_mask(hooks.mask_d, layers, rows[2], generator), B)


def pair_batch(spec: MethodSpec, policy, ref_cache: RefCache, batch: PrefData, *, hooks: Hooks | None = None,
               generator: torch.Generator | None = None) -> PairBatch:
    """The PairBatch a pairwise method reads, filling only what `spec.needs` asks for.

    ONE policy forward over chosen and rejected (pair-major rows; with degree_logits the degraded copies
    of y_w ride in the same forward). Reference log-probs come from the cache; frozen hooks run under
    no_grad; trainable hooks (masks, degree head) keep their graph."""
    hooks = hooks or Hooks()
    check_setup(spec, hooks, batch)
    needs, B = set(spec.needs), len(batch)
    rows = join_rows(batch.prompts, batch.responses, batch.eos_id, batch.prompt_mask)
    ids, attn, resp = rows
    model = policy
    if "degree_logits" in needs:
        extra, labels, last = _degree_rows(batch, hooks.degree_head.out_features, generator)
        ids, attn, resp = (torch.cat([a, b]) for a, b in zip(rows, extra))
        model = _KeepHidden(policy)
    out = token_logps(model, ids, attn, resp, return_logits="token_kl" in needs)
    tok, logp = out if isinstance(out, tuple) else (out, None)
    tok_w, tok_l = _split(tok[:2 * B], B)
    resp_w, resp_l = _split(rows[2], B)
    ref_seq, ref_tok = ref_cache.rows(batch)
    pb = PairBatch(policy_chosen=tok_w.sum(-1), policy_rejected=tok_l.sum(-1),
                   ref_chosen=ref_seq[:, 0], ref_rejected=ref_seq[:, 1],
                   chosen_len=resp_w.sum(-1).float(), rejected_len=resp_l.sum(-1).float())
    if needs & TOKEN_LEVEL:
        pb.chosen_mask, pb.rejected_mask = resp_w.float(), resp_l.float()
    if "token_logps" in needs:
        pb.policy_chosen_tok, pb.policy_rejected_tok = tok_w, tok_l
        pb.ref_chosen_tok, pb.ref_rejected_tok = ref_tok[:, 0], ref_tok[:, 1]
    if needs & {"token_kl", "token_masks"}:
        _reference_terms(pb, needs, hooks, rows, None if logp is None else logp[:2 * B], B, generator)
    if "guide_token_logps" in needs:
        with _frozen(hooks.guide):
            pb.guide_chosen_tok, pb.guide_rejected_tok = _split(token_logps(hooks.guide, *rows), B)
    if "rm_margin" in needs:
        with _frozen(hooks.reward):
            s_w, s_l = _split(hooks.reward(*rows).float(), B)
        pb.rm_margin = s_w - s_l
    if "degree_logits" in needs:
        final = model.hidden[-1][2 * B:]
        pb.degree_logits = hooks.degree_head(final[torch.arange(B, device=final.device), last])
        pb.degree_labels = labels
    if "revision_logps" in needs:
        _revision_terms(pb, policy, hooks, batch)
    return pb


# ============================================================================================ loss
def method_inputs(spec: MethodSpec, policy, ref_cache: RefCache, batch: PrefData, *, hooks: Hooks | None = None,
                  generator: torch.Generator | None = None) -> dict:
    """Keyword arguments of `spec.fn` for one batch, by kind (methods/base.py)."""
    if spec.kind == "pairwise":
        return {"batch": pair_batch(spec, policy, ref_cache, batch, hooks=hooks, generator=generator)}
    check_setup(spec, hooks or Hooks(), batch)
    ref = ref_cache.rows(batch)[0]
    if spec.kind == "unpaired":
        pol = _sequence_logps(policy, batch.prompts, batch.responses[:, :1], batch.eos_id,
                              batch.prompt_mask)[0][:, 0]
        with torch.no_grad():  # KTO's z0 is detached: no graph for the mismatched pairs
            mism = _sequence_logps(policy, batch.prompts, batch.responses[:, 1:], batch.eos_id,
                                   batch.prompt_mask)[0][:, 0]
        return {"policy": pol, "ref": ref[:, 0], "desirable": batch.desirable,
                "kl_ref": (mism - ref[:, 1]).mean()}
    if "template_answers" in spec.needs:  # FLAT: per-token log-probs of (forget answer, template), one forward
        rows = join_rows(batch.prompts, batch.responses, batch.eos_id, batch.prompt_mask)
        tok = token_logps(policy, *rows).view(len(batch), 2, -1)
        return {"policy": tok[:, 0].sum(-1), "ref": ref[:, 0], "tokens": tok,
                "mask": rows[2].view(len(batch), 2, -1).float()}
    pol = _sequence_logps(policy, batch.prompts, batch.responses, batch.eos_id, batch.prompt_mask)[0]
    if spec.kind == "listwise":
        return {"policy": pol, "ref": ref, "scores": batch.scores}
    return {"policy": pol[:, 0], "ref": ref[:, 0]}  # unlearning


def reduce_loss(spec: MethodSpec, hp: dict, inputs: dict) -> torch.Tensor:
    """Batch mean of the method's per-example loss, in float32 (the trainer owns reduction)."""
    expected = KIND_ARGS[spec.kind].union(*(NEED_ARGS.get(n, set()) for n in spec.needs))
    if set(inputs) != expected:
        raise ValueError(f"{spec.name} ({spec.kind}) takes {sorted(expected)}, got {sorted(inputs)}")
    per = spec.fn(**inputs, **hp)
    if per.ndim != 1:
        raise ValueError(f"{spec.name} returned shape {tuple(per.shape)}, expected a per-example [B] loss")
    return per.float().mean()


def preference_loss(spec: MethodSpec, hp: dict, policy, ref_cache: RefCache, batch: PrefData, *,
                    hooks: Hooks | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scalar float32 training loss of one batch, dispatching on the method's kind."""
    return reduce_loss(spec, hp, method_inputs(spec, policy, ref_cache, batch, hooks=hooks, generator=generator))


# ============================================================================================ training
@dataclass
class PolicyRun:
    status: str = "ok"  # or "diverged"
    steps: int = 0
    diverged_at_step: int | None = None
    curves: list = field(default_factory=list)  # dicts: step, metric, value
    train_seconds: float = 0.0  # optimisation steps only (probes excluded)


def epoch_batches(n: int, batch_size: int, generator):
    """Consecutive slices of a fresh permutation per epoch (last partial batch dropped), forever."""
    while True:
        perm = torch.randperm(n, generator=generator)
        yield from perm[:n - n % batch_size].split(batch_size)


def gradient_entanglement(policy, pairs: PrefData) -> dict:
    """Card E2 on a probe batch: cosine and norms of g_w = ∇ mean ℓ_θ(y_w) and g_l = ∇ mean ℓ_θ(y_l) over
    all trainable policy parameters (batch-mean gradients, not per pair). Leaves `.grad` untouched."""
    params = [p for p in policy.parameters() if p.requires_grad]
    seq, _ = _sequence_logps(policy, pairs.prompts, pairs.responses, pairs.eos_id, pairs.prompt_mask)
    flat = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(seq[:, k].mean(), params, retain_graph=k == 0)])
            for k in (0, 1)]
    return {"grad_cosine": float(F.cosine_similarity(flat[0], flat[1], dim=0)),
            "grad_norm_chosen": float(flat[0].norm()), "grad_norm_rejected": float(flat[1].norm())}


def probe_metrics(spec: MethodSpec, policy, ref_cache: RefCache, probe: PrefData) -> dict:
    """Metric 4 (+E2 for pairs) on a fixed probe set: log-likelihood change vs the SFT model (= π_ref).
    Labelled pairs (with p) get chosen/rejected changes whatever the method's kind, so every method's
    dynamics can be read on the same held-out pairs."""
    with _frozen(policy):
        pol, lens = _sequence_logps(policy, probe.prompts, probe.responses, probe.eos_id, probe.prompt_mask)
    ref = ref_cache.rows(probe)[0]
    if probe.p is None:  # not labelled pairs (lists, unpaired rows, forget set): the first response's change
        change = (pol[:, 0] - ref[:, 0]).numpy(force=True)
        return {"response_change_sum": float(change.mean()),
                "response_change_per_token": float((change / lens[:, 0].clamp_min(1).numpy(force=True)).mean())}
    out = loglik_change(pol[:, 0], pol[:, 1], ref[:, 0], ref[:, 1], lens[:, 0], lens[:, 1])
    return {**out, **gradient_entanglement(policy, probe)}


def train_policy(spec: MethodSpec, hp: dict, policy, ref_cache: RefCache, data: PrefData, *, steps: int,
                 batch_size: int, lr: float, generator: torch.Generator, hooks: Hooks | None = None,
                 log=lambda msg: None, eval_every: int | None = None, probes: dict | None = None,
                 step_loss: Callable | None = None) -> PolicyRun:
    """Adam on the policy (and trainable hooks) for a fixed number of steps; batches from `generator`.

    A non-finite loss stops the run with status "diverged" (nothing is raised). Curves: the mean training
    loss and `probe_metrics` every `eval_every` steps (and at step 0) on each probe `{split: (data,
    cache)}`; by default the first 64 training rows as "train". `step_loss(policy, batch)` -> (loss,
    {stat: float}) replaces the offline loss (online methods, lossbench/online.py); its stats are
    curves too, as train/<stat> means over each logging interval."""
    hooks = hooks or Hooks()
    check_setup(spec, hooks, data)
    device = next(policy.parameters()).device
    data, ref_cache = data.to(device), ref_cache.to(device)
    probes = {k: (d.to(device), c.to(device)) for k, (d, c) in
              (probes or {"train": (data.take(torch.arange(min(64, len(data)))), ref_cache)}).items()}
    params = [p for p in policy.parameters() if p.requires_grad] + hooks.trainable()
    opt = torch.optim.Adam(params, lr=lr)
    every = eval_every or max(1, steps // 20)
    batches = epoch_batches(len(data), min(batch_size, len(data)), generator)
    if step_loss is None and steps > 0 and spec.kind not in OFFLINE_KINDS:
        raise ValueError(f"{spec.name} ({spec.kind}) samples its own data: pass its step_loss (lossbench/online.py)")
    run, running, stats = PolicyRun(), [], {}
    step_loss = step_loss or (lambda model, batch: (preference_loss(spec, hp, model, ref_cache, batch, hooks=hooks,
                                                                    generator=generator), {}))

    def record(step):
        run.curves.extend({"step": step, "metric": f"{split}/{k}", "value": v}
                          for split, (d, c) in probes.items() for k, v in probe_metrics(spec, policy, c, d).items())

    record(0)
    losses = LossLog(every, device)  # read back once per logging interval: no host sync per step
    for step in range(steps):
        t0 = time.perf_counter()
        loss, step_stats = step_loss(policy, data.take(next(batches)))
        optimizer_step(opt, loss, check=False)
        losses.add(loss)
        run.train_seconds += time.perf_counter() - t0
        run.steps = step + 1
        for k, v in step_stats.items():
            stats.setdefault(k, []).append(v)
        if run.steps % every == 0 or run.steps == steps:
            running = losses.flush()
            bad = LossLog.first_bad(running)
            if bad is not None:  # the steps after it only touched a run that is recorded as diverged
                run.status = "diverged"
                run.diverged_at_step = run.steps = run.steps - len(running) + bad
                log(f"{spec.name}: loss {running[bad]} at step {run.diverged_at_step}: recorded as diverged")
                break
            run.curves.append({"step": run.steps, "metric": "train/loss", "value": float(np.mean(running))})
            run.curves.extend({"step": run.steps, "metric": f"train/{k}", "value": float(np.mean(v))}
                              for k, v in stats.items())
            record(run.steps)
            log(f"{spec.name}: step {run.steps}/{steps} train/loss {np.mean(running):.4f}"
                + "".join(f" train/{k} {np.mean(v):.4f}" for k, v in stats.items()))
            running, stats = [], {}
    return run


# ============================================================================================ evaluation helpers
@torch.no_grad()
def sample_responses(model, prompts, *, n_samples: int, max_new_tokens: int, eos_id: int, pad_id: int,
                     generator: torch.Generator, temperature: float = 1.0, batch_size: int = 1024,
                     prompt_mask=None):
    """n_samples responses per prompt, prompt-major (rows i·n … i·n+n−1 answer prompt i), padded to
    [N·n, max_new_tokens]. Deterministic given (model, prompts, generator state, batch_size)."""
    chunks = prompts.repeat_interleave(n_samples, 0).split(batch_size)
    masks = ([None] * len(chunks) if prompt_mask is None
             else prompt_mask.repeat_interleave(n_samples, 0).split(batch_size))
    out = [sample(model, chunk, max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id,
                  temperature=temperature, generator=generator, prompt_mask=mask)
           for chunk, mask in zip(chunks, masks)]
    return torch.cat([F.pad(r, (0, max_new_tokens - r.shape[1]), value=pad_id) for r in out])


def sequence_logps_of(model, data: PrefData, *, batch_size: int = 512):
    """(summed log-probs [N, K], lengths incl. EOS [N, K]) of every response in `data`, no_grad."""
    parts = []
    with _frozen(model):
        for i in range(0, len(data), batch_size):
            mask = None if data.prompt_mask is None else data.prompt_mask[i:i + batch_size]
            parts.append(_sequence_logps(model, data.prompts[i:i + batch_size],
                                         data.responses[i:i + batch_size], data.eos_id, mask))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def kl_terms(policy, ref, prompts, responses, eos_id: int, *, batch_size: int = 512, prompt_mask=None):
    """Per-sample inputs of metric 2 for policy samples `responses` [N, T] of `prompts` [N, P]:
    Δ(y) = log π_θ(y) − log π_ref(y) and Σ_t KL(π_θ(·|s_t) ‖ π_ref(·|s_t)) along the sampled prefixes."""
    delta, exact = [], []
    chunks = prompts.split(batch_size)
    masks = [None] * len(chunks) if prompt_mask is None else prompt_mask.split(batch_size)
    with _frozen(policy), _frozen(ref):
        for p, r, m in zip(chunks, responses.split(batch_size), masks):
            rows = join_prompt_response(p, r, eos_id, m)
            pol_tok, pol_full = token_logps(policy, *rows, return_logits=True)
            ref_tok, ref_full = token_logps(ref, *rows, return_logits=True)
            delta.append((pol_tok - ref_tok).sum(-1))
            exact.append(token_kl(pol_full, ref_full, rows[2]).sum(-1))  # token_kl(a, b) = KL(a ‖ b)
    return torch.cat(delta), torch.cat(exact)


# ============================================================================================ metrics (pure)
def _np(x) -> np.ndarray:
    return x.numpy(force=True).astype(np.float64) if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)


def win_rate(r_policy, r_sft, *, atol: float = 1e-9) -> float:
    """Metric 1: mean 1[r*(y_π) > r*(y_0)] + ½·1[tie] over paired samples. |difference| ≤ atol is a
    tie, so equal rewards summed in a different order (float round-off) never count as a win."""
    d = _np(r_policy) - _np(r_sft)
    return float(np.mean(np.where(np.abs(d) <= atol, 0.5, (d > 0).astype(float))))


def soft_win_rate(r_policy, r_sft, *, tau_bt: float = 0.25) -> float:
    """Metric 1, soft version: mean σ((r*(y_π) − r*(y_0))/τ_BT)."""
    return float(np.mean(expit((_np(r_policy) - _np(r_sft)) / tau_bt)))


def reward_metrics(r_policy, r_sft, *, tau_bt: float = 0.25) -> dict:
    """Metric 1 in full: mean gold rewards of policy and SFT samples, win rate, soft win rate."""
    return {"gold_reward": float(_np(r_policy).mean()), "sft_gold_reward": float(_np(r_sft).mean()),
            "win_rate": win_rate(r_policy, r_sft), "soft_win_rate": soft_win_rate(r_policy, r_sft, tau_bt=tau_bt)}


def kl_sample_mean(policy_logps, ref_logps) -> float:
    """Metric 2, unbiased (noisy) estimator: mean over policy samples of Δ(y) = log π_θ(y) − log π_ref(y)."""
    return float((_np(policy_logps) - _np(ref_logps)).mean())


def kl_exact_tokens(policy_logsoftmax, ref_logsoftmax, mask) -> float:
    """Metric 2, low-variance form: mean over samples of Σ_t KL(π_θ(·|s_t) ‖ π_ref(·|s_t)) along the sampled
    prefixes (inputs: per-position log-softmax [N, T, V] and response mask [N, T]). Same expectation as
    Δ(y) (chain rule of KL), no sampling noise at the last token."""
    return float(token_kl(policy_logsoftmax, ref_logsoftmax, mask).sum(-1).double().mean())


def ranking_accuracy(logp_w, logp_l) -> float:
    """Metric 3 / E1: RA = mean 1[ℓ_θ(y_w) > ℓ_θ(y_l)] (a tie is not a correct ranking)."""
    return float(np.mean(_np(logp_w) > _np(logp_l)))


def length_normalised_ranking_accuracy(logp_w, logp_l, len_w, len_l) -> float:
    """Metric 3: RA on average log-probs ℓ̄ = ℓ/|y|."""
    return ranking_accuracy(_np(logp_w) / np.maximum(_np(len_w), 1), _np(logp_l) / np.maximum(_np(len_l), 1))


def implicit_reward_accuracy(pol_w, pol_l, ref_w, ref_l) -> float:
    """Metric 3, TRL's rewards/accuracies, kept separate from RA: mean 1[h > 0], h = Δ(y_w) − Δ(y_l)."""
    return float(np.mean((_np(pol_w) - _np(ref_w)) - (_np(pol_l) - _np(ref_l)) > 0))


def idealized_ranking_accuracy(ref_w, ref_l, p, beta: float) -> float:
    """E1: RA* = mean 1[log π_ref(y_w) − log π_ref(y_l) + (1/β) log(p/(1−p)) > 0], the ranking accuracy of
    the exact RLHF/DPO optimum π* ∝ π_ref·exp(r*/β) when r*(y_w) − r*(y_l) = log(p/(1−p)) (BT, aggregated
    preference p = P(y_w ≻ y_l)). p ∈ {0, 1} gives an infinite logit: the preference decides."""
    p = _np(p)
    with np.errstate(divide="ignore"):
        logit = np.log(p) - np.log1p(-p)
    return float(np.mean(_np(ref_w) - _np(ref_l) + logit / beta > 0))


def ranking_metrics(pol_w, pol_l, ref_w, ref_l, len_w, len_l, p=None, beta: float | None = None) -> dict:
    """Metric 3 and E1 together; alignment gap = RA* − RA. Without the clean preference p (real pairs
    carry labels only) RA* and the gap are NaN."""
    ra = ranking_accuracy(pol_w, pol_l)
    ideal = math.nan if p is None else idealized_ranking_accuracy(ref_w, ref_l, p, beta)
    return {"ranking_accuracy": ra,
            "ranking_accuracy_normalised": length_normalised_ranking_accuracy(pol_w, pol_l, len_w, len_l),
            "implicit_reward_accuracy": implicit_reward_accuracy(pol_w, pol_l, ref_w, ref_l),
            "reference_ranking_accuracy": ranking_accuracy(ref_w, ref_l),
            "idealized_ranking_accuracy": ideal, "alignment_gap": ideal - ra}


def loglik_change(pol_w, pol_l, sft_w, sft_l, len_w, len_l) -> dict:
    """Metric 4: E[ℓ_θ(y) − ℓ_SFT(y)] for chosen and rejected, summed and per token, and the fractions of
    pairs where both strictly go down / both strictly go up."""
    dw, dl = _np(pol_w) - _np(sft_w), _np(pol_l) - _np(sft_l)
    return {"chosen_change_sum": float(dw.mean()), "rejected_change_sum": float(dl.mean()),
            "chosen_change_per_token": float((dw / np.maximum(_np(len_w), 1)).mean()),
            "rejected_change_per_token": float((dl / np.maximum(_np(len_l), 1)).mean()),
            "frac_both_down": float(np.mean((dw < 0) & (dl < 0))), "frac_both_up": float(np.mean((dw > 0) & (dl > 0)))}


def response_lengths(responses, eos_id: int):
    """(|y| = tokens before the first EOS [N], truncated = no EOS, i.e. it ran to max length [N])."""
    r = torch.as_tensor(responses)
    valid = response_mask_of(r, eos_id).bool()
    has_eos = (r == eos_id).any(1)
    return (valid.sum(1) - has_eos.long()).numpy(force=True), (~has_eos).numpy(force=True)


def length_stats(lengths, truncated) -> dict:
    """Metric 5: mean response length and the fraction of samples that hit the max length."""
    return {"mean_length": float(_np(lengths).mean()), "frac_max_length": float(_np(truncated).mean())}


def win_rate_by_length(r_policy, r_sft, lengths, edges) -> dict:
    """Metric 5: win rate split by policy-sample length bucket [edges[i], edges[i+1]); NaN if empty."""
    lengths, out = _np(lengths), {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (lengths >= lo) & (lengths < hi)
        out[f"win_rate_len_{lo}_{hi}"] = win_rate(_np(r_policy)[sel], _np(r_sft)[sel]) if sel.any() else math.nan
    return out


def extraction_rate(greedy_responses, answers) -> float:
    """M12: fraction of forget items whose greedy continuation starts with the exact secret answer."""
    g, a = torch.as_tensor(greedy_responses), torch.as_tensor(answers)
    if g.shape[1] < a.shape[1]:
        return 0.0
    return float((g[:, :a.shape[1]] == a).all(1).double().mean())


def forget_metrics(unlearned_logps, retain_only_logps) -> dict:
    """M12 forget quality: mean forget log-likelihood and the two-sample KS statistic (and p-value,
    TOFU's "forget quality") between per-item forget likelihoods of the unlearned and retain-only models."""
    ks = ks_2samp(_np(unlearned_logps), _np(retain_only_logps))
    return {"forget_loglik": float(_np(unlearned_logps).mean()), "ks_statistic": float(ks.statistic),
            "ks_pvalue": float(ks.pvalue)}
