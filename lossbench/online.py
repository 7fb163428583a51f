"""Online preference optimisation and best-of-n decoding: the two preference kinds that sample
from a policy and score the samples with a proxy reward model (docs/methods/remax.md, rloo.md,
best_of_n.md).

online    each step samples k responses per prompt from the current policy (and, for ReMax, its
          greedy response), scores them with the frozen proxy RM, and differentiates the method's
          REINFORCE surrogate (lossbench/policy_gradient.py). The step also reports what the
          overoptimisation curve needs: the proxy and gold rewards of its samples and their
          sequence KL estimate log π_θ(y) − log π_ref(y).
decoding  no training; each answer is chosen among n π_ref samples by the proxy RM (best-of-n).

Sampling is ancestral at temperature 1 over the full vocabulary, as for every method's evaluation
samples (ReMax's code samples with top-p 0.9; the docs page lists this difference).
"""
from __future__ import annotations

import torch

from lossbench.methods.base import MethodSpec
from lossbench.preference import (PrefData, _frozen, _sequence_logps, join_rows, reduce_loss,
                                  sample_responses)


def _frozen_scores(ref, reward, prompts, responses, eos_id):
    """(log π_ref [B, K], proxy reward [B, K]) of responses [B, K, T], without gradients."""
    with _frozen(ref):
        ref_lp = _sequence_logps(ref, prompts, responses, eos_id)[0]
    with _frozen(reward):
        r = reward(*join_rows(prompts, responses, eos_id)).float().view(responses.shape[:2])
    return ref_lp, r


class OnlineStep:
    """The loss of one online step on a batch of prompts, and the step's sample statistics.

    `gold` (optional): (prompts [B·k, P] numpy, responses [B·k, T] numpy) -> gold rewards, the
    testbed's r* of the policy's own samples (SynthPref knows it in closed form)."""

    def __init__(self, spec: MethodSpec, hp: dict, ref, reward, *, max_new_tokens: int, eos_id: int,
                 pad_id: int, generator: torch.Generator, gold=None):
        if spec.kind != "online":
            raise ValueError(f"{spec.name}: kind {spec.kind!r} is not online")
        if reward is None:
            raise ValueError(f"{spec.name} needs a proxy reward model (proxy_reward)")
        self.spec, self.ref, self.reward, self.gold = spec, ref, reward, gold
        self.fn_hp = {k: v for k, v in hp.items() if k not in spec.trainer_hparams}
        self.k = int(hp["samples"])
        self.T, self.eos, self.pad, self.gen = max_new_tokens, eos_id, pad_id, generator

    def __call__(self, policy, batch: PrefData):
        prompts = batch.prompts
        B = len(prompts)
        resp = sample_responses(policy, prompts, n_samples=self.k, max_new_tokens=self.T, eos_id=self.eos,
                                pad_id=self.pad, generator=self.gen).view(B, self.k, self.T)
        pol = _sequence_logps(policy, prompts, resp, self.eos)[0]  # the only forward with a graph
        scored = resp
        greedy = "greedy_response" in self.spec.needs  # ReMax: the current policy's greedy decode, no gradient
        if greedy:
            g = sample_responses(policy, prompts, n_samples=1, max_new_tokens=self.T, eos_id=self.eos,
                                 pad_id=self.pad, generator=self.gen, temperature=0)[:, None]
            with _frozen(policy):
                g_pol = _sequence_logps(policy, prompts, g, self.eos)[0][:, 0]
            scored = torch.cat([resp, g], 1)  # π_ref and the RM score it as one more column: one forward each
        ref_all, r_all = _frozen_scores(self.ref, self.reward, prompts, scored, self.eos)
        ref_lp, r = ref_all[:, :self.k], r_all[:, :self.k]
        inputs = {"policy": pol, "ref": ref_lp, "reward": r, "greedy_policy": g_pol if greedy else None,
                  "greedy_ref": ref_all[:, self.k] if greedy else None,
                  "greedy_reward": r_all[:, self.k] if greedy else None}
        loss = reduce_loss(self.spec, self.fn_hp, inputs)
        stats = {"proxy_reward": float(r.mean()), "kl_sample": float((pol.detach() - ref_lp).mean())}
        if self.gold is not None:
            flat = prompts.repeat_interleave(self.k, 0).numpy(force=True)
            stats["gold_reward"] = float(self.gold(flat, resp.reshape(B * self.k, -1).numpy(force=True)).mean())
        return loss, stats


@torch.no_grad()
def best_of_n_responses(spec: MethodSpec, hp: dict, ref, reward, prompts, *, n_samples: int, max_new_tokens: int,
                        eos_id: int, pad_id: int, generator: torch.Generator, batch_size: int = 1024):
    """n_samples best-of-n answers per prompt, prompt-major [P·n_samples, T] like `sample_responses`:
    each answer is `spec.fn`'s pick among hp["n"] fresh π_ref samples scored by the proxy RM."""
    n, P = int(hp["n"]), len(prompts)
    cand = sample_responses(ref, prompts, n_samples=n_samples * n, max_new_tokens=max_new_tokens, eos_id=eos_id,
                            pad_id=pad_id, generator=generator, batch_size=batch_size)
    cand = cand.view(P * n_samples, n, max_new_tokens)
    rows, chunk = prompts.repeat_interleave(n_samples, 0), max(1, batch_size // n)  # answers per RM forward
    scores = torch.cat([reward(*join_rows(rows[i:i + chunk], cand[i:i + chunk], eos_id)).float().view(-1, n)
                        for i in range(0, len(rows), chunk)])
    pick = spec.fn(scores, **hp).to(cand.device)
    return cand[torch.arange(len(cand), device=cand.device), pick]
