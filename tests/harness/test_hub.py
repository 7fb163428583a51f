"""The real-data path of the preference track, offline: tiny local stand-ins in the hub's formats
(tests/hub_fixtures.py: a BPE tokenizer with a chat template, a Llama policy, a Llama reward model,
UltraFeedback-format pairs, a local lm-eval task; hh-rlhf transcripts here), built once per session."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from lossbench.data import hub_preference as hp
from lossbench import hub
from lossbench import preference as pe
from lossbench.seeding import generator
from lossbench.methods import get
from tests.hub_fixtures import lm_dir, rm_dir, root, task_dir, tokenizer, tokenizer_dir, uf_dir  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MAX_PROMPT, MAX_RESPONSE = 24, 12


@pytest.fixture(scope="session")
def pairs(uf_dir, tokenizer):
    return hp.load_pairs(str(uf_dir), split="train_prefs", tokenizer=tokenizer,
                         max_prompt_tokens=MAX_PROMPT, max_response_tokens=MAX_RESPONSE)


# ---------------------------------------------------------------------------- data


def test_loader_layout(pairs, tokenizer, uf_dir):
    eos = tokenizer.eos_token_id
    n, P = pairs.prompts.shape
    assert n == 19 and pairs.stats["dropped_identical"] == 1 and pairs.stats["rows_read"] == 20
    assert pairs.responses.shape[:2] == (n, 2) and pairs.responses.shape[2] <= MAX_RESPONSE
    assert P == MAX_PROMPT and pairs.stats["prompt_truncated"] > 0 and pairs.stats["response_truncated"] > 0
    m = pairs.prompt_mask.astype(bool)
    assert (m[:, 0]).all() and not (m[:, 1:] & ~m[:, :-1]).any() and not m.all()  # right-padded, varying
    assert pairs.pad_id != eos and (pairs.prompts[~m] == pairs.pad_id).all()

    rows = pd.read_parquet(uf_dir / "data" / "train_prefs-00000-of-00001.parquet").drop(index=6)
    for i, row in enumerate(rows.itertuples()):
        prompt = tokenizer.apply_chat_template(list(row.chosen[:-1]), add_generation_prompt=True, tokenize=False)
        want = tokenizer(prompt, add_special_tokens=False)["input_ids"][-MAX_PROMPT:]  # cut from the left
        assert pairs.prompts[i, m[i]].tolist() == want
        for k, side in enumerate((row.chosen, row.rejected)):
            full = tokenizer(side[-1]["content"], add_special_tokens=False)["input_ids"] + [eos]
            got = pairs.responses[i, k]
            assert got[:min(len(full), MAX_RESPONSE)].tolist() == full[:MAX_RESPONSE]
            assert (got[len(full):] == pairs.pad_id).all()
    np.testing.assert_array_equal(pairs.margin, (rows.score_chosen - rows.score_rejected).to_numpy())
    assert [json.loads(c) for c in pairs.contexts] == [list(c[:-1]) for c in rows.chosen]  # what a judge reads


def test_loader_sources_limit_and_subsample(uf_dir, tokenizer, tmp_path):
    kw = dict(tokenizer=tokenizer, max_prompt_tokens=MAX_PROMPT, max_response_tokens=MAX_RESPONSE)
    test = hp.load_pairs(str(uf_dir), split="test_prefs", **kw)
    assert test.stats["rows_read"] == 8
    first = hp.load_pairs(str(uf_dir), split="train_prefs", limit=5, **kw)
    again = hp.load_pairs(str(uf_dir), split="train_prefs", limit=5, **kw)
    assert len(first) == 5 and np.array_equal(first.responses, again.responses)
    one = hp.load_pairs(str(uf_dir), split="train_prefs", limit=5, seed=0, **kw)
    two = hp.load_pairs(str(uf_dir), split="train_prefs", limit=5, seed=0, **kw)
    assert np.array_equal(one.responses, two.responses) and not np.array_equal(one.prompts, first.prompts)
    rest = hp.load_pairs(str(uf_dir), split="train_prefs", limit=5, seed=0, skip=5, **kw)  # the next 5 rows dealt
    assert not set(map(str, one.contexts)) & set(map(str, rest.contexts)) and len(rest) == 5
    with pytest.raises(ValueError, match="26 rows asked of a split with 20"):
        hp.load_pairs(str(uf_dir), split="train_prefs", limit=6, seed=0, skip=20, **kw)
    jsonl = tmp_path / "pairs.jsonl"  # a single local file, any split name
    pd.read_parquet(uf_dir / "data" / "test_prefs-00000-of-00001.parquet").to_json(jsonl, orient="records", lines=True)
    local = hp.load_pairs(str(jsonl), split="test_prefs", **kw)
    assert np.array_equal(local.responses, test.responses) and np.array_equal(local.prompt_mask, test.prompt_mask)


def test_missing_columns_are_named(tmp_path, tokenizer):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "hi", "chosen": [], "answer": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"missing \['rejected'\]; found \['answer', 'chosen', 'prompt'\]"):
        hp.load_pairs(str(path), split="train", tokenizer=tokenizer, max_prompt_tokens=8, max_response_tokens=8)


def test_hh_rlhf_transcripts(tmp_path, tokenizer):
    rows = [{"chosen": "\n\nHuman: why is the cat red\n\nAssistant: it is not\n\nHuman: how\n\nAssistant: a big tree",
             "rejected": "\n\nHuman: why is the cat red\n\nAssistant: it is not\n\nHuman: how\n\nAssistant: no"},
            {"chosen": "\n\nHuman: yes\n\nAssistant: good", "rejected": "\n\nHuman: no\n\nAssistant: bad"}]
    path = tmp_path / "hh.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = hp.load_pairs(str(path), split="train", tokenizer=tokenizer, max_prompt_tokens=64, max_response_tokens=8)
    assert len(got) == 1 and got.stats["dropped_malformed"] == 1 and np.isnan(got.margin).all()
    context = hp.transcript_messages(rows[0]["chosen"])[:-1]
    assert [m["role"] for m in context] == ["user", "assistant", "user"] and context[1]["content"] == "it is not"
    want = tokenizer.apply_chat_template(context, add_generation_prompt=True, tokenize=False)
    assert tokenizer.decode(got.prompts[0, got.prompt_mask[0] == 1]) == want


# ---------------------------------------------------------------------------- models


def test_load_causal_lm(lm_dir):
    model, tok = hub.load_causal_lm(lm_dir, device="cpu", dtype=torch.float32)
    assert tok.pad_token == tok.eos_token == "<|end|>" and model.config.pad_token_id == tok.eos_token_id
    assert model.config.attention_dropout == 0.0 and not model.training
    again, _ = hub.load_causal_lm(lm_dir, device="cpu", dtype=torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_reward_judge(rm_dir):
    judge = hub.RewardJudge(rm_dir, device="cpu")
    prompts = ["why is the cat red", "how big is the river", "yes"]
    responses = ["it is not", "small", "no no no good"]
    state = torch.get_rng_state()
    a = judge.score(prompts, responses, batch_size=2)
    assert a.shape == (3,) and a.dtype == np.float64 and np.isfinite(a).all()
    np.testing.assert_allclose(judge.score(prompts, responses, batch_size=3), a, atol=1e-5)
    assert torch.equal(torch.get_rng_state(), state)
    other = judge.score(prompts, ["a big green tree", "red", "the dog ran far away"])
    assert not np.allclose(a, other)
    turns = [[{"role": "user", "content": p}] for p in prompts]  # a conversation: the same as its one turn
    np.testing.assert_allclose(judge.score(turns, responses), a, atol=1e-5)
    longer = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"}, *t] for t in turns]
    assert not np.allclose(judge.score(longer, responses), a)
    judge.tokenizer.chat_template = None  # the (prompt, response) text-pair path
    pair = judge.score(prompts, responses)
    assert np.isfinite(pair).all() and not np.allclose(pair, a)
    np.testing.assert_allclose(judge.score(turns, responses), pair, atol=1e-5)
    with pytest.raises(ValueError, match="3 prompts but 2"):
        judge.score(prompts, responses[:2])


def test_capability_retention(lm_dir, task_dir):
    model, tok = hub.load_causal_lm(lm_dir, device="cpu", dtype=torch.float32)
    model.train()
    state = torch.get_rng_state()
    got = hub.capability_retention(model, tok, ["tiny_mc"], include_path=str(task_dir), device="cpu")
    assert 0.0 <= got["tiny_mc/acc"] <= 1.0 and "tiny_mc/acc_stderr" in got
    assert torch.equal(torch.get_rng_state(), state) and model.training
    with pytest.raises(ValueError, match="unknown lm-eval tasks"):
        hub.capability_retention(model, tok, ["arc_easy"], include_path=str(task_dir))


def test_flatten_results():
    got = hub.flatten_results({"gsm8k": {"alias": "gsm8k", "exact_match,strict-match": 0.25,
                                         "exact_match,none": 0.5, "exact_match_stderr,none": "N/A"}})
    assert got == {"gsm8k/exact_match[strict-match]": 0.25, "gsm8k/exact_match": 0.5}


# ---------------------------------------------------------------------------- end to end


def test_dpo_step_on_hub_pairs(lm_dir, pairs):
    policy, _ = hub.load_causal_lm(lm_dir, device="cpu", dtype=torch.float32)
    ref, _ = hub.load_causal_lm(lm_dir, device="cpu", dtype=torch.float32)
    data = pairs.pref_data()
    assert data.prompt_mask is not None and not data.prompt_mask.bool().all()
    cache = pe.reference_cache(ref, data, batch_size=8)
    spec = get("dpo")
    batch = data.take(torch.arange(8))
    loss = pe.preference_loss(spec, spec.hparams(), policy.train(), cache, batch)
    assert abs(loss.item() - math.log(2)) < 1e-6  # π_θ = π_ref at init
    opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
    loss.backward()
    opt.step()
    after = pe.preference_loss(spec, spec.hparams(), policy, cache, batch)
    assert torch.isfinite(after) and after.item() < loss.item()
    out = pe.sample_responses(policy, data.prompts[:4], prompt_mask=data.prompt_mask[:4], n_samples=2,
                              max_new_tokens=6, eos_id=data.eos_id, pad_id=data.pad_id, generator=generator(0))
    assert out.shape == (8, 6)
