"""Tiny local stand-ins for the preference track's hub path, in the hub's formats: a BPE tokenizer
with a chat template, a Llama policy, a Llama reward model (save_pretrained folders), pairs in the
UltraFeedback-binarized parquet layout, and a local lm-eval task. Session fixtures for the test
modules that import them (`from tests.hub_fixtures import ...`), and the builders behind them."""
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np
import pandas as pd
import pytest
import torch

from lossbench import hub

WORDS = ("the cat sat on a mat dog ran far away red blue green question answer why how is are was yes "
         "no good bad small big tree house river").split()
CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
UF_ROWS = {"train_prefs": 20, "test_prefs": 8}


def text(rng, lo, hi):
    return " ".join(rng.choice(WORDS, rng.integers(lo, hi + 1)))


# ---------------------------------------------------------------------------- builders
def build_tokenizer(path):
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
    fast.save_pretrained(path)
    return path


def save_llama(cls, tokenizer_dir, path, **extra):
    """A 2-layer d=32 Llama of class `cls` (causal LM or sequence classifier) with the tokenizer."""
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


def write_ultrafeedback(path, rows=UF_ROWS):
    """UltraFeedback-binarized layout: data/<split>-00000-of-00001.parquet, `rows` rows per split."""
    rng = np.random.default_rng(1)
    (path / "data").mkdir(parents=True)
    for split, n in rows.items():
        pd.DataFrame([uf_row(rng, i) for i in range(n)]).to_parquet(path / "data" / f"{split}-00000-of-00001.parquet")
    return path


def write_lm_eval_task(path):
    """A local lm-eval multiple-choice task `tiny_mc` over a local jsonl (3 choices)."""
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


# ---------------------------------------------------------------------------- session fixtures
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
    return build_tokenizer(root / "tokenizer")


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    return hub.load_tokenizer(tokenizer_dir)


@pytest.fixture(scope="session")
def lm_dir(root, tokenizer_dir):
    from transformers import LlamaForCausalLM
    return save_llama(LlamaForCausalLM, tokenizer_dir, root / "policy")


@pytest.fixture(scope="session")
def rm_dir(root, tokenizer_dir):
    from transformers import LlamaForSequenceClassification
    return save_llama(LlamaForSequenceClassification, tokenizer_dir, root / "judge", num_labels=1)


@pytest.fixture(scope="session")
def uf_dir(root):
    return write_ultrafeedback(root / "uf")


@pytest.fixture(scope="session")
def task_dir(root):
    return write_lm_eval_task(root / "lm_eval_tasks")


def hub_protocol(lm_dir, rm_dir, uf_dir, task_dir) -> dict:
    """A micro `testbed: hub` protocol on the fixtures: the registry's UltraFeedback datasets read
    from the local parquet copy, seconds per stage on a CPU."""
    return {"testbed": "hub", "datasets": ["ultrafeedback", "ultrafeedback_eps20"],
            "policy": {"name": str(lm_dir)}, "judge": {"name": str(rm_dir)},
            "pairs": {"source": str(uf_dir), "train": 12, "val": 3, "test": 4, "max_prompt_tokens": 24,
                      "max_response_tokens": 12},
            "capability": {"tasks": ["tiny_mc"], "limit": 4, "include_path": str(task_dir), "batch_size": 4},
            "reward_model": {"steps": 3, "batch_size": 4, "lr": 1e-3},
            "optimizer": {"name": "adam", "lr": 1e-3},
            "train": {"steps": 3, "batch_size": 4, "probe_every": 2, "probe_pairs": 3},
            "eval": {"samples_per_prompt": 2, "kl_budget": 3.0, "batch_size": 8},
            "guide": {"method": "dpo", "variant": "beta0.1"}}


def hub_track(proto: dict, methods, seeds=(0,)) -> dict:
    """The smoke preference track cut down to `methods` (their smoke grids) on the one protocol
    `hub_tiny`; the noisy dataset runs DPO only."""
    import yaml

    from lossbench.config import ROOT

    track = yaml.safe_load((ROOT / "config/tracks/preference/smoke.yaml").read_text())
    track.update(methods=list(methods), seeds=list(seeds), sweep={m: track["sweep"][m] for m in methods},
                 dataset_methods={"ultrafeedback_eps20": ["dpo"]}, protocols={"hub_tiny": proto})
    return track
