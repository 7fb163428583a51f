"""Tiny causal LMs and the one shared log-prob / loss / sampling layer.

Every preference method reads per-token log-probs from `token_logps` (never its own forward pass),
and every LM-pretraining method reads its per-example loss from `lm_loss`, so all methods see the
same float32 numbers. These are plain functions: reduction, weighting and optimisers are the
trainer's.

Conventions:
- Sequences are `prompt + response`, right-padded. Positions are `0..L-1` (transformers v5 does not
  derive position ids from `attention_mask`), so left padding would silently shift them; the masks
  are checked. Variable-length prompts come right-padded with a `prompt_mask` (1 = real token);
  packing moves their padding behind the response, and `sample` passes explicit position ids.
- Per-token tensors are [B, L] aligned with `input_ids`: entry t scores token t given tokens < t.
  Nothing predicts token 0, so masks must be 0 there.
- No global RNG: models are built under `seeded_build`, sampling takes an explicit generator, and
  dropout defaults to 0 (torch's dropout draws from the global RNG, which would break the
  no-global-RNG rule and thread isolation; it would also make π_θ ≠ π_ref at step 0 of DPO-style
  training and make log-probs depend on call order).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from lossbench.seeding import seeded_build

# ----------------------------------------------------------------------------------------------
# Models

# Special-token ids are left unset: the benchmark's tokens are its own, and GPT-2's default id 50256
# lies outside a tiny vocabulary (transformers v5 warns). Attention is pinned, not left to the
# library default.
_COMMON = dict(bos_token_id=None, eos_token_id=None, pad_token_id=None, attn_implementation="sdpa")


def _gpt2(c: dict, vocab_size: int):
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=c["context"], n_embd=c["d_model"], n_layer=c["layers"],
        n_head=c["heads"], n_inner=c["d_ff"],
        resid_pdrop=c["dropout"], embd_pdrop=c["dropout"], attn_pdrop=c["dropout"],
        # GPT-2's tanh GELU through torch's fused kernel: same function as the default "gelu_new",
        # whose python formula cost ~20% of a tiny model's step on CPU (profiled)
        activation_function="gelu_pytorch_tanh", **_COMMON,
    )
    return config, GPT2LMHeadModel


def _llama(c: dict, vocab_size: int):
    # Tied embeddings as in the LM card's Llama-style config (and like GPT-2), so the two archs
    # differ in blocks (RMSNorm, RoPE, SwiGLU), not in parameter layout of the embeddings.
    config = LlamaConfig(
        vocab_size=vocab_size, max_position_embeddings=c["context"], hidden_size=c["d_model"],
        num_hidden_layers=c["layers"], num_attention_heads=c["heads"], intermediate_size=c["d_ff"],
        attention_dropout=c["dropout"], tie_word_embeddings=True, **_COMMON,
    )
    return config, LlamaForCausalLM


ARCHS = {"gpt2": _gpt2, "llama": _llama}
_REQUIRED = ("arch", "d_model", "layers", "heads", "context")
_OPTIONAL = {"d_ff": None, "dropout": 0.0}  # d_ff None -> 4 * d_model


def _resolve(cfg: dict) -> dict:
    unknown = set(cfg) - set(_REQUIRED) - set(_OPTIONAL)
    missing = set(_REQUIRED) - set(cfg)
    if unknown or missing:
        raise ValueError(f"model cfg: unknown keys {sorted(unknown)}, missing {sorted(missing)}; "
                         f"required {list(_REQUIRED)}, optional {sorted(_OPTIONAL)}")
    if cfg["arch"] not in ARCHS:
        raise ValueError(f"unknown arch {cfg['arch']!r}; valid: {sorted(ARCHS)}")
    c = {**_OPTIONAL, **cfg}
    c["d_ff"] = c["d_ff"] or 4 * c["d_model"]
    return c


def build_causal_lm(cfg: dict, vocab_size: int, seed: int):
    """A randomly initialised `transformers` causal LM, identical for identical (cfg, vocab, seed).

    HF initialisation draws from the global RNG, so it runs under `seeded_build` (seeded, locked,
    and the caller's RNG state restored).
    """
    c = _resolve(cfg)
    config, model_cls = ARCHS[c["arch"]](c, vocab_size)
    return seeded_build(lambda: model_cls(config), seed)


# ----------------------------------------------------------------------------------------------
# Log-probs and losses


def _check_masks(input_ids, attention_mask, mask):
    if not (input_ids.shape == attention_mask.shape == mask.shape):
        raise ValueError(f"shape mismatch: input_ids {tuple(input_ids.shape)}, attention_mask "
                         f"{tuple(attention_mask.shape)}, mask {tuple(mask.shape)}")
    a, m = attention_mask.bool(), mask.bool()
    if m[:, 0].any():
        raise ValueError("mask[:, 0] is set, but nothing predicts the first token")
    if (m & ~a).any():
        raise ValueError("mask marks padding positions (attention_mask == 0)")
    if (a[:, 1:] & ~a[:, :-1]).any():
        raise ValueError("attention_mask must be right-padded: positions are taken as 0..L-1")


def token_logps(model, input_ids, attention_mask, response_mask, *, return_logits=False):
    """log π(x_t | x_<t) at positions where `response_mask` is set, 0 elsewhere: [B, L] float32.

    With `return_logits=True` also returns the full next-token log-softmax [B, L, V] (row t is the
    distribution of token t; row 0 is zeros), for `token_kl`. Logits are upcast before the softmax
    so bf16 autocast never reaches the loss math.
    """
    _check_masks(input_ids, attention_mask, response_mask)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    logp = logits[:, :-1].float().log_softmax(-1)
    tok = F.pad(logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1), (1, 0))
    tok = torch.where(response_mask.bool(), tok, torch.zeros((), device=tok.device))
    if return_logits:
        return tok, F.pad(logp, (0, 0, 1, 0))
    return tok


def sequence_logps(model, input_ids, attention_mask, response_mask):
    """(Σ_t log π(y_t | s_t) over response tokens [B], response lengths |y| [B] float)."""
    tok = token_logps(model, input_ids, attention_mask, response_mask)
    return tok.sum(-1), response_mask.sum(-1).float()


def token_kl(logp_ref, logp_pol, mask):
    """κ_t = KL(π_ref(·|s_t) ‖ π_θ(·|s_t)) from full log-softmaxes [B, L, V]; 0 where mask is 0.

    Gradients flow into whichever argument is not detached (TDPO/SparsePO: the policy).
    """
    kl = (logp_ref.exp() * (logp_ref - logp_pol)).sum(-1)
    return torch.where(mask.bool(), kl, torch.zeros((), device=kl.device))


def lm_loss(model, input_ids, attention_mask, loss_mask):
    """Per-example mean NLL over the tokens marked in `loss_mask` [B] (the shared LM loss layer).

    Reduction over the batch, weighting and optimisation are the trainer's. Examples with no
    marked token get 0. For plain pretraining use `attention_mask` with column 0 cleared. Methods
    that weight tokens (PRIOR) take the per-token NLL as `-token_logps(...)`.
    """
    total, n = sequence_logps(model, input_ids, attention_mask, loss_mask)
    return -total / n.clamp_min(1)


# ----------------------------------------------------------------------------------------------
# Sampling


@contextlib.contextmanager
def eval_mode(model):
    """Eval mode for the block (no dropout, hence no global-RNG draws), then the caller's mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _check_prompt_mask(prompts, prompt_mask):
    if prompt_mask.shape != prompts.shape:
        raise ValueError(f"prompt_mask {tuple(prompt_mask.shape)} does not match prompts "
                         f"{tuple(prompts.shape)}")
    m = prompt_mask.bool()
    if (m[:, 1:] & ~m[:, :-1]).any():
        raise ValueError("prompt_mask must be right-padded (real tokens first, then padding)")
    if not m[:, 0].all():
        raise ValueError("prompt_mask has an empty prompt: every row needs at least one token")


def _check_prompts(model, prompts, max_new_tokens, eos_id, pad_id, prompt_mask=None):
    if prompts.ndim != 2 or prompts.dtype != torch.long:
        raise ValueError(f"prompts must be a [B, P] long tensor, got {prompts.dtype} "
                         f"{tuple(prompts.shape)}")
    if eos_id == pad_id:
        raise ValueError("eos_id == pad_id: responses could not be told apart from padding")
    if prompt_mask is not None:
        _check_prompt_mask(prompts, prompt_mask)  # padding is what the mask says, whatever its id
    elif (prompts == pad_id).any():
        raise ValueError("prompts contain pad_id: pass prompt_mask for padded prompts")
    context = model.config.max_position_embeddings
    if prompts.shape[1] + max_new_tokens > context:
        raise ValueError(f"prompt length {prompts.shape[1]} + max_new_tokens {max_new_tokens} "
                         f"exceeds the model's context {context}")


def _next_logits(model, ids, cache, **padding):
    """Last-position logits for `ids` appended to the KV cache (which the call extends). `padding`:
    the attention_mask and position_ids of left-padded rows, or nothing for unpadded ones."""
    out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1, **padding)
    return out.logits[:, -1].float()


def _left_padded(prompts, prompt_mask):
    """Right-padded prompts rotated to left padding, so every row's last real token is at column
    P−1 and the next token of all rows comes from one position; returns (ids, mask, lengths)."""
    P = prompts.shape[1]
    lengths = prompt_mask.sum(1)
    idx = (torch.arange(P, device=prompts.device) + lengths[:, None]) % P
    return prompts.gather(1, idx), prompt_mask.gather(1, idx), lengths


def _draw(logits, temperature, generator):
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, -1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def sample(model, prompts, *, max_new_tokens, eos_id, pad_id, temperature=1.0, generator,
           return_logps=False, prompt_mask=None):
    """Ancestral sampling with a KV cache: responses [B, n ≤ max_new_tokens], `pad_id` after EOS.

    Randomness comes only from `generator` (not `model.generate`, which uses the global RNG), so
    the output is a function of (model, prompts, generator state). `temperature=0` is greedy.
    Stops early once every row has emitted EOS. With `return_logps=True` also returns the model's
    (temperature-1) next-token log-softmax at each step [B, n, V]; rows past EOS are meaningless.

    Variable-length prompts: right-padded `prompts` with `prompt_mask` [B, P] (1 = real token).
    They run left-padded with explicit attention mask and position ids (cumsum(mask) − 1:
    transformers does not derive positions from the mask), so each row sees exactly what it would
    see alone. An all-ones mask takes the unpadded path.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    _check_prompts(model, prompts, max_new_tokens, eos_id, pad_id, prompt_mask)
    padded = prompt_mask is not None and not prompt_mask.bool().all()
    done = torch.zeros(prompts.shape[0], dtype=torch.bool, device=prompts.device)
    tokens, logps = [], []
    with eval_mode(model):
        cache = DynamicCache(config=model.config)
        if padded:
            ids, attn, position = _left_padded(prompts, prompt_mask.long())
            logits = _next_logits(model, ids, cache, attention_mask=attn,
                                  position_ids=(attn.cumsum(1) - 1).clamp_min(0))
        else:
            logits = _next_logits(model, prompts, cache)
        for step in range(max_new_tokens):
            if return_logps:
                logps.append(logits.log_softmax(-1))
            nxt = _draw(logits, temperature, generator).masked_fill(done, pad_id)
            tokens.append(nxt)
            done |= nxt == eos_id
            if done.all() or step == max_new_tokens - 1:
                break
            if padded:  # the cached left padding stays masked; each row's position advances by 1
                attn = F.pad(attn, (0, 1), value=1)
                logits = _next_logits(model, nxt[:, None], cache, attention_mask=attn,
                                      position_ids=(position + step)[:, None])
            else:
                logits = _next_logits(model, nxt[:, None], cache)
    responses = torch.stack(tokens, 1)
    return (responses, torch.stack(logps, 1)) if return_logps else responses


def response_mask_of(responses, eos_id):
    """1 on response tokens up to and including the first EOS, 0 on the padding after it. A row
    without EOS is all response (sampling pads only after EOS), so a pad id the model happens to
    sample mid-response still counts as a token."""
    is_eos = (responses == eos_id).long()
    return ((is_eos.cumsum(1) - is_eos) == 0).long()


def pack_rows(prompts, responses, valid, prompt_mask=None):
    """(input_ids, attention_mask, response_mask) [B, P + T] for `token_logps`: each row is the
    prompt's real tokens, then the response tokens marked in `valid` [B, T] (a right-padded mask),
    then padding; positions 0..L−1 as `token_logps` requires.

    Without `prompt_mask` prompts are unpadded and rows are plain concatenations. With it (right-
    padded prompts, 1 = real token) each row is a gather-permutation of [prompt, response]: the
    prompt's padding moves to the end, so no token is invented and the width stays P + T.
    """
    valid = valid.long()
    if prompt_mask is None:
        prompt_mask = torch.ones_like(prompts)
    else:
        _check_prompt_mask(prompts, prompt_mask)
        prompt_mask = prompt_mask.long()
    P, T = prompts.shape[1], responses.shape[1]
    n = prompt_mask.sum(1, keepdim=True)
    j = torch.arange(P + T, device=prompts.device).expand(len(prompts), -1)
    # column j of a row reads: prompt j (j < n), response j − n (n ≤ j < n + T), prompt padding after
    idx = torch.where(j < n, j, torch.where(j < n + T, P + j - n, j - T))
    packed = [torch.cat(pair, 1).gather(1, idx) for pair in
              ((prompts, responses), (prompt_mask, valid), (torch.zeros_like(prompt_mask), valid))]
    return tuple(packed)


def join_prompt_response(prompts, responses, eos_id, prompt_mask=None):
    """(input_ids, attention_mask, response_mask) for `token_logps` from prompts and `sample`-style
    responses (padding only after EOS). Prompts are unpadded, or right-padded with `prompt_mask`
    [B, P] (1 = real token); see `pack_rows`."""
    return pack_rows(prompts, responses, response_mask_of(responses, eos_id), prompt_mask)
