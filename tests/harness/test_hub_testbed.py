"""The preference task's hub testbed end to end on the tiny local fixtures (no Snakemake): config
checks, each stage's file, every kind and hook the testbed runs, what its metrics hold and lack,
determinism, and a diverged run."""
import copy
import json
import math

import numpy as np
import pytest

from lossbench import data
from lossbench import config as lbconfig
from lossbench import io
from lossbench.tasks import preference as task
from tests.preference_runs import run_through
from tests.hub_fixtures import (hub_protocol, hub_track, lm_dir, rm_dir, root, task_dir, tokenizer,  # noqa: F401
                                tokenizer_dir, uf_dir)

TRACK, PROTO = "preference", "hub_tiny"
METHODS = ("dpo", "kto", "madpo", "sparsepo", "tgdpo")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def track(lm_dir, rm_dir, uf_dir, task_dir):
    t = hub_track(hub_protocol(lm_dir, rm_dir, uf_dir, task_dir), METHODS)
    lbconfig.check_track(t, "hub")
    return t


@pytest.fixture(scope="module")
def stage(track, tmp_path_factory):
    """reference (+ π_ref's capability) -> sample -> label (clean and ε = 0.2) -> reward model, seed 0."""
    d = tmp_path_factory.mktemp("hub_stage")
    seed_dir = d / "seed0"
    seed_dir.mkdir()
    proto = track["protocols"][PROTO]
    task.build_reference(proto, d / "reference.json")
    task.build_capability(proto, d / "reference.json", None, d / "capability.json")
    task.build_samples(TRACK, PROTO, proto, 0, d / "reference.json", seed_dir / "samples.npz")
    for ds in ("ultrafeedback", "ultrafeedback_eps20"):
        task.build_labels(TRACK, PROTO, proto, 0, ds, seed_dir / "samples.npz", seed_dir / f"labels_{ds}.npz")
    task.build_reward_model(TRACK, PROTO, proto, 0, "ultrafeedback", d / "reference.json", seed_dir / "samples.npz",
                            seed_dir / "labels_ultrafeedback.npz", seed_dir / "reward_model_ultrafeedback.pt")
    return seed_dir


def _run(track, stage, tmp, method, variant, dataset="ultrafeedback"):
    return run_through(track, stage, tmp, method, variant, dataset)


# ---------------------------------------------------------------------------- config


def _check(t):
    lbconfig.check_track(t, "hub")


def test_hub_refuses_synthpref_only_methods_and_lists_the_valid_ones(track):
    t = copy.deepcopy(track)
    for m in ("npo", "spo", "lipo", "srpo"):
        t["methods"].append(m)
        t["sweep"][m] = {"beta": [0.1, 1.0]}
    with pytest.raises(lbconfig.ConfigError) as e:
        _check(t)
    msg = str(e.value)
    assert "cannot run ['lipo', 'npo', 'spo', 'srpo']" in msg and "forget set" in msg and "keywords" in msg
    assert "revision format" in msg
    assert "runs dpo, ipo, cdpo, rdpo, simpo, rpo, madpo, sparsepo, tgdpo, flex_dpo, kto, orpo, ln_dpo" in msg
    t["dataset_methods"]["ultrafeedback"] = list(METHODS)  # restricted away: the track is valid again
    t["dataset_methods"]["ultrafeedback_eps20"] = ["dpo"]
    _check(t)


def test_hub_protocol_checks(track):
    t = copy.deepcopy(track)
    del t["protocols"][PROTO]["reward_model"]
    with pytest.raises(lbconfig.ConfigError, match=r"\['madpo'\] need a proxy reward model"):
        _check(t)
    t = copy.deepcopy(track)
    t["protocols"][PROTO]["datasets"].append("synthpref")
    with pytest.raises(lbconfig.ConfigError, match="'synthpref' .* does not fit testbed 'hub'"):
        _check(t)
    t = copy.deepcopy(track)
    t["protocols"][PROTO]["model"] = {"arch": "gpt2"}  # a SynthPref key
    with pytest.raises(lbconfig.ConfigError, match="'model' was unexpected.*valid keys: testbed, datasets, policy"):
        _check(t)
    t["protocols"][PROTO] = {**track["protocols"][PROTO], "testbed": "hubb"}
    with pytest.raises(lbconfig.ConfigError, match="'hubb' is not one of \\['synthpref', 'hub'\\]"):
        _check(t)
    t = copy.deepcopy(track)
    synth = yaml_protocol("synthpref_tiny")
    synth["datasets"] = ["ultrafeedback"]
    t["protocols"] = {"s": synth}
    t["dataset_methods"] = {}
    with pytest.raises(lbconfig.ConfigError, match="'ultrafeedback' .*kind hub.* does not fit testbed 'synthpref'"):
        _check(t)


def yaml_protocol(name):
    import yaml

    return yaml.safe_load((lbconfig.ROOT / "config/tracks/preference/smoke.yaml").read_text())["protocols"][name]


def test_full_profile_hub_protocol_is_valid():
    """The full profile's real-LM protocol: its own lr grid (a pretrained model), SynthPref's kept."""
    track = lbconfig.load_track(lbconfig.ROOT / "config/tracks/preference/full.yaml")
    hub = [p for p, proto in track["protocols"].items() if proto.get("testbed") == "hub"]
    assert hub, "the full profile has a hub protocol"
    (name,) = hub
    proto = track["protocols"][name]
    run = lbconfig.resolve_run(track, proto["datasets"][0], "dpo", 0, next(iter(lbconfig.variants(
        lbconfig.protocol_track(track, name), "dpo"))))
    assert run["protocol"]["optimizer"]["lr"] < 1e-4 and "sweep" not in run["protocol"]
    smoke = lbconfig.load_track(lbconfig.ROOT / "config/tracks/preference/smoke.yaml")
    assert not any(p.get("testbed") == "hub" for p in smoke["protocols"].values())  # smoke stays offline


# ---------------------------------------------------------------------------- stages


def test_stage_files(stage, tokenizer):
    ref = io.read_json(stage.parent / "reference.json")
    assert set(ref) == {"policy", "judge"} and "model.safetensors" in ref["policy"]["files"]
    assert ref["policy"]["commit"] is None  # a local folder, not a hub snapshot
    s = data.load_prepared(stage / "samples.npz")
    assert int(s["eos_id"]) == tokenizer.eos_token_id and int(s["pad_id"]) != int(s["eos_id"])
    n = {split: len(s[f"{split}_prompts"]) for split in ("train", "val", "test")}
    # rows read: 12 / 3 / 4; the fixture's identical pair (row 6 of each split) is dropped where drawn
    assert 11 <= n["train"] <= 12 and 2 <= n["val"] <= 3 and 3 <= n["test"] <= 4 and n["val"] + n["test"] >= 6
    assert not set(s["val_contexts"]) & set(s["test_contexts"])  # val and test share test_prefs, not rows
    for split in ("val", "test"):
        assert s[f"{split}_rewards"].shape == (n[split], 2) and np.isfinite(s[f"{split}_rewards"]).all()
        assert s[f"{split}_sft_samples"].shape == (2 * n[split], 12) and np.isfinite(s[f"{split}_sft_rewards"]).all()
        assert s[f"{split}_ref_logps"].shape == (n[split], 2) and (s[f"{split}_ref_logps"] < 0).all()
    clean, noisy = (data.load_prepared(stage / f"labels_{d}.npz") for d in ("ultrafeedback", "ultrafeedback_eps20"))
    assert clean["train_label"].all() and not noisy["val_flipped"].any() and not noisy["test_flipped"].any()
    assert np.isnan(clean["test_p"]).all()  # real pairs: no clean preference probability
    assert (stage / "reward_model_ultrafeedback.pt").exists()
    assert 0 <= io.read_json(stage.parent / "capability.json")["tiny_mc/acc"] <= 1


def test_label_flips_are_seeded_and_train_only(track, stage, tmp_path):
    proto = track["protocols"][PROTO]
    s = data.load_prepared(stage / "samples.npz")
    from lossbench import hub_testbed as hb

    hb.build_labels(s, 0.5, proto, ("k",), tmp_path / "a.npz")
    hb.build_labels(s, 0.5, proto, ("k",), tmp_path / "b.npz")
    a, b = data.load_prepared(tmp_path / "a.npz"), data.load_prepared(tmp_path / "b.npz")
    assert np.array_equal(a["train_flipped"], b["train_flipped"]) and a["train_flipped"].any()
    pairs, swap = hb.labelled_pairs(s, a, "train")
    r = s["train_responses"]
    np.testing.assert_array_equal(pairs.responses[:, 0].numpy(), np.where(swap[:, None], r[:, 1], r[:, 0]))
    assert pairs.prompt_mask is not None and np.array_equal(swap, a["train_flipped"])


def test_policy_is_stored_as_its_change_to_pi_ref(stage, tmp_path):
    import torch

    from lossbench import hub_testbed as hb
    from lossbench.preference import frozen_copy

    sft = stage.parent / "reference.json"
    ref = hb.load_lm(sft)
    policy = frozen_copy(ref)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():  # an lr ~1e-4 step's worth of change: far below bf16 weight precision
            p.add_(1e-4 * torch.randn(p.shape, generator=g))
    hb.save_policy(tmp_path / "policy.pt", policy, ref)
    loaded = hb.load_policy(sft, tmp_path / "policy.pt")
    for (name, a), b, r in zip(policy.named_parameters(), loaded.parameters(), ref.parameters()):
        change = (a - r).abs()
        assert ((b - a).abs() <= 4e-3 * change + 1e-12).all(), name
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight  # tied weights changed once


# ---------------------------------------------------------------------------- runs


@pytest.mark.parametrize("method", ["dpo", "kto", "madpo", "sparsepo"])
def test_every_hub_method_trains_and_evaluates(track, stage, tmp_path, method):
    values, out = _run(track, stage, tmp_path, method, "beta0.1")
    run = lbconfig.resolve_run(track, "ultrafeedback", method, 0, "beta0.1")
    assert set(task.eval_inputs(run, out, stage)) == {"eval", "samples", "labels", "capability", "ref_capability"}
    assert 0 <= values["test/win_rate"] <= 1 and 0 <= values["test/ranking_accuracy"] <= 1
    assert values["test/kl"] >= -1e-6 and math.isfinite(values["test/gold_reward"])
    assert values["test/sft_gold_reward"] == pytest.approx(
        data.load_prepared(stage / "samples.npz")["test_sft_rewards"].mean())
    # SynthPref-only metrics are NaN or absent, not imitated
    assert math.isnan(values["test/idealized_ranking_accuracy"]) and math.isnan(values["test/alignment_gap"])
    assert not any(k in values for k in ("test/cov", "test/ntox", "forget/forget_loglik"))
    assert 0 <= values["test/judge_agreement"] <= 1 and 0 <= values["test/judge_ranking_accuracy"] <= 1
    assert 0 <= values["capability/tiny_mc_acc"] <= 1
    assert values["capability/sft_tiny_mc_acc"] == io.read_json(stage.parent / "capability.json")["tiny_mc/acc"]
    assert set(k for k in values if k.startswith("test/win_rate_len")) == {
        "test/win_rate_len_0_3", "test/win_rate_len_3_6", "test/win_rate_len_6_9", "test/win_rate_len_9_13"}
    assert io.read_json(out / "run.json")["status"] == "ok"


def test_tgdpo_reads_its_guide_and_runs_are_deterministic(track, stage, tmp_path):
    _run(track, stage, tmp_path, "dpo", "beta0.1")
    first, out = _run(track, stage, tmp_path, "tgdpo", "beta0.1")
    again, _ = _run(track, stage, tmp_path / "again", "dpo", "beta0.1")
    second, _ = _run(track, stage, tmp_path / "again", "tgdpo", "beta0.1")
    keep = [k for k in first if not k.startswith("train/")]
    np.testing.assert_equal({k: first[k] for k in keep}, {k: second[k] for k in keep})  # NaN == NaN here
    info = json.loads((out / "train.json").read_text())
    assert set(info["inputs_sha256"]) == {"sft", "samples", "labels", "guide"}


def test_diverged_hub_run_records_nan_metrics(track, stage, tmp_path):
    t = copy.deepcopy(track)
    t["protocols"][PROTO]["optimizer"]["lr"] = 1e30  # blows up within the first steps
    values, out = _run(t, stage, tmp_path, "dpo", "beta0.1")
    assert json.loads((out / "train.json").read_text())["status"] == "diverged"
    assert io.read_json(out / "capability.json") == {}
    assert all(math.isnan(v) for k, v in values.items() if not k.startswith("train/"))
    assert {"test/win_rate", "test/judge_agreement", "capability/tiny_mc_acc"} <= set(values)
