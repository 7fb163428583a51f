"""Seeds trained together (lossbench/train_together.py): per-seed results equal separate runs up to
float rounding, deterministic, independent seeds (a diverged one stops alone), clear refusals."""
import copy

import numpy as np
import pytest
import torch

from lossbench import methods
from lossbench.models import build_model
from lossbench.train import train
from lossbench.train_together import StackedMLP, train_together, why_not
from tests.harness.test_train import PROTO, _toy

SEEDS = (0, 1, 2)


def _datas(n=300):
    return [_toy(n=n, seed=s) for s in SEEDS]  # each seed its own draw of the data, as in a track


def _separate(name, proto=PROTO, datas=None):
    spec = methods.get(name)
    return [train(d, spec, spec.hparams(), proto, init_seed=10 + s, order_seed=20 + s)
            for s, d in zip(SEEDS, datas or _datas())]


def _together(name, proto=PROTO, datas=None):
    spec = methods.get(name)
    return train_together(datas or _datas(), spec, spec.hparams(), proto, [10 + s for s in SEEDS],
                          [20 + s for s in SEEDS])


def _curve(res, metric):
    return np.array([r["value"] for r in res.curves if r["metric"] == metric])


def test_stacked_forward_is_each_seeds_own_model():
    models = [build_model({"name": "mlp", "hidden": [16, 8]}, (8,), 4) for _ in SEEDS]
    copies = [copy.deepcopy(m) for m in models]
    stacked = StackedMLP(models)
    x = torch.randn(len(SEEDS), 5, 8)
    feats, logits = stacked(x)
    for s, m in enumerate(copies):
        torch.testing.assert_close(logits[s], m(x[s]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(feats[s], m.features(x[s]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(models[s](x[s]), m(x[s]))  # the seed's module reads its slice


def test_one_step_is_each_seeds_own_step():
    """The summed loss gives each slice its own seed's gradient, and Adam is elementwise: after one
    step every seed's weights are the separately trained seed's (to float rounding)."""
    proto = {**PROTO, "budget": {"steps": 1, "batch_size": 32}, "curve_points": 1}
    sep, tog = _separate("erm", proto), _together("erm", proto)
    for a, b in zip(sep, tog):
        for (name, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=name)
        assert not torch.equal(a.model.state_dict()["head.weight"], sep[0].model.state_dict()["head.weight"]) or a is sep[0]


@pytest.mark.parametrize("name", ["erm", "logit_adjust", "cb_effective", "resample", "aldr_kl", "anyloss"])
def test_results_match_separate_runs(name):
    """Every method kind the stacked trainer takes (loss, predict, reweight, sampler, per-example
    state, batch loss): the first curve point agrees to float rounding, and the trained models score
    the same test set alike (the trajectories may drift apart by rounding, as any two runs do)."""
    sep, tog = _separate(name), _together(name)
    for a, b in zip(sep, tog):
        assert a.status == b.status == "ok" and a.steps == b.steps == PROTO["budget"]["steps"]
        np.testing.assert_allclose(_curve(a, "train/loss")[0], _curve(b, "train/loss")[0], rtol=1e-5)
        np.testing.assert_allclose(_curve(a, "train/loss"), _curve(b, "train/loss"), rtol=1e-3)
        np.testing.assert_allclose(a.test_scores, b.test_scores, rtol=1e-3, atol=1e-3)
        assert a.valsel_step == b.valsel_step
        # each seed its share of the stacked state (Adam's step counters, one per tensor, are shared)
        assert a.optimizer_state_bytes == pytest.approx(b.optimizer_state_bytes, rel=0.01)


def test_seeds_differ_and_results_are_deterministic():
    a, b = _together("erm"), _together("erm")
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.test_scores, y.test_scores)
        assert x.curves == y.curves
    assert not np.allclose(a[0].test_scores, a[1].test_scores)  # three seeds, not one model three times


def test_a_diverged_seed_stops_alone():
    """Seed 1's inputs hold an infinity: its loss is NaN from the first step and it is recorded as diverged at
    that step; the other seeds' slices never see it and match their separate runs."""
    datas = _datas()
    datas[1].x_train[5:] = np.inf  # every batch of seed 1 draws a non-finite input
    sep, tog = _separate("erm", datas=datas), _together("erm", datas=datas)
    assert sep[1].status == tog[1].status == "diverged"
    assert sep[1].diverged_at_step == tog[1].diverged_at_step == 0 and tog[1].test_scores is None
    for s in (0, 2):
        assert tog[s].status == "ok"
        np.testing.assert_allclose(sep[s].test_scores, tog[s].test_scores, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name, proto, reason", [
    ("kd", PROTO, "teacher"),
    ("self_distill", PROTO, "teacher"),
    ("pgd_at", PROTO, "attacks"),
    ("erm", {**PROTO, "model": {"name": "mlp", "hidden": [32], "norm": "batchnorm"}}, "plain MLP"),
    ("erm", {**PROTO, "model": {"name": "cnn1d"}}, "plain MLP"),
    ("erm", {**PROTO, "optimizer": {"name": "adamp", "lr": 0.01}}, "not elementwise"),
])
def test_refusals_name_their_reason(name, proto, reason):
    assert reason in why_not(methods.get(name), proto)
    with pytest.raises(ValueError, match=reason):
        _together(name, proto)
    assert why_not(methods.get("erm"), PROTO) is None
