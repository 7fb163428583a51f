"""The preference task: the DPO family on a testbed with a known gold reward (SynthPref).

Stages, each a Snakemake rule with its own cached file (workflows/preference.smk):
    sft → sample → label(ε) [→ reward model] → train(method, variant, seed) → sample_eval → metrics
Per-seed stages live in `stages/<track>/<protocol>/seed<s>/` and are shared by every method and
variant of that seed, so method comparisons are paired. The variants of a method (its β grid) are
selected on validation prompts by the report (report/preference.py), which reports test prompts.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

import data
import data.synthpref
import methods
from lossbench import io

PROTOCOL_SCHEMA = "protocol_preference"
METHOD_KINDS = ("pairwise", "listwise", "unpaired", "unlearning")  # = lossbench.preference.PREFERENCE_KINDS
SPO_DEGREES = 4  # SPO-style degradation degrees: delete 0, 1/3, 2/3, all of y_w's keywords (card M13)
LENGTH_EDGES = (0, 4, 8, 12, 18)


def check_protocol(proto: dict, where: str, track: dict) -> None:
    from lossbench.config import ConfigError, unknown_name, variants

    for d in proto["datasets"]:
        entry = data.dataset_entry(d)
        if entry.get("task") != "preference":
            raise ConfigError(f"{where}/datasets: {d!r} is not a preference dataset")
    guide = proto.get("guide")
    needs_guide = [m for m in track["methods"] if "guide_token_logps" in methods.get(m).needs]
    if needs_guide and guide is None:
        raise ConfigError(f"{where}: {needs_guide} need a guidance policy: set guide: {{method, variant}}")
    if guide is not None:
        if guide["method"] not in track["methods"]:
            raise unknown_name("guide method", guide["method"], track["methods"], f"{where}/guide")
        if methods.get(guide["method"]).kind != "pairwise" or guide["method"] in needs_guide:
            raise ConfigError(f"{where}/guide: {guide['method']!r} must be a pairwise method without a guide")
        if guide["variant"] not in variants(track, guide["method"]):
            raise unknown_name("guide variant", guide["variant"], variants(track, guide["method"]), f"{where}/guide")
        for d, subset in track.get("dataset_methods", {}).items():
            if d in proto["datasets"] and set(needs_guide) & set(subset) and guide["method"] not in subset:
                raise ConfigError(f"{where}: dataset_methods/{d} runs {needs_guide} without their guide {guide['method']!r}")


# ============================================================================================ paths
def stage_files(stage_dir, dataset: str | None = None) -> dict:
    s = Path(stage_dir)
    out = {"sft": s / "sft.pt", "forget": s / "forget.npz", "samples": s / "samples.npz"}
    if dataset:
        out.update(labels=s / f"labels_{dataset}.npz", reward_model=s / f"reward_model_{dataset}.pt")
    return {k: str(v) for k, v in out.items()}


def train_inputs(run: dict, stage_dir, profile: str) -> dict:
    """Files a run trains from: π_ref, samples, labels, plus the hooks its method needs."""
    spec, files = methods.get(run["method"]), stage_files(stage_dir, run["dataset"])
    inputs = {k: files[k] for k in ("sft", "samples", "labels")}
    if spec.kind == "unlearning":
        inputs["forget"] = files["forget"]
    if "rm_margin" in spec.needs:
        inputs["reward_model"] = files["reward_model"]
    if "guide_token_logps" in spec.needs:
        g = run["protocol"]["guide"]
        # the guide's train.json: written after its policy.pt, which sits beside it
        inputs["guide"] = (f"results/{profile}/runs/{run['track']}/{run['dataset']}/{g['method']}/"
                           f"{g['variant']}/seed{run['seed']}/train.json")
    return inputs


def sample_eval_inputs(run: dict, run_dir, stage_dir) -> dict:
    """What pref_sample_eval reads: the run's train.json (its policy.pt sits beside it) and stages."""
    files = stage_files(stage_dir, run["dataset"])
    out = {"info": f"{run_dir}/train.json", **{k: files[k] for k in ("sft", "samples", "labels")}}
    if methods.get(run["method"]).kind == "unlearning":
        out["forget"] = files["forget"]
    return out


def eval_inputs(run: dict, run_dir, stage_dir) -> dict:
    """What evaluate_run reads besides train.json: the sample_eval output and the stages it scores."""
    staged = sample_eval_inputs(run, run_dir, stage_dir)
    return {"eval": f"{run_dir}/eval.npz", **{k: v for k, v in staged.items() if k not in ("info", "sft")}}


def stage_seed_key(run_or_track: str, protocol: str, seed: int) -> tuple:
    return (run_or_track, protocol, seed, "stages")


# ============================================================================================ stages
def build_sft(track: str, protocol_name: str, proto: dict, seed: int, out_dir, device: str = "cpu") -> None:
    from lossbench import synthpref_testbed as tb
    from lossbench.runner import resolve_device, run_logger

    out_dir = Path(out_dir)
    log = run_logger(out_dir / "sft.log")
    tb.build_sft(proto, stage_seed_key(track, protocol_name, seed), out_dir, resolve_device(device), log.info)


def build_samples(track: str, protocol_name: str, proto: dict, seed: int, sft_path, out_path, device: str = "cpu"):
    from lossbench import synthpref_testbed as tb
    from lossbench.runner import resolve_device, run_logger

    log = run_logger(Path(out_path).with_suffix(".log"))
    tb.build_samples(proto, stage_seed_key(track, protocol_name, seed), sft_path, out_path, resolve_device(device),
                     log.info)


def build_labels(track: str, protocol_name: str, proto: dict, seed: int, dataset: str, samples_path, out_path):
    from lossbench import synthpref_testbed as tb

    entry = data.dataset_entry(dataset)
    tb.build_labels(data.load_prepared(samples_path), entry.get("label_noise", 0.0), proto["pairs"]["tau_bt"],
                    stage_seed_key(track, protocol_name, seed) + (dataset,), out_path)


def build_reward_model(track: str, protocol_name: str, proto: dict, seed: int, dataset: str, sft_path,
                       samples_path, labels_path, out_path, device: str = "cpu"):
    from lossbench import synthpref_testbed as tb
    from lossbench.runner import resolve_device, run_logger

    log = run_logger(Path(out_path).with_suffix(".log"))
    tb.build_reward_model(proto, stage_seed_key(track, protocol_name, seed) + (dataset,), sft_path,
                          data.load_prepared(samples_path), data.load_prepared(labels_path), out_path,
                          resolve_device(device), log.info)


# ============================================================================================ training
def _train_data(spec, samples: dict, labels: dict, forget: dict | None):
    from lossbench import preference as pe
    from lossbench import synthpref_testbed as tb

    pairs, _ = tb.labelled_pairs(samples, labels, "train")
    if spec.kind == "pairwise":
        return pairs
    if spec.kind == "unpaired":
        return pe.unpaired_from_pairs(pairs)
    if spec.kind == "listwise":
        return pe.pref_data(samples["train_prompts"], samples["train_responses"], eos_id=tb.VOCAB.EOS,
                            pad_id=tb.VOCAB.PAD, scores=samples["train_rewards"])
    keep = forget["forget"].astype(bool)  # unlearning: the forget secrets and their answers
    return pe.pref_data(forget["prompts"][keep], forget["responses"][keep][:, None], eos_id=tb.VOCAB.EOS,
                        pad_id=tb.VOCAB.PAD)


def _hooks(spec, hp: dict, ref, inputs: dict, run: dict, device: str):
    import torch

    from lossbench import preference as pe
    from lossbench import synthpref_testbed as tb
    from lossbench.seeding import derive_seed
    from methods.sparsepo import SparseTokenMask

    hooks = pe.Hooks(reference=ref)
    seed = derive_seed(run["run_id"], "hooks")
    cfg = run["protocol"]["model"]
    if "guide_token_logps" in spec.needs:
        hooks.guide = tb.frozen_copy(_load_policy(inputs["sft"], Path(inputs["guide"]).with_name("policy.pt"), device))
    if "rm_margin" in spec.needs:
        hooks.reward = tb.load_reward_model(inputs["reward_model"], device)
    if "token_masks" in spec.needs:
        gen = torch.Generator().manual_seed(seed)
        hooks.mask = SparseTokenMask(cfg["d_model"], cfg["layers"], generator=gen).to(device)
        if hp.get("mode") == "indp":
            hooks.mask_d = SparseTokenMask(cfg["d_model"], cfg["layers"], generator=gen).to(device)
    if "degree_logits" in spec.needs:
        hooks.degree_head = pe.build_degree_head(cfg["d_model"], SPO_DEGREES, seed).to(device)
    return hooks


def _load_policy(sft_path, policy_path, device):
    import torch

    from lossbench import synthpref_testbed as tb

    model = tb.load_lm(sft_path, device)
    model.load_state_dict(torch.load(policy_path, map_location=device, weights_only=True))
    return model.eval()


def train_run(run: dict, inputs: dict, out_dir: Path, device: str, log) -> dict:
    import torch

    from lossbench import preference as pe
    from lossbench import synthpref_testbed as tb

    spec, hp, proto = methods.get(run["method"]), run["hparams"], run["protocol"]
    samples, labels = data.load_prepared(inputs["samples"]), data.load_prepared(inputs["labels"])
    forget = data.load_prepared(inputs["forget"]) if "forget" in inputs else None
    policy = tb.load_lm(inputs["sft"], device).train()
    ref = tb.frozen_copy(policy)
    train = _train_data(spec, samples, labels, forget)
    hooks = _hooks(spec, hp, ref, inputs, run, device)
    cache = pe.reference_cache(ref, train)
    n = proto["train"]["probe_pairs"]  # fixed probe sets for the log-likelihood dynamics (metric 4, E2)
    val_pairs, _ = tb.labelled_pairs(samples, labels, "val")
    val_probe = replace(val_pairs.take(np.arange(min(n, len(val_pairs)))), index=None)
    probes = {"train": (train.take(np.arange(min(n, len(train)))), cache),
              "val": (val_probe, pe.reference_cache(ref, val_probe))}
    gen = torch.Generator().manual_seed(run["seeds"]["order"])
    t = proto["train"]
    result = pe.train_policy(spec, hp, policy, cache, train, steps=t["steps"], batch_size=t["batch_size"],
                             lr=proto["optimizer"]["lr"], generator=gen, hooks=hooks, log=log.info,
                             eval_every=t["probe_every"], probes=probes)
    io.write_torch(out_dir / "policy.pt", policy.state_dict())
    keys = {k: run[k] for k in ("track", "dataset", "method", "variant", "seed")}
    io.write_csv(out_dir / "curves.csv", pd.DataFrame([{**keys, **row} for row in result.curves],
                                                      columns=list(keys) + ["step", "metric", "value"]))
    flipped = labels["train_flipped"].mean()
    log.info(f"{len(train)} training rows ({spec.kind}); {flipped:.3f} of train pairs flipped")
    return {"status": result.status, "diverged_at_step": result.diverged_at_step, "steps": result.steps,
            "train_seconds": result.train_seconds,
            "steps_per_second": result.steps / result.train_seconds if result.train_seconds else float("nan"),
            "flipped_fraction": float(flipped), "stage_dir": str(Path(inputs["samples"]).parent)}


# ============================================================================================ sample_eval
def sample_eval(run: dict, inputs: dict, out_path, device: str = "cpu") -> None:
    """eval.npz: policy samples on val/test prompts with gold rewards and KL terms, policy log-probs
    of the held-out pairs, and (unlearning) forget-set likelihoods and greedy answers."""
    import torch

    from data import synthpref as sp
    from lossbench import preference as pe
    from lossbench import synthpref_testbed as tb
    from lossbench.runner import resolve_device
    from lossbench.seeding import derive_seed

    device = resolve_device(device)
    info = io.read_json(inputs["info"])
    if info["status"] != "ok":  # diverged: nothing to sample; evaluation records NaN metrics
        io.write_npz(out_path, ok=np.array(False))
        return
    samples, labels = data.load_prepared(inputs["samples"]), data.load_prepared(inputs["labels"])
    policy = _load_policy(inputs["sft"], Path(inputs["info"]).with_name("policy.pt"), device)
    ref = tb.load_lm(inputs["sft"], device).eval()
    n = run["protocol"]["eval"]["samples_per_prompt"]
    gen = torch.Generator().manual_seed(derive_seed(run["run_id"], "eval_samples"))
    out = {"ok": np.array(True)}
    for split in ("val", "test"):
        prompts = torch.as_tensor(samples[f"{split}_prompts"])
        resp = pe.sample_responses(policy, prompts.to(device), n_samples=n, max_new_tokens=tb.T_RESPONSE,
                                   eos_id=tb.VOCAB.EOS, pad_id=tb.VOCAB.PAD, generator=gen)
        rep = prompts.repeat_interleave(n, 0).to(device)
        delta, exact = pe.kl_terms(policy, ref, rep, resp, tb.VOCAB.EOS)
        resp = resp.cpu().numpy()
        flat = np.repeat(samples[f"{split}_prompts"], n, 0)
        out.update({f"{split}_samples": resp, f"{split}_rewards": sp.gold_reward(flat, resp, tb.VOCAB),
                    f"{split}_kl_sample": delta.numpy(force=True), f"{split}_kl_exact": exact.numpy(force=True)})
        comps = sp.reward_components(flat, resp, tb.VOCAB)
        out.update({f"{split}_comp_{k}": v for k, v in comps.items()})
        pairs, _ = tb.labelled_pairs(samples, labels, split)
        logps, lens = pe.sequence_logps_of(policy, pairs.to(device))
        out.update({f"{split}_pair_logps": logps.numpy(force=True), f"{split}_pair_lens": lens.numpy(force=True)})
    if "forget" in inputs:
        forget = data.load_prepared(inputs["forget"])
        fs = sp.ForgetSet(forget["prompts"], forget["answers"], forget["responses"], forget["forget"], 0)
        out.update(secret_logps=tb.secret_logps(policy, fs, device),
                   secret_greedy=tb.greedy_answers(policy, fs.prompts, fs.answers.shape[1], device))
    io.write_npz(out_path, **out)


# ============================================================================================ metrics
def _oriented(x, swap):
    """[N, 2] columns (y1, y2) reordered to (y_w, y_l)."""
    return np.where(np.asarray(swap)[:, None], x[:, ::-1], x)


def evaluate_run(run_dir: Path, info: dict):
    from lossbench import preference as pe

    ev = data.load_prepared(run_dir / "eval.npz")
    if info["status"] != "ok" or not bool(ev["ok"]):
        return {m: float("nan") for m in metric_names(info)}, None
    stage = Path(info["stage_dir"])
    samples = data.load_prepared(stage / "samples.npz")
    labels = data.load_prepared(stage / f"labels_{info['dataset']}.npz")
    proto = info["protocol"]
    values = {}
    for split in ("val", "test"):
        r_pol, r_sft = ev[f"{split}_rewards"], samples[f"{split}_sft_rewards"]
        kl = float(ev[f"{split}_kl_exact"].mean())
        values.update({f"{split}/{k}": v for k, v in pe.reward_metrics(r_pol, r_sft, tau_bt=proto["pairs"]["tau_bt"]).items()})
        values.update({f"{split}/kl": kl, f"{split}/kl_sample": pe.kl_sample_mean(ev[f"{split}_kl_sample"], 0.0),
                       f"{split}/sqrt_kl": float(np.sqrt(max(kl, 0.0)))})
        swap = ~labels[f"{split}_label"].astype(bool)
        ref = _oriented(samples[f"{split}_ref_logps"], swap)
        lens = _oriented(samples[f"{split}_lens"], swap)
        pol = ev[f"{split}_pair_logps"]
        p_w = np.where(swap, 1 - labels[f"{split}_p"], labels[f"{split}_p"])
        rank = pe.ranking_metrics(pol[:, 0], pol[:, 1], ref[:, 0], ref[:, 1], lens[:, 0], lens[:, 1], p_w,
                                  proto["eval"]["ideal_beta"])
        values.update({f"{split}/{k}": v for k, v in rank.items()})
        values.update({f"{split}/{k}": v for k, v in
                       pe.loglik_change(pol[:, 0], pol[:, 1], ref[:, 0], ref[:, 1], lens[:, 0], lens[:, 1]).items()})
    eos = data.synthpref.Vocab.EOS
    lengths, truncated = pe.response_lengths(ev["test_samples"], eos)
    values.update({f"test/{k}": v for k, v in pe.length_stats(lengths, truncated).items()})
    values["test/sft_mean_length"] = pe.length_stats(*pe.response_lengths(samples["test_sft_samples"], eos))["mean_length"]
    values.update({f"test/{k}": v for k, v in
                   pe.win_rate_by_length(ev["test_rewards"], samples["test_sft_rewards"], lengths, LENGTH_EDGES).items()})
    for comp in ("cov", "ontopic", "ntox", "rep"):
        values[f"test/{comp}"] = float(ev[f"test_comp_{comp}"].mean())
    if "secret_logps" in ev:
        forget = data.load_prepared(stage / "forget.npz")
        f = forget["forget"].astype(bool)
        values.update({f"forget/{k}": v for k, v in
                       pe.forget_metrics(ev["secret_logps"][f], forget["retain_only_logps"][f]).items()})
        values["forget/extraction_rate"] = pe.extraction_rate(ev["secret_greedy"][f], forget["answers"][f])
        values["retain/extraction_rate"] = pe.extraction_rate(ev["secret_greedy"][~f], forget["answers"][~f])
        values["retain/loglik"] = float(ev["secret_logps"][~f].mean())
        values["forget/sft_forget_loglik"] = float(forget["sft_logps"][f].mean())
        values["forget/sft_extraction_rate"] = pe.extraction_rate(forget["sft_greedy"][f], forget["answers"][f])
        values["retain/sft_extraction_rate"] = pe.extraction_rate(forget["sft_greedy"][~f], forget["answers"][~f])
    values["train/steps_per_second"] = info["steps_per_second"]
    return values, None


def metric_names(info: dict) -> list[str]:
    """What a diverged run records as NaN: the same names an ok run of its kind would have."""
    names = []
    for split in ("val", "test"):
        names += [f"{split}/{k}" for k in ("gold_reward", "sft_gold_reward", "win_rate", "soft_win_rate", "kl",
                                           "kl_sample", "sqrt_kl", "ranking_accuracy", "ranking_accuracy_normalised",
                                           "implicit_reward_accuracy", "reference_ranking_accuracy",
                                           "idealized_ranking_accuracy", "alignment_gap", "chosen_change_sum",
                                           "rejected_change_sum", "chosen_change_per_token",
                                           "rejected_change_per_token", "frac_both_down", "frac_both_up")]
    names += ["test/mean_length", "test/sft_mean_length", "test/frac_max_length", "test/cov", "test/ontopic", "test/ntox", "test/rep"]
    names += [f"test/win_rate_len_{lo}_{hi}" for lo, hi in zip(LENGTH_EDGES[:-1], LENGTH_EDGES[1:])]
    if methods.get(info["method"]).kind == "unlearning":
        names += ["forget/forget_loglik", "forget/ks_statistic", "forget/ks_pvalue", "forget/extraction_rate",
                  "retain/extraction_rate", "retain/loglik", "forget/sft_forget_loglik",
                  "forget/sft_extraction_rate", "retain/sft_extraction_rate"]
    return names + ["train/steps_per_second"]
