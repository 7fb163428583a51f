"""Proxy reward models (MADPO's margin model, card M7): a Bradley-Terry scalar head on a causal LM
initialised from π_ref, fit on the labelled train pairs. Both testbeds use it: the LM is SynthPref's
tiny model or the pretrained hub policy, the pairs carry their own EOS and prompt padding."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lossbench.preference import PrefData, epoch_batches, join_rows
from lossbench.seeding import derive_seed, seeded_build
from lossbench.train import optimizer_step


class RewardModel(nn.Module):
    """The LM backbone (initialised from π_ref, as usual for RMs) and a scalar head on the final
    hidden state at the response's last token (its EOS)."""

    def __init__(self, lm, seed: int):
        super().__init__()
        self.lm = lm
        self.head = seeded_build(lambda: nn.Linear(lm.config.hidden_size, 1), seed)

    def forward(self, input_ids, attention_mask, response_mask):
        hidden = self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                         output_hidden_states=True).hidden_states[-1]
        last = attention_mask.sum(1) - 1
        return self.head(hidden[torch.arange(len(last), device=last.device), last]).squeeze(-1).float()


def _scores(rm, pairs: PrefData) -> torch.Tensor:
    """[B, 2] scores of (y_w, y_l)."""
    return rm(*join_rows(pairs.prompts, pairs.responses, pairs.eos_id, pairs.prompt_mask)).view(-1, 2)


def fit_reward_model(lm, pairs: PrefData, val: PrefData, cfg: dict, seed_key: tuple, device, log,
                     batch_size: int = 512) -> tuple[RewardModel, float]:
    """Adam on the BT loss softplus(−(s_w − s_l)) for cfg's steps; returns the model (eval mode) and
    its held-out pair accuracy on `val` (scored `batch_size` pairs at a time)."""
    rm = RewardModel(lm, derive_seed(*seed_key, "rm_head")).to(device)
    opt = torch.optim.Adam(rm.parameters(), lr=cfg["lr"])
    gen = torch.Generator().manual_seed(derive_seed(*seed_key, "rm_order"))
    batches = epoch_batches(len(pairs), min(cfg["batch_size"], len(pairs)), gen)
    rm.train()
    for step in range(cfg["steps"]):
        s = _scores(rm, pairs.take(next(batches)).to(device))
        loss = F.softplus(-(s[:, 0] - s[:, 1])).mean()
        if not optimizer_step(opt, loss):
            raise FloatingPointError(f"reward model loss became {loss.item()} at step {step}")
    acc = reward_accuracy(rm.eval(), val, batch_size=batch_size)
    log(f"reward model: held-out pair accuracy {acc:.3f} after {cfg['steps']} steps")
    return rm, acc


@torch.no_grad()
def reward_accuracy(rm, pairs: PrefData, batch_size: int = 512) -> float:
    """Fraction of pairs whose y_w scores above y_l."""
    device, hits = next(rm.parameters()).device, []
    for i in range(0, len(pairs), batch_size):
        s = _scores(rm, pairs.take(torch.arange(i, min(i + batch_size, len(pairs)))).to(device))
        hits.append((s[:, 0] > s[:, 1]).cpu())
    return float(torch.cat(hits).float().mean())


@torch.no_grad()
def score_responses(rm, prompts: torch.Tensor, responses: torch.Tensor, eos_id: int,
                    batch_size: int = 512) -> torch.Tensor:
    """[P, N] scores of N responses per prompt ([P, N, T] responses, [P, S] prompts), `batch_size`
    prompts' responses at a time."""
    device, out = next(rm.parameters()).device, []
    for i in range(0, len(prompts), batch_size):
        p, r = prompts[i:i + batch_size].to(device), responses[i:i + batch_size].to(device)
        out.append(rm(*join_rows(p, r, eos_id)).view(r.shape[:2]).cpu())
    return torch.cat(out)


class EnsembleReward(nn.Module):
    """A reward over M proxy RMs: each member's score standardised by its mean and std on π_ref's
    samples, then combined by an ensemble objective of lossbench.overopt (single = member 0, mean,
    wco = minimum, uwo = mean − λ·variance). Frozen; same call signature as a RewardModel."""

    def __init__(self, members: list, mean, std, objective: str, lam: float):
        from lossbench.overopt import OBJECTIVES

        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown ensemble objective {objective!r}; valid: {list(OBJECTIVES)}")
        self.members = nn.ModuleList(members)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-6))
        self.objective, self.lam = objective, float(lam)

    @torch.no_grad()
    def forward(self, input_ids, attention_mask, response_mask):
        from lossbench.overopt import objective

        raw = torch.stack([m(input_ids, attention_mask, response_mask) for m in self.members])
        z = ((raw - self.mean[:, None]) / self.std[:, None]).double().numpy(force=True)
        return torch.as_tensor(objective(z, self.objective, self.lam), dtype=torch.float32, device=raw.device)

    @classmethod
    def load(cls, path, new_lm, objective: str, device="cpu") -> "EnsembleReward":
        """From the file pref_overopt writes; `new_lm()` builds a fresh backbone per member."""
        blob = torch.load(path, map_location=device, weights_only=True)
        members = []
        for state in blob["states"]:
            rm = RewardModel(new_lm(), 0)
            rm.load_state_dict(state)
            members.append(rm)
        return cls(members, blob["mean"], blob["std"], objective, blob["lambda"]).to(device).eval()


def load_reward_model(path, lm, device="cpu") -> RewardModel:
    """A fitted proxy RM from its state dict on a freshly loaded backbone `lm` (π_ref's architecture)."""
    blob = torch.load(path, map_location=device, weights_only=True)
    rm = RewardModel(lm, 0)
    rm.load_state_dict(blob["state"])
    return rm.to(device).eval()
