"""The LM track's reference stage: one small LM per (protocol, dataset, seed) whose checkpoints and
features drive the methods that need a reference (docs/methods/README.md, LM-pretraining track).

A reference LM is trained uniformly on the run pool for `reference.steps`, and at `checkpoints`
geometrically spaced steps we record, for every pool chunk, its mean token loss (PreSelect's
per-model losses) and the checkpoint's held-out score (minus its mean validation loss over
domains: PreSelect's "downstream" ranking). The final checkpoint gives PRIOR's reference log-prob of
every target token (card L2 option (b), "a small reference LM trained once on the train split")
and TAROT's features: the LM-head gradient of each chunk's loss under a Kronecker-factored Gaussian
projection (card L5's "last-layer-only gradient" ablation), for the pool and for the validation
chunks (the target set). Everything is written to one .npz.
"""
from __future__ import annotations

import numpy as np
import torch

from lossbench import io
from lossbench.lm import build_causal_lm, eval_mode
from lossbench.lm_pretrain import domain_losses, forward_losses, train_lm
from lossbench.seeding import derive_seed, generator


def checkpoint_steps(total: int, n: int) -> list[int]:
    """`n` distinct steps from about total/2^(n-1) up to `total`, geometrically spaced: early
    checkpoints differ most, so their rankings on chunks carry the most information."""
    steps = np.unique(np.round(np.geomspace(max(1, total / 2 ** (n - 1)), total, n)).astype(int))
    if len(steps) < n:
        raise ValueError(f"reference: {n} distinct checkpoints need more than {total} steps")
    return steps.tolist()


@torch.no_grad()
def chunk_losses(model, chunks, impl="torch", batch: int = 256) -> torch.Tensor:
    """Per-token losses [N, L] of every chunk's targets (eval mode, no grad)."""
    with eval_mode(model):
        return torch.cat([forward_losses(model, chunks[i:i + batch], impl)[0] for i in range(0, len(chunks), batch)])


@torch.no_grad()
def head_gradient_features(model, chunks, proj_a, proj_b, batch: int = 128) -> torch.Tensor:
    """Projected LM-head gradient of each chunk's mean loss: with g_t = softmax(z_t) − e_{y_t} and
    h_t the final hidden state, ∂ℓ/∂W = (1/L)·Σ_t g_t h_tᵀ, and Aᵀ(∂ℓ/∂W)B = (1/L)·Σ_t (Aᵀg_t)(Bᵀh_t)ᵀ
    [a, b] is computed without forming the V×D gradient. Returned flattened [N, a·b] float32."""
    weight = model.get_output_embeddings().weight
    feats = []
    with eval_mode(model):
        for i in range(0, len(chunks), batch):
            c = chunks[i:i + batch]
            h = model.base_model(input_ids=c[:, :-1], use_cache=False).last_hidden_state.float()
            probs = (h @ weight.float().T).softmax(-1)
            ga = probs @ proj_a - proj_a[c[:, 1:]]  # Aᵀ(p − e_y): [B, L, a]
            hb = h @ proj_b  # [B, L, b]
            feats.append(torch.einsum("bla,blc->bac", ga, hb).flatten(1) / (c.shape[1] - 1))
    return torch.cat(feats)


def build_reference(corpus, vocab_size: int, proto: dict, seed: int, out_path, log=lambda m: None) -> None:
    from lossbench import methods

    ref = proto["reference"]
    device = corpus.train.device
    impl = proto.get("loss_impl", "torch")
    model = build_causal_lm(ref.get("model", proto["model"]), vocab_size, derive_seed(seed, "reference_init")).to(device)
    ref_proto = {**proto, "budget": {**proto["budget"], "steps": ref["steps"]},
                 "eval": {**proto["eval"], "every": ref["steps"]}}
    at = set(checkpoint_steps(ref["steps"], ref["checkpoints"]))
    losses, scores = [], []

    def record(step, m):
        if step in at:
            losses.append(chunk_losses(m, corpus.train, impl).mean(1).cpu())
            val = domain_losses(m, corpus.val, corpus.val_domain, corpus.n_domains, impl)
            scores.append(-float(np.nanmean(val)))
            log(f"reference checkpoint at step {step}: val loss {-scores[-1]:.4f}")

    res = train_lm(model, corpus, methods.get("uniform"), {}, ref_proto, order_seed=derive_seed(seed, "reference_order"),
                   on_step=record, log=log)
    if res.status != "ok":
        raise FloatingPointError(f"the reference LM diverged at step {res.diverged_at_step}")
    g = generator(derive_seed(seed, "reference_projection"))
    a, b = ref["projection"]
    d = model.config.hidden_size
    proj_a = (torch.randn(vocab_size, a, generator=g) / a ** 0.5).to(device)
    proj_b = (torch.randn(d, b, generator=g) / b ** 0.5).to(device)
    token_logp = -chunk_losses(model, corpus.train, impl)
    io.write_npz(out_path, ref_losses=torch.stack(losses, 1).numpy(), ref_scores=np.array(scores),
                 ref_logp=token_logp.cpu().numpy().astype(np.float16),
                 chunk_features=head_gradient_features(model, corpus.train, proj_a, proj_b).cpu().numpy(),
                 target_features=head_gradient_features(model, corpus.val, proj_a, proj_b).cpu().numpy(),
                 checkpoint_steps=np.array(sorted(at)))
