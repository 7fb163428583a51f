"""The online engine (lossbench/online.py) on a tiny random LM with a reward we choose: an online
step is deterministic given its generator, REINFORCE with a baseline raises the proxy reward,
ReMax decodes the greedy response, and best-of-n returns each prompt's best candidate."""
import pytest
import torch

from lossbench import methods
from lossbench.data import synthpref as sp
from lossbench.lm import build_causal_lm
from lossbench.online import OnlineStep, best_of_n_responses
from lossbench.preference import frozen_copy, pref_data

VOCAB = sp.Vocab()
TOKEN = 20  # the reward counts this token
T = 6


def count_reward(ids, attn, resp):
    """Proxy reward: how often TOKEN appears in the response (including a call counter for the tests)."""
    count_reward.calls += 1
    count_reward.seen.append(ids)
    return ((ids == TOKEN) & resp.bool()).sum(1).float()


count_reward.calls, count_reward.seen = 0, []


def tiny_lm(seed=0):
    return build_causal_lm({"arch": "gpt2", "d_model": 16, "layers": 1, "heads": 2, "context": 16},
                           VOCAB.size, seed)


def prompts(n=8):
    g = torch.Generator().manual_seed(1)
    return torch.randint(13, 60, (n, 4), generator=g)


def step_for(name, seed=0, **hp):
    spec = methods.get(name)
    policy = tiny_lm()
    return spec, policy, OnlineStep(spec, spec.hparams(hp), frozen_copy(policy), count_reward, max_new_tokens=T,
                                    eos_id=VOCAB.EOS, pad_id=VOCAB.PAD,
                                    generator=torch.Generator().manual_seed(seed),
                                    gold=lambda p, r: (r == TOKEN).sum(1))


def batch(n=8):
    p = prompts(n)
    return pref_data(p, torch.full((n, 2, 2), VOCAB.EOS), eos_id=VOCAB.EOS, pad_id=VOCAB.PAD)


@pytest.mark.parametrize("name", ["remax", "rloo", "reinforce"])
def test_a_step_is_deterministic_and_reports_its_samples(name, one_torch_thread):
    outs = []
    for _ in range(2):
        spec, policy, step = step_for(name)
        loss, stats = step(policy, batch())
        loss.backward()
        outs.append((float(loss.detach()), stats, [p.grad.clone() for p in policy.parameters() if p.grad is not None]))
    assert outs[0][0] == outs[1][0] and outs[0][1] == outs[1][1]
    assert all(torch.equal(a, b) for a, b in zip(outs[0][2], outs[1][2]))
    assert set(outs[0][1]) == {"proxy_reward", "kl_sample", "gold_reward"}
    assert outs[0][1]["kl_sample"] == pytest.approx(0.0, abs=1e-5)  # π_θ = π_ref before any update
    assert outs[0][1]["proxy_reward"] == pytest.approx(outs[0][1]["gold_reward"])  # same count here


def test_remax_scores_the_greedy_response_too(one_torch_thread):
    from lossbench.lm import sample

    rows = {}
    for name in ("remax", "reinforce"):  # one sample per prompt each; ReMax adds the greedy decode
        spec, policy, step = step_for(name)
        count_reward.calls, count_reward.seen = 0, []
        step(policy, batch())
        rows[name] = count_reward.seen
    assert count_reward.calls == 1  # one reward-model call per step
    assert [len(r) for r in rows["reinforce"]] == [8] and [len(r) for r in rows["remax"]] == [16]
    greedy = sample(tiny_lm(), prompts(8), max_new_tokens=T, eos_id=VOCAB.EOS, pad_id=VOCAB.PAD, temperature=0,
                    generator=torch.Generator())
    ids = rows["remax"][0][1::2]  # prompt-major rows: (sample, greedy) per prompt
    assert torch.equal(ids[:, prompts(8).shape[1]:prompts(8).shape[1] + greedy.shape[1]], greedy)


@pytest.mark.parametrize("name", ["remax", "rloo"])
def test_training_raises_the_proxy_reward(name, one_torch_thread):
    spec, policy, step = step_for(name, beta=0.0, **({"samples": 4} if name == "rloo" else {}))
    opt = torch.optim.Adam(policy.parameters(), lr=3e-2)
    rewards = []
    for _ in range(40):
        loss, stats = step(policy, batch(16))
        opt.zero_grad()
        loss.backward()
        opt.step()
        rewards.append(stats["proxy_reward"])
    first, last = sum(rewards[:8]) / 8, sum(rewards[-8:]) / 8
    assert last > first + 0.5, (first, last)


def test_online_step_refuses_other_kinds_and_a_missing_reward():
    spec = methods.get("dpo")
    with pytest.raises(ValueError, match="not online"):
        OnlineStep(spec, spec.hparams(), None, count_reward, max_new_tokens=T, eos_id=3, pad_id=0,
                   generator=torch.Generator())
    spec = methods.get("rloo")
    with pytest.raises(ValueError, match="proxy reward"):
        OnlineStep(spec, spec.hparams(), None, None, max_new_tokens=T, eos_id=3, pad_id=0, generator=torch.Generator())


def test_best_of_n_returns_the_best_candidate_of_each_group(one_torch_thread):
    from lossbench.preference import sample_responses

    spec, ref, p = methods.get("best_of_n"), tiny_lm(), prompts(6)
    hp = spec.hparams({"n": 8})
    got = best_of_n_responses(spec, hp, ref, count_reward, p, n_samples=2, max_new_tokens=T, eos_id=VOCAB.EOS,
                              pad_id=VOCAB.PAD, generator=torch.Generator().manual_seed(3), batch_size=20)
    cand = sample_responses(ref, p, n_samples=16, max_new_tokens=T, eos_id=VOCAB.EOS, pad_id=VOCAB.PAD,
                            generator=torch.Generator().manual_seed(3), batch_size=20).view(12, 8, T)
    count = lambda r: ((r == TOKEN) & (r != VOCAB.PAD)).sum(-1)  # noqa: E731  (responses carry no TOKEN after EOS)
    assert got.shape == (12, T)
    assert torch.equal(count(got), count(cand).max(1).values)
    assert (count(cand).max(1).values > count(cand).float().mean(1)).any()  # the choice matters here


class _Fixed(torch.nn.Module):
    """A stand-in reward model: a fixed score per row, whatever the tokens."""

    def __init__(self, scores):
        super().__init__()
        self.register_buffer("scores", torch.as_tensor(scores, dtype=torch.float32))

    def forward(self, ids, attn, resp):
        return self.scores[: len(ids)]


def _ensemble(objective, rows, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), lam=0.5):
    from lossbench.proxy_rm import EnsembleReward

    return EnsembleReward([_Fixed(r) for r in rows], mean, std, objective, lam)


def _call(reward, n):
    x = torch.zeros(n, 3, dtype=torch.long)
    return reward(x, torch.ones_like(x), torch.ones_like(x))


def test_ensemble_objectives_on_standardised_members():
    rows = [[1.0, 4.0], [3.0, 0.0], [2.0, 2.0]]
    mean, std = (1.0, 0.0, 2.0), (2.0, 1.0, 1.0)  # z = (1 − 1)/2, (4 − 1)/2 | 3, 0 | 0, 0
    z = torch.tensor([[0.0, 1.5], [3.0, 0.0], [0.0, 0.0]])
    assert torch.allclose(_call(_ensemble("single", rows, mean, std), 2), z[0])
    wco = _call(_ensemble("wco", rows, mean, std), 2)
    assert torch.allclose(wco, z.min(0).values) and (wco[None] <= z).all()  # WCO ≤ every member
    uwo = _call(_ensemble("uwo", rows, mean, std, lam=0.5), 2)
    assert torch.allclose(uwo, z.mean(0) - 0.5 * z.var(0, unbiased=False))


def test_uwo_is_the_mean_when_members_agree():
    rows = [[0.3, -1.0, 2.0]] * 3
    assert torch.allclose(_call(_ensemble("uwo", rows, lam=5.0), 3), torch.tensor(rows[0]))
    assert torch.allclose(_call(_ensemble("wco", rows), 3), torch.tensor(rows[0]))


def test_unknown_objective_is_refused():
    with pytest.raises(ValueError, match="valid"):
        _ensemble("max", [[0.0]])
