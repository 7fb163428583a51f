"""The SynthPref testbed's stages (docs/methods/README.md, preference track).

    sft      tiny causal LM trained from scratch on the teacher corpus + memorised secrets (π_ref for
             every method), and a retain-only twin whose forget-set likelihoods are NPO's yardstick
    sample   K responses per train prompt (pairs = the first two, LiPO lists = all K) and two per
             held-out prompt from π_ref at T = 1, their gold rewards, π_ref's log-probs of held-out
             pairs, and π_ref samples on held-out prompts (the win-rate opponent)
    label    Bradley-Terry labels of the train pairs at the dataset's label-flip rate ε; held-out
             pairs get clean labels
    reward   a Bradley-Terry proxy reward model on the labelled train pairs (MADPO's margin model)

Each stage is a pure function of its inputs and a seed, and writes one file (lossbench.io, atomic).
Below the stages: what lossbench/tasks/preference.py asks of a testbed (lossbench/hub_testbed.py
answers the same questions for pretrained LMs on real pairs).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lossbench.data import load_prepared
from lossbench.data import synthpref as sp
from lossbench import io
from lossbench import preference as pe
from lossbench.lm import build_causal_lm, join_prompt_response, lm_loss, sample, sequence_logps
from lossbench.preference import epoch_batches, sample_responses, sequence_logps_of, synthpref_pairs
from lossbench.proxy_rm import fit_reward_model
from lossbench.seeding import derive_seed
from lossbench.train import optimizer_step

VOCAB = sp.Vocab()
T_RESPONSE = sp.MAX_LEN + 1  # response slots: up to 16 tokens and EOS
LENGTH_EDGES = (0, 4, 8, 12, 18)  # win rate by response length (metric 5), buckets of the 16-token range
COMPONENTS = ("cov", "ontopic", "ntox", "rep")  # the gold reward's terms, reported on test samples
# a revision row: prompt, y′ (≤ 17 sampled tokens), EOS, SEP, y (≤ 17 slots): 42 positions
REVISION_CONTEXT = sp.PROMPT_LEN + 2 * T_RESPONSE + 2


def revise(prompts, previous, prompt_mask=None):
    """The revision context (SRPO): prompt, earlier answer, EOS, SEP; the new answer follows."""
    return pe.revision_prompts(prompts, previous, eos_id=VOCAB.EOS, sep_id=VOCAB.SEP, pad_id=VOCAB.PAD,
                               prompt_mask=prompt_mask)


def _t(x):
    return torch.as_tensor(np.asarray(x), dtype=torch.long)


# ============================================================================================ models
def save_lm(path, model, cfg: dict) -> None:
    io.write_torch(path, {"config": cfg, "vocab_size": VOCAB.size, "state": model.state_dict()})


def load_lm(path, device="cpu"):
    blob = torch.load(path, map_location=device, weights_only=True)
    model = build_causal_lm(blob["config"], blob["vocab_size"], 0)
    model.load_state_dict(blob["state"])
    return model.to(device)


def _interleave(steps: int, extra: int) -> np.ndarray:
    """Stream index (0 plain, 1 second stream) of each of steps + extra SFT steps: `extra` ones, evenly spread."""
    i = np.arange(steps + extra)
    return ((i + 1) * extra // (steps + extra) > i * extra // (steps + extra)).astype(int)


def fit_lm(model, prompts, responses, *, steps: int, batch_size: int, lr: float, generator, log=None,
           revision=None, revision_steps: int = 0):
    """SFT: Adam on the response tokens' mean NLL (lm.lm_loss), batches from `generator`. With
    `revision` = (prompts, previous answers, responses), `revision_steps` more steps, interleaved,
    train on those rows in the revision format (`revise`); without it the run is exactly the plain one."""
    device = next(model.parameters()).device
    streams = [[r.to(device) for r in join_prompt_response(_t(prompts), _t(responses), VOCAB.EOS)]]
    if revision_steps:
        context, mask = revise(_t(revision[0]), _t(revision[1]))
        streams.append([r.to(device) for r in join_prompt_response(context, _t(revision[2]), VOCAB.EOS, mask)])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    batches = [epoch_batches(len(rows[0]), min(batch_size, len(rows[0])), generator) for rows in streams]
    which = _interleave(steps, revision_steps)
    steps = len(which)
    losses = []
    for step in range(steps):
        rows = streams[which[step]]
        idx = next(batches[which[step]]).to(device)
        loss = lm_loss(model, *(r[idx] for r in rows)).mean()
        if not optimizer_step(opt, loss):
            raise FloatingPointError(f"SFT loss became {loss.item()} at step {step}")
        losses.append(float(loss.detach()))
        if log and (step + 1) % max(1, steps // 5) == 0:
            log(f"sft step {step + 1}/{steps}: loss {np.mean(losses[-50:]):.4f}")
    return losses


def secret_logps(model, fs: sp.ForgetSet, device="cpu") -> np.ndarray:
    """Summed log-likelihood (incl. EOS) of every secret answer [S]."""
    rows = [r.to(device) for r in join_prompt_response(_t(fs.prompts), _t(fs.responses), VOCAB.EOS)]
    with torch.no_grad():
        return sequence_logps(model.eval(), *rows)[0].numpy(force=True)


def greedy_answers(model, prompts, n_tokens: int, device="cpu") -> np.ndarray:
    g = torch.Generator().manual_seed(0)  # unused at temperature 0; sample() wants one
    out = sample(model, _t(prompts).to(device), max_new_tokens=n_tokens, eos_id=VOCAB.EOS, pad_id=VOCAB.PAD,
                 temperature=0, generator=g)
    return torch.nn.functional.pad(out, (0, n_tokens - out.shape[1]), value=VOCAB.PAD).numpy(force=True)


# ============================================================================================ stages
def build_sft(proto: dict, seed_key: tuple, out_dir: Path, device: str, log, twin: bool = True) -> None:
    """sft.pt (π_ref) and forget.npz (the secrets, and π_ref's and the retain-only model's likelihoods).

    `twin=False` (no unlearning method runs on the protocol: tasks.preference.retain_twin) skips the
    retain-only twin, half the stage's cost; forget.npz then has no retain_only_logps. π_ref is the
    same model either way: each twin starts from the same seeds."""
    cfg, model_cfg = proto["sft"], proto["model"]
    rng = np.random.default_rng(derive_seed(*seed_key, "corpus"))
    prompts, _, responses = sp.sft_corpus(cfg["prompts"], VOCAB, rng)
    fs = sp.forget_set(VOCAB, rng, n_secrets=cfg["secrets"], repeats=cfg["repeats"], n_forget=cfg["forget"])
    # revision rows are drawn after the corpus and secrets, which stay as they were; both twins train on
    # them, so the retain-only yardstick differs from π_ref by the secrets alone
    revision_steps = cfg.get("revision_steps", 0)
    revision = sp.revision_corpus(cfg["prompts"], VOCAB, rng) if revision_steps else None
    init = derive_seed(*seed_key, "sft_init")
    models = {}
    for name, retain_only in (("sft", False), ("retain_only", True))[:2 if twin else 1]:
        p, r, _ = sp.mix_secrets(prompts, responses, fs, np.random.default_rng(derive_seed(*seed_key, "mix")),
                                 retain_only=retain_only)
        model = build_causal_lm(model_cfg, VOCAB.size, init).to(device)
        gen = torch.Generator().manual_seed(derive_seed(*seed_key, "sft_order"))
        losses = fit_lm(model, p, r, steps=cfg["steps"], batch_size=cfg["batch_size"], lr=cfg["lr"], generator=gen,
                        log=lambda m, n=name: log(f"{n}: {m}"), revision=revision, revision_steps=revision_steps)
        models[name] = model.eval()
        log(f"{name}: final SFT loss {np.mean(losses[-50:]):.4f} on {len(p)} rows")
    save_lm(out_dir / "sft.pt", models["sft"], model_cfg)
    answer_len = fs.answers.shape[1]
    yardstick = {"retain_only_logps": secret_logps(models["retain_only"], fs, device)} if twin else {}
    io.write_npz(out_dir / "forget.npz", prompts=fs.prompts, answers=fs.answers, responses=fs.responses,
                 forget=fs.forget, sft_logps=secret_logps(models["sft"], fs, device), **yardstick,
                 sft_greedy=greedy_answers(models["sft"], fs.prompts, answer_len, device))


def _sample_split(model, n_prompts: int, k: int, rng, gen, device):
    prompts, _ = sp.make_prompts(n_prompts, VOCAB, rng)
    resp = sample_responses(model, _t(prompts).to(device), n_samples=k, max_new_tokens=T_RESPONSE,
                            eos_id=VOCAB.EOS, pad_id=VOCAB.PAD, generator=gen).cpu().numpy()
    rewards = sp.gold_reward(np.repeat(prompts, k, 0), resp, VOCAB).reshape(n_prompts, k)
    return prompts, resp.reshape(n_prompts, k, -1), rewards


def build_samples(proto: dict, seed_key: tuple, sft_path, out_path, device: str, log) -> None:
    """samples.npz: train lists/pairs, held-out pairs with π_ref log-probs, π_ref eval samples."""
    cfg = proto["pairs"]
    model = load_lm(sft_path, device).eval()
    rng = np.random.default_rng(derive_seed(*seed_key, "prompts"))
    gen = torch.Generator(device).manual_seed(derive_seed(*seed_key, "sample"))  # multinomial wants it on the device
    out = {}
    tp, tr, trw = _sample_split(model, cfg["train"], cfg["list_size"], rng, gen, device)
    out.update(train_prompts=tp, train_responses=tr, train_rewards=trw)
    for split in ("val", "test"):
        p, r, rw = _sample_split(model, cfg[split], 2, rng, gen, device)
        data = synthpref_pairs(p, r[:, 0], r[:, 1], VOCAB)
        ref_logps, lens = sequence_logps_of(model, data.to(device))
        n = proto["eval"]["samples_per_prompt"]
        eval_resp = sample_responses(model, _t(p).to(device), n_samples=n, max_new_tokens=T_RESPONSE,
                                     eos_id=VOCAB.EOS, pad_id=VOCAB.PAD, generator=gen).cpu().numpy()
        out.update({f"{split}_prompts": p, f"{split}_responses": r, f"{split}_rewards": rw,
                    f"{split}_ref_logps": ref_logps.numpy(force=True), f"{split}_lens": lens.numpy(force=True),
                    f"{split}_sft_samples": eval_resp,
                    f"{split}_sft_rewards": sp.gold_reward(np.repeat(p, n, 0), eval_resp, VOCAB)})
    log(f"sampled {len(tp)}x{cfg['list_size']} train and {cfg['val']}/{cfg['test']} held-out pairs; "
        f"mean gold reward of π_ref samples {out['test_sft_rewards'].mean():.3f}")
    io.write_npz(out_path, **out)


def build_labels(samples: dict, flip: float, proto: dict, seed_key: tuple, out_path) -> None:
    """labels.npz: BT labels of (y1, y2) = responses 0 and 1; train flipped at rate `flip`, held-out clean."""
    out, tau_bt = {}, proto["pairs"]["tau_bt"]
    for split in ("train", "val", "test"):
        rng = np.random.default_rng(derive_seed(*seed_key, "labels", split))
        rw = samples[f"{split}_rewards"]
        label, p, flipped = sp.bradley_terry_labels(rw[:, 0], rw[:, 1], rng, tau_bt=tau_bt,
                                                    flip=flip if split == "train" else 0.0)
        out.update({f"{split}_label": label, f"{split}_p": p, f"{split}_flipped": flipped})
    io.write_npz(out_path, **out)


def labelled_pairs(samples: dict, labels: dict, split: str):
    """(PrefData of (y_w, y_l), p_w = clean P(y_w ≻ y_l), swap = y_w is response 1)."""
    r = samples[f"{split}_responses"]
    y_w, y_l, p_w = sp.orient(r[:, 0], r[:, 1], labels[f"{split}_label"], labels[f"{split}_p"])
    return synthpref_pairs(samples[f"{split}_prompts"], y_w, y_l, VOCAB, p=p_w), ~labels[f"{split}_label"].astype(bool)


def build_reward_model(proto: dict, seed_key: tuple, sft_path, samples: dict, labels: dict, out_path,
                       device: str, log) -> None:
    """MADPO's proxy RM (lossbench.proxy_rm) on the labelled train pairs."""
    pairs, val = (labelled_pairs(samples, labels, split)[0] for split in ("train", "val"))
    rm, acc = fit_reward_model(load_lm(sft_path, device), pairs, val, proto["reward_model"], seed_key, device, log)
    io.write_torch(out_path, {"state": rm.state_dict(), "val_accuracy": acc})


def overopt_curves(proto: dict, seed_key: tuple, sft_path, samples: dict, labels: dict, device: str, log,
                   ensemble_path=None) -> list:
    """Best-of-n overoptimisation of one seed (lossbench.overopt): `members` proxy RMs fit on the
    labelled train pairs (member i: its own head init and data order), `samples` π_ref samples per
    test prompt scored by each member and by the gold reward, then the curves of every objective.
    With `ensemble_path`, the members are saved there for the online methods' ensemble rewards, with
    each member's mean and std on π_ref's train-prompt samples (no test data) to standardise by."""
    from lossbench import overopt
    from lossbench.proxy_rm import score_responses

    cfg = proto["overoptimization"]
    pairs, val = (labelled_pairs(samples, labels, split)[0] for split in ("train", "val"))
    prompts = _t(samples["test_prompts"][:cfg["prompts"]])
    ref = load_lm(sft_path, device).eval()
    gen = torch.Generator(device).manual_seed(derive_seed(*seed_key, "bon_samples"))
    resp = sample_responses(ref, prompts.to(device), n_samples=cfg["samples"], max_new_tokens=T_RESPONSE,
                            eos_id=VOCAB.EOS, pad_id=VOCAB.PAD, generator=gen).cpu()
    P, N = len(prompts), cfg["samples"]
    gold = sp.gold_reward(np.repeat(prompts.numpy(), N, 0), resp.numpy(), VOCAB).reshape(P, N)
    scores, accs, members = [], [], {"states": [], "mean": [], "std": [], "lambda": cfg["lambda"]}
    for i in range(cfg["members"]):
        rm, acc = fit_reward_model(load_lm(sft_path, device), pairs, val, proto["reward_model"],
                                   seed_key + ("member", i), device, log)
        scores.append(score_responses(rm, prompts, resp.view(P, N, -1), VOCAB.EOS).numpy())
        accs.append(acc)
        if ensemble_path is not None:
            ref_scores = score_responses(rm, _t(samples["train_prompts"]), _t(samples["train_responses"]), VOCAB.EOS)
            members["states"].append(rm.state_dict())
            members["mean"].append(float(ref_scores.mean()))
            members["std"].append(float(ref_scores.std(unbiased=False)))
    if ensemble_path is not None:
        io.write_torch(ensemble_path, members)
    scores = np.stack(scores).astype(np.float64)
    rows = overopt.curves(scores, scores.reshape(len(scores), -1), gold, cfg["lambda"])
    log(f"best-of-n on {P} prompts x {N} samples, {len(accs)} members (val pair accuracy "
        f"{min(accs):.3f}-{max(accs):.3f}); gold at n={N}: " +
        ", ".join(f"{r['objective']} {r['gold']:.3f}" for r in rows if r["n"] == N))
    return [{**r, "members": len(accs), "members_val_accuracy": float(np.mean(accs))} for r in rows]


# ============================================================================================ testbed interface
def save_policy(path, policy, ref) -> None:
    """policy.pt: the trained weights (0.4M parameters)."""
    io.write_torch(path, policy.state_dict())


def load_policy(sft_path, policy_path, device="cpu"):
    model = load_lm(sft_path, device)
    model.load_state_dict(torch.load(policy_path, map_location=device, weights_only=True))
    return model.eval()


def load_reward_model(path, sft_path, device="cpu"):
    from lossbench.proxy_rm import load_reward_model as load

    return load(path, load_lm(sft_path, device), device)


def load_reward_ensemble(path, sft_path, objective: str, device="cpu"):
    """The ensemble objective (lossbench.overopt) over the members `pref_overopt` saved."""
    from lossbench.proxy_rm import EnsembleReward

    return EnsembleReward.load(path, lambda: load_lm(sft_path, device), objective, device)


def special_ids(samples: dict) -> tuple[int, int]:
    """(EOS, PAD) of the stored token arrays."""
    return VOCAB.EOS, VOCAB.PAD


def max_new_tokens(proto: dict) -> int:
    return T_RESPONSE


def tau_bt(proto: dict) -> float:
    """Temperature of the soft win rate: the labels' Bradley-Terry temperature."""
    return proto["pairs"]["tau_bt"]


def length_edges(proto: dict) -> tuple:
    return LENGTH_EDGES


def kind_data(kind: str, samples: dict, inputs: dict, needs=()):
    """Training rows of the kinds only SynthPref has: K-sample lists scored by r* (LiPO) and the
    forget set's secrets with their answers (NPO); with `template_answers` (FLAT) each secret's
    answer is column 0 and a template answer column 1 (sp.template_answers, seeded by the forget set)."""
    if kind == "listwise":
        return pe.pref_data(samples["train_prompts"], samples["train_responses"], eos_id=VOCAB.EOS,
                            pad_id=VOCAB.PAD, scores=samples["train_rewards"])
    forget = load_prepared(inputs["forget"])
    keep = forget["forget"].astype(bool)
    responses = forget["responses"][keep][:, None]
    if "template_answers" in needs:
        rng = np.random.default_rng(derive_seed("flat_templates", forget["prompts"][keep].tobytes().hex()))
        templates = sp.template_answers(int(keep.sum()), VOCAB, rng)
        responses = np.concatenate([responses, templates[:, None]], 1)
    return pe.pref_data(forget["prompts"][keep], responses, eos_id=VOCAB.EOS, pad_id=VOCAB.PAD)


def gold_scorer(sft_path, samples: dict, proto: dict, device):
    """(split, responses [N·n, T] prompt-major, n) -> {rewards, comp_<term>} from the closed form."""
    def score(split, responses, n):
        flat = np.repeat(samples[f"{split}_prompts"], n, 0)
        comps = sp.reward_components(flat, responses, VOCAB)
        return {"rewards": sp.gold_reward(flat, responses, VOCAB), **{f"comp_{k}": v for k, v in comps.items()}}
    return score


def gold_of(proto: dict):
    """(prompts [N, P], responses [N, T]) -> r* [N]: the closed-form gold reward, for the online
    methods' training curves (their own samples' gold reward, step by step)."""
    return lambda prompts, responses: sp.gold_reward(prompts, responses, VOCAB)


def forget_eval(policy, forget_path, device) -> dict:
    """The policy's likelihood of every secret answer and its greedy answers (NPO's metrics)."""
    forget = load_prepared(forget_path)
    fs = sp.ForgetSet(forget["prompts"], forget["answers"], forget["responses"], forget["forget"], 0)
    return {"secret_logps": secret_logps(policy, fs, device),
            "secret_greedy": greedy_answers(policy, fs.prompts, fs.answers.shape[1], device)}


def testbed_metrics(ev: dict, samples: dict, labels: dict, stage: Path, run_dir: Path) -> dict:
    """The gold reward's components on test samples and, for unlearning runs, forget/retain metrics."""
    values = {f"test/{c}": float(ev[f"test_comp_{c}"].mean()) for c in COMPONENTS}
    if "secret_logps" in ev:
        forget = load_prepared(stage / "forget.npz")
        f = forget["forget"].astype(bool)
        values.update({f"forget/{k}": v for k, v in
                       pe.forget_metrics(ev["secret_logps"][f], forget["retain_only_logps"][f]).items()})
        values["forget/extraction_rate"] = pe.extraction_rate(ev["secret_greedy"][f], forget["answers"][f])
        values["retain/extraction_rate"] = pe.extraction_rate(ev["secret_greedy"][~f], forget["answers"][~f])
        values["retain/loglik"] = float(ev["secret_logps"][~f].mean())
        values["forget/sft_forget_loglik"] = float(forget["sft_logps"][f].mean())
        values["forget/sft_extraction_rate"] = pe.extraction_rate(forget["sft_greedy"][f], forget["answers"][f])
        values["retain/sft_extraction_rate"] = pe.extraction_rate(forget["sft_greedy"][~f], forget["answers"][~f])
    return values


def testbed_metric_names(kind: str, stage: Path) -> list[str]:
    """What `testbed_metrics` gives a run of this method kind (a diverged run records them as NaN)."""
    names = [f"test/{c}" for c in COMPONENTS]
    if kind == "unlearning":
        names += ["forget/forget_loglik", "forget/ks_statistic", "forget/ks_pvalue", "forget/extraction_rate",
                  "retain/extraction_rate", "retain/loglik", "forget/sft_forget_loglik",
                  "forget/sft_extraction_rate", "retain/sft_extraction_rate"]
    return names
