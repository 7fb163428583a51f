"""Full-profile corpora of the lm_pretraining track (docs/methods/README.md, LM-pretraining track),
streamed with `datasets.load_dataset` and returned in data.lm_corpus's prepared layout (train_flag
all 0, domains from a document field): SlimPajama-6B (DKYoon/SlimPajama-6B, domain
meta.redpajama_set_name) and FineWeb-Edu sample-10BT (HuggingFaceFW/fineweb-edu, domain
int_score), tokenized with a hub tokenizer such as gpt2.

Streaming downloads only what the token budgets need: each of our splits takes documents from the
start of its hub split until `max_tokens` (every document counts its EOS; the last one is cut to
fit). Splits that share a hub split (FineWeb-Edu has only `train`) are dealt out of one stream in
the order val, test, train: disjoint, and the held-out sets stay put when the training budget changes.
Documents come in the hub's file order, so the domain proportions are whatever that order gives.
"""
from __future__ import annotations

import itertools

import numpy as np

from lossbench.data import lm_corpus
from lossbench.data.hub_preference import load_split

ORDER = ("val", "test", "train")
TEST_TEXTS = 256   # test documents kept as raw text (their first passage) for local lm-eval tasks
TEXT_CHARS = 2000
BATCH = 256        # documents per tokenizer call


def _documents(ds, text_column: str, domain_field: str | None, where: str):
    """(text, domain name) per row; `domain_field` may be a dotted path into nested fields."""
    for row in ds:
        try:
            text, domain = row[text_column], "all"
            if domain_field is not None:
                domain = row
                for key in domain_field.split("."):
                    domain = domain[key]
        except (KeyError, TypeError):
            raise ValueError(f"{where}: rows need the text column {text_column!r} and the domain field "
                             f"{domain_field!r}; found columns {sorted(row)}") from None
        yield text, str(domain)


def _tokenized(docs, tokenizer):
    """(ids, domain, text) per document, tokenized BATCH documents at a time."""
    while batch := list(itertools.islice(docs, BATCH)):
        ids = lm_corpus.encode(tokenizer, [text for text, _ in batch], piece_chars=None)
        yield from ((x, domain, text) for x, (text, domain) in zip(ids, batch))


def _take(stream, budget: int, keep_texts: int):
    """([(ids, domain)], first `keep_texts` texts): documents until `budget` tokens."""
    docs, texts, used = [], [], 0
    if budget <= 0:
        return docs, texts
    for ids, domain, text in stream:
        ids = ids[:budget - used - 1]
        docs.append((ids, domain))
        texts += [text][:keep_texts - len(texts)]
        used += len(ids) + 1
        if used >= budget:
            break
    return docs, texts


def load_corpus(source: str, *, split, tokenizer, seq_len: int, max_tokens, text_column: str = "text",
                domain_field: str | None = None, name=None, data_files=None, revision=None, cache_dir=None,
                domains=None) -> dict:
    """The prepared layout of data/lm_corpus.py from a hub dataset or local files (see
    data.hub_preference.load_split for `source`, `name`, `data_files`).

    `split`: {our split (train / val / test): hub split}, or one hub split name for train only
    (val and test then come out empty). `max_tokens`: a budget per split (dict) or one for all.
    `tokenizer`: a fast transformers tokenizer with an EOS token. `domain_field`: a (dotted) field
    whose value names each document's domain (None: one domain, "all"). `domains`: the domain
    names in index order; a document of another domain is an error (default: the sorted names seen)."""
    splits = {"train": split} if isinstance(split, str) else dict(split)
    budgets = dict(max_tokens) if isinstance(max_tokens, dict) else dict.fromkeys(splits, max_tokens)
    if set(splits) - set(ORDER) or set(splits) - set(budgets):
        raise ValueError(f"split maps our splits {list(ORDER)} to hub splits, got {splits}, budgets {budgets}")
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token to separate documents")
    backend = tokenizer.backend_tokenizer
    streams, taken, texts = {}, {}, []
    for ours in (s for s in ORDER if s in splits):
        hub = splits[ours]
        if hub not in streams:
            ds = load_split(source, hub, data_files=data_files, cache_dir=cache_dir, name=name, revision=revision,
                            streaming=True)
            streams[hub] = _tokenized(_documents(ds, text_column, domain_field, f"{source} [{hub}]"), backend)
        taken[ours], kept = _take(streams[hub], int(budgets[ours]), TEST_TEXTS if ours == "test" else 0)
        texts += kept
    seen = {d for docs in taken.values() for _, d in docs}
    names = list(domains) if domains is not None else sorted(seen)
    if seen - set(names):
        raise ValueError(f"{source}: documents of domains {sorted(seen - set(names))} not in {names}")
    arrays = {}
    for ours in lm_corpus.SPLITS:
        by_domain = [[] for _ in names]
        for ids, domain in taken.get(ours, []):
            by_domain[names.index(domain)].append(ids)
        arrays[f"{ours}_tokens"], arrays[f"{ours}_domain"] = lm_corpus.pack(by_domain, seq_len, tokenizer.eos_token_id)
    return {**arrays, "train_flag": np.zeros(len(arrays["train_tokens"]), np.int64),
            "domain_names": np.array(names, dtype=str), "seq_len": np.int64(seq_len),
            **lm_corpus.tokenizer_arrays(backend, tokenizer.eos_token),
            "test_texts": np.array([lm_corpus.passages(t, TEXT_CHARS)[0] for t in texts if t], dtype=str)}


def prepare(params: dict, raw_dir=None) -> dict:
    """A registry source of kind hub: params path, name, revision, splits, max_tokens, domain_field,
    domains, text_column, tokenizer (hub id or local folder), seq_len."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(params["tokenizer"], revision=params.get("tokenizer_revision"))
    return load_corpus(params["path"], split=params["splits"], tokenizer=tokenizer, seq_len=int(params["seq_len"]),
                       max_tokens=params["max_tokens"], text_column=params.get("text_column", "text"),
                       domain_field=params.get("domain_field"), name=params.get("name"),
                       revision=params.get("revision"), domains=params.get("domains"))
