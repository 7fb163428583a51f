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
=============  ===========================================================  =====================

`needs` may name:
  class_counts   float tensor [K]: training-set count of each class (after long-tail / noise)
  progress       float in [0, 1]: fraction of the training budget already done
  example_state  float tensor [B]: a per-training-example value the method keeps across steps
                 (e.g. ALDR-KL's per-instance temperature). A `loss` that needs it returns
                 `(loss [B], new_state [B])`; `init_state(hp)` gives the starting value.

`predict(logits, class_counts, **hp)` (optional) maps raw logits to the scores used at test time
(post-hoc logit adjustment). `reference()` returns `(kwargs, expected)` with `fn(**kwargs)`
matching `expected` — a value worked out by hand or in float64, cited in the module.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

KINDS = ("loss", "batch_loss", "reweight", "sampler")
NEEDS = ("class_counts", "progress", "example_state")


@dataclass(frozen=True)
class MethodSpec:
    name: str
    kind: str
    fn: Callable[..., Any]
    defaults: Mapping[str, Any]
    paper: str  # short citation, e.g. "Lin et al. 2017, arXiv:1708.02002"
    url: str  # link shown in the report
    card: str  # method-card id in shared/methods/*.md, e.g. "C3"
    version: int = 1
    reference: Callable[[], tuple[dict, Any]] | None = None
    search: Mapping[str, tuple] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    predict: Callable[..., Any] | None = None
    init_state: Callable[..., float] | None = None
    validate: Callable[[dict], None] | None = None
    summary: str = ""  # one line for the report and `lossbench list`

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind {self.kind!r} not in {KINDS}")
        unknown = set(self.needs) - set(NEEDS)
        if unknown:
            raise ValueError(f"{self.name}: unknown needs {sorted(unknown)}; valid: {NEEDS}")
        if "example_state" in self.needs and self.init_state is None:
            raise ValueError(f"{self.name}: needs example_state but has no init_state")

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
