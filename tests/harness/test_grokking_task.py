"""The grokking task end to end at micro scale, and the trainer's diagnostics on hand-made inputs:
Softmax Collapse (card G1), weight/gradient geometry, time-to-target bookkeeping, divergence,
determinism, paired init, the validation split and its selection metric, and the config checks of
optimiser-setting methods and of val_fraction."""
import copy
import math

import pandas as pd
import pytest
import torch
import yaml

from lossbench import data
from lossbench import methods
from lossbench import config as lbconfig
from lossbench import io
from lossbench.config import resolve_run
from lossbench import tasks
from lossbench.grokking import collapse_stats, eval_steps, summarize, weight_grad_stats
from lossbench.runner import evaluate_run, train_run

PROTO = {"datasets": ["mod113_add_f40"], "model": {"hidden": [24]},
         "optimizer": {"name": "adamw", "lr": 0.01, "betas": [0.9, 0.99], "eps": 1e-25, "weight_decay": 0.0},
         "budget": {"steps": 12}, "eval": {"every": 4, "early_points": 3}}


def _track(methods_, proto=PROTO):
    return {"track": "grokking", "version": 1, "task": "grokking", "baseline": methods_[0], "methods": methods_,
            "seeds": [0, 1], "protocols": {"micro": copy.deepcopy(proto)}, "stats": {"ci": 0.95}}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    path = tmp_path_factory.mktemp("grok") / "prepared.npz"
    io.write_npz(path, **data.prepare_source("mod113_add"))
    return path


def _run(track, method, seed, prepared, out):
    run = resolve_run(track, "mod113_add_f40", method, seed)
    train_run(run, {"data": prepared}, out)
    evaluate_run(out)
    return (pd.read_csv(out / "curves.csv"), pd.read_csv(out / "metrics.csv").set_index("metric")["value"],
            io.read_json(out / "train.json"))


def test_eval_steps_are_log_spaced_early_then_regular():
    assert eval_steps(1000, 250, 4) == [0, 1, 4, 16, 63, 250, 500, 750, 1000]
    assert eval_steps(10, 4, 0) == [0, 4, 8, 10]


def test_collapse_fraction_depends_on_the_softmax_precision():
    """Card G1: z = [0, −20] is collapsed in float32 (shifted exp-sum exactly 1), not in float64."""
    logits = torch.tensor([[0.0, -20.0], [0.0, -1.0]])
    for dtype, sc in ((torch.float32, 0.5), (torch.float64, 0.0)):
        spec = methods.get("ce_fp64" if dtype == torch.float64 else "erm")
        loss = spec.fn(logits, torch.tensor([0, 0]), **spec.hparams())
        stats = collapse_stats(logits, loss, dtype)
        assert stats["train/sc_fraction"] == sc
        assert stats["train/zero_loss_fraction"] == sc  # correctly classified rows: zero loss iff collapsed
        assert stats["train/absorbed_fraction"] == sc  # gap 20 > 16.6 (float32), < 36.7 (float64)
        assert stats["logits/top_gap_max"] == 20.0 and stats["logits/top_gap_mean"] == 10.5


def test_weight_and_gradient_geometry():
    a, b = torch.nn.Parameter(torch.tensor([3.0, 4.0])), torch.nn.Parameter(torch.tensor([1.0, 0.0]))
    a.grad, b.grad = torch.tensor([-3.0, -4.0]), torch.tensor([0.0, 2.0])  # −g ∥ a; g ⊥ b
    stats = weight_grad_stats([("fc1.weight", a), ("out.weight", b)])
    assert stats["weights/l2/fc1"] == 5.0 and stats["weights/l2"] == pytest.approx(math.sqrt(26))
    assert stats["grad/nlm_cosine/fc1"] == pytest.approx(1.0) and stats["grad/nlm_cosine/out"] == 0.0
    assert stats["grad/nlm_cosine"] == pytest.approx(25 / (math.sqrt(26) * math.sqrt(29)))
    assert stats["grad/orth_ratio"] == pytest.approx(2 / math.sqrt(29))  # only b's gradient is ⊥


def test_time_to_target_metrics_and_not_reached():
    rows = lambda m, vals: [{"step": s, "metric": m, "value": v} for s, v in vals]  # noqa: E731
    curves = (rows("train/accuracy", [(0, 0.0), (10, 0.995), (20, 1.0)])
              + rows("test/accuracy", [(0, 0.0), (10, 0.5), (20, 0.96)])
              + rows("train/sc_fraction", [(0, 0.0), (10, 0.5), (20, 0.7)]))
    final = summarize(curves)
    assert (final["train/steps_to_memorize"], final["test/steps_to_grok"], final["test/grok_delay"]) == (10, 20, 10)
    assert final["test/grokked"] == 1.0 and math.isnan(final["test/steps_to_grok_99"])
    assert final["train/first_collapse_step"] == 20 and final["test/max_accuracy"] == 0.96  # > 0.5, not ≥
    never = summarize(rows("test/accuracy", [(0, 0.1)]))
    assert never["test/grokked"] == 0.0 and math.isnan(never["test/steps_to_grok"])
    assert math.isnan(final["val/max_accuracy"])  # no val curve: missing, not 0
    val = summarize(curves + rows("val/accuracy", [(0, 0.0), (10, 0.7), (20, 0.6)]) + rows("val/loss", [(20, 1.5)]))
    assert (val["val/max_accuracy"], val["val/accuracy"], val["val/loss"]) == (0.7, 0.6, 1.5)


def test_variants_are_selected_on_the_validation_split():
    spec = tasks.get("grokking").SELECTION
    assert spec["metric"] == "val/max_accuracy" and spec["higher_is_better"] is True
    assert spec.get("split", "validation") == "validation"


def test_micro_runs_end_to_end_paired_and_deterministic(prepared, tmp_path):
    track = _track(["erm", "orthograd", "stablemax", "ce_wd"])
    curves, metrics, info = _run(track, "erm", 0, prepared, tmp_path / "erm")
    assert info["status"] == "ok" and info["train_examples"] == 5107 and info["steps"] == 12
    assert (info["val_examples"], info["test_examples"]) == (1276, 6386)  # val_fraction 0.1 by default
    assert sorted(curves["step"].unique()) == eval_steps(12, 4, 3)
    for m in ("test/accuracy", "val/accuracy", "val/loss", "train/sc_fraction", "weights/l2/fc1",
              "grad/nlm_cosine/out", "grad/orth_ratio"):
        assert m in set(curves["metric"])
    for metric in ("val/accuracy", "val/loss"):  # on the test metrics' schedule
        assert sorted(curves[curves.metric == metric]["step"]) == eval_steps(12, 4, 3)
    for m in ("test/accuracy", "test/steps_to_grok", "test/grokked", "train/steps_to_memorize",
              "train/first_collapse_step", "weights/l2", "train/wall_seconds", "val/accuracy", "val/loss",
              "val/max_accuracy", tasks.get("grokking").SELECTION["metric"]):
        assert m in metrics.index
    assert metrics["val/max_accuracy"] == curves[curves.metric == "val/accuracy"]["value"].max()
    assert metrics["test/grokked"] == 0.0 and math.isnan(metrics["test/steps_to_grok"])

    again, metrics2, _ = _run(track, "erm", 0, prepared, tmp_path / "erm_again")
    pd.testing.assert_frame_equal(curves, again)  # same seed, same numbers (CPU)
    keep = ~metrics.index.str.startswith("train/wall") & ~metrics.index.str.startswith("train/steps_per")
    pd.testing.assert_series_equal(metrics[keep], metrics2[keep])

    def at(c, step, metric):
        return c[(c.step == step) & (c.metric == metric)]["value"].item()

    others = {m: _run(track, m, 0, prepared, tmp_path / m)[0] for m in ("orthograd", "ce_wd", "stablemax")}
    for m, c in others.items():  # one init per seed for every method: identical weights at step 0
        assert at(c, 0, "weights/l2") == at(curves, 0, "weights/l2"), m
    # the methods act: ⊥Grad and weight decay keep the weights smaller than plain AdamW; StableMax's
    # loss differs from CE at the same init
    assert at(others["orthograd"], 12, "weights/l2") < at(curves, 12, "weights/l2")
    assert at(others["ce_wd"], 12, "weights/l2") < at(curves, 12, "weights/l2")
    assert at(others["stablemax"], 0, "train/loss") != at(curves, 0, "train/loss")
    seed1, _, _ = _run(track, "erm", 1, prepared, tmp_path / "seed1")
    assert at(seed1, 0, "test/accuracy") != at(curves, 0, "test/accuracy")  # another split and init


def test_a_non_finite_loss_is_recorded_as_diverged(prepared, tmp_path):
    proto = {**PROTO, "optimizer": {"name": "sgd", "lr": 1e6}}  # explodes within a few steps
    curves, metrics, info = _run(_track(["ce_fp16"], proto), "ce_fp16", 0, prepared, tmp_path)
    assert info["status"] == "diverged" and info["diverged_at_step"] is not None
    assert metrics.drop(["train/wall_seconds", "train/steps_per_second"]).isna().all()
    assert (curves["step"] < info["diverged_at_step"] + 1).all() and len(curves)  # history up to it kept


def test_config_checks_of_optimiser_setting_methods():
    sgd = {**PROTO, "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.8}}
    with pytest.raises(lbconfig.ConfigError, match=r"'stablemax' sets \['betas'\].*sgd"):
        lbconfig.check_track(_track(["erm", "stablemax"], sgd))
    lbconfig.check_track(_track(["erm", "orthograd", "ce_wd"], sgd))  # ⊥SGD and SGD + weight decay are fine
    with open(lbconfig.ROOT / "config/tracks/classification/smoke.yaml") as f:
        classification = yaml.safe_load(f)
    classification["methods"].append("ce_wd")
    with pytest.raises(lbconfig.ConfigError, match="'ce_wd' sets the optimiser"):
        lbconfig.check_track(classification)
    with pytest.raises(lbconfig.ConfigError, match="not grokking"):
        lbconfig.check_track(_track(["erm"], {**PROTO, "datasets": ["digits_lt10"]}))
    with pytest.raises(lbconfig.ConfigError, match="needs"):
        lbconfig.check_track(_track(["erm", "logit_adjust"]))


def test_val_metrics_match_a_separate_evaluation_of_the_slice(prepared, tmp_path):
    """val/* are the model's numbers on exactly the val slice of the seeded split (the batched pass
    over val + test changes nothing), and a protocol's val_fraction sets the slice's size."""
    from lossbench.data import algorithmic
    from lossbench.grokking import build_model
    from lossbench.seeding import derive_seed

    proto = {**PROTO, "val_fraction": 0.2, "budget": {"steps": 4}, "eval": {"every": 4, "early_points": 0}}
    track = _track(["erm"], proto)
    curves, _, info = _run(track, "erm", 0, prepared, tmp_path)
    assert (info["train_examples"], info["val_examples"]) == (5107, 2553)
    run = resolve_run(track, "mod113_add_f40", "erm", 0)
    arrays = io.read_npz(prepared)
    _, val, test = algorithmic.split_train_val_test(arrays, 0.4, 0.2, run["seeds"]["data"])
    model = build_model(226, [24], 113, derive_seed(run["seeds"]["data"], "init"))  # the step-0 weights
    x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
    with torch.no_grad():
        for name, rows in (("val", val), ("test", test)):
            logits = model(x[rows])
            at0 = curves[(curves.step == 0) & (curves.metric == f"{name}/accuracy")]["value"].item()
            assert at0 == pytest.approx(float((logits.argmax(1) == y[rows]).double().mean()), abs=1e-12)
            loss0 = curves[(curves.step == 0) & (curves.metric == f"{name}/loss")]["value"].item()
            ce = torch.nn.functional.cross_entropy(logits, y[rows]).item()
            assert loss0 == pytest.approx(ce, rel=1e-5)


def test_config_checks_of_val_fraction():
    lbconfig.check_track(_track(["erm"], {**PROTO, "val_fraction": 0.5}))  # 0.4 + 0.5 < 1
    with pytest.raises(lbconfig.ConfigError, match="leaves no test examples"):
        lbconfig.check_track(_track(["erm"], {**PROTO, "val_fraction": 0.6}))  # 0.4 + 0.6 = 1
    with pytest.raises(lbconfig.ConfigError, match="val_fraction"):
        lbconfig.check_track(_track(["erm"], {**PROTO, "val_fraction": 0.0}))  # the schema's range
    with pytest.raises(lbconfig.ConfigError, match="val_fraction"):
        lbconfig.check_track(_track(["erm"], {**PROTO, "val_fraction": 1.5}))


def test_solved_rule_needs_train_and_val_in_a_row_and_is_off_without_its_block():
    from lossbench.grokking import Solved
    rows = lambda tr, va, te=0.0: {"train/accuracy": tr, "val/accuracy": va, "test/accuracy": te}
    rule = Solved({"accuracy": 0.99, "evals": 2})
    assert [rule.update(rows(1.0, 0.995)), rule.update(rows(1.0, 0.5)), rule.update(rows(1.0, 1.0)),
            rule.update(rows(0.99, 0.99))] == [False, False, False, True]  # a miss resets the streak
    test_only = Solved({"evals": 1})
    assert not test_only.update(rows(0.5, 0.5, te=1.0))  # reads validation, never test
    assert not any(Solved(None).update(rows(1.0, 1.0)) for _ in range(5))


def test_a_solved_run_stops_early_and_an_unsolved_one_runs_its_budget(prepared, tmp_path):
    # accuracy threshold 0: solved at the first logged step, so the run ends at its second (evals: 2)
    easy = {**PROTO, "budget": {"steps": 12, "stop_when_solved": {"accuracy": 1e-9, "evals": 2}}}
    curves, metrics, info = _run(_track(["erm"], easy), "erm", 0, prepared, tmp_path / "easy")
    logged = eval_steps(12, 4, 3)
    assert info["stopped_early"] and info["steps"] == logged[1] < 12
    assert curves["step"].max() == logged[1]
    hard = {**PROTO, "budget": {"steps": 12, "stop_when_solved": {"evals": 2}}}  # 100% val: not in 12 steps
    curves, metrics, info = _run(_track(["erm"], hard), "erm", 0, prepared, tmp_path / "hard")
    assert not info["stopped_early"] and info["steps"] == 12 and curves["step"].max() == 12
