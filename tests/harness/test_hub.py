"""The real-data path of the preference track, offline: tiny local stand-ins in the hub's formats
(a BPE tokenizer with a chat template, a Llama policy, a Llama reward model, UltraFeedback- and
hh-rlhf-format pairs, a local lm-eval task), built once per session."""
import json
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np
import pandas as pd
import pytest
import torch

from data import hub_preference as hp
from lossbench import hub
from lossbench import preference as pe
from lossbench.seeding import generator
from methods import get

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORDS = ("the cat sat on a mat dog ran far away red blue green question answer why how is are was yes "
         "no good bad small big tree house river").split()
CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
MAX_PROMPT, MAX_RESPONSE = 24, 12


def text(rng, lo, hi):
    return " ".join(rng.choice(WORDS, rng.integers(lo, hi + 1)))


@pytest.fixture(scope="session")
def root(tmp_path_factory):
    """Session folder; the datasets cache goes there too, not to ~/.cache."""
    import datasets

    path = tmp_path_factory.mktemp("hub")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", path / "hf_datasets_cache")
        yield path


@pytest.fixture(scope="session")
def tokenizer_dir(root):
    """Byte-level BPE trained here, EOS = <|end|>, no pad token (as many base models)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = np.random.default_rng(0)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|end|>", "<|user|>", "<|assistant|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text(rng, 5, 15) for _ in range(300)], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|end|>", model_max_length=128)
    fast.chat_template = CHAT
    fast.save_pretrained(root / "tokenizer")
    return root / "tokenizer"


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    return hub.load_tokenizer(tokenizer_dir)


def _save_llama(cls, tokenizer_dir, path, **extra):
    from transformers import AutoTokenizer, LlamaConfig

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=64, eos_token_id=tok.eos_token_id,
                         bos_token_id=None, pad_token_id=None, tie_word_embeddings=True,
                         attention_dropout=0.1, **extra)
    torch.manual_seed(0)  # the fixture's own weights; the loaders under test must not need this
    cls(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def lm_dir(root, tokenizer_dir):
    from transformers import LlamaForCausalLM
    return _save_llama(LlamaForCausalLM, tokenizer_dir, root / "policy")


@pytest.fixture(scope="session")
def rm_dir(root, tokenizer_dir):
    from transformers import LlamaForSequenceClassification
    return _save_llama(LlamaForSequenceClassification, tokenizer_dir, root / "judge", num_labels=1)


def uf_row(rng, i):
    prompt = text(rng, 2, 40 if i % 5 == 0 else 8)  # every 5th prompt needs left truncation
    context = [{"role": "user", "content": prompt}]
    if i % 7 == 3:  # multi-turn context
        context += [{"role": "assistant", "content": text(rng, 1, 3)}, {"role": "user", "content": text(rng, 1, 3)}]
    answers = [text(rng, 1, 20 if i % 4 == 0 else 6) for _ in range(2)]
    if i == 6:
        answers[1] = answers[0]  # identical pair: dropped
    return {"prompt": prompt, "prompt_id": f"p{i}", "score_chosen": 8.0 - i % 3, "score_rejected": 3.0 + i % 2,
            "chosen": context + [{"role": "assistant", "content": answers[0]}],
            "rejected": context + [{"role": "assistant", "content": answers[1]}]}


@pytest.fixture(scope="session")
def uf_dir(root):
    """UltraFeedback-binarized layout: data/<split>-00000-of-00001.parquet, 20 and 8 rows."""
    rng = np.random.default_rng(1)
    (root / "uf" / "data").mkdir(parents=True)
    for split, n in (("train_prefs", 20), ("test_prefs", 8)):
        pd.DataFrame([uf_row(rng, i) for i in range(n)]).to_parquet(
            root / "uf" / "data" / f"{split}-00000-of-00001.parquet")
    return root / "uf"


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
    judge.tokenizer.chat_template = None  # the (prompt, response) text-pair path
    pair = judge.score(prompts, responses)
    assert np.isfinite(pair).all() and not np.allclose(pair, a)
    with pytest.raises(ValueError, match="3 prompts but 2"):
        judge.score(prompts, responses[:2])


@pytest.fixture(scope="session")
def task_dir(root):
    """A local lm-eval multiple-choice task over a local jsonl (3 choices)."""
    path = root / "lm_eval_tasks"
    path.mkdir()
    rows = [{"question": f"is the {w} red", "choices": ["yes", "no", "blue"], "label": i % 3}
            for i, w in enumerate(["cat", "dog", "tree", "house", "river", "mat"])]
    (path / "tiny_mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "tiny_mc.yaml").write_text(f"""task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path / 'tiny_mc.jsonl'}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")
    return path


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
