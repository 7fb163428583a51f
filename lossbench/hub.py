"""Pretrained models for the preference track's real configuration (docs/methods/README.md, preference track,
"Real" configuration): policies, the judge reward model, and capability retention with lm-eval.

Everything takes a hub id or a local folder (`save_pretrained` layout); offline use needs only the
local copy (HF_HUB_OFFLINE=1). Loading runs under `seeded_build` because weights missing from a
checkpoint (a fresh classification head) are initialised from the global torch RNG, which this
project never consumes unseeded.
"""
from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from lossbench.lm import eval_mode
from lossbench.seeding import _GLOBAL_RNG_LOCK, seeded_build


def load_tokenizer(name_or_path):
    """AutoTokenizer with a pad token: batched forwards (lm-eval, the judge) need one, so a missing
    pad token becomes EOS, the usual choice. lossbench's own code never reads it (masks say what is
    padding; `data.hub_preference.filler_pad_id` picks the filler its arrays use)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name_or_path)
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError(f"{name_or_path}: the tokenizer has neither a pad nor an EOS token")
        tok.pad_token = tok.eos_token
    return tok


def _no_dropout(config):
    """Zero every dropout rate in a model config before construction (as TRL's disable_dropout): dropout
    draws from the global RNG and would make π_θ ≠ π_ref at step 0 of DPO-style training (lossbench.lm)."""
    for key, value in config.to_dict().items():
        if isinstance(value, float) and ("dropout" in key or "pdrop" in key):
            setattr(config, key, 0.0)
    return config


def load_causal_lm(name_or_path, *, device="cpu", dtype=torch.float32):
    """(model, tokenizer): AutoModelForCausalLM with dropout off, in eval mode on `device`, and its
    AutoTokenizer; a tokenizer without a pad token gets pad = EOS (see `load_tokenizer`), and the model
    config's pad_token_id follows it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    tok = load_tokenizer(name_or_path)
    config = _no_dropout(AutoConfig.from_pretrained(name_or_path))
    model = seeded_build(lambda: AutoModelForCausalLM.from_pretrained(name_or_path, config=config, dtype=dtype), 0)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return model.to(device).eval(), tok


class RewardJudge:
    """A scalar reward model (AutoModelForSequenceClassification, one label), e.g.
    OpenAssistant/reward-model-deberta-v3-large-v2, the real configuration's judge/gold reward r*.

    A prompt is a string (one user turn) or the conversation before the answer as chat messages.
    Input: the tokenizer's chat template over [prompt turns, assistant: response] when it has one;
    otherwise the (prompt, response) text pair, which is how the OpenAssistant reward models are
    queried on their model cards (tokenizer(question, answer): [CLS] q [SEP] a [SEP]), a
    conversation's turns joined by blank lines. Long inputs are truncated to the model's maximum
    length."""

    def __init__(self, name_or_path, device="cpu", dtype=torch.float32):
        from transformers import AutoModelForSequenceClassification

        self.tokenizer = load_tokenizer(name_or_path)
        self.model = seeded_build(
            lambda: AutoModelForSequenceClassification.from_pretrained(name_or_path, dtype=dtype), 0)
        if self.model.config.num_labels != 1:
            raise ValueError(f"{name_or_path}: a reward model has one output, this one has "
                             f"{self.model.config.num_labels} labels")
        if self.model.config.pad_token_id is None:  # decoder RMs pool the last non-pad token
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(device).eval()
        self.device = device
        limits = [self.tokenizer.model_max_length, getattr(self.model.config, "max_position_embeddings", None)]
        self.max_length = min(x for x in limits if x)

    def _encode(self, prompts, responses):
        tok, common = self.tokenizer, dict(padding=True, truncation=True, max_length=self.max_length,
                                           return_tensors="pt")
        turns = [[{"role": "user", "content": p}] if isinstance(p, str) else list(p) for p in prompts]
        if tok.chat_template is None:
            return tok(["\n\n".join(m["content"] for m in t) for t in turns], list(responses), **common)
        texts = [tok.apply_chat_template(t + [{"role": "assistant", "content": r}], tokenize=False)
                 for t, r in zip(turns, responses)]
        return tok(texts, add_special_tokens=False, **common)

    @torch.no_grad()
    def score(self, prompt_texts, response_texts, batch_size=16) -> np.ndarray:
        """Rewards r*(x, y) [N] float64, deterministic (eval mode, no sampling)."""
        if len(prompt_texts) != len(response_texts):
            raise ValueError(f"{len(prompt_texts)} prompts but {len(response_texts)} responses")
        out = []
        for i in range(0, len(prompt_texts), batch_size):
            enc = self._encode(prompt_texts[i:i + batch_size], response_texts[i:i + batch_size]).to(self.device)
            out.append(self.model(**enc).logits[:, 0].float().cpu())
        return torch.cat(out).double().numpy() if out else np.zeros(0)


@contextlib.contextmanager
def _global_rng_restored():
    """lm-eval seeds python's, numpy's and torch's global RNGs (simple_evaluate's *_seed arguments):
    hold the project's global-RNG lock and give the caller its states back afterwards."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=devices):
        py, npy = random.getstate(), np.random.get_state()
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def flatten_results(results: dict) -> dict[str, float]:
    """lm-eval's {task: {"acc,none": v, "acc_stderr,none": s, ...}} as {"task/acc": v, ...}; a
    filter other than "none" is kept as "task/metric[filter]"; non-numeric entries are dropped."""
    flat = {}
    for task, metrics in results.items():
        for key, value in metrics.items():
            metric, _, filt = key.partition(",")
            if not filt or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            flat[f"{task}/{metric}" + ("" if filt == "none" else f"[{filt}]")] = float(value)
    return flat


@contextlib.contextmanager
def _without_env_report():
    """simple_evaluate ends by collecting torch's environment report (pip, nvidia-smi and other
    subprocesses: 0.6 s of a 5 s smoke LM run here), which only its unused results header holds;
    run.json records the versions. Skipped for the call, restored after."""
    import lm_eval.evaluator as ev

    saved = getattr(ev, "add_env_info", None)
    if saved is None:  # a future lm-eval without the hook: nothing to skip
        yield
        return
    ev.add_env_info = lambda results: None
    try:
        yield
    finally:
        ev.add_env_info = saved


def capability_retention(model, tokenizer, tasks, *, limit=None, include_path=None, device="cpu",
                         batch_size=8) -> dict[str, float]:
    """lm-evaluation-harness scores of an in-memory model, flat {task/metric: value} (metric 6).

    `tasks`: lm-eval task names (arc_easy, hellaswag, ...). With `include_path` only the tasks
    defined there are registered (local YAML tasks, offline); otherwise lm-eval's built-in ones.
    `limit`: examples per task (int) or a fraction. The model's train/eval mode and the caller's
    global RNG states are restored afterwards."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    manager = TaskManager(include_path=include_path, include_defaults=include_path is None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        where = f"in {include_path}" if include_path is not None else "among lm-eval's tasks"
        raise ValueError(f"unknown lm-eval tasks {unknown} {where}")
    with _global_rng_restored(), eval_mode(model):
        lm = HFLM(pretrained=model, tokenizer=tokenizer, device=device, batch_size=batch_size)
        with _without_env_report():
            out = lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit,
                                          log_samples=False)
    return flatten_results(out["results"])
