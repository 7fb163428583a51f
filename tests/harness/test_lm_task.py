"""The lm_pretraining task end to end at micro scale on a hub-format corpus (local jsonl in
FineWeb-Edu's layout, prepared by data.hub_corpus like the full profile's corpora): reference stage,
training of each method kind, lm-eval on local tasks, evaluation; paired seeds and determinism."""
import json

import numpy as np
import pytest

from lossbench import data
from lossbench.data import hub_corpus, lm_corpus
from lossbench import io
from lossbench.config import load_track, resolve_run
from lossbench.lm_pretrain import load_corpus
from lossbench.lm_reference import build_reference
from lossbench.runner import run_logger
from lossbench.tasks import lm_pretraining as task

SEQ = 16
WORDS = "the of and a to in is was for on that with by it as at from this be are or an".split()
PROTO = {
    "datasets": ["shakespeare_mix"],  # a registered lm_pretraining dataset; the arrays come from the fixture
    "model": {"arch": "gpt2", "d_model": 16, "layers": 1, "heads": 2, "context": 96},
    "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.01},
    "schedule": {"warmup_steps": 2, "min_lr_ratio": 0.1},
    "budget": {"steps": 8, "batch_size": 8, "grad_clip": 1.0},
    "data": {"pool_chunks": 120},
    "eval": {"every": 4, "chunks_per_domain": 8, "lm_eval": {"tasks": ["shakespeare_cloze"], "local": True,
                                                           "docs": 6, "limit": 6}},
    "reference": {"steps": 8, "checkpoints": 3, "projection": [4, 4]},
    "selection": {"ratio": 0.5},
}
METHODS = ["uniform", "dlsr_linupper", "dlsr_quadratic", "dlsr_extremes", "curriculum", "prior", "zloss",
           "temp_sample", "temp_upweight", "cooldown", "cooldown_linear", "preselect", "tarot", "random_select"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A FineWeb-Edu-like jsonl (domain = int_score) prepared through the hub loader."""
    from transformers import PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("lm_task")
    rng = np.random.default_rng(0)
    lines = lambda n: "\n".join(" ".join(rng.choice(WORDS, 8)) for _ in range(n))  # noqa: E731  (cloze cuts at lines)
    rows = [{"text": lines(rng.integers(8, 14)) + ".", "int_score": 3 + i % 3} for i in range(400)]
    (root / "fw.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = PreTrainedTokenizerFast(tokenizer_object=lm_corpus.train_tokenizer([r["text"] for r in rows], 200),
                                  eos_token=lm_corpus.EOS)
    arrays = hub_corpus.load_corpus("json", split={"val": "train", "test": "train", "train": "train"},
                                    data_files={"train": str(root / "fw.jsonl")}, tokenizer=tok, seq_len=SEQ,
                                    max_tokens={"val": 800, "test": 2500, "train": 5000}, domain_field="int_score",
                                    cache_dir=root / "cache")
    io.write_npz(root / "prepared.npz", **arrays)
    return root


def _track(methods):
    return {"track": "lm_pretraining", "version": 1, "task": "lm_pretraining", "baseline": "uniform",
            "methods": methods, "seeds": [0, 1], "protocols": {"micro": PROTO}, "stats": {"ci": 0.95},
            "method_hparams": {m: {"tau_start": 5.0, "tau_end": 1.0, "switch": 0.5} for m in ("cooldown", "cooldown_linear")}}


@pytest.fixture(scope="module")
def reference(prepared):
    arrays = data.load_prepared(prepared / "prepared.npz")
    run = resolve_run(_track(METHODS), "shakespeare_mix", "uniform", 0)
    corpus = load_corpus(arrays, run["protocol"], run["seeds"]["data"])
    out = prepared / "reference.npz"
    build_reference(corpus, len(lm_corpus.load_tokenizer(arrays)), run["protocol"], run["seeds"]["data"], out)
    return out


def _train(prepared, reference, method, seed=0, name="run"):
    run = resolve_run(_track(METHODS), "shakespeare_mix", method, seed)
    out = prepared / f"{name}_{method}_{seed}"
    out.mkdir(exist_ok=True)
    inputs = {"data": str(prepared / "prepared.npz")}
    if task.needs_reference(method):
        inputs["reference"] = str(reference)
    info = {**run, **task.train_run(run, inputs, out, "cpu", run_logger(out / "train.log"))}
    return out, info


def test_reference_stage_shapes(prepared, reference):
    ref = data.load_prepared(reference)
    n = len(data.load_prepared(prepared / "prepared.npz")["train_tokens"])
    pool = min(n, PROTO["data"]["pool_chunks"])
    assert ref["ref_losses"].shape == (pool, 3) and ref["ref_scores"].shape == (3,)
    assert ref["ref_logp"].shape == (pool, SEQ) and (ref["ref_logp"] <= 0).all()
    assert ref["chunk_features"].shape == (pool, 16) and ref["target_features"].shape[1] == 16
    assert ref["ref_scores"][-1] > ref["ref_scores"][0]  # later checkpoints fit the held-out text better


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_and_evaluates(prepared, reference, method, one_torch_thread):
    out, info = _train(prepared, reference, method)
    assert info["status"] == "ok" and info["tokens"] == 8 * 8 * SEQ
    values, per_class = task.evaluate_run(out, info)
    assert per_class is None
    for key in ("val/loss", "test/loss", "test/worst_domain_loss", "test/ppl", "train/tokens_per_second",
                "lm_eval/shakespeare_cloze/acc", "train/kept_fraction"):
        assert np.isfinite(values[key]), key
    assert values["test/loss"] <= values["test/worst_domain_loss"]
    kept = 0.5 if info["method"] in ("preselect", "tarot", "random_select") else 1.0
    assert values["train/kept_fraction"] == pytest.approx(kept, abs=0.01)


def test_runs_are_deterministic_and_paired(prepared, reference, one_torch_thread):
    a, _ = _train(prepared, reference, "dlsr_linupper", name="a")
    b, _ = _train(prepared, reference, "dlsr_linupper", name="b")
    assert io.read_json(a / "final.json") == io.read_json(b / "final.json")
    u, _ = _train(prepared, reference, "uniform", name="a")
    ca, cu = (open(d / "curves.csv").read().splitlines() for d in (a, u))
    assert ca[0] == cu[0] and ca != cu  # same layout, different methods
    # the same init for every method of a seed: before any step they agree (burn-in = plain mean)
    ra = resolve_run(_track(METHODS), "shakespeare_mix", "dlsr_linupper", 0)
    ru = resolve_run(_track(METHODS), "shakespeare_mix", "uniform", 0)
    assert task.shared_seed(ra, "init") == task.shared_seed(ru, "init")
    assert task.shared_seed(ra, "init") != task.shared_seed(resolve_run(_track(METHODS), "shakespeare_mix", "uniform", 1), "init")


def test_protocol_checks_name_what_is_missing():
    from lossbench.config import ConfigError

    proto = {k: v for k, v in PROTO.items() if k != "reference"}
    with pytest.raises(ConfigError, match=r"\['prior'\] need a reference LM"):
        task.check_protocol(proto, "micro", _track(["uniform", "prior"]))
    with pytest.raises(ConfigError, match="is a classification dataset"):
        task.check_protocol({**PROTO, "datasets": ["mnist1d_lt100"]}, "micro", _track(["uniform"]))
