"""SynthPref: the synthetic preference testbed (docs/methods/README.md, preference track, SynthPref).

Token sequences with a closed-form gold reward r*, a noisy teacher for the SFT corpus, Bradley-Terry
labels with stored preference probabilities p (E1), K-wise lists (LiPO, M10), oracle token credits
(TGDPO M9, SparsePO M8), a forget set of memorised secrets (NPO, M12) and causal-LM packing.

A prompt is `[BOS, c, k1, k2, k3, SEP]`. A response array is int [n, T], T = max_len + 1 = 17: up to
16 tokens, then EOS, then PAD. The response y is everything before the first EOS (or PAD); whatever
follows is ignored. Pure numpy; all randomness comes from an explicit Generator.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PROMPT_LEN = 6
MAX_LEN = 16            # response tokens; EOS comes after
TARGET_LEN = 8          # length with no length penalty
SFT_PROMPTS = 20_000    # card: SFT corpus size
TEACHER_MIX = (0.5, 0.3, 0.1, 0.1)  # topic, filler, toxic, uniform content


@dataclass(frozen=True)
class Vocab:
    """Token ids, fixed:

    0 PAD, 1 BOS, 2 SEP, 3 EOS, 4 SECRET (prompt marker of the NPO forget set),
    5..12 topic markers `c` (one per topic), 13..60 topic tokens (topic c owns 13 + 6c .. 18 + 6c),
    61..68 toxic, 69..76 filler; size 77. Content tokens (what responses are made of) are 13..76.
    """

    n_topics: int = 8
    topic_size: int = 6
    n_toxic: int = 8
    n_filler: int = 8

    PAD = 0
    BOS = 1
    SEP = 2
    EOS = 3
    SECRET = 4
    _SPECIAL = ("<pad>", "<bos>", "<sep>", "<eos>", "<secret>")

    @property
    def marker0(self) -> int:
        return len(self._SPECIAL)

    @property
    def topic0(self) -> int:
        return self.marker0 + self.n_topics

    @property
    def toxic0(self) -> int:
        return self.topic0 + self.n_topics * self.topic_size

    @property
    def filler0(self) -> int:
        return self.toxic0 + self.n_toxic

    @property
    def size(self) -> int:
        return self.filler0 + self.n_filler

    def marker(self, c):
        return self.marker0 + np.asarray(c)

    def topic_tokens(self, c: int) -> np.ndarray:
        start = self.topic0 + c * self.topic_size
        return np.arange(start, start + self.topic_size)

    def topic_of(self, tokens) -> np.ndarray:
        """Topic index of each token, -1 for tokens that are not topic tokens."""
        t = np.asarray(tokens)
        ok = (t >= self.topic0) & (t < self.toxic0)
        return np.where(ok, (t - self.topic0) // self.topic_size, -1)

    def is_toxic(self, tokens) -> np.ndarray:
        t = np.asarray(tokens)
        return (t >= self.toxic0) & (t < self.filler0)

    def is_filler(self, tokens) -> np.ndarray:
        t = np.asarray(tokens)
        return (t >= self.filler0) & (t < self.size)

    def is_content(self, tokens) -> np.ndarray:
        t = np.asarray(tokens)
        return (t >= self.topic0) & (t < self.size)

    @property
    def names(self) -> list[str]:
        """`T3` topic marker, `t3.2` token 2 of topic 3, `x5` toxic, `f1` filler."""
        out = list(self._SPECIAL) + [f"T{c}" for c in range(self.n_topics)]
        out += [f"t{c}.{j}" for c in range(self.n_topics) for j in range(self.topic_size)]
        out += [f"x{j}" for j in range(self.n_toxic)] + [f"f{j}" for j in range(self.n_filler)]
        return out

    def decode(self, seq) -> str:
        names = self.names
        return " ".join(names[int(t)] for t in np.asarray(seq) if t != self.PAD)


def make_prompts(n: int, vocab: Vocab, rng: np.random.Generator):
    """`[BOS, c, k1, k2, k3, SEP]` with c uniform and three distinct keywords of topic c, random order.

    Returns (prompts int64 [n, 6], topics int64 [n]).
    """
    topics = rng.integers(0, vocab.n_topics, n)
    picks = rng.random((n, vocab.topic_size)).argsort(axis=1)[:, :3]  # 3 distinct slots per row
    keywords = vocab.topic0 + topics[:, None] * vocab.topic_size + picks
    prompts = np.column_stack([np.full(n, vocab.BOS), vocab.marker(topics), keywords, np.full(n, vocab.SEP)])
    return prompts.astype(np.int64), topics.astype(np.int64)


def is_secret(prompts, vocab: Vocab) -> np.ndarray:
    return np.asarray(prompts)[:, 1] == vocab.SECRET


def prompt_topics(prompts, vocab: Vocab) -> np.ndarray:
    """Topic c of ordinary prompts; raises on secret (or malformed) prompts, which have no gold reward."""
    c = np.asarray(prompts)[:, 1] - vocab.marker0
    if np.any((c < 0) | (c >= vocab.n_topics)):
        raise ValueError("gold reward is defined for topic prompts only (found a secret or malformed prompt)")
    return c


def response_lengths(responses, vocab: Vocab) -> np.ndarray:
    """|y| = index of the first EOS or PAD (T if neither occurs)."""
    r = np.asarray(responses)
    stop = (r == vocab.EOS) | (r == vocab.PAD)
    return np.where(stop.any(1), stop.argmax(1), r.shape[1])


def _parts(prompts, responses, vocab: Vocab):
    """Per-token indicators shared by the components and the credits."""
    prompts, responses = np.asarray(prompts), np.asarray(responses)
    c = prompt_topics(prompts, vocab)
    n, T = responses.shape
    length = response_lengths(responses, vocab)
    valid = np.arange(T)[None, :] < length[:, None]
    hits = (responses[:, :, None] == prompts[:, None, 2:5]) & valid[:, :, None]  # [n, T, 3]
    first_hit = (hits & (np.cumsum(hits, axis=1) == 1)).any(2)  # first occurrence of some keyword
    ontopic = (vocab.topic_of(responses) == c[:, None]) & valid
    toxic = vocab.is_toxic(responses) & valid
    repeat = np.zeros((n, T), bool)  # repeat[t]: y_t == y_{t-1}, both inside y
    repeat[:, 1:] = (responses[:, 1:] == responses[:, :-1]) & valid[:, 1:]
    return length, first_hit, ontopic, toxic, repeat


def reward_components(prompts, responses, vocab: Vocab) -> dict[str, np.ndarray]:
    """The raw components of r* (E4 logs them separately): cov, ontopic, ntox, length, rep."""
    length, first_hit, ontopic, toxic, repeat = _parts(prompts, responses, vocab)
    return {
        "cov": first_hit.sum(1).astype(float),        # distinct prompt keywords present
        "ontopic": ontopic.sum(1) / np.maximum(length, 1),  # 0 for an empty response
        "ntox": toxic.sum(1).astype(float),
        "length": length.astype(float),
        "rep": repeat.sum(1) / np.maximum(length - 1, 1),   # adjacent equal pairs / (|y|-1); 0 if |y| < 2
    }


def length_penalty(length) -> np.ndarray:
    return -0.3 * np.abs(np.asarray(length) - TARGET_LEN) / TARGET_LEN


def gold_reward(prompts, responses, vocab: Vocab) -> np.ndarray:
    """r*(x,y) = cov/3 + 0.5 ontopic - ntox - 0.3 |len - 8|/8 - 0.5 rep (card, closed form). Max 1.5."""
    k = reward_components(prompts, responses, vocab)
    return 1.0 * k["cov"] / 3 + 0.5 * k["ontopic"] - 1.0 * k["ntox"] + length_penalty(k["length"]) - 0.5 * k["rep"]


def token_credits(prompts, responses, vocab: Vocab, *, length_at_eos: bool = False) -> np.ndarray:
    """Oracle token reward [n, T] aligned with `responses`.

    Token-additive parts: +1/3 at the first hit of each prompt keyword, -1 per toxic token (both
    causal); +0.5/|y| per on-topic token and -0.5/(|y|-1) per token equal to its predecessor (additive
    once |y| is known, not causal). The length penalty is sequence-level: left out by default, so the
    credits sum to r* - length_penalty; with length_at_eos it sits on the EOS slot (the token that
    fixes |y|; the last token if there is no EOS), and the credits sum to r*.
    """
    length, first_hit, ontopic, toxic, repeat = _parts(prompts, responses, vocab)
    credit = first_hit / 3 - 1.0 * toxic
    credit = credit + 0.5 * ontopic / np.maximum(length, 1)[:, None]
    credit = credit - 0.5 * repeat / np.maximum(length - 1, 1)[:, None]
    if length_at_eos:
        at = np.minimum(length, credit.shape[1] - 1)
        credit[np.arange(len(at)), at] += length_penalty(length)
    return credit


def _finish(tokens, lengths, vocab: Vocab) -> np.ndarray:
    """Cut token rows [n, max_len] at `lengths`: EOS at position |y|, PAD after; returns [n, max_len + 1]."""
    n, max_len = tokens.shape
    pos = np.arange(max_len + 1)[None, :]
    out = np.full((n, max_len + 1), vocab.PAD, np.int64)
    out[:, :max_len] = tokens
    out = np.where(pos < lengths[:, None], out, vocab.PAD)
    out[np.arange(n), lengths] = vocab.EOS
    return out


def teacher_responses(prompts, topics, vocab: Vocab, rng: np.random.Generator, *, max_len: int = MAX_LEN,
                      min_len: int = 4, keyword_weight: float = 3.0, mix=TEACHER_MIX) -> np.ndarray:
    """The card's noisy teacher: |y| ~ U{min_len..max_len}, tokens i.i.d. from a mixture of

    topic-c tokens (each prompt keyword `keyword_weight` times as likely as the other topic tokens;
    the card leaves the up-weighting open, 3 gives keywords 3/4 of this component), filler, toxic,
    and uniform over all content tokens. Returns int64 [n, max_len + 1] (tokens, EOS, PAD).
    """
    prompts, topics = np.asarray(prompts), np.asarray(topics)
    n = len(prompts)
    lengths = rng.integers(min_len, max_len + 1, n)
    comp = rng.choice(len(mix), size=(n, max_len), p=np.asarray(mix) / np.sum(mix))
    own = vocab.topic0 + topics[:, None] * vocab.topic_size + np.arange(vocab.topic_size)  # [n, 6]
    w = np.where((own[:, :, None] == prompts[:, None, 2:5]).any(2), keyword_weight, 1.0)
    cdf = np.cumsum(w / w.sum(1, keepdims=True), axis=1)
    slot = (rng.random((n, max_len, 1)) > cdf[:, None, :-1]).sum(2)  # inverse-CDF per row
    choices = [
        np.take_along_axis(own, slot, 1),
        vocab.filler0 + rng.integers(0, vocab.n_filler, (n, max_len)),
        vocab.toxic0 + rng.integers(0, vocab.n_toxic, (n, max_len)),
        rng.integers(vocab.topic0, vocab.size, (n, max_len)),
    ]
    tokens = np.choose(comp, choices)
    return _finish(tokens, lengths, vocab)


def sft_corpus(n_prompts: int, vocab: Vocab, rng: np.random.Generator, *, max_len: int = MAX_LEN):
    """One teacher response per fresh prompt (card: SFT_PROMPTS = 20k). Returns (prompts, topics, responses)."""
    prompts, topics = make_prompts(n_prompts, vocab, rng)
    return prompts, topics, teacher_responses(prompts, topics, vocab, rng, max_len=max_len)


def revision_corpus(n_prompts: int, vocab: Vocab, rng: np.random.Generator, *, max_len: int = MAX_LEN):
    """SFT rows in the revision format (SRPO's self-improvement policy): a fresh prompt, an earlier
    teacher answer y′ and a second, independent teacher answer y. Returns (prompts, previous, responses).

    Packed as `prompt, y′, EOS, SEP, y, EOS` (preference.revision_prompts). The teacher ignores y′, so
    π_ref learns the format and that an earlier answer carries no information: its revision
    distribution is its ordinary one, and any improvement given y′ is the preference method's doing."""
    prompts, topics = make_prompts(n_prompts, vocab, rng)
    previous = teacher_responses(prompts, topics, vocab, rng, max_len=max_len)
    return prompts, previous, teacher_responses(prompts, topics, vocab, rng, max_len=max_len)


def preference_prob(r1, r2, *, tau_bt: float = 0.25) -> np.ndarray:
    """p = P(y1 > y2) = sigma((r1 - r2)/tau); tanh form: overflow-free and exactly odd around 1/2."""
    z = (np.asarray(r1, float) - np.asarray(r2, float)) / tau_bt
    return 0.5 + 0.5 * np.tanh(z / 2)


def bradley_terry_labels(r1, r2, rng: np.random.Generator, *, tau_bt: float = 0.25, flip: float = 0.0):
    """Returns (label = y1 > y2, p, flipped). label ~ Bernoulli(p), then flipped with probability `flip`.

    p is the clean aggregated preference (E1), unchanged by flips. Both uniforms are always drawn, so
    for one seed every flip level shares the clean labels and the flipped sets are nested in `flip`.
    """
    p = preference_prob(r1, r2, tau_bt=tau_bt)
    clean = rng.random(p.shape) < p
    flipped = rng.random(p.shape) < flip
    return clean ^ flipped, p, flipped


def orient(y1, y2, label, p):
    """(y_w, y_l, p_w) from a labelled pair, p_w = P(y_w > y_l) under the clean preference."""
    label = np.asarray(label, bool)
    sel = label.reshape(-1, *([1] * (np.ndim(y1) - 1)))
    return np.where(sel, y1, y2), np.where(sel, y2, y1), np.where(label, p, 1 - p)


def make_lists(prompts, responses, vocab: Vocab) -> np.ndarray:
    """LiPO scores psi = r* for K responses per prompt: responses [n, K, T] -> psi [n, K]."""
    responses = np.asarray(responses)
    n, K, T = responses.shape
    flat = gold_reward(np.repeat(np.asarray(prompts), K, axis=0), responses.reshape(n * K, T), vocab)
    return flat.reshape(n, K)


@dataclass
class ForgetSet:
    """Secrets for NPO (card: 100 secrets, 8-token answers, x20 in the SFT corpus, forget 10).

    A secret prompt is `[BOS, SECRET, k1, k2, k3, SEP]`: the reserved SECRET marker replaces the topic
    marker, so secrets are recognisable (is_secret) and never collide with ordinary prompts; the
    keywords are 3 distinct topic tokens from any topics and every triple is unique. The answer is a
    fixed uniform draw of non-toxic content tokens, pure memorisation with no structure to generalise.
    """

    prompts: np.ndarray    # [S, 6]
    answers: np.ndarray    # [S, answer_len]
    responses: np.ndarray  # [S, max_len + 1]: answer, EOS, PAD
    forget: np.ndarray     # [S] bool
    repeats: int

    def rows(self, *, retain_only: bool = False):
        """Each kept secret repeated `repeats` times: (prompts, responses, secret_id)."""
        ids = np.repeat(np.flatnonzero(~self.forget if retain_only else np.ones_like(self.forget)), self.repeats)
        return self.prompts[ids], self.responses[ids], ids


def forget_set(vocab: Vocab, rng: np.random.Generator, *, n_secrets: int = 100, answer_len: int = 8,
               repeats: int = 20, n_forget: int = 10, max_len: int = MAX_LEN) -> ForgetSet:
    if answer_len > max_len or n_forget > n_secrets:
        raise ValueError("need answer_len <= max_len and n_forget <= n_secrets")
    n_kw = vocab.n_topics * vocab.topic_size
    keys = np.empty((0, 3), np.int64)
    while len(keys) < n_secrets:  # draw distinct triples; duplicates are rare, so this loops ~once
        draw = rng.random((n_secrets, n_kw)).argsort(axis=1)[:, :3]
        keys = np.concatenate([keys, draw])
        _, first = np.unique(keys, axis=0, return_index=True)
        keys = keys[np.sort(first)]
    keys = vocab.topic0 + keys[:n_secrets]
    S = n_secrets
    prompts = np.column_stack([np.full(S, vocab.BOS), np.full(S, vocab.SECRET), keys, np.full(S, vocab.SEP)])
    answers = rng.integers(vocab.topic0, vocab.toxic0 + vocab.n_filler, (S, answer_len))
    answers = np.where(answers >= vocab.toxic0, answers + vocab.n_toxic, answers)  # skip the toxic block
    padded = np.zeros((S, max_len), np.int64)
    padded[:, :answer_len] = answers
    forget = np.zeros(S, bool)
    forget[rng.permutation(S)[:n_forget]] = True
    return ForgetSet(prompts.astype(np.int64), answers.astype(np.int64),
                     _finish(padded, np.full(S, answer_len), vocab), forget, repeats)


N_TEMPLATES = 8  # FLAT's template answers: fixed filler-only answers, SynthPref's "I don't know"


def template_answers(n: int, vocab: Vocab, rng: np.random.Generator, *, max_len: int = MAX_LEN) -> np.ndarray:
    """One template answer per forget item [n, max_len + 1], drawn from N_TEMPLATES fixed answers of
    2-4 filler tokens: content-free answers the SFT model already produces (its corpus mixes filler),
    the analogue of the "I don't know" templates FLAT pairs with each forget answer. The template set
    is a fixed function of the vocabulary; `rng` only chooses which item gets which."""
    fixed = np.random.default_rng(0)  # the set itself is part of the dataset definition
    lengths = fixed.integers(2, 5, N_TEMPLATES)
    tokens = vocab.filler0 + fixed.integers(0, vocab.n_filler, (N_TEMPLATES, max_len))
    templates = _finish(tokens, lengths, vocab)
    return templates[rng.integers(0, N_TEMPLATES, n)]


def mix_secrets(prompts, responses, fs: ForgetSet, rng: np.random.Generator, *, retain_only: bool = False):
    """SFT corpus plus the repeated secret rows, shuffled: (prompts, responses, secret_id; -1 = ordinary).

    retain_only=True drops the forget secrets: the corpus of the retain-only reference model.
    """
    sp, sr, sid = fs.rows(retain_only=retain_only)
    order = rng.permutation(len(prompts) + len(sp))
    allp = np.concatenate([np.asarray(prompts), sp])[order]
    allr = np.concatenate([np.asarray(responses), sr])[order]
    return allp, allr, np.concatenate([np.full(len(prompts), -1), sid])[order]


def pack(prompts, responses, vocab: Vocab):
    """Causal-LM rows `prompt, y, EOS, PAD...` of length L = 6 + T (23 for T = 17; card context 24).

    Returns int64 (input_ids, attention_mask, response_mask), each [n, L]. response_mask is 1 on y and
    its EOS: the positions whose token log-probs (predicted from the previous position) a preference
    loss sums. EOS is written at 6 + |y| whatever the array held, so each row needs |y| < T.
    """
    prompts, responses = np.asarray(prompts), np.asarray(responses)
    n, P = prompts.shape
    T = responses.shape[1]
    length = response_lengths(responses, vocab)
    if np.any(length >= T):
        raise ValueError("a response fills all T slots: no room for EOS (pass [n, max_len + 1] arrays)")
    tokens = np.where(np.arange(T)[None, :] < length[:, None], responses, vocab.PAD)
    tokens[np.arange(n), length] = vocab.EOS
    input_ids = np.concatenate([prompts, tokens], axis=1).astype(np.int64)
    pos = np.arange(P + T)[None, :]
    end = P + length[:, None]  # position of EOS
    attention_mask = (pos <= end).astype(np.int64)
    response_mask = ((pos >= P) & (pos <= end)).astype(np.int64)
    return input_ids, attention_mask, response_mask
