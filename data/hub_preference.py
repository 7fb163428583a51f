"""Real preference pairs (docs/methods/README.md, preference track configuration), tokenized for
`lossbench.preference.pref_data`.

Formats (told apart by the type of the `chosen` / `rejected` values):
- chat messages, `HuggingFaceH4/ultrafeedback_binarized` (splits `train_prefs` / `test_prefs`):
  `chosen` and `rejected` are lists of {role, content} whose last message is the assistant answer;
  optional `score_chosen` / `score_rejected` give the score margin. The prompt is the conversation
  before the answer, which in UltraFeedback is the single user turn that the `prompt` column repeats.
- transcripts, `Anthropic/hh-rlhf`: `chosen` and `rejected` are strings of
  "\\n\\nHuman: ...\\n\\nAssistant: ..." turns; no scores (margin NaN).

Layout (what `lossbench.lm` expects): prompts right-padded [N, P] with `prompt_mask`, the chat
template applied with the generation prompt, truncated from the left (the end of the conversation
and the assistant header survive); responses [N, 2, T] (chosen, rejected): answer tokens then EOS,
truncated to `max_response_tokens` after EOS is appended, so a cut answer has no EOS (as TRL
truncates; `lm.response_mask_of` reads it as running to the maximum length), then padding.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REQUIRED = ("chosen", "rejected")
SCORES = ("score_chosen", "score_rejected")
LOCAL_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json"}


@dataclass
class HubPairs:
    """Tokenized pairs. `margin` = score_chosen − score_rejected (NaN without scores); `stats`
    counts rows read, dropped and truncated. `pad_id` is a filler (see `filler_pad_id`)."""

    prompts: np.ndarray      # [N, P] int64, right-padded
    prompt_mask: np.ndarray  # [N, P] int64, 1 = real token
    responses: np.ndarray    # [N, 2, T] int64: chosen, rejected
    margin: np.ndarray       # [N] float64
    contexts: np.ndarray     # [N] str: the messages before the answer as JSON (what a judge reads)
    eos_id: int
    pad_id: int
    stats: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.prompts)

    def pref_data(self):
        """As `lossbench.preference.PrefData` (pairwise)."""
        from lossbench.preference import pref_data
        return pref_data(self.prompts, self.responses, eos_id=self.eos_id, pad_id=self.pad_id,
                         prompt_mask=self.prompt_mask)


# ---------------------------------------------------------------------------------------- reading
def load_split(source: str, split: str, *, data_files=None, cache_dir=None, name=None, revision=None,
               streaming=False):
    """A `datasets.Dataset` (an IterableDataset when `streaming`): a hub id or local dataset folder
    (`load_dataset(source, name, split=...)`), a local .parquet / .json / .jsonl file, or a builder
    name ("parquet", "json") with `data_files` ({split: path(s)} or path(s), which then make up the
    split)."""
    from datasets import load_dataset

    path = Path(source)
    if data_files is None and path.is_file():
        if path.suffix not in LOCAL_BUILDERS:
            raise ValueError(f"{source}: local files must be one of {sorted(LOCAL_BUILDERS)}")
        source, data_files = LOCAL_BUILDERS[path.suffix], {split: str(path)}
    elif data_files is not None and not isinstance(data_files, dict):
        data_files = {split: data_files}
    return load_dataset(source, name, data_files=data_files, split=split, cache_dir=cache_dir, revision=revision,
                        streaming=streaming)


def check_columns(columns, where: str):
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise ValueError(f"{where}: preference pairs need columns {list(REQUIRED)} (chat messages or "
                         f"hh-rlhf transcripts); missing {missing}; found {sorted(columns)}")


def select_rows(ds, limit: int | None, seed: int | None, skip: int = 0):
    """Rows skip .. skip+limit−1 (all the rest without `limit`) of the file order or, with `seed`, of
    a seeded permutation, kept in file order. The same seed with consecutive skips deals disjoint
    subsets of one split (e.g. val and test from a single test split)."""
    n = len(ds)
    stop = n if limit is None else min(n, skip + limit)
    if skip >= stop:
        raise ValueError(f"{skip + (limit or 0)} rows asked of a split with {n}")
    if skip == 0 and stop == n:
        return ds
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    return ds.select(np.sort(order[skip:stop]))


_TURN = re.compile(r"\n\n(Human|Assistant): ?")


def transcript_messages(text: str) -> list[dict]:
    """hh-rlhf transcript -> chat messages (Human -> user, Assistant -> assistant)."""
    parts = _TURN.split(text if text.startswith("\n\n") else "\n\n" + text)
    if parts[0].strip():
        raise ValueError(f"transcript does not start with a Human/Assistant turn: {text[:60]!r}")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[r], "content": c} for r, c in zip(parts[1::2], parts[2::2])]


def split_conversation(chosen, rejected):
    """(prompt messages, chosen answer, rejected answer), or None for a malformed row: the two sides
    do not share the context before a final assistant answer."""
    chosen, rejected = (transcript_messages(x) if isinstance(x, str) else list(x) for x in (chosen, rejected))
    if len(chosen) < 2 or chosen[:-1] != rejected[:-1]:
        return None
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        return None
    return chosen[:-1], chosen[-1]["content"], rejected[-1]["content"]


# ---------------------------------------------------------------------------------------- tokens
def filler_pad_id(tokenizer) -> int:
    """Id written into padding slots. The masks say what is real, so its value never matters, but
    it must differ from EOS (`lm.sample` refuses eos == pad): the tokenizer's pad token unless it
    is missing or is EOS (a common default, and what `lossbench.hub.load_causal_lm` sets), else 0
    or 1."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if pad is not None and pad != eos:
        return pad
    return 1 if eos == 0 else 0


def _pad(rows: list[list[int]], value: int, width: int | None = None) -> np.ndarray:
    """Right-padded [len(rows), width] int64 (width: the longest row by default)."""
    out = np.full((len(rows), width or max(map(len, rows))), value, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def tokenize_pairs(tokenizer, conversations, *, max_prompt_tokens: int, max_response_tokens: int):
    """Token lists (prompts, chosen, rejected) of `split_conversation` triples, truncated as the
    module docstring says, and whether each prompt was cut."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token: responses could not end")
    context, chosen, rejected = zip(*conversations)
    texts = [tokenizer.apply_chat_template(list(m), add_generation_prompt=True, tokenize=False) for m in context]
    # the template writes its own special tokens (BOS, role headers): the tokenizer must add none
    enc = lambda xs: tokenizer(list(xs), add_special_tokens=False)["input_ids"]  # noqa: E731
    full = enc(texts)
    prompts = [ids[-max_prompt_tokens:] for ids in full]
    y_w, y_l = ([(ids + [eos])[:max_response_tokens] for ids in enc(side)] for side in (chosen, rejected))
    return prompts, y_w, y_l, [len(ids) > max_prompt_tokens for ids in full]


def load_pairs(source: str, *, split: str, tokenizer, max_prompt_tokens: int, max_response_tokens: int,
               limit: int | None = None, seed: int | None = None, skip: int = 0, data_files=None,
               cache_dir=None, revision=None) -> HubPairs:
    """Pairs from `source` (see `load_split`), tokenized with `tokenizer` and its chat template.

    Reads `limit` rows after `skip` (see `select_rows`: in file order, or of a `seed`ed permutation),
    then drops malformed rows (the two sides disagree on the context) and pairs whose chosen and
    rejected tokens are identical after truncation (no preference signal; this includes identical
    texts), counting each in `stats`."""
    if max_prompt_tokens < 1 or max_response_tokens < 1:
        raise ValueError("max_prompt_tokens and max_response_tokens must be >= 1")
    if tokenizer.chat_template is None:
        raise ValueError("the tokenizer has no chat template (use a chat/instruct tokenizer or set "
                         "tokenizer.chat_template)")
    where = f"{source} [{split}]"
    ds = load_split(source, split, data_files=data_files, cache_dir=cache_dir, revision=revision)
    check_columns(ds.column_names, where)
    ds = select_rows(ds, limit, seed, skip)
    triples = [split_conversation(c, r) for c, r in zip(ds["chosen"], ds["rejected"])]
    rows = [i for i, t in enumerate(triples) if t is not None]
    if not rows:
        raise ValueError(f"{where}: none of {len(ds)} rows ends both sides with an assistant answer "
                         "after a shared context")
    prompts, y_w, y_l, prompts_cut = tokenize_pairs(tokenizer, [triples[i] for i in rows],
                                                    max_prompt_tokens=max_prompt_tokens,
                                                    max_response_tokens=max_response_tokens)
    distinct = [j for j in range(len(rows)) if y_w[j] != y_l[j]]
    if not distinct:
        raise ValueError(f"{where}: every pair has identical chosen and rejected tokens")
    prompts, y_w, y_l, prompts_cut = ([x[j] for j in distinct] for x in (prompts, y_w, y_l, prompts_cut))
    rows = [rows[j] for j in distinct]
    if all(c in ds.column_names for c in SCORES):
        score_w, score_l = (np.asarray(list(ds[c]), np.float64)[rows] for c in SCORES)
        margin = score_w - score_l
    else:
        margin = np.full(len(rows), np.nan)
    eos, pad = tokenizer.eos_token_id, filler_pad_id(tokenizer)
    width = max(map(len, y_w + y_l))
    responses = np.stack([_pad(y_w, pad, width), _pad(y_l, pad, width)], 1)
    stats = {"rows_read": len(ds), "dropped_malformed": triples.count(None),
             "dropped_identical": len(triples) - triples.count(None) - len(distinct),
             "prompt_truncated": sum(prompts_cut),
             "response_truncated": int(sum(y[-1] != eos for y in y_w + y_l))}
    contexts = np.array([json.dumps(triples[i][0]) for i in rows], dtype=str)
    return HubPairs(prompts=_pad(prompts, pad), prompt_mask=_pad([[1] * len(p) for p in prompts], 0),
                    responses=responses, margin=margin, contexts=contexts, eos_id=eos, pad_id=pad, stats=stats)
