"""Method registry: the only list of method names in the repository.

Add a method by writing `methods/<paper>.py` with a `SPEC` (see `methods/base.py`) and one line
here. Modules are imported lazily, so a broken module only breaks the runs that use it.
"""
from __future__ import annotations

import difflib
import importlib

from methods.base import MethodSpec

REGISTRY: dict[str, str] = {
    # C0 baseline
    "erm": "methods.erm:SPEC",
    # C1 class-balanced upweighting
    "cb_inverse": "methods.class_balanced:INVERSE",
    "cb_effective": "methods.class_balanced:EFFECTIVE",
    "drw": "methods.class_balanced:DRW",
    # C2 resampling / temperature sampling and Cooldown ("Upsample or Upweight?")
    "resample": "methods.temperature_sampling:RESAMPLE",
    "temp_sample": "methods.temperature_sampling:TEMP_SAMPLE",
    "temp_upweight": "methods.temperature_sampling:TEMP_UPWEIGHT",
    "cooldown": "methods.temperature_sampling:COOLDOWN",
    # C3 focal
    "focal": "methods.focal:SPEC",
    # C4 logit adjustment / balanced softmax
    "logit_adjust": "methods.logit_adjustment:LA_LOSS",
    "balanced_softmax": "methods.logit_adjustment:BALANCED_SOFTMAX",
    "posthoc_la": "methods.logit_adjustment:POSTHOC",
    # C5 label-distributionally robust losses
    "ldr_kl": "methods.ldr:LDR_KL",
    "aldr_kl": "methods.ldr:ALDR_KL",
    # C6 spherical Z-loss
    "zloss_spherical": "methods.zloss_spherical:SPEC",
    # C7 AnyLoss
    "anyloss": "methods.anyloss:SPEC",
    # C8 self-adjusting Dice
    "dice": "methods.dice:SPEC",
    "dice_batch": "methods.dice:DICE_BATCH",
    # C9 comp-sum family
    "gce": "methods.comp_sum:GCE",
    "mae": "methods.comp_sum:MAE",
    # C10 direct coverage optimisation (confidence limiting)
    "dco": "methods.dco:SPEC",
    # C11-C12 adversarial training (kind adversarial; PGD examples from the protocol's attack)
    "pgd_at": "methods.pgd_at:SPEC",
    "srat": "methods.srat:SPEC",
    "done": "methods.done:SPEC",
    # C13-C15 distillation (teacher_logits from the cached teacher or the previous round)
    "kd": "methods.kd:SPEC",
    "dhkd": "methods.dhkd:SPEC",
    "pld": "methods.pld:SPEC",
    "self_distill": "methods.self_distill:SPEC",
    # --- preference optimisation (shared/methods/preference.md) ---
    "dpo": "methods.dpo:DPO",  # M1
    "ipo": "methods.ipo:SPEC",  # M2
    "cdpo": "methods.cdpo:SPEC",  # M3
    "rdpo": "methods.rdpo:SPEC",  # M4
    "simpo": "methods.simpo:SPEC",  # M5
    "rpo": "methods.rpo:SPEC",  # M6
    "madpo": "methods.madpo:SPEC",  # M7
    "sparsepo": "methods.sparsepo:SPEC",  # M8
    "tgdpo": "methods.tgdpo:SPEC",  # M9
    "lipo": "methods.lipo:SPEC",  # M10
    "flex_dpo": "methods.flex_dpo:SPEC",  # M11
    "npo": "methods.npo:SPEC",  # M12
    "spo": "methods.spo:SPEC",  # M13
    "kto": "methods.kto:SPEC",  # M14
    "orpo": "methods.orpo:SPEC",  # M15
    "ln_dpo": "methods.ln_dpo:SPEC",  # Hitchhiker's guide LN-DPO
    # --- LM pretraining (shared/methods/lm_pretraining.md) ---
    # Domain mixing (L3) reuses resample / temp_sample / temp_upweight / cooldown with domains as classes.
    "uniform": "methods.uniform:SPEC",  # the track's ERM baseline (token mean)
    "dlsr_linupper": "methods.dlsr:LINUPPER",  # L1
    "dlsr_quadratic": "methods.dlsr:QUADRATIC",  # L1
    "dlsr_extremes": "methods.dlsr:EXTREMES",  # L1
    "curriculum": "methods.curriculum:SPEC",  # papers.md curriculum-rerank
    "prior": "methods.prior:SPEC",  # L2
    "cooldown_linear": "methods.temperature_sampling:COOLDOWN_LINEAR",  # L3 linear-decay variant
    "random_select": "methods.random_select:SPEC",  # baseline of L4 / L5
    "preselect": "methods.preselect:SPEC",  # L4
    "tarot": "methods.tarot:SPEC",  # L5
    "zloss": "methods.zloss:SPEC",  # L8 (PaLM z-loss, not zloss_spherical)
    # --- grokking (shared/methods/grokking.md); the track's baseline is erm (float32 softmax CE) ---
    "ce_fp64": "methods.softmax_ce:CE_FP64",  # G4 ablation: softmax in float64
    "ce_fp16": "methods.softmax_ce:CE_FP16",  # G4: softmax in float16
    "ce_wd": "methods.softmax_ce:CE_WD",  # G1 regularised control: AdamW weight decay
    "stablemax": "methods.stablemax:SPEC",  # G2
    "orthograd": "methods.orthograd:SPEC",  # G3 ⊥Grad per tensor (⊥AdamW / ⊥SGD by the protocol's optimiser)
    "orthograd_global": "methods.orthograd:GLOBAL",  # G3 over all parameters as one vector
    "orthograd_released": "methods.orthograd:RELEASED",  # G3 ⊥AdamW as the paper's released runs stepped it
}

_cache: dict[str, MethodSpec] = {}


def get(name: str) -> MethodSpec:
    """The spec registered as `name`; an unknown name raises KeyError listing close matches."""
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown method {name!r}.{hint} Registered: {', '.join(sorted(REGISTRY))}")
    if name not in _cache:
        module, attr = REGISTRY[name].split(":")
        spec = getattr(importlib.import_module(module), attr)
        if spec.name != name:
            raise RuntimeError(f"registry entry {name!r} points at spec named {spec.name!r}")
        _cache[name] = spec
    return _cache[name]


def names(kind: str | None = None) -> list[str]:
    """Registered names, optionally only those of one kind (imports the modules)."""
    return [n for n in REGISTRY if kind is None or get(n).kind == kind]
