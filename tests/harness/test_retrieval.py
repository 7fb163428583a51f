"""The open-world retrieval protocol: metrics (lossbench/retrieval.py) by hand and against
pytorch-metric-learning's AccuracyCalculator, OPIS's zero case, the open-world split, the trainer's
embedding mode and the task's evaluation."""
import numpy as np
import pytest
import torch

from lossbench import data
from lossbench.methods.base import MethodSpec
from lossbench.retrieval import (opis, precision_within_r, ranked_relevance, recall_at_1, recall_at_1_t,
                                 retrieval_metrics)
from lossbench.train import train
from tests.harness.test_train import PROTO, _toy


def _circle(degrees):
    a = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], 1)


def test_hand_example():
    # query at 0° (label 0); references 10°(0), 20°(1), 30°(0), 40°(1), 50°(0), 120°(1), 150°(1):
    # rel = 1 0 1 0 1 ..., R = 3: P@1 = 1, R-precision 2/3, MAP@R = (1 + 0 + 2/3)/3
    emb, y = _circle([0, 10, 20, 30, 40, 50, 120, 150]), np.array([0, 0, 1, 0, 1, 0, 1, 1])
    rel = ranked_relevance(emb, y)[:1]
    assert rel[0, :5].tolist() == [True, False, True, False, True]
    r_precision, map_at_r = precision_within_r(rel)
    assert r_precision[0] == pytest.approx(2 / 3) and map_at_r[0] == pytest.approx((1 + 2 / 3) / 3)


def test_agrees_with_pytorch_metric_learning():
    pml = pytest.importorskip("pytorch_metric_learning")  # noqa: F841
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
                              k="max_bin_count", knn_func=CustomKNN(CosineSimilarity()), device=torch.device("cpu"))
    rng = np.random.default_rng(0)
    for n, d, k in ((200, 8, 5), (300, 16, 12)):
        y = rng.integers(0, k, n)
        emb = rng.normal(size=(n, d)) + 1.5 * rng.normal(size=(k, d))[y]  # some class structure
        ours = retrieval_metrics(emb, y)
        e = torch.from_numpy(emb).float()
        theirs = calc.get_accuracy(e, torch.from_numpy(y), e, torch.from_numpy(y), ref_includes_query=True)
        assert ours["test/recall_at_1"] == pytest.approx(theirs["precision_at_1"], abs=1e-6)
        assert ours["test/map_at_r"] == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-6)
        assert ours["test/r_precision"] == pytest.approx(theirs["r_precision"], abs=1e-6)
        assert recall_at_1(emb, y) == ours["test/recall_at_1"]
        assert recall_at_1_t(e.double(), torch.from_numpy(y)) == pytest.approx(ours["test/recall_at_1"])


def test_recall_at_k_grows_and_a_perfect_embedding_scores_one():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 120)
    m = retrieval_metrics(rng.normal(size=(120, 6)), y)
    values = [m[f"test/recall_at_{k}"] for k in (1, 2, 4, 8)]
    assert values == sorted(values) and 0 < values[0] < 1
    perfect = retrieval_metrics(np.eye(4)[y] + 0.01 * rng.normal(size=(120, 4)), y)
    assert all(perfect[f"test/{k}"] == 1.0 for k in ("recall_at_1", "map_at_r", "r_precision"))


def test_opis_is_zero_for_a_threshold_consistent_embedding():
    # every class is the same rigid configuration (a rotated copy, far from the others): each class
    # sees the same distances to its own and to the other classes, so U_c(d) = U(d) at every d
    rng = np.random.default_rng(2)
    shape = rng.normal(size=(10, 3)) * 0.1
    blocks = []
    for c in range(4):
        blocks.append(np.concatenate([np.zeros((10, 4)), shape], 1))
        blocks[-1][:, c] = 1.0  # class c sits around axis c: between classes cos ≈ 0
    emb, y = np.concatenate(blocks), np.repeat(np.arange(4), 10)
    assert opis(emb, y) == pytest.approx(0.0, abs=1e-12)
    # one class spread wider has its own utility curve: OPIS > 0
    emb[y == 0, 4:] *= 8
    assert opis(emb, y) > 1e-3


def _prepared(k=6, n=60, seed=0):
    rng = np.random.default_rng(seed)
    y, yh = np.repeat(np.arange(k), n), np.repeat(np.arange(k), n // 2)
    return {"x_train": rng.normal(size=(len(y), 8)).astype(np.float32), "y_train": y,
            "x_heldout": rng.normal(size=(len(yh), 8)).astype(np.float32), "y_heldout": yh, "num_classes": k}


def test_open_world_split(monkeypatch):
    monkeypatch.setattr(data, "dataset_entry", lambda name: {"source": "toy", "open_world": 4})
    monkeypatch.setattr(data, "modality", lambda name: "vector")
    ds = data.build("toy_open4", _prepared(), 0)
    assert ds.retrieval and ds.num_classes == 4
    assert set(ds.y_train) == set(ds.y_val) == {0, 1, 2, 3}
    assert set(ds.y_test) == {4, 5} and len(ds.y_test) == 60  # every held-out example of classes 4, 5
    assert data.build("toy_open4", _prepared(), 0).y_val.tolist() == ds.y_val.tolist()  # seeded


def _open_toy():
    ds = _toy()
    ds.retrieval = True
    return ds


def _embedding_spec(fn, needs=()):
    return MethodSpec(name="probe", kind="embedding", fn=fn, defaults={}, paper="-", url="http://x", docs="-",
                      needs=tuple(needs))


def test_embedding_kind_gets_features_and_logits_and_runs_open_world_only():
    seen = {}

    def fn(embeddings, targets, logits):
        seen.update(emb=embeddings.shape, logits=logits.shape, grad=embeddings.requires_grad)
        return embeddings.pow(2).mean() + 0 * logits.sum()

    spec = _embedding_spec(fn, needs=("logits",))
    res = train(_open_toy(), spec, {}, PROTO, init_seed=1, order_seed=2)
    assert res.status == "ok" and seen == {"emb": (32, 32), "logits": (32, 4), "grad": True}
    assert res.test_scores.shape == (len(_toy().y_test), 32)  # embeddings, not logits
    assert {c["metric"] for c in res.curves} == {"train/loss", "val/recall_at_1"}
    again = train(_open_toy(), spec, {}, PROTO, init_seed=1, order_seed=2)
    np.testing.assert_array_equal(res.test_scores, again.test_scores)
    with pytest.raises(ValueError, match="open-world"):
        train(_toy(), spec, {}, PROTO, init_seed=1, order_seed=2)


def test_a_classification_loss_on_an_open_world_dataset_is_scored_on_its_features():
    from lossbench import methods

    erm = methods.get("erm")
    closed = train(_toy(), erm, {}, PROTO, init_seed=1, order_seed=2)
    opened = train(_open_toy(), erm, {}, PROTO, init_seed=1, order_seed=2)
    model = closed.model.eval()
    with torch.no_grad():
        feats = model.features(torch.from_numpy(_toy().x_test)).numpy()
    # same training (the data and seeds are equal); only what is returned differs
    np.testing.assert_array_equal(opened.test_scores, feats)


@pytest.mark.parametrize("method", ["erm", "contrastive", "triplet", "multi_similarity", "supcon", "kalm_focal", "metrix"])
def test_an_open_world_run_trains_and_evaluates_end_to_end(tmp_path, method):
    """A tiny run of each retrieval-protocol method through the task (train_run, then evaluate_run)
    on the registry's mnist1d_open5 recipe, with MNIST-1D-shaped random data."""
    import logging

    from lossbench import io, methods
    from lossbench.tasks import classification

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(10, 40)) * 2
    y, yh = np.repeat(np.arange(10), 30), np.repeat(np.arange(10), 12)
    io.write_npz(tmp_path / "prepared.npz", x_train=(centers[y] + rng.normal(size=(300, 40))).astype(np.float32),
                 y_train=y, x_heldout=(centers[yh] + rng.normal(size=(120, 40))).astype(np.float32), y_heldout=yh,
                 num_classes=np.int64(10))
    run = {"track": "classification", "dataset": "mnist1d_open5", "method": method, "variant": "default", "seed": 0,
           "hparams": methods.get(method).hparams(), "protocol": PROTO, "seeds": {"data": 0, "init": 1, "order": 2}}
    out = tmp_path / "run"
    out.mkdir()
    info = classification.train_run(run, {"data": tmp_path / "prepared.npz"}, out, "cpu", logging.getLogger("t"))
    info.update({k: run[k] for k in ("track", "dataset", "method", "variant", "seed")}, protocol=PROTO,
                outputs_sha256={n: io.sha256_file(out / n) for n in classification.ARTEFACTS})
    values, per_class = classification.evaluate_run(out, info)
    assert info["status"] == "ok" and per_class is None
    assert set(values) == set(classification.RETRIEVAL_METRICS + classification.RETRIEVAL_VALSEL_METRICS
                              + ["train/samples_per_second", "train/optimizer_state_mb"])
    assert all(np.isfinite(values[m]) for m in classification.RETRIEVAL_METRICS)
    assert 0 < values["test/recall_at_1"] <= values["test/recall_at_8"] <= 1 and values["test/opis"] >= 0
    pred = io.read_npz(out / "predictions.npz")
    assert set(pred["y_test"]) == {5, 6, 7, 8, 9} and pred["test_embeddings"].shape == (60, 32)


def test_the_report_gives_open_world_sets_their_own_columns():
    from lossbench.report.tables import dataset_layout, load_layout, track_layout

    layout = load_layout()
    default = track_layout(layout, "classification")
    own = dataset_layout(default, "mnist1d_open5")
    assert own["main_metric"] == "test/recall_at_1" and own["curves"] == ["train/loss", "val/recall_at_1"]
    assert all(c in layout["metrics"] for c in own["columns"] + own["curves"])
    assert dataset_layout(default, "mnist1d_lt100")["main_metric"] == "test/balanced_accuracy"


def test_embedding_methods_run_only_on_open_world_sets_and_those_refuse_attack_teacher_and_tuning():
    import copy

    import yaml

    from lossbench import config as lbconfig

    track = yaml.safe_load((lbconfig.ROOT / "config/tracks/classification/smoke.yaml").read_text())
    lbconfig.check_track(track)
    assert "multi_similarity" not in lbconfig.methods_on(track, "mnist1d_lt100")  # the task's rule
    bad = copy.deepcopy(track)
    bad["dataset_methods"]["mnist1d_sym40"].append("triplet")
    with pytest.raises(lbconfig.ConfigError, match="train no classifier head"):
        lbconfig.check_track(bad)
    for key, value in (("attack", track["protocols"]["mlp_adam"]["attack"]), ("tuning", {"trials": 1, "seeds": [100]})):
        bad = copy.deepcopy(track)
        bad["protocols"]["mlp_adam_open"][key] = value
        with pytest.raises(lbconfig.ConfigError, match=f"open-world.*no {key}"):
            lbconfig.check_track(bad)
