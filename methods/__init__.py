"""Method registry: the only list of method names in the repository.

Add a method by writing `methods/<paper>.py` with a `SPEC` (see `methods/base.py`) and one line
here, `"<name>": ".<paper>:SPEC"`. The folder installs as the package `lossbench.methods`: entries
name their module relative to it (".erm" is lossbench.methods.erm), and a method module imports its
helpers as `from lossbench.methods.base import MethodSpec`. Modules are imported lazily, so a broken
module only breaks the runs that use it.
"""
from __future__ import annotations

import difflib
import importlib

from lossbench.methods.base import MethodSpec

REGISTRY: dict[str, str] = {
    # C0 baseline
    "erm": ".erm:SPEC",
    # C1 class-balanced upweighting
    "cb_inverse": ".class_balanced:INVERSE",
    "cb_effective": ".class_balanced:EFFECTIVE",
    "drw": ".class_balanced:DRW",
    # C2 resampling / temperature sampling and Cooldown ("Upsample or Upweight?")
    "resample": ".temperature_sampling:RESAMPLE",
    "temp_sample": ".temperature_sampling:TEMP_SAMPLE",
    "temp_upweight": ".temperature_sampling:TEMP_UPWEIGHT",
    "cooldown": ".temperature_sampling:COOLDOWN",
    # C3 focal
    "focal": ".focal:SPEC",
    # C4 logit adjustment / balanced softmax
    "logit_adjust": ".logit_adjustment:LA_LOSS",
    "balanced_softmax": ".logit_adjustment:BALANCED_SOFTMAX",
    "posthoc_la": ".logit_adjustment:POSTHOC",
    # C5 label-distributionally robust losses
    "ldr_kl": ".ldr:LDR_KL",
    "aldr_kl": ".ldr:ALDR_KL",
    # C6 spherical Z-loss
    "zloss_spherical": ".zloss_spherical:SPEC",
    # C7 AnyLoss
    "anyloss": ".anyloss:SPEC",
    # C8 self-adjusting Dice
    "dice": ".dice:SPEC",
    "dice_batch": ".dice:DICE_BATCH",
    # C9 comp-sum family
    "gce": ".comp_sum:GCE",
    "mae": ".comp_sum:MAE",
    # C10 direct coverage optimisation (confidence limiting)
    "dco": ".dco:SPEC",
    # C11-C12 adversarial training (kind adversarial; PGD examples from the protocol's attack)
    "pgd_at": ".pgd_at:SPEC",
    "srat": ".srat:SPEC",
    "done": ".done:SPEC",
    # C13-C15 distillation (teacher_logits from the cached teacher or the previous round)
    "kd": ".kd:SPEC",
    "dhkd": ".dhkd:SPEC",
    "pld": ".pld:SPEC",
    "self_distill": ".self_distill:SPEC",
    # embedding losses (kind embedding: pairs of the batch's features; open-world retrieval protocol)
    "contrastive": ".contrastive:SPEC",  # baseline: all pairs, two margins
    "triplet": ".triplet:SPEC",  # baseline: batch-hard triplets
    "multi_similarity": ".multi_similarity:SPEC",  # Wang et al. CVPR 2019
    "tcm": ".tcm:SPEC",  # Zhang et al. ICLR 2024: MS + threshold-consistent margins
    "groco": ".groco:SPEC",  # Shvetsova et al. ICCV 2023: group ordering by a differentiable sorting network
    "supcon": ".supcon:SPEC",  # baseline: supervised contrastive (Khosla et al. NeurIPS 2020)
    "kalm_focal": ".kalm_focal:SPEC",  # KaLM-Embedding-V2 focal-style reweighting of supcon/InfoNCE
    "metrix": ".metrix:SPEC",  # Metrix/embed: mixup for metric learning on the contrastive loss (ICLR 2022)
    # --- preference optimisation (docs/methods/README.md, preference track) ---
    "dpo": ".dpo:DPO",  # M1
    "ipo": ".ipo:SPEC",  # M2
    "cdpo": ".cdpo:SPEC",  # M3
    "rdpo": ".rdpo:SPEC",  # M4
    "simpo": ".simpo:SPEC",  # M5
    "rpo": ".rpo:SPEC",  # M6
    "madpo": ".madpo:SPEC",  # M7
    "sparsepo": ".sparsepo:SPEC",  # M8
    "tgdpo": ".tgdpo:SPEC",  # M9
    "lipo": ".lipo:SPEC",  # M10
    "flex_dpo": ".flex_dpo:SPEC",  # M11
    "npo": ".npo:SPEC",  # M12
    "srpo": ".srpo:SPEC",  # SRPO (self-improvement policy, revision format)
    "flat": ".flat:SPEC",  # FLAT (unlearning from forget data only)
    "spo": ".spo:SPEC",  # M13
    "kto": ".kto:SPEC",  # M14
    "orpo": ".orpo:SPEC",  # M15
    "ln_dpo": ".ln_dpo:SPEC",  # Hitchhiker's guide LN-DPO
    # online (sampling from the policy during training, scored by the proxy reward model) and decoding
    "remax": ".remax:SPEC",  # ReMax (greedy baseline)
    "remax_single": ".remax:SINGLE",  # ReMax on one member of the reward-model ensemble (card E3, online)
    "remax_wco": ".remax:WCO",  # ReMax on the worst-case ensemble objective
    "remax_uwo": ".remax:UWO",  # ReMax on the uncertainty-weighted ensemble objective
    "rloo": ".rloo:RLOO",  # REINFORCE leave-one-out
    "reinforce": ".rloo:REINFORCE",  # REINFORCE without a baseline
    "best_of_n": ".best_of_n:SPEC",  # best-of-n sampling against the proxy reward model
    # --- LM pretraining (docs/methods/README.md, lm_pretraining track) ---
    # Domain mixing (L3) reuses resample / temp_sample / temp_upweight / cooldown with domains as classes.
    "uniform": ".uniform:SPEC",  # the track's ERM baseline (token mean)
    "dlsr_linupper": ".dlsr:LINUPPER",  # L1
    "dlsr_quadratic": ".dlsr:QUADRATIC",  # L1
    "dlsr_extremes": ".dlsr:EXTREMES",  # L1
    "curriculum": ".curriculum:SPEC",  # MacAvaney et al. SIGIR 2020 (docs/methods/curriculum.md)
    "prior": ".prior:SPEC",  # L2
    "cooldown_linear": ".temperature_sampling:COOLDOWN_LINEAR",  # L3 linear-decay variant
    "random_select": ".random_select:SPEC",  # baseline of L4 / L5
    "preselect": ".preselect:SPEC",  # L4
    "tarot": ".tarot:SPEC",  # L5
    "zloss": ".zloss:SPEC",  # L8 (PaLM z-loss, not zloss_spherical)
    # --- grokking (docs/methods/README.md, grokking track); the track's baseline is erm (float32 softmax CE) ---
    "ce_fp64": ".softmax_ce:CE_FP64",  # G4 ablation: softmax in float64
    "ce_fp16": ".softmax_ce:CE_FP16",  # G4: softmax in float16
    "ce_wd": ".softmax_ce:CE_WD",  # G1 regularised control: AdamW weight decay
    "stablemax": ".stablemax:SPEC",  # G2
    "orthograd": ".orthograd:SPEC",  # G3 ⊥Grad per tensor (⊥AdamW / ⊥SGD by the protocol's optimiser)
    "orthograd_global": ".orthograd:GLOBAL",  # G3 over all parameters as one vector
    "orthograd_released": ".orthograd:RELEASED",  # G3 ⊥AdamW as the paper's released runs stepped it
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
        # ".erm" resolves inside this package (lossbench.methods.erm) wherever it is installed
        spec = getattr(importlib.import_module(module, __package__), attr)
        if spec.name != name:
            raise RuntimeError(f"registry entry {name!r} points at spec named {spec.name!r}")
        _cache[name] = spec
    return _cache[name]


def names(kind: str | None = None) -> list[str]:
    """Registered names, optionally only those of one kind (imports the modules)."""
    return [n for n in REGISTRY if kind is None or get(n).kind == kind]
