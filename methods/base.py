"""Types shared by every method module.

A method is a pure function over tensors plus a `MethodSpec` that says how the trainer calls it.
Methods never reduce over the batch (except `batch_loss`), log, read config or files, or touch
the global RNG: the trainer owns reduction, weighting, sampling and bookkeeping.

Kinds and call signatures (`needs` adds keyword arguments the trainer provides):

=============  ===========================================================  =====================
kind           call                                                         returns
=============  ===========================================================  =====================
loss           fn(logits [B,K], targets [B], **needs, **hp)                 per-example loss [B]
batch_loss     fn(logits [B,K], targets [B], **needs, **hp)                 scalar (not a sum of
                                                                            per-example terms)
reweight       fn(targets [B], **needs, **hp)                               detached weights [B];
                                                                            multiplies the CE loss
sampler        fn(class_counts [K], progress, **hp)                         class sampling
                                                                            probabilities [K]
adversarial    fn(logits [B,K], targets [B], **needs, **hp)                 per-example loss [B]
               (logits of the PGD examples the trainer crafts against the   (its batch mean is
               current model under the protocol's `attack`)                 the objective)
embedding      fn(embeddings [B,D], targets [B], **needs, **hp)             scalar loss over the
               (the model's penultimate features, with gradient, as they    batch's pairs or
               come: a method L2-normalises them where its paper does; the  relations
               head is not trained unless the method adds a CE term on the
               `logits` need; runs only on open-world datasets, scored by
               retrieval: lossbench/retrieval.py)
=============  ===========================================================  =====================

`needs` may name:
  class_counts   float tensor [K]: training-set count of each class (after long-tail / noise)
  progress       float in [0, 1]: fraction of the training budget already done
  example_state  float tensor [B]: a per-training-example value the method keeps across steps
                 (e.g. ALDR-KL's per-instance temperature). A `loss` that needs it returns
                 `(loss [B], new_state [B])`; `init_state(hp)` gives the starting value.
  features       float tensor [B, F]: the penultimate features the logits were computed from
                 (of the adversarial examples for `adversarial`), with gradient
  teacher_logits float tensor [B, K]: a frozen teacher's logits of the same batch inputs, no
                 gradient. `teacher="stage"`: the track's cached teacher (DAG rule
                 classification_teacher); `teacher="self"`: the previous round of the same model,
                 round 0 trained with plain CE (the trainer runs `hp["rounds"]` rounds)
  aux_logits     float tensor [B, K]: a second linear head on the same features, trained with
                 the model; only the main head predicts at test time
  logits         float tensor [B, K]: the head's logits of the batch, with gradient (for an
                 `embedding` method's CE term; the other kinds get them as their first argument)

Preference kinds (log-probs are over response tokens only; the trainer computes them in one shared
forward pass per model and fills only what `needs` asks for):

=============  ===========================================================  =====================
pairwise       fn(batch: PairBatch, **hp)                                   per-pair loss [B]
listwise       fn(policy [B,K], ref [B,K], scores [B,K], **hp)              per-list loss [B]
               (summed log-probs of K responses; scores = graded labels)
unpaired       fn(policy [B], ref [B], desirable [B] bool, kl_ref, **hp)    per-example loss [B]
               (kl_ref: detached batch estimate of KL(π_θ‖π_ref), KTO's z0)
unlearning     fn(policy [B], ref [B], **hp)                                per-example loss [B]
               (summed log-probs of forget-set responses)
online         fn(policy [B,k], ref [B,k], reward [B,k], greedy_policy [B],   per-prompt loss [B]
               greedy_ref [B], greedy_reward [B], **hp)
               (k responses sampled from π_θ during training and scored by the proxy reward model;
               the greedy_* inputs are the greedy response's, None unless needs greedy_response;
               the trainer hparam `samples` is k)
decoding       fn(scores [P,n], **hp)                                       chosen index [P]
               (no training: the answer is chosen among n π_ref samples by their proxy scores)
=============  ===========================================================  =====================

`PairBatch` needs: token_logps (per-token policy/ref log-probs and masks), token_kl (per-token
KL(π_ref‖π_θ)), guide_token_logps (a frozen guidance policy's per-token log-probs, TGDPO),
rm_margin (reward-model margin r(y_w) − r(y_l), MADPO), token_masks (per-token weights from a
mask module, SparsePO), degree_logits (a preference-degree head's logits and labels, SPO).
`unlearning` need: template_answers (FLAT: also `tokens` [B,2,T], the per-token policy log-probs of
the forget answer and of a template answer, and their response `mask` [B,2,T]).
`online` and `decoding` needs: proxy_reward (the protocol's proxy reward model scores the
responses), greedy_response (the greedy decode of the current policy, ReMax's baseline),
reward_ensemble (instead of the proxy RM: an objective over the overoptimization block's members).

LM-pretraining kinds (lossbench/lm_pretrain.py; per-token ce and lse come from the shared loss layer
lossbench/lm_loss.py; every weight is detached and `progress` is always passed where shown):

=============  ===========================================================  =====================
sample_weight  fn(sample_losses [N], progress, **hp)                        weights [N] >= 0,
               (detached mean token CE ℓ_i of each sequence)                summing to 1; loss =
                                                                            N·Σ w_i·(n_i/Σn)·ℓ_i
token_weight   fn(ref_logp [N,T], mask [N,T] bool, progress, **hp)          weights [N,T], 0 off
               (a reference model's log-prob of each target token)          the mask, mean 1 on
                                                                            it; loss = Σ w·ce/Σmask
token_penalty  fn(lse [N,T], mask [N,T], **hp)                              extra loss [N,T], 0
                                                                            off the mask, added to
                                                                            ce before reduction
selection      fn(ratio=..., **needs, **hp) over D training chunks          keep [D] bool,
               (ratio is the track's, not a hyperparameter)                 deterministic (ties
                                                                            by lower index)
=============  ===========================================================  =====================

Grokking kinds (lossbench/grokking.py, full-batch training; `loss` methods run there too):

==============  ==========================================================  =====================
grad_transform  fn(params [list of tensors], grads [same shapes], **hp)     new gradients [same],
                (detached; one entry per parameter tensor)                  handed to the base
                                                                            optimiser (the loss
                                                                            is softmax CE)
==============  ==========================================================  =====================

`optimizer_hparams` names hyperparameters (keys of `defaults`) that configure the optimiser instead
of being passed to `fn` — e.g. the weight decay of the "CE + weight decay" control, or the Adam
betas a paper ran its loss with. They override the protocol's optimiser for that method's runs;
only tasks whose `METHOD_OPTIMIZER` is true (grokking) build an optimiser per method, and the
config check refuses such methods elsewhere.

Domain mixing needs no kind of its own: the trainer passes domains as classes to the `sampler` and
`reweight` specs (temperature sampling, Cooldown, scalarization), class_counts = chunks per domain.

Selection `needs` (numpy or torch, from the reference stage):
  ref_losses       [D, M] per-chunk mean token loss under M reference checkpoints
  ref_scores       [M] the checkpoints' held-out score, higher = better
  chunk_features   [D, F] per-chunk features (e.g. projected gradients) of the candidates
  target_features  [T, F] the same features of the target set
  num_chunks       int D: the size of the training pool
  seed             int: the run's selection seed (random baselines draw from it, never the global RNG)

`predict(logits, class_counts, **hp)` (optional) maps raw logits to the scores used at test time
(post-hoc logit adjustment). `reference()` returns `(kwargs, expected)` with `fn(**kwargs)`
matching `expected` — a value worked out by hand or in float64, cited in the module.
"""
from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

KINDS = ("loss", "batch_loss", "reweight", "sampler", "adversarial", "embedding",  # classification
         "pairwise", "listwise", "unpaired", "unlearning", "online", "decoding",  # preference optimisation
         "sample_weight", "token_weight", "token_penalty", "selection",  # LM pretraining
         "grad_transform")  # grokking
NEEDS = ("class_counts", "progress", "example_state", "features", "teacher_logits", "aux_logits", "logits",
         "token_logps", "token_kl", "guide_token_logps", "rm_margin", "token_masks", "degree_logits",
         "ref_losses", "ref_scores", "chunk_features", "target_features", "num_chunks", "seed",
         "proxy_reward", "greedy_response", "template_answers", "reward_ensemble", "revision_logps")


@dataclass
class PairBatch:
    """What a pairwise preference loss may read for B pairs (x, y_w, y_l). Sequence log-probs are
    summed over response tokens; token tensors are [B, T] with padding where the mask is 0."""

    policy_chosen: Any  # [B] log π_θ(y_w|x)
    policy_rejected: Any  # [B] log π_θ(y_l|x)
    ref_chosen: Any  # [B] log π_ref(y_w|x)
    ref_rejected: Any  # [B] log π_ref(y_l|x)
    chosen_len: Any  # [B] |y_w| (float)
    rejected_len: Any  # [B] |y_l|
    # needs "token_logps"
    policy_chosen_tok: Any = None
    policy_rejected_tok: Any = None
    ref_chosen_tok: Any = None
    ref_rejected_tok: Any = None
    chosen_mask: Any = None  # [B, T] 1 on response tokens
    rejected_mask: Any = None
    # needs "token_kl": KL(π_ref(·|s_t) ‖ π_θ(·|s_t)) at each response position
    kl_chosen_tok: Any = None
    kl_rejected_tok: Any = None
    # needs "guide_token_logps": log π_g(y_t|s_t) of a frozen guidance policy
    guide_chosen_tok: Any = None
    guide_rejected_tok: Any = None
    # needs "rm_margin": detached reward-model margin r(x, y_w) − r(x, y_l)
    rm_margin: Any = None
    # needs "token_masks": non-negative per-token weights from a mask module (reward mask u, KL mask d)
    mask_u_chosen: Any = None
    mask_u_rejected: Any = None
    mask_d_chosen: Any = None
    mask_d_rejected: Any = None
    # needs "degree_logits": a preference-degree classifier's logits [B, K] and labels [B]
    degree_logits: Any = None
    degree_labels: Any = None
    # needs "revision_logps" (SRPO): summed log-probs of an answer given the prompt AND an earlier answer,
    # policy and reference; suffix <answer><context>: wl = y_w given y_l, ll = y_l given y_l, ww, lw
    policy_rev_wl: Any = None
    policy_rev_ll: Any = None
    policy_rev_ww: Any = None
    policy_rev_lw: Any = None
    ref_rev_wl: Any = None
    ref_rev_ll: Any = None
    ref_rev_ww: Any = None
    ref_rev_lw: Any = None


@dataclass(frozen=True)
class MethodSpec:
    name: str
    kind: str
    fn: Callable[..., Any]
    defaults: Mapping[str, Any]
    paper: str  # short citation, e.g. "Lin et al. 2017, arXiv:1708.02002"
    url: str  # link shown in the report
    docs: str  # slug of the method's reference page, docs/methods/<docs>.md (e.g. "focal")
    version: int = 1
    reference: Callable[[], tuple[dict, Any]] | None = None
    search: Mapping[str, tuple] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    predict: Callable[..., Any] | None = None
    init_state: Callable[..., float] | None = None
    validate: Callable[[dict], None] | None = None
    summary: str = ""  # one line for the report and `lossbench list`
    optimizer_hparams: tuple[str, ...] = ()  # keys of `defaults` the optimiser gets instead of `fn`
    teacher: str = ""  # where teacher_logits come from: "stage" (cached teacher) or "self" (rounds)
    trainer_hparams: tuple[str, ...] = ()  # keys of `defaults` the trainer reads (e.g. rounds), never `fn`

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind {self.kind!r} not in {KINDS}")
        unknown = set(self.needs) - set(NEEDS)
        if unknown:
            raise ValueError(f"{self.name}: unknown needs {sorted(unknown)}; valid: {NEEDS}")
        if "example_state" in self.needs and self.init_state is None:
            raise ValueError(f"{self.name}: needs example_state but has no init_state")
        if ("teacher_logits" in self.needs) != bool(self.teacher) or self.teacher not in ("", "stage", "self"):
            raise ValueError(f"{self.name}: needs teacher_logits iff teacher is 'stage' or 'self' (got {self.teacher!r})")
        if self.teacher == "self" and "rounds" not in self.trainer_hparams:
            raise ValueError(f"{self.name}: teacher='self' needs a 'rounds' trainer hyperparameter")
        undefined = set(self.optimizer_hparams + self.trainer_hparams) - set(self.defaults)
        if undefined:
            raise ValueError(f"{self.name}: optimizer/trainer hparams {sorted(undefined)} have no default")

    @property
    def docs_path(self) -> str:
        """The method's reference page, relative to the repository root."""
        return f"docs/methods/{self.docs}.md"

    def split_hparams(self, hp: Mapping[str, Any]) -> tuple[dict, dict]:
        """(hyperparameters for `fn`, overrides of the optimiser) of a resolved `hp`; the trainer's
        own keys (`trainer_hparams`) are in neither."""
        return ({k: v for k, v in hp.items() if k not in self.optimizer_hparams + self.trainer_hparams},
                {k: v for k, v in hp.items() if k in self.optimizer_hparams})

    def hparams(self, overrides: Mapping[str, Any] | None = None) -> dict:
        """Defaults updated with `overrides`; unknown keys and `validate` failures raise."""
        overrides = dict(overrides or {})
        unknown = set(overrides) - set(self.defaults)
        if unknown:
            raise ValueError(
                f"method {self.name!r} has no hyperparameter(s) {sorted(unknown)}; "
                f"valid: {sorted(self.defaults)}"
            )
        hp = {**self.defaults, **overrides}
        if self.validate is not None:
            self.validate(hp)
        return hp


# Hyperparameter checks for `validate`, so each method's error reads the same way.

def require_positive(method: str, hp: Mapping[str, Any], *keys: str) -> None:
    """Raise ValueError("<method>: <key> must be > 0, got <value>") for the first `keys` entry of `hp`
    that is not > 0; NaN fails too."""
    for key in keys:
        if not hp[key] > 0:
            raise ValueError(f"{method}: {key} must be > 0, got {hp[key]}")


def require_nonnegative(method: str, hp: Mapping[str, Any], *keys: str) -> None:
    """Raise ValueError("<method>: <key> must be >= 0, got <value>") for the first `keys` entry of
    `hp` that is not >= 0; NaN fails too."""
    for key in keys:
        if not hp[key] >= 0:
            raise ValueError(f"{method}: {key} must be >= 0, got {hp[key]}")


def require_in(method: str, hp: Mapping[str, Any], key: str, low: float, high: float, *,
               closed_high: bool = False) -> None:
    """Raise ValueError("<method>: <key> must be in [low, high), got <value>") unless low <= hp[key] < high
    (<= high, and "[low, high]" in the message, when `closed_high`); NaN fails too."""
    value = hp[key]
    inside = low <= value <= high if closed_high else low <= value < high
    if not inside:
        raise ValueError(f"{method}: {key} must be in [{low}, {high}{']' if closed_high else ')'}, got {value}")


def require_choice(method: str, hp: Mapping[str, Any], key: str, choices: tuple) -> None:
    """Raise ValueError("<method>: <key> must be one of <choices>, got <value>") unless hp[key] is one."""
    if hp[key] not in choices:
        raise ValueError(f"{method}: {key} must be one of {choices}, got {hp[key]!r}")


def per_counts(fn: Callable) -> Callable:
    """Memoise `fn(class_counts, **kw)` -> tensor on the last `class_counts` tensor it saw.

    The trainers pass one class-count tensor for the whole run, so a method's constants (a log-prior,
    class weights) are computed on the first step instead of every step. The cache holds one entry,
    keyed on the tensor's identity (a weak reference, so a freed tensor whose id is reused never
    hits), its in-place version counter and the keyword arguments. Callers must not modify the
    returned tensor in place."""
    last: dict = {}

    @functools.wraps(fn)
    def cached(class_counts, **kw):
        key = (class_counts._version, tuple(sorted(kw.items())))
        ref = last.get("ref")
        if ref is not None and ref() is class_counts and last["key"] == key:
            return last["value"]
        value = fn(class_counts, **kw)
        last.update(ref=weakref.ref(class_counts), key=key, value=value)
        return value

    return cached
