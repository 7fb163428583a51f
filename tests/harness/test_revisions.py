"""SRPO's revision format and what feeds it: the context layout, π_ref's SFT on revision rows (spread
evenly, and exactly the plain SFT without them) and the config checks that guard it."""
import copy

import numpy as np
import pytest
import torch
import yaml

from lossbench import config as lbconfig
from lossbench import lm
from lossbench import preference as pe
from lossbench import synthpref_testbed as tb
from lossbench.data import synthpref as sp

V = sp.Vocab()


def _answer(tokens, T=sp.MAX_LEN + 1, eos=True):
    row = list(tokens) + ([V.EOS] if eos else [])
    return row + [V.PAD] * (T - len(row))


def test_revision_context_layout():
    prompts = torch.tensor([[1, 5, 13, 14, 15, 2]] * 3)
    previous = torch.tensor([_answer([20, 21, 22]),          # ordinary answer
                             _answer([], eos=True),          # empty answer
                             _answer([30] * 17, eos=False)])  # truncated: no EOS in the array
    ctx, mask = tb.revise(prompts, previous)
    assert ctx.shape == mask.shape == (3, 6 + 17 + 2)
    real = [row[m.bool()].tolist() for row, m in zip(ctx, mask)]
    assert real[0] == [1, 5, 13, 14, 15, 2, 20, 21, 22, V.EOS, V.SEP]
    assert real[1] == [1, 5, 13, 14, 15, 2, V.EOS, V.SEP]
    assert real[2] == [1, 5, 13, 14, 15, 2] + [30] * 17 + [V.EOS, V.SEP]
    assert (mask[:, 1:] <= mask[:, :-1]).all() and (ctx[~mask.bool()] == V.PAD).all()  # right-padded
    # the longest revision row fits the context the protocol checks for
    rows = pe.join_rows(ctx, previous[:, None], V.EOS, mask)
    assert rows[1].sum(1).max() <= tb.REVISION_CONTEXT


def test_revision_context_of_padded_prompts_keeps_only_real_tokens():
    prompts = torch.tensor([[1, 5, 13, 2, 0, 0], [1, 5, 13, 14, 15, 2]])
    pmask = torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6])
    ctx, mask = pe.revision_prompts(prompts, torch.tensor([_answer([40]), _answer([41, 42])]), eos_id=V.EOS,
                                    sep_id=V.SEP, pad_id=V.PAD, prompt_mask=pmask)
    assert ctx[0][mask[0].bool()].tolist() == [1, 5, 13, 2, 40, V.EOS, V.SEP]
    assert ctx[1][mask[1].bool()].tolist() == [1, 5, 13, 14, 15, 2, 41, 42, V.EOS, V.SEP]


def test_revision_steps_are_spread_evenly():
    which = tb._interleave(300, 75)
    assert len(which) == 375 and which.sum() == 75
    gaps = np.diff(np.flatnonzero(which))
    assert gaps.min() == gaps.max() == 5  # one revision step in every five
    assert not tb._interleave(30, 0).any()


def test_revision_corpus_pairs_two_independent_teacher_answers():
    prompts, previous, answers = sp.revision_corpus(500, V, np.random.default_rng(0))
    assert prompts.shape == (500, 6) and previous.shape == answers.shape == (500, sp.MAX_LEN + 1)
    assert (previous != answers).any(1).mean() > 0.95  # two draws, not a copy
    # both are teacher answers to the prompt: on-topic at the teacher's rate
    on = [(V.topic_of(a) == sp.prompt_topics(prompts, V)[:, None]).mean() for a in (previous, answers)]
    assert abs(on[0] - on[1]) < 0.03


def _fit(revision_steps, revision=None):
    rng = np.random.default_rng(0)
    prompts, _, responses = sp.sft_corpus(64, V, rng)
    model = lm.build_causal_lm({"arch": "gpt2", "d_model": 16, "layers": 1, "heads": 2, "context": 48}, V.size, 0)
    losses = tb.fit_lm(model, prompts, responses, steps=6, batch_size=16, lr=1e-3,
                       generator=torch.Generator().manual_seed(0), revision=revision, revision_steps=revision_steps)
    return model, losses


def test_sft_without_revision_rows_is_the_plain_run_and_with_them_trains_on_both(one_torch_thread):
    plain, plain_losses = _fit(0)
    again, again_losses = _fit(0, revision=sp.revision_corpus(32, V, np.random.default_rng(1)))
    assert plain_losses == again_losses  # revision rows unused without revision steps
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), again.state_dict().values()))
    mixed, mixed_losses = _fit(2, revision=sp.revision_corpus(32, V, np.random.default_rng(1)))
    assert len(mixed_losses) == 8 and mixed_losses[:2] == plain_losses[:2]  # step 3 is the first revision step


@pytest.fixture
def track():
    t = yaml.safe_load((lbconfig.ROOT / "config/tracks/preference/smoke.yaml").read_text())
    lbconfig.check_track(t, "smoke")
    return t


def test_config_refuses_revisions_without_a_revision_trained_reference_or_room(track):
    proto = track["protocols"]["synthpref_tiny"]
    bad = copy.deepcopy(track)
    del bad["protocols"]["synthpref_tiny"]["sft"]["revision_steps"]
    with pytest.raises(lbconfig.ConfigError, match=r"\['srpo'\] read .*revision_steps"):
        lbconfig.check_track(bad, "smoke")
    bad = copy.deepcopy(track)
    bad["protocols"]["synthpref_tiny"]["model"]["context"] = 24
    with pytest.raises(lbconfig.ConfigError, match=f"context >= {tb.REVISION_CONTEXT}"):
        lbconfig.check_track(bad, "smoke")
    bad = copy.deepcopy(track)  # no SRPO, but the evaluation still revises
    bad["methods"].remove("srpo")
    del bad["sweep"]["srpo"]
    bad["protocols"]["synthpref_tiny"]["sft"]["revision_steps"] = 0
    with pytest.raises(lbconfig.ConfigError, match="eval: revisions: 2 reads"):
        lbconfig.check_track(bad, "smoke")
    bad["protocols"]["synthpref_tiny"]["eval"]["revisions"] = 0  # neither: a valid protocol without revisions
    lbconfig.check_track(bad, "smoke")
    assert proto["sft"]["revision_steps"] > 0


def test_revision_methods_limits_the_rounds_to_the_methods_listed(track):
    """`eval: revision_methods` (the smoke profile: the baseline and SRPO) gates the rounds; without
    it every method whose policy answers prompts revises; a name not registered is refused."""
    from lossbench import methods
    from lossbench.tasks import preference as pref

    proto = copy.deepcopy(track["protocols"]["synthpref_tiny"])
    proto["eval"]["revision_methods"] = ["dpo", "srpo"]
    assert pref.revises(proto, methods.get("srpo")) and pref.revises(proto, methods.get("dpo"))
    assert not pref.revises(proto, methods.get("ipo"))
    assert pref.revision_metric_names(proto, methods.get("ipo")) == []
    del proto["eval"]["revision_methods"]
    assert pref.revises(proto, methods.get("ipo")) and not pref.revises(proto, methods.get("best_of_n"))
    bad = copy.deepcopy(track)
    bad["protocols"]["synthpref_tiny"]["eval"]["revision_methods"] = ["dpo", "srpoo"]
    with pytest.raises(lbconfig.ConfigError, match="srpo"):
        lbconfig.check_track(bad, "smoke")
