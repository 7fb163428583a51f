"""The real-LM ("hub") testbed's stages (docs/methods/README.md, preference track configuration).

    reference   π_ref = the pretrained policy, and the judge r* (a reward model), resolved once per
                protocol to local snapshots: reference.json holds their paths, commits and file
                checksums. Nothing is copied: every stage and run loads the snapshot.
    sample      per seed, train/val/test pairs of the dataset (data.hub_preference, seeded row
                subsets; val and test disjoint), π_ref's log-probs of the held-out pairs, π_ref
                samples on held-out prompts (the win-rate opponent) and the judge's rewards of
                those samples and of the held-out chosen/rejected responses
    label       the dataset's labels (y1 = chosen), train labels flipped at the dataset's rate ε
    reward      MADPO's proxy RM: π_ref's backbone and a scalar head fit on the train pairs
    capability  lm-eval scores of π_ref (per protocol) or of a trained policy (per run)

The functions after the stages answer what lossbench/tasks/preference.py asks of a testbed
(lossbench/synthpref_testbed.py answers the same for SynthPref). What only SynthPref has is absent
here, not imitated: no clean preference probability (idealized ranking accuracy), no reward
components, no lists, no forget set.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from lossbench import data
from lossbench.data import hub_preference as hp
from lossbench.data.synthpref import orient
from lossbench import hub, io
from lossbench import preference as pe
from lossbench.proxy_rm import fit_reward_model
from lossbench.seeding import derive_seed

SPLITS = ("train", "val", "test")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
TAU_BT = 1.0  # a Bradley-Terry reward model's score differences are log-odds: temperature 1
# what a snapshot needs (weights, configs, tokenizer); leaves out ONNX exports, logs and the like
SNAPSHOT_FILES = ["*.json", "*.safetensors", "*.bin", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


# ============================================================================================ reference
def resolve(spec: dict) -> dict:
    """Where a pretrained model's files are: a local folder as it is, a hub id through the
    huggingface_hub cache (downloaded unless BENCH_OFFLINE=1), and the checksum of every file."""
    name = spec["name"]
    if Path(name).is_dir():
        path, commit = Path(name).resolve(), None
    else:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(name, revision=spec.get("revision"), allow_patterns=SNAPSHOT_FILES,
                                      local_files_only=data.offline()))
        commit = path.name  # the cache keeps a snapshot per commit: .../snapshots/<commit>
    files = {str(f.relative_to(path)): io.sha256_file(f) for f in sorted(path.rglob("*"))
             if f.is_file() and not any(part.startswith(".") for part in f.relative_to(path).parts)}
    return {"name": name, "revision": spec.get("revision"), "commit": commit, "path": str(path),
            "dtype": spec.get("dtype", "float32"), "files": files}


def build_reference(proto: dict, out_path, log) -> None:
    """reference.json: the policy (π_ref) and the judge, resolved; the policy must be a chat model."""
    ref = {role: resolve(proto[role]) for role in ("policy", "judge")}
    if hub.load_tokenizer(ref["policy"]["path"]).chat_template is None:
        raise ValueError(f"{proto['policy']['name']}: the policy's tokenizer has no chat template")
    for role, r in ref.items():
        log(f"{role}: {r['name']} at {r['path']} ({len(r['files'])} files, commit {r['commit']})")
    io.write_json(out_path, ref)


def _loaded(sft_path, role: str, device):
    r = io.read_json(sft_path)[role]
    kw = dict(device=device, dtype=DTYPES[r["dtype"]])
    return hub.load_causal_lm(r["path"], **kw) if role == "policy" else hub.RewardJudge(r["path"], **kw)


def load_lm(sft_path, device="cpu"):
    """π_ref (the pretrained policy) from reference.json."""
    return _loaded(sft_path, "policy", device)[0]


def save_policy(path, policy, ref) -> None:
    """policy.pt: θ − θ_ref in bfloat16 (tied weights once). Half the disk of fp32 weights (0.27 GB
    instead of 0.54 GB per run of a 135M model); the rounding error is ~0.2% of each weight's change
    rather than of the weight, which at lr ~1e-6 would be as large as the change itself."""
    base = dict(ref.named_parameters())
    io.write_torch(path, {k: (p.detach() - base[k]).to(torch.bfloat16) for k, p in policy.named_parameters()})


def load_policy(sft_path, policy_path, device="cpu"):
    """A trained policy: π_ref plus its stored change."""
    model = load_lm(sft_path, device)
    delta = torch.load(policy_path, map_location=device, weights_only=True)
    with torch.no_grad():
        for k, p in model.named_parameters():
            p.add_(delta[k].to(p.dtype))
    return model.eval()


# ============================================================================================ sample
def pair_source(proto: dict) -> dict:
    """load_pairs arguments of the protocol: its datasets' registry source, unless `pairs` overrides
    where it is read (a local copy, a mirror) or which splits."""
    params = data.source_entry(data.source_of(proto["datasets"][0]))["params"]
    cfg = proto["pairs"]
    local = "source" in cfg
    return {"source": cfg["source"] if local else params["path"], "revision": None if local else params.get("revision"),
            "data_files": cfg.get("data_files"), "splits": cfg.get("splits", params["splits"])}


def read_pairs(proto: dict, tokenizer, seed_key: tuple) -> dict[str, hp.HubPairs]:
    """{split: pairs}: a seeded subset of the split's rows per seed; our splits that read one source
    split take consecutive slices of one permutation, so they never share a row."""
    src, cfg, taken, out = pair_source(proto), proto["pairs"], {}, {}
    for split in SPLITS:
        name = src["splits"][split]
        skip = taken.get(name, 0)
        out[split] = hp.load_pairs(src["source"], split=name, tokenizer=tokenizer, revision=src["revision"],
                                   data_files=src["data_files"], max_prompt_tokens=cfg["max_prompt_tokens"],
                                   max_response_tokens=cfg["max_response_tokens"], limit=cfg[split], skip=skip,
                                   seed=derive_seed(*seed_key, "rows", name))
        taken[name] = skip + cfg[split]
    return out


def response_texts(tokenizer, responses, eos_id: int) -> list[str]:
    """The text of each response up to its EOS (what the judge reads)."""
    lengths, _ = pe.response_lengths(responses, eos_id)
    return [tokenizer.decode(r[:n], skip_special_tokens=True) for r, n in zip(np.asarray(responses), lengths)]


def judge_rewards(judge, tokenizer, contexts, responses, eos_id: int, n: int, batch_size: int) -> np.ndarray:
    """r*(x, y) of prompt-major responses [N·n, T] to the N conversations `contexts` (JSON)."""
    turns = [json.loads(c) for c in contexts for _ in range(n)]
    return judge.score(turns, response_texts(tokenizer, responses, eos_id), batch_size=batch_size)


def build_samples(proto: dict, seed_key: tuple, sft_path, out_path, device: str, log) -> None:
    """samples.npz: tokenized pairs of every split, π_ref's log-probs of held-out pairs, π_ref samples
    on held-out prompts, and judge rewards of both (keys as SynthPref's where they mean the same)."""
    model, tok = _loaded(sft_path, "policy", device)
    judge = _loaded(sft_path, "judge", device)
    pairs = read_pairs(proto, tok, seed_key)
    n, bs = proto["eval"]["samples_per_prompt"], proto["eval"]["batch_size"]
    eos, pad = pairs["train"].eos_id, pairs["train"].pad_id
    gen = torch.Generator(device).manual_seed(derive_seed(*seed_key, "sample"))  # multinomial draws on the device
    out = {"eos_id": np.array(eos), "pad_id": np.array(pad)}
    for split, p in pairs.items():
        out.update({f"{split}_prompts": p.prompts, f"{split}_prompt_mask": p.prompt_mask,
                    f"{split}_responses": p.responses, f"{split}_margin": p.margin, f"{split}_contexts": p.contexts})
        log(f"{split}: {len(p)} pairs, {p.stats}")
        if split == "train":
            continue
        held = p.pref_data().to(device)
        ref_logps, lens = pe.sequence_logps_of(model, held, batch_size=bs)
        opponent = pe.sample_responses(model, held.prompts, prompt_mask=held.prompt_mask, n_samples=n,
                                       max_new_tokens=max_new_tokens(proto), eos_id=eos, pad_id=pad, generator=gen,
                                       batch_size=bs).cpu().numpy()
        pair_rewards = judge_rewards(judge, tok, p.contexts, p.responses.reshape(2 * len(p), -1), eos, 2, bs)
        out.update({f"{split}_ref_logps": ref_logps.numpy(force=True), f"{split}_lens": lens.numpy(force=True),
                    f"{split}_rewards": pair_rewards.reshape(len(p), 2), f"{split}_sft_samples": opponent,
                    f"{split}_sft_rewards": judge_rewards(judge, tok, p.contexts, opponent, eos, n, bs)})
    log(f"mean judge reward of π_ref samples on test prompts {out['test_sft_rewards'].mean():.3f}")
    io.write_npz(out_path, **out)


# ============================================================================================ label, reward
def build_labels(samples: dict, flip: float, proto: dict, seed_key: tuple, out_path) -> None:
    """labels.npz: y1 = the dataset's chosen response wins; train labels flipped at rate `flip`
    (one uniform per pair, so for a seed the flipped sets are nested in ε, as on SynthPref). The
    clean preference probability p is unknown on real pairs: NaN."""
    out = {}
    for split in SPLITS:
        n = len(samples[f"{split}_prompts"])
        rng = np.random.default_rng(derive_seed(*seed_key, "labels", split))
        flipped = rng.random(n) < (flip if split == "train" else 0.0)
        out.update({f"{split}_label": ~flipped, f"{split}_p": np.full(n, np.nan), f"{split}_flipped": flipped})
    io.write_npz(out_path, **out)


def labelled_pairs(samples: dict, labels: dict, split: str):
    """(PrefData of (y_w, y_l) with prompt masks, swap = y_w is response 1, i.e. a flipped label)."""
    r = samples[f"{split}_responses"]
    y_w, y_l, p_w = orient(r[:, 0], r[:, 1], labels[f"{split}_label"], labels[f"{split}_p"])
    eos, pad = special_ids(samples)
    return (pe.pref_data(samples[f"{split}_prompts"], np.stack([y_w, y_l], 1), eos_id=eos, pad_id=pad, p=p_w,
                         prompt_mask=samples[f"{split}_prompt_mask"]),
            ~labels[f"{split}_label"].astype(bool))


def build_reward_model(proto: dict, seed_key: tuple, sft_path, samples: dict, labels: dict, out_path,
                       device: str, log) -> None:
    """MADPO's proxy RM (lossbench.proxy_rm) on the labelled train pairs; only its state is stored."""
    pairs, val = (labelled_pairs(samples, labels, split)[0] for split in ("train", "val"))
    rm, acc = fit_reward_model(load_lm(sft_path, device), pairs, val, proto["reward_model"], seed_key, device, log,
                               batch_size=proto["eval"]["batch_size"])
    io.write_torch(out_path, {"state": rm.state_dict(), "val_accuracy": acc})


# ============================================================================================ capability
def build_capability(proto: dict, sft_path, policy_path, out_path, device: str) -> None:
    """capability.json: lm-eval {task/metric: value} of π_ref (`policy_path` None) or of a trained
    policy; {} for a diverged run (nothing worth scoring)."""
    if policy_path is not None and io.read_json(Path(policy_path).with_name("train.json"))["status"] != "ok":
        io.write_json(out_path, {})
        return
    tok = hub.load_tokenizer(io.read_json(sft_path)["policy"]["path"])
    model = load_lm(sft_path, device) if policy_path is None else load_policy(sft_path, policy_path, device)
    cfg = proto["capability"]
    io.write_json(out_path, hub.capability_retention(model, tok, cfg["tasks"], limit=cfg["limit"],
                                                     include_path=cfg.get("include_path"), device=device,
                                                     batch_size=cfg.get("batch_size", 8)))


def capability_metrics(scores: dict, ref_scores: dict) -> dict:
    """capability/<task>_<metric> of the policy and capability/sft_<task>_<metric> of π_ref (NaN where
    the policy has none: diverged), plus the means over tasks of `acc` (the drop shows as their gap)."""
    values = {}
    for key, ref in sorted(ref_scores.items()):
        if key.split("/")[-1].endswith("_stderr"):
            continue
        name = key.replace("/", "_")
        values[f"capability/{name}"] = scores.get(key, np.nan)
        values[f"capability/sft_{name}"] = ref
    accs = [k for k in ref_scores if k.endswith("/acc")]
    values["capability/mean_acc"] = float(np.mean([scores.get(k, np.nan) for k in accs])) if accs else np.nan
    values["capability/sft_mean_acc"] = float(np.mean([ref_scores[k] for k in accs])) if accs else np.nan
    return values


# ============================================================================================ testbed interface
def load_reward_model(path, sft_path, device="cpu"):
    from lossbench.proxy_rm import load_reward_model as load

    return load(path, load_lm(sft_path, device), device)


def special_ids(samples: dict) -> tuple[int, int]:
    """(EOS, filler pad) of the stored token arrays: the policy tokenizer's."""
    return int(samples["eos_id"]), int(samples["pad_id"])


def max_new_tokens(proto: dict) -> int:
    return proto["pairs"]["max_response_tokens"]


def tau_bt(proto: dict) -> float:
    return TAU_BT


def length_edges(proto: dict) -> tuple:
    """Quarters of the response budget, the last bucket holding responses cut at the maximum."""
    t = max_new_tokens(proto)
    return (0, t // 4, t // 2, 3 * t // 4, t + 1)


def kind_data(kind: str, samples: dict, inputs: dict):
    raise ValueError(f"the hub testbed has no {kind} data (check_protocol refuses such methods)")


def gold_scorer(sft_path, samples: dict, proto: dict, device):
    """(split, responses [N·n, T] prompt-major, n) -> {rewards} from the judge."""
    tok = hub.load_tokenizer(io.read_json(sft_path)["policy"]["path"])  # decodes the samples
    judge = _loaded(sft_path, "judge", device)
    eos, _ = special_ids(samples)

    def score(split, responses, n):
        return {"rewards": judge_rewards(judge, tok, samples[f"{split}_contexts"], responses, eos, n,
                                         proto["eval"]["batch_size"])}
    return score


def testbed_metrics(ev: dict, samples: dict, labels: dict, stage: Path, run_dir: Path) -> dict:
    """Per held-out split: how often the judge prefers the dataset's chosen response, and how often
    the policy's log-likelihood ranks the pair as the judge does; capability retention."""
    values = {}
    for split in ("val", "test"):
        r = samples[f"{split}_rewards"]
        swap = ~labels[f"{split}_label"].astype(bool)
        judge_w = np.where(swap, r[:, 1] > r[:, 0], r[:, 0] > r[:, 1])  # the judge agrees with y_w ≻ y_l
        pol = ev[f"{split}_pair_logps"]
        values[f"{split}/judge_agreement"] = float(judge_w.mean())
        values[f"{split}/judge_ranking_accuracy"] = float(np.mean((pol[:, 0] > pol[:, 1]) == judge_w))
    scores = io.read_json(run_dir / "capability.json")
    return {**values, **capability_metrics(scores, io.read_json(stage.parent / "capability.json"))}


def testbed_metric_names(kind: str, stage: Path) -> list[str]:
    names = [f"{s}/{k}" for s in ("val", "test") for k in ("judge_agreement", "judge_ranking_accuracy")]
    return names + list(capability_metrics({}, io.read_json(stage.parent / "capability.json")))
