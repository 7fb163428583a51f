"""The preference task: the DPO family on a testbed with a known gold reward.

Two testbeds (protocol key `testbed`), each a module of stage functions answering the same questions
(how π_ref is loaded, how pairs are labelled, what the gold reward is, which metrics only it has):
    synthpref  lossbench/synthpref_testbed.py: a tiny LM trained from scratch, closed-form r*
    hub        lossbench/hub_testbed.py: a pretrained LM on real pairs, a reward model as the judge r*

Stages, each a Snakemake rule with its own cached file (workflows/preference.smk):
    synthpref  sft → sample → label(ε) [→ reward model] → train(method, variant, seed) → sample_eval → metrics
    hub        reference (once per protocol) → sample → label(ε) [→ reward model] → train → sample_eval
               + capability (π_ref once, each policy) → metrics
Per-seed stages live in `stages/<track>/<protocol>/seed<s>/` and are shared by every method and
variant of that seed, so method comparisons are paired. The variants of a method (its β grid) are
selected on validation prompts by the report (report/preference.py), which reports test prompts.
"""
from __future__ import annotations

import importlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from lossbench import data
from lossbench import methods
from lossbench import io

PROTOCOL_SCHEMA = "protocol_preference"
METHOD_KINDS = ("pairwise", "listwise", "unpaired", "unlearning", "online", "decoding")  # = preference.PREFERENCE_KINDS
REWARD_NEEDS = {"rm_margin", "proxy_reward"}  # needs that read the proxy reward model stage
SELECTION = {"metric": "val/win_rate", "higher_is_better": True}  # the @best view (report/preference.py)
# A tuned preference track (lossbench/tuning.py) chooses once per report view, on the tuning seeds:
# each view reads its own final variant (tuning_rules).
VIEW_VARIANTS = {"best": "tuned_best", "matched-kl": "tuned_kl", "unlearning": "tuned_forget"}
TESTBEDS = {"synthpref": "lossbench.synthpref_testbed", "hub": "lossbench.hub_testbed"}
ARTEFACTS = ("curves.csv", "policy.pt")  # what train_run writes; train.json records their sha256
SPO_DEGREES = 4  # SPO-style degradation degrees: delete 0, 1/3, 2/3, all of y_w's keywords (card M13)
# What the hub testbed lacks, by method kind or need: the data these methods are defined on
HUB_UNSUPPORTED = {
    "listwise": "needs K-sample lists scored by the gold reward; hub pairs have two responses",
    "unlearning": "needs SynthPref's forget set of memorised secrets and its retain-only twin model",
    "degree_logits": "its degradation deletes y_w's prompt keywords, which only SynthPref marks",
    "online": "online sampling during training is built for SynthPref's tiny LM only (lossbench/online.py)",
    "reward_ensemble": "its reward-model ensemble comes from SynthPref's overoptimization block",
    "decoding": "best-of-n decoding is built for SynthPref's tiny LM only (lossbench/online.py)",
    "revision_logps": "its revision format (prompt, earlier answer, new answer) is defined for SynthPref, whose "
                      "π_ref is trained on it (sft: revision_steps)",
}


def testbed_name(proto: dict) -> str:
    return proto.get("testbed", "synthpref")


def testbed(proto: dict):
    """The testbed module of a protocol (a run's `protocol`, or a track's protocol block)."""
    return importlib.import_module(TESTBEDS[testbed_name(proto)])


def hub_unsupported(method: str) -> str | None:
    """Why the hub testbed cannot run `method`, or None."""
    spec = methods.get(method)
    return next((why for key, why in HUB_UNSUPPORTED.items() if key == spec.kind or key in spec.needs), None)


def tuning_rules(protocol: dict, method: str) -> dict[str, dict]:
    """The choices of a tuned preference track, one final variant per view of report/preference.py,
    each made on the trials' validation means over the tuning seeds: tuned_best (best val win
    rate), tuned_kl (best val gold reward among trials with mean val KL ≤ the protocol's kl_budget;
    none within it: the smallest-KL trial, flagged) and, for unlearning methods, tuned_forget (the
    lowest forget-set log-likelihood, the @unlearning view)."""
    budget = float(protocol.get("eval", {}).get("kl_budget", float("inf")))
    out = {
        VIEW_VARIANTS["best"]: {"metric": SELECTION["metric"], "higher_is_better": True, "split": "validation",
                                "on": f"{SELECTION['metric']} (max)"},
        VIEW_VARIANTS["matched-kl"]: {"metric": "val/gold_reward", "higher_is_better": True, "split": "validation",
                                      "within": {"metric": "val/kl", "max": budget},
                                      "on": f"val/gold_reward (max) with mean val/kl ≤ {budget:g}"},
    }
    if methods.get(method).kind == "unlearning":
        out[VIEW_VARIANTS["unlearning"]] = {"metric": "forget/forget_loglik", "higher_is_better": False,
                                            "split": "forget", "on": "forget/forget_loglik (min)"}
    return out


def guide_variant(run: dict) -> str:
    """The variant of the guide method whose policy guides `run` (TGDPO) on the run's own seed: the
    protocol's guide.variant, except that in a tuned track a trial (on a tuning seed) is
    guided by the guide method's trial of the same name (the guide's variants on the final seeds,
    tuned_best/tuned_kl, do not run there; with the shipped grids trial k is the same β and lr for
    both methods); a final run by guide.variant, one of the guide's final variants."""
    from lossbench import tuning

    return run["variant"] if tuning.is_trial(run["variant"]) else run["protocol"]["guide"]["variant"]


def check_protocol(proto: dict, where: str, track: dict) -> None:
    from lossbench.config import ConfigError, methods_on, unknown_name, variants

    ran = {m for d in proto["datasets"] for m in methods_on(track, d)}
    runs_here = [m for m in track["methods"] if m in ran]
    _check_testbed(proto, where, runs_here)
    _check_overoptimization(proto, where)
    _check_revisions(proto, where, runs_here)
    block = (proto.get("overoptimization") or {}).get("datasets", [])
    for d in proto["datasets"]:
        ensemble = [m for m in methods_on(track, d) if "reward_ensemble" in methods.get(m).needs]
        if ensemble and d not in block:
            raise ConfigError(f"{where}: {ensemble} read the reward-model ensemble of the overoptimization block, "
                              f"which does not list {d!r} (its datasets: {block}); add it there or leave them "
                              f"out of {d!r} with dataset_methods")
    guide = proto.get("guide")
    needs_guide = [m for m in runs_here if "guide_token_logps" in methods.get(m).needs]
    if needs_guide and guide is None:
        raise ConfigError(f"{where}: {needs_guide} need a guidance policy: set guide: {{method, variant}}")
    if guide is not None:
        if guide["method"] not in track["methods"]:
            raise unknown_name("guide method", guide["method"], track["methods"], f"{where}/guide")
        if methods.get(guide["method"]).kind != "pairwise" or guide["method"] in needs_guide:
            raise ConfigError(f"{where}/guide: {guide['method']!r} must be a pairwise method without a guide")
        view = track  # as the protocol's datasets see it (config.load_track)
        if view.get("tuning"):  # a final variant of the guide; its trials guide the trials (guide_variant)
            from lossbench import tuning

            finals = tuning.tuned_variants(view, guide["method"], proto["datasets"][0])
            if guide["variant"] not in finals:
                raise unknown_name("guide variant (a tuned track: one of the guide's final variants)",
                                   guide["variant"], finals, f"{where}/guide")
            for m in needs_guide:
                if len(tuning.trials(view, m, proto["datasets"][0])) != len(tuning.trials(view, guide["method"],
                                                                                      proto["datasets"][0])):
                    raise ConfigError(f"{where}/guide: {m} and its guide {guide['method']!r} need the same trials")
        elif guide["variant"] not in variants(view, guide["method"]):
            raise unknown_name("guide variant", guide["variant"], variants(view, guide["method"]), f"{where}/guide")
        for d, subset in track.get("dataset_methods", {}).items():
            if d in proto["datasets"] and set(needs_guide) & set(subset) and guide["method"] not in subset:
                raise ConfigError(f"{where}: dataset_methods/{d} runs {needs_guide} without their guide {guide['method']!r}")


def _check_revisions(proto: dict, where: str, runs_here: list[str]) -> None:
    """SRPO-style methods and the N-revision evaluation need a π_ref that has seen the revision format
    (sft.revision_steps) and a context that holds prompt, earlier answer and new answer."""
    from lossbench.config import ConfigError

    from lossbench.config import unknown_name

    for m in proto["eval"].get("revision_methods", []):
        if m not in methods.names():
            raise unknown_name("method", m, methods.names(), f"{where}/eval/revision_methods")
    if testbed_name(proto) != "synthpref":
        return
    revising = [m for m in runs_here if "revision_logps" in methods.get(m).needs]
    wants = revising or proto["eval"].get("revisions", 0)
    if not wants:
        return
    what = f"{revising} read" if revising else f"eval: revisions: {proto['eval']['revisions']} reads"
    if not proto["sft"].get("revision_steps"):
        raise ConfigError(f"{where}: {what} π_ref in the revision format, but sft: revision_steps is 0 or "
                          f"absent: π_ref never saw a revision context; set sft: revision_steps > 0")
    need = testbed(proto).REVISION_CONTEXT
    if proto["model"]["context"] < need:
        raise ConfigError(f"{where}/model: context {proto['model']['context']} is shorter than a revision row "
                          f"({need} positions: prompt, earlier answer, EOS, SEP and the new answer); set context >= {need}")


def _check_overoptimization(proto: dict, where: str) -> None:
    """The BoN overoptimisation block's datasets are SynthPref preference datasets, and its prompts
    exist among the test prompts."""
    from lossbench.config import ConfigError, unknown_name

    block = proto.get("overoptimization")
    if not block:
        return
    valid = [d for d in data.names() if data.dataset_entry(d).get("source") == "synthpref"]
    for d in block["datasets"]:
        if d not in valid:
            raise unknown_name("overoptimization dataset", d, valid, f"{where}/overoptimization/datasets")
    if block["prompts"] > proto["pairs"]["test"]:
        raise ConfigError(f"{where}/overoptimization/prompts: {block['prompts']} exceeds pairs/test "
                          f"({proto['pairs']['test']} test prompts)")


def _check_testbed(proto: dict, where: str, runs_here: list[str]) -> None:
    """Datasets fit the testbed (one source per hub protocol: its stages are shared), and the hub
    testbed runs only methods whose data it has."""
    from lossbench.config import ConfigError

    bed = testbed_name(proto)
    sources = set()
    for d in proto["datasets"]:
        entry = data.dataset_entry(d)
        if entry.get("task") != "preference":
            raise ConfigError(f"{where}/datasets: {d!r} is not a preference dataset")
        kind = data.source_entry(entry["source"])["kind"]
        if (kind == "hub") != (bed == "hub"):
            raise ConfigError(f"{where}/datasets: {d!r} (source {entry['source']!r}, kind {kind}) does not fit "
                              f"testbed {bed!r}: hub sources need testbed: hub, SynthPref needs testbed: synthpref")
        sources.add(entry["source"])
    if bed != "hub":
        return
    if len(sources) > 1:
        raise ConfigError(f"{where}/datasets: a hub protocol reads one source (its pairs stage is shared), "
                          f"got {sorted(sources)}")
    refused = {m: hub_unsupported(m) for m in runs_here if hub_unsupported(m)}
    if refused:
        valid = [m for m in methods.REGISTRY if methods.get(m).kind in METHOD_KINDS and not hub_unsupported(m)]
        why = "; ".join(f"{m}: {w}" for m, w in refused.items())
        raise ConfigError(f"{where}: the hub testbed cannot run {sorted(refused)} ({why}). Leave them out of "
                          f"this protocol's datasets with dataset_methods; the hub testbed runs {', '.join(valid)}")
    needs_rm = [m for m in runs_here if REWARD_NEEDS & set(methods.get(m).needs)]
    if needs_rm and "reward_model" not in proto:
        raise ConfigError(f"{where}: {needs_rm} need a proxy reward model: set reward_model: {{steps, batch_size, lr}}")


# ============================================================================================ paths
def stage_files(stage_dir, dataset: str | None = None, bed: str = "synthpref") -> dict:
    """A seed's stage files. `sft` is π_ref: SynthPref's trained model, or the hub testbed's
    reference.json (per protocol, beside the seed folders, with π_ref's capability scores)."""
    s = Path(stage_dir)
    if bed == "hub":
        out = {"sft": s.parent / "reference.json", "ref_capability": s.parent / "capability.json"}
    else:
        out = {"sft": s / "sft.pt", "forget": s / "forget.npz"}
    out["samples"] = s / "samples.npz"
    if dataset:
        out.update(labels=s / f"labels_{dataset}.npz", reward_model=s / f"reward_model_{dataset}.pt",
                   overopt=s / f"overopt_{dataset}.csv", reward_ensemble=s / f"reward_ensemble_{dataset}.pt")
    return {k: str(v) for k, v in out.items()}


def _run_stage_files(run: dict, stage_dir) -> dict:
    return stage_files(stage_dir, run["dataset"], testbed_name(run["protocol"]))


def train_inputs(run: dict, stage_dir, profile: str) -> dict:
    """Files a run trains from: π_ref, samples, labels, plus the hooks its method needs."""
    spec, files = methods.get(run["method"]), _run_stage_files(run, stage_dir)
    inputs = {k: files[k] for k in ("sft", "samples", "labels")}
    if spec.kind == "unlearning":
        inputs["forget"] = files["forget"]
    if REWARD_NEEDS & set(spec.needs):
        inputs["reward_model"] = files["reward_model"]
    if "reward_ensemble" in spec.needs:  # the members pref_overopt fit (the protocol's overoptimization block)
        inputs["reward_ensemble"] = files["reward_ensemble"]
    if "guide_token_logps" in spec.needs:
        g = run["protocol"]["guide"]
        # the guide's train.json: written after its policy.pt, which sits beside it
        inputs["guide"] = (f"results/{profile}/runs/{run['track']}/{run['dataset']}/{g['method']}/"
                           f"{guide_variant(run)}/seed{run['seed']}/train.json")
    return inputs


def sample_eval_inputs(run: dict, run_dir, stage_dir) -> dict:
    """What pref_sample_eval reads: the run's train.json (its policy.pt sits beside it) and stages."""
    files = _run_stage_files(run, stage_dir)
    out = {"info": f"{run_dir}/train.json", **{k: files[k] for k in ("sft", "samples", "labels")}}
    kind = methods.get(run["method"]).kind
    if kind == "unlearning":
        out["forget"] = files["forget"]
    if kind == "decoding":  # best-of-n picks its answers with the proxy RM
        out["reward_model"] = files["reward_model"]
    return out


def eval_artefacts(info: dict) -> list[str]:
    """Files of the run folder that evaluation reads besides train.json's artefacts (their sha256
    goes into run.json): the sample_eval output, and the hub testbed's capability scores."""
    return ["eval.npz"] + (["capability.json"] if testbed_name(info["protocol"]) == "hub" else [])


def eval_inputs(run: dict, run_dir, stage_dir) -> dict:
    """What evaluate_run reads besides train.json: the sample_eval output and the stages it scores
    (hub: and the capability scores of the policy and of π_ref)."""
    staged = sample_eval_inputs(run, run_dir, stage_dir)
    out = {"eval": f"{run_dir}/eval.npz", **{k: v for k, v in staged.items() if k not in ("info", "sft", "reward_model")}}
    if testbed_name(run["protocol"]) == "hub":
        out.update(capability=f"{run_dir}/capability.json",
                   ref_capability=_run_stage_files(run, stage_dir)["ref_capability"])
    return out


def stage_seed_key(run_or_track: str, protocol: str, seed: int) -> tuple:
    return (run_or_track, protocol, seed, "stages")


# ============================================================================================ stages
def _logged(out_path):
    from lossbench.runner import run_logger

    return run_logger(Path(out_path).with_suffix(".log")).info


def retain_twin(track: dict, protocol_name: str) -> bool:
    """Whether a protocol's SFT stage trains the retain-only twin: only unlearning methods (NPO's
    forget-quality yardstick) read it, and it costs as much as π_ref."""
    from lossbench.config import protocol_methods

    return any(methods.get(m).kind == "unlearning" for m in protocol_methods(track, protocol_name))


def build_sft(track: str, protocol_name: str, proto: dict, seed: int, out_dir, device: str = "cpu",
              twin: bool = True) -> None:
    from lossbench import synthpref_testbed as tb
    from lossbench.runner import resolve_device

    out_dir = Path(out_dir)
    tb.build_sft(proto, stage_seed_key(track, protocol_name, seed), out_dir, resolve_device(device),
                 _logged(out_dir / "sft.log"), twin=twin)


def build_reference(proto: dict, out_path) -> None:
    """The hub testbed's π_ref and judge, resolved once per protocol (reference.json)."""
    from lossbench import hub_testbed

    hub_testbed.build_reference(proto, out_path, _logged(out_path))


def build_capability(proto: dict, sft_path, policy_path, out_path, device: str = "cpu") -> None:
    """lm-eval scores of π_ref (`policy_path` None) or of a run's policy (hub testbed)."""
    from lossbench import hub_testbed
    from lossbench.runner import check_artefacts, resolve_device

    if policy_path is not None:
        check_artefacts(Path(policy_path).parent)  # the policy.pt its run recorded
    hub_testbed.build_capability(proto, sft_path, policy_path, out_path, resolve_device(device))


def build_samples(track: str, protocol_name: str, proto: dict, seed: int, sft_path, out_path, device: str = "cpu"):
    from lossbench.runner import resolve_device

    testbed(proto).build_samples(proto, stage_seed_key(track, protocol_name, seed), sft_path, out_path,
                                 resolve_device(device), _logged(out_path))


def build_labels(track: str, protocol_name: str, proto: dict, seed: int, dataset: str, samples_path, out_path):
    entry = data.dataset_entry(dataset)
    testbed(proto).build_labels(data.load_prepared(samples_path), entry.get("label_noise", 0.0), proto,
                                stage_seed_key(track, protocol_name, seed) + (dataset,), out_path)


def build_reward_model(track: str, protocol_name: str, proto: dict, seed: int, dataset: str, sft_path,
                       samples_path, labels_path, out_path, device: str = "cpu"):
    from lossbench.runner import resolve_device

    testbed(proto).build_reward_model(proto, stage_seed_key(track, protocol_name, seed) + (dataset,), sft_path,
                                      data.load_prepared(samples_path), data.load_prepared(labels_path), out_path,
                                      resolve_device(device), _logged(out_path))


def build_overopt(track: str, protocol_name: str, proto: dict, seed: int, dataset: str, sft_path, samples_path,
                  labels_path, out_path, device: str = "cpu"):
    """overopt_<dataset>.csv: the best-of-n overoptimisation curves of one seed (SynthPref only)."""
    from lossbench import synthpref_testbed as tb
    from lossbench.runner import resolve_device

    rows = tb.overopt_curves(proto, stage_seed_key(track, protocol_name, seed) + (dataset,), sft_path,
                             data.load_prepared(samples_path), data.load_prepared(labels_path),
                             resolve_device(device), _logged(out_path),
                             ensemble_path=stage_files(Path(out_path).parent, dataset)["reward_ensemble"])
    keys = {"track": track, "protocol": protocol_name, "dataset": dataset, "seed": seed}
    io.write_csv(out_path, pd.DataFrame([{**keys, **r} for r in rows]))


def overopt_targets(profile: str, tracks: dict) -> list[str]:
    """Every overopt_<dataset>.csv a profile's preference protocols ask for (one per final seed)."""
    from lossbench.config import protocol_track

    out = []
    for name, track in tracks.items():
        if track.get("task") != "preference":
            continue
        for pname, proto in track["protocols"].items():
            block = proto.get("overoptimization")
            for seed in (protocol_track(track, pname)["seeds"] if block else ()):
                stage = f"results/{profile}/stages/{name}/{pname}/seed{seed}"
                out += [stage_files(stage, d)["overopt"] for d in block["datasets"]]
    return out


# ============================================================================================ training
def _batch(proto: dict) -> dict:
    """Rows per no-grad forward or sampling batch where the protocol sets it (large vocabularies),
    else the engine's defaults (which SynthPref's numbers were made with)."""
    size = proto["eval"].get("batch_size")
    return {} if size is None else {"batch_size": size}


def _train_data(tb, spec, samples: dict, labels: dict, inputs: dict):
    from lossbench import preference as pe

    if spec.kind in ("pairwise", "unpaired", "online", "decoding"):
        # online and decoding methods read the prompts only; the pairs also serve them as the same
        # "train" probe of log-likelihood dynamics as for the offline methods
        pairs, _ = tb.labelled_pairs(samples, labels, "train")
        return pe.unpaired_from_pairs(pairs) if spec.kind == "unpaired" else pairs
    return tb.kind_data(spec.kind, samples, inputs, spec.needs)


def _hooks(tb, spec, hp: dict, ref, inputs: dict, run: dict, device: str):
    import torch

    from lossbench import preference as pe
    from lossbench.seeding import derive_seed
    from lossbench.methods.sparsepo import SparseTokenMask

    hooks = pe.Hooks(reference=ref)
    seed = derive_seed(run["seeds"]["init"], "hooks")  # like the init: the variant's name changes nothing
    d_model, layers = ref.config.hidden_size, ref.config.num_hidden_layers
    if "guide_token_logps" in spec.needs:
        guide_status = io.read_json(inputs["guide"])["status"]
        if guide_status != "ok":  # a failed guide leaves no policy (or a stale one): nothing to guide with
            raise RuntimeError(f"the guide run {inputs['guide']} is {guide_status}, so this run has no guide policy")
        hooks.guide = pe.frozen_copy(tb.load_policy(inputs["sft"], Path(inputs["guide"]).with_name("policy.pt"),
                                                     device))
    if REWARD_NEEDS & set(spec.needs):
        hooks.reward = tb.load_reward_model(inputs["reward_model"], inputs["sft"], device)
    if "reward_ensemble" in spec.needs:
        hooks.reward = tb.load_reward_ensemble(inputs["reward_ensemble"], inputs["sft"], hp["objective"], device)
    if "token_masks" in spec.needs:
        gen = torch.Generator().manual_seed(seed)
        hooks.mask = SparseTokenMask(d_model, layers, generator=gen).to(device)
        if hp.get("mode") == "indp":
            hooks.mask_d = SparseTokenMask(d_model, layers, generator=gen).to(device)
    if "degree_logits" in spec.needs:
        hooks.degree_head = pe.build_degree_head(d_model, SPO_DEGREES, seed).to(device)
    if "revision_logps" in spec.needs:
        hooks.revise = tb.revise
    return hooks


def train_run(run: dict, inputs: dict, out_dir: Path, device: str, log) -> dict:
    import torch

    from lossbench import preference as pe

    spec, hp, proto = methods.get(run["method"]), run["hparams"], run["protocol"]
    tb, batch = testbed(proto), _batch(proto)
    samples, labels = data.load_prepared(inputs["samples"]), data.load_prepared(inputs["labels"])
    policy = tb.load_lm(inputs["sft"], device).train()
    ref = pe.frozen_copy(policy)
    train = _train_data(tb, spec, samples, labels, inputs)
    hooks = _hooks(tb, spec, hp, ref, inputs, run, device)
    cache = pe.reference_cache(ref, train, **batch)
    n = proto["train"]["probe_pairs"]  # fixed probe sets for the log-likelihood dynamics (metric 4, E2)
    val_pairs, _ = tb.labelled_pairs(samples, labels, "val")
    val_probe = replace(val_pairs.take(np.arange(min(n, len(val_pairs)))), index=None)
    probes = {"train": (train.take(np.arange(min(n, len(train)))), cache),
              "val": (val_probe, pe.reference_cache(ref, val_probe, **batch))}
    gen = torch.Generator().manual_seed(run["seeds"]["order"])
    t = proto["train"]
    step_loss = None
    if spec.kind == "online":  # its own sampling stream, seeded like the hooks (the variant's name changes nothing)
        from lossbench.online import OnlineStep
        from lossbench.seeding import derive_seed

        eos, pad = tb.special_ids(samples)
        step_loss = OnlineStep(spec, hp, ref, hooks.reward, max_new_tokens=tb.max_new_tokens(proto), eos_id=eos,
                               pad_id=pad, gold=tb.gold_of(proto),
                               generator=torch.Generator(device).manual_seed(derive_seed(run["seeds"]["init"], "online")))
    result = pe.train_policy(spec, hp, policy, cache, train, steps=0 if spec.kind == "decoding" else t["steps"],
                             batch_size=t["batch_size"], lr=proto["optimizer"]["lr"], generator=gen, hooks=hooks,
                             log=log.info, eval_every=t["probe_every"], probes=probes, step_loss=step_loss)
    tb.save_policy(out_dir / "policy.pt", policy, ref)
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
    """eval.npz: policy samples on val/test prompts with gold rewards (SynthPref: and their reward
    components) and KL terms, policy log-probs of the held-out pairs, and (unlearning) forget-set
    likelihoods and greedy answers."""
    import torch

    from lossbench import preference as pe
    from lossbench.runner import resolve_device
    from lossbench.seeding import derive_seed

    from lossbench.runner import check_artefacts

    device = resolve_device(device)
    info = io.read_json(inputs["info"])
    check_artefacts(Path(inputs["info"]).parent, info)  # the policy.pt this run wrote
    if info["status"] != "ok":  # diverged: nothing to sample; evaluation records NaN metrics
        io.write_npz(out_path, ok=np.array(False))
        return
    proto = run["protocol"]
    tb, batch = testbed(proto), _batch(proto)
    samples, labels = data.load_prepared(inputs["samples"]), data.load_prepared(inputs["labels"])
    policy = tb.load_policy(inputs["sft"], Path(inputs["info"]).with_name("policy.pt"), device)
    ref = tb.load_lm(inputs["sft"], device).eval()
    score = tb.gold_scorer(inputs["sft"], samples, proto, device)
    eos, pad = tb.special_ids(samples)
    n = proto["eval"]["samples_per_prompt"]
    spec = methods.get(run["method"])
    if spec.kind == "decoding":
        from functools import partial

        from lossbench.online import best_of_n_responses
        from lossbench.overopt import bon_kl

        rm = tb.load_reward_model(inputs["reward_model"], inputs["sft"], device)
        bon_responses = partial(best_of_n_responses, spec, run["hparams"], ref, rm)
    # one sampling stream per (dataset, seed) for every method (common random numbers: paired differences
    # lose the sampling noise two streams would add); on multinomial's device
    gen = torch.Generator(device).manual_seed(derive_seed(run["seeds"]["data"], "eval_samples"))
    out = {"ok": np.array(True)}
    for split in ("val", "test"):
        prompts = torch.as_tensor(samples[f"{split}_prompts"]).to(device)
        mask = samples.get(f"{split}_prompt_mask")  # real prompts: right-padded
        mask = None if mask is None else torch.as_tensor(mask).to(device)
        if spec.kind == "decoding":  # best-of-n over π_ref samples; its KL is the analytic log n − (n−1)/n
            resp = bon_responses(prompts, n_samples=n, max_new_tokens=tb.max_new_tokens(proto), eos_id=eos,
                                 pad_id=pad, generator=gen, **batch)
            delta = exact = torch.full((len(resp),), float(bon_kl(run["hparams"]["n"])), dtype=torch.float64)
        else:
            resp = pe.sample_responses(policy, prompts, n_samples=n, max_new_tokens=tb.max_new_tokens(proto),
                                       eos_id=eos, pad_id=pad, generator=gen, prompt_mask=mask, **batch)
            delta, exact = pe.kl_terms(policy, ref, prompts.repeat_interleave(n, 0), resp, eos,
                                       prompt_mask=None if mask is None else mask.repeat_interleave(n, 0), **batch)
        resp = resp.cpu().numpy()
        out.update({f"{split}_samples": resp, f"{split}_kl_sample": delta.numpy(force=True),
                    f"{split}_kl_exact": exact.numpy(force=True)})
        out.update({f"{split}_{k}": v for k, v in score(split, resp, n).items()})
        pairs, _ = tb.labelled_pairs(samples, labels, split)
        logps, lens = pe.sequence_logps_of(policy, pairs.to(device), **batch)
        out.update({f"{split}_pair_logps": logps.numpy(force=True), f"{split}_pair_lens": lens.numpy(force=True)})
        if split == "test" and revises(proto, spec):
            out.update(_revision_rounds(tb, policy, prompts, torch.as_tensor(resp).to(device), n, proto, gen,
                                        score, (eos, pad), batch))
    if "forget" in inputs:
        out.update(tb.forget_eval(policy, inputs["forget"], device))
    io.write_npz(out_path, **out)


def revises(proto: dict, spec) -> bool:
    """Whether a run's evaluation includes self-revision rounds: the protocol asks for them, the
    method has a policy that answers prompts (not best-of-n over π_ref, not an unlearning run) and,
    where the protocol lists `revision_methods`, it is one of them."""
    only = proto["eval"].get("revision_methods")
    return (bool(proto["eval"].get("revisions")) and spec.kind not in ("decoding", "unlearning")
            and (only is None or spec.name in only))


def _revision_rounds(tb, policy, prompts, answers, n: int, proto: dict, gen, score, special, batch: dict) -> dict:
    """SRPO's inference: round k samples a new answer given (prompt, answer of round k − 1), from the
    test samples (round 0) on; every method gets the same rounds and sampling stream. Returns the gold
    rewards of each round's answers, test_rev<k>_rewards [N·n]."""
    from lossbench import preference as pe

    eos, pad = special
    flat = prompts.repeat_interleave(n, 0)
    out = {}
    for k in range(1, proto["eval"]["revisions"] + 1):
        context, mask = tb.revise(flat, answers)
        answers = pe.sample_responses(policy, context, n_samples=1, max_new_tokens=tb.max_new_tokens(proto),
                                      eos_id=eos, pad_id=pad, generator=gen, prompt_mask=mask, **batch)
        out[f"test_rev{k}_rewards"] = score("test", answers.cpu().numpy(), n)["rewards"]
    return out


# ============================================================================================ metrics
def _oriented(x, swap):
    """[N, 2] columns (y1, y2) reordered to (y_w, y_l)."""
    return np.where(np.asarray(swap)[:, None], x[:, ::-1], x)


def evaluate_run(run_dir: Path, info: dict):
    from lossbench import preference as pe

    ev = io.read_npz(run_dir / "eval.npz")
    if info["status"] != "ok" or not bool(ev["ok"]):
        return {m: float("nan") for m in metric_names(info)}, None
    stage = Path(info["stage_dir"])
    samples = data.load_prepared(stage / "samples.npz")
    labels = data.load_prepared(stage / f"labels_{info['dataset']}.npz")
    proto = info["protocol"]
    tb = testbed(proto)
    values = {}
    for split in ("val", "test"):
        r_pol, r_sft = ev[f"{split}_rewards"], samples[f"{split}_sft_rewards"]
        kl = float(ev[f"{split}_kl_exact"].mean())
        values.update({f"{split}/{k}": v for k, v in pe.reward_metrics(r_pol, r_sft, tau_bt=tb.tau_bt(proto)).items()})
        values.update({f"{split}/kl": kl, f"{split}/kl_sample": pe.kl_sample_mean(ev[f"{split}_kl_sample"], 0.0),
                       f"{split}/sqrt_kl": float(np.sqrt(max(kl, 0.0)))})
        swap = ~labels[f"{split}_label"].astype(bool)
        ref = _oriented(samples[f"{split}_ref_logps"], swap)
        lens = _oriented(samples[f"{split}_lens"], swap)
        pol = ev[f"{split}_pair_logps"]
        p_w = np.where(swap, 1 - labels[f"{split}_p"], labels[f"{split}_p"])
        known = not np.isnan(p_w).all()  # real pairs carry labels only: no idealized ranking accuracy
        rank = pe.ranking_metrics(pol[:, 0], pol[:, 1], ref[:, 0], ref[:, 1], lens[:, 0], lens[:, 1],
                                  p_w if known else None, proto["eval"].get("ideal_beta"))
        values.update({f"{split}/{k}": v for k, v in rank.items()})
        values.update({f"{split}/{k}": v for k, v in
                       pe.loglik_change(pol[:, 0], pol[:, 1], ref[:, 0], ref[:, 1], lens[:, 0], lens[:, 1]).items()})
    eos, _ = tb.special_ids(samples)
    lengths, truncated = pe.response_lengths(ev["test_samples"], eos)
    values.update({f"test/{k}": v for k, v in pe.length_stats(lengths, truncated).items()})
    values["test/sft_mean_length"] = pe.length_stats(*pe.response_lengths(samples["test_sft_samples"], eos))["mean_length"]
    values.update({f"test/{k}": v for k, v in pe.win_rate_by_length(ev["test_rewards"], samples["test_sft_rewards"],
                                                                    lengths, tb.length_edges(proto)).items()})
    values.update(tb.testbed_metrics(ev, samples, labels, stage, run_dir))
    values.update(_revision_metrics(ev, samples, proto, methods.get(info["method"])))
    values["train/steps_per_second"] = info["steps_per_second"]
    return values, None


def _revision_metrics(ev: dict, samples: dict, proto: dict, spec) -> dict:
    """Per revision round k: gold reward and win rate against π_ref's (unrevised) samples; revision_gain
    is the last round's gold reward minus round 0's (the run's own test samples)."""
    if not revises(proto, spec):
        return {}
    from lossbench import preference as pe

    rounds = proto["eval"]["revisions"]
    r_sft, values = samples["test_sft_rewards"], {}
    for k in range(1, rounds + 1):
        r = ev[f"test_rev{k}_rewards"]
        values[f"test/gold_reward_rev{k}"] = float(r.mean())
        values[f"test/win_rate_rev{k}"] = pe.win_rate(r, r_sft)
    values["test/revision_gain"] = values[f"test/gold_reward_rev{rounds}"] - float(ev["test_rewards"].mean())
    return values


def revision_metric_names(proto: dict, spec) -> list[str]:
    if not revises(proto, spec):
        return []
    rounds = range(1, proto["eval"]["revisions"] + 1)
    return [f"test/{m}_rev{k}" for k in rounds for m in ("gold_reward", "win_rate")] + ["test/revision_gain"]


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
    names += ["test/mean_length", "test/sft_mean_length", "test/frac_max_length"]
    tb = testbed(info["protocol"])
    edges = tb.length_edges(info["protocol"])
    names += [f"test/win_rate_len_{lo}_{hi}" for lo, hi in zip(edges[:-1], edges[1:])]
    names += tb.testbed_metric_names(methods.get(info["method"]).kind, Path(info["stage_dir"]))
    names += revision_metric_names(info["protocol"], methods.get(info["method"]))
    return names + ["train/steps_per_second"]
