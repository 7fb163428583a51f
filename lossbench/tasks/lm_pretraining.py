"""The LM-pretraining task: a causal LM trained under one token budget, methods that reweight
samples, tokens or domains, or select data (docs/methods/README.md, LM-pretraining track).

Stages (workflows/lm_pretraining.smk): prepare the corpus (data.lm_corpus / data.hub_corpus) →
[reference LM per (protocol, dataset, seed), for methods that need one] → train(method, variant,
seed) → metrics. Every method of a seed shares the model init, the data order stream and the
held-out chunks, so comparisons with the uniform baseline are paired.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lossbench import data
from lossbench import methods
from lossbench import io

PROTOCOL_SCHEMA = "protocol_lm_pretraining"
METHOD_KINDS = ("sample_weight", "token_weight", "token_penalty", "reweight", "sampler", "selection")
SELECTION = {"metric": "val/loss", "higher_is_better": False}  # a sweep's variant (report/selection.py)
REFERENCE_NEEDS = {"ref_losses", "ref_scores", "chunk_features", "target_features"}


def artefacts(run: dict, out_dir) -> list[str]:
    """What train_run writes (train.json records their sha256): curves, final scores, and the local
    lm-eval task files where the protocol runs them."""
    names = ["curves.csv", "final.json"]
    lm_eval = run["protocol"]["eval"].get("lm_eval") or {}
    tasks_dir = Path(out_dir) / "lm_eval_tasks"
    if lm_eval.get("local", False) and tasks_dir.is_dir():
        names += sorted(f"lm_eval_tasks/{p.name}" for p in tasks_dir.iterdir() if p.is_file())
    return names


def needs_reference(method: str) -> bool:
    spec = methods.get(method)
    return spec.kind == "token_weight" or bool(REFERENCE_NEEDS & set(spec.needs))


def check_protocol(proto: dict, where: str, track: dict) -> None:
    from lossbench.config import ConfigError, require_dataset_task

    require_dataset_task(proto, where, "lm_pretraining")
    uses_ref = [m for m in track["methods"] if needs_reference(m)]
    if uses_ref and "reference" not in proto:
        raise ConfigError(f"{where}: {uses_ref} need a reference LM: add a reference block "
                          "({steps, checkpoints, projection})")
    selectors = [m for m in track["methods"] if methods.get(m).kind == "selection"]
    if selectors and "selection" not in proto:
        raise ConfigError(f"{where}: {selectors} select data: add selection: {{ratio}}")
    if proto["eval"]["every"] > proto["budget"]["steps"]:
        raise ConfigError(f"{where}/eval/every ({proto['eval']['every']}) exceeds budget/steps")


def prepared_path(dataset: str) -> str:
    return f"resources/data/{data.source_of(dataset)}/prepared.npz"


def reference_path(stage_dir, dataset: str) -> str:
    return f"{stage_dir}/reference_{dataset}.npz"


def train_inputs(run: dict, stage_dir, profile: str) -> dict:
    inputs = {"data": prepared_path(run["dataset"])}
    if needs_reference(run["method"]):
        inputs["reference"] = reference_path(stage_dir, run["dataset"])
    return inputs


def eval_inputs(run: dict, run_dir, stage_dir) -> dict:
    return {}  # train_run writes final.json beside train.json


def shared_seed(run: dict, purpose: str) -> int:
    """A seed shared by every method of (track, dataset, seed): init and data order are paired."""
    from lossbench.seeding import derive_seed

    return derive_seed(run["seeds"]["data"], purpose)


def build_reference(track: str, proto: dict, seed: int, dataset: str, data_path, out_path, device: str = "cpu") -> None:
    """The reference stage (lossbench.lm_reference) for one (protocol, dataset, seed)."""
    from lossbench.data import lm_corpus
    from lossbench import lm_reference
    from lossbench.config import data_seed as run_data_seed
    from lossbench.lm_pretrain import load_corpus
    from lossbench.runner import resolve_device, run_logger

    device = resolve_device(device)
    log = run_logger(Path(out_path).with_suffix(".log"))
    io.check_sidecar(data_path)  # the prepared corpus the prepare step recorded
    arrays = io.read_npz(data_path)
    data_seed = run_data_seed(track, dataset, seed)  # the runs' seeds["data"]: same pool and held-out chunks
    corpus = load_corpus(arrays, proto, data_seed, device)
    vocab = len(lm_corpus.load_tokenizer(arrays))
    lm_reference.build_reference(corpus, vocab, proto, data_seed, out_path, log.info)


def _model(proto: dict, vocab: int, seed: int, device):
    from lossbench.lm import build_causal_lm

    return build_causal_lm(proto["model"], vocab, seed).to(device)


def train_run(run: dict, inputs: dict, out_dir: Path, device: str, log) -> dict:
    import torch

    from lossbench.data import lm_corpus
    from lossbench.lm_pretrain import FLAGS, load_corpus, train_lm

    spec, hp, proto = methods.get(run["method"]), run["hparams"], run["protocol"]
    arrays = io.read_npz(inputs["data"])
    corpus = load_corpus(arrays, proto, run["seeds"]["data"], device)
    tokenizer = lm_corpus.load_tokenizer(arrays)
    model = _model(proto, len(tokenizer), shared_seed(run, "init"), device)
    features = {"num_chunks": len(corpus.train), "seed": shared_seed(run, "selection")}
    ref_logp = None
    if "reference" in inputs:
        ref = io.read_npz(inputs["reference"])
        features.update(ref)
        ref_logp = torch.as_tensor(ref["ref_logp"], dtype=torch.float32, device=device)
    log.info(f"{len(corpus.train)} pool chunks of {corpus.train.shape[1] - 1} tokens, domains "
             f"{dict(zip(corpus.domain_names, corpus.domain_counts().int().tolist()))}")
    res = train_lm(model, corpus, spec, hp, proto, order_seed=shared_seed(run, "order"), features=features,
                   ref_logp=ref_logp, log=log.info)
    keys = {k: run[k] for k in ("track", "dataset", "method", "variant", "seed")}
    io.write_csv(out_dir / "curves.csv", pd.DataFrame([{**keys, **row} for row in res.curves],
                                                      columns=list(keys) + ["step", "tokens", "metric", "value"]))
    final = dict(res.final)
    if res.status == "ok" and proto["eval"].get("lm_eval"):
        final.update(_lm_eval(model, tokenizer, arrays, proto["eval"]["lm_eval"], out_dir, run, device))
    io.write_json(out_dir / "final.json", final)
    log.info(f"kept {res.kept_chunks} chunks {res.kept_by_flag}; {res.tokens_per_second:.0f} tokens/s")
    return {"status": res.status, "diverged_at_step": res.diverged_at_step, "steps": res.steps,
            "tokens": res.tokens, "train_seconds": res.train_seconds, "tokens_per_second": res.tokens_per_second,
            "pool_chunks": len(corpus.train), "kept_chunks": res.kept_chunks, "kept_by_flag": res.kept_by_flag,
            "pool_by_flag": {f: int((corpus.flag == i).sum()) for i, f in enumerate(FLAGS)},
            "n_params": sum(p.numel() for p in model.parameters()), "loss_impl": res.loss_impl}


def _lm_eval(model, tokenizer, arrays, cfg: dict, out_dir: Path, run: dict, device) -> dict:
    """lm-eval scores of the trained in-memory model: the local tasks built from held-out text
    (embedded corpus) or lm-eval's own task names (hub corpora)."""
    from lossbench.data import lm_corpus
    from lossbench.hub import capability_retention

    include = None
    if cfg.get("local", False):
        include = out_dir / "lm_eval_tasks"
        lm_corpus.write_lm_eval_tasks(arrays, include, seed=shared_seed(run, "lm_eval"), n_docs=cfg["docs"])
    scores = capability_retention(model, tokenizer, cfg["tasks"], limit=cfg.get("limit"), include_path=include,
                                  device=device)
    return {f"lm_eval/{k}": v for k, v in scores.items()}


def metric_names(info: dict) -> list[str]:
    return ["val/loss", "test/loss", "test/worst_domain_loss"]


def evaluate_run(run_dir: Path, info: dict):
    final = io.read_json(run_dir / "final.json")
    values = {m: float("nan") for m in metric_names(info)}
    values.update({k: float(v) for k, v in final.items()})
    for k, v in final.items():
        if k.endswith("/loss") or "/loss/" in k:
            values[k.replace("loss", "ppl", 1)] = float(np.exp(v))
    values["train/tokens_per_second"] = info["tokens_per_second"]
    values["train/kept_fraction"] = info["kept_chunks"] / info["pool_chunks"]
    # of each ground-truth kind of chunk (clean, redundant, noise), the fraction the run trains on
    for flag, n in info["pool_by_flag"].items():
        values[f"train/kept_{flag}"] = info["kept_by_flag"][flag] / n if n else float("nan")
    return values, None
