"""The hub corpora of the lm_pretraining track (data/hub_corpus.py), offline: tiny local files in the
hub's layouts (SlimPajama-6B: data/<split>-*.parquet with `text` and `meta.redpajama_set_name`;
FineWeb-Edu: one `train` split with `int_score`) and a locally trained tokenizer."""
import json
import os
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np
import pandas as pd
import pytest

from lossbench import data
from lossbench.data import hub_corpus, lm_corpus

WORDS = "the of and a to in is was for on that with by it as at from this be are or an".split()
SETS = ["RedPajamaArXiv", "RedPajamaC4", "RedPajamaGithub"]
SEQ = 16


def docs(rng, n, field):
    return [{"text": " ".join(rng.choice(WORDS, rng.integers(5, 60))) + f" [{i}]", **field(i)} for i in range(n)]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("hub_corpus")


@pytest.fixture(scope="module")
def tokenizer(root):
    """Byte-level BPE with <|endoftext|>, saved like a hub tokenizer (for `prepare`)."""
    from transformers import PreTrainedTokenizerFast

    tok = lm_corpus.train_tokenizer([" ".join(WORDS * 20) + " [0123456789]"], 300)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=lm_corpus.EOS)
    fast.save_pretrained(root / "tokenizer")
    return fast


@pytest.fixture(scope="module")
def slimpajama(root):
    """data/{train,validation,test}-00000-of-00001.parquet; `meta` is a struct, as on the hub."""
    rng = np.random.default_rng(0)
    (root / "slimpj" / "data").mkdir(parents=True)
    for split, n in (("train", 60), ("validation", 12), ("test", 12)):
        rows = docs(rng, n, lambda i: {"meta": {"redpajama_set_name": SETS[i % 3 if i % 5 else 0]}})
        pd.DataFrame(rows).to_parquet(root / "slimpj" / "data" / f"{split}-00000-of-00001.parquet")
    return root / "slimpj"


@pytest.fixture(scope="module")
def fineweb(root):
    path = root / "fineweb.jsonl"
    rows = docs(np.random.default_rng(1), 80, lambda i: {"id": f"doc{i}", "score": 3.2 + i % 3, "int_score": 3 + i % 3})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


SLIMPJ = dict(split={"train": "train", "val": "validation", "test": "test"}, domain_field="meta.redpajama_set_name",
              seq_len=SEQ)


def expected_rows(tokenizer, rows, budget, domains):
    """The layout by hand: rows in order until the budget (each with its EOS), the last one cut to fit;
    per domain, joined and cut into SEQ + 1 wide rows."""
    eos, used, streams = tokenizer.eos_token_id, 0, {d: [] for d in domains}
    for row in rows:
        ids = tokenizer(row["text"], add_special_tokens=False)["input_ids"][:budget - used - 1]
        streams[row["meta"]["redpajama_set_name"]] += ids + [eos]
        used += len(ids) + 1
        if used >= budget:
            break
    out = [np.array(s[:len(s) // (SEQ + 1) * (SEQ + 1)]).reshape(-1, SEQ + 1) for s in streams.values()]
    return np.concatenate(out), np.concatenate([np.full(len(x), d) for d, x in enumerate(out)])


def test_slimpajama_layout(slimpajama, tokenizer, root):
    got = hub_corpus.load_corpus(str(slimpajama), tokenizer=tokenizer, max_tokens=10_000, domains=SETS,
                                 cache_dir=root / "cache", **SLIMPJ)
    assert set(got) == data.PREPARED_KEYS["lm_pretraining"]
    assert list(got["domain_names"]) == SETS and int(got["seq_len"]) == SEQ
    assert got["train_tokens"].dtype == np.int32 and not got["train_flag"].any()
    for split, hub in (("train", "train"), ("val", "validation"), ("test", "test")):
        rows = pd.read_parquet(slimpajama / "data" / f"{hub}-00000-of-00001.parquet").to_dict("records")
        tokens, domain = expected_rows(tokenizer, rows, 10_000, SETS)  # the budget exceeds these tiny splits
        np.testing.assert_array_equal(got[f"{split}_tokens"], tokens)
        np.testing.assert_array_equal(got[f"{split}_domain"], domain)
    assert list(got["test_texts"]) == [r["text"] for r in rows]
    again = lm_corpus.load_tokenizer(got)
    assert again.eos_token == lm_corpus.EOS and again.decode(got["val_tokens"][0].tolist()) == tokenizer.decode(
        got["val_tokens"][0].tolist())


def test_max_tokens_cuts_the_stream(slimpajama, tokenizer, root):
    budget = {"train": 600, "val": 100, "test": 0}
    got = hub_corpus.load_corpus(str(slimpajama), tokenizer=tokenizer, max_tokens=budget, domains=SETS,
                                 cache_dir=root / "cache", **SLIMPJ)
    rows = pd.read_parquet(slimpajama / "data" / "train-00000-of-00001.parquet").to_dict("records")
    tokens, domain = expected_rows(tokenizer, rows, 600, SETS)
    np.testing.assert_array_equal(got["train_tokens"], tokens)
    np.testing.assert_array_equal(got["train_domain"], domain)
    assert got["train_tokens"].size <= 600 and got["val_tokens"].size <= 100
    assert got["test_tokens"].shape == (0, SEQ + 1) and len(got["test_texts"]) == 0


def test_one_hub_split_dealt_out(fineweb, tokenizer, root):
    kw = dict(split={"val": "train", "test": "train", "train": "train"}, data_files={"train": str(fineweb)},
              tokenizer=tokenizer, seq_len=SEQ, domain_field="int_score", cache_dir=root / "cache")
    small = hub_corpus.load_corpus("json", max_tokens={"val": 400, "test": 400, "train": 600}, **kw)
    large = hub_corpus.load_corpus("json", max_tokens={"val": 400, "test": 400, "train": 1500}, **kw)
    assert list(small["domain_names"]) == ["3", "4", "5"]
    for split in ("val", "test"):  # held-out sets do not move with the training budget
        np.testing.assert_array_equal(small[f"{split}_tokens"], large[f"{split}_tokens"])
    assert len(large["train_tokens"]) > len(small["train_tokens"])
    texts = {split: tokenizer.decode(large[f"{split}_tokens"].ravel().tolist()) for split in ("val", "test", "train")}
    marks = {split: set(re.findall(r"\[(\d+)\]", text)) for split, text in texts.items()}  # document numbers
    assert marks["val"] and marks["test"] and marks["train"]
    assert not marks["val"] & marks["test"] and not (marks["val"] | marks["test"]) & marks["train"]
    assert max(map(int, marks["val"])) < min(map(int, marks["test"])) < min(map(int, marks["train"]))
    single = hub_corpus.load_corpus("json", split="train", data_files={"train": str(fineweb)}, tokenizer=tokenizer,
                                    seq_len=SEQ, max_tokens=300, cache_dir=root / "cache")
    assert list(single["domain_names"]) == ["all"] and single["val_tokens"].shape == (0, SEQ + 1)


def test_errors_name_the_problem(slimpajama, fineweb, tokenizer, root):
    kw = dict(tokenizer=tokenizer, max_tokens=500, cache_dir=root / "cache")
    with pytest.raises(ValueError, match=r"domains \['RedPajamaGithub'\] not in"):
        hub_corpus.load_corpus(str(slimpajama), domains=SETS[:2], **SLIMPJ, **kw)
    with pytest.raises(ValueError, match=r"domain field 'meta.set'; found columns \['meta', 'text'\]"):
        hub_corpus.load_corpus(str(slimpajama), **dict(SLIMPJ, domain_field="meta.set"), **kw)
    with pytest.raises(ValueError, match="text column 'content'"):
        hub_corpus.load_corpus(str(fineweb), split="train", text_column="content", seq_len=SEQ, **kw)
    with pytest.raises(ValueError, match="our splits"):
        hub_corpus.load_corpus(str(fineweb), split={"dev": "train"}, seq_len=SEQ, **kw)


def test_prepare_from_registry_params(slimpajama, tokenizer, root):
    params = dict(data.source_entry("slimpajama6b")["params"], path=str(slimpajama), tokenizer=str(root / "tokenizer"),
                  seq_len=SEQ, max_tokens={"train": 400, "val": 200, "test": 200})
    got = hub_corpus.prepare(params)
    assert len(got["domain_names"]) == 7 and set(np.unique(got["train_domain"])) <= {0, 2, 4}  # arxiv, c4, github
    assert got["train_tokens"].shape[1] == SEQ + 1 and len(got["train_tokens"]) > 10


def test_registry_entries(monkeypatch):
    for name in ("shakespeare_mix", "slimpajama6b", "fineweb_edu"):
        line = data.describe(name)
        assert "\n" not in line and "-token rows by domain" in line
        assert data.source_entry(data.source_of(name))["task"] == "lm_pretraining"
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="BENCH_OFFLINE"):
        data.prepare_source("slimpajama6b")
