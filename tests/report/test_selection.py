"""Variant selection in the report (report/selection.py): a swept track reports each method at the
variant chosen on validation data, never on test data, and says which; the optimizer axis selects
per optimizer over the same grid; markdown tables escape HTML from config.

Fixture: a classification track, one dataset, erm (lr grid, plus the optimizer axis adamw/sgd) and
logit_adjust (tau grid), 3 seeds. The validation-best variant is the test-worst one, and the
validation-best variant of logit_adjust diverged on one seed (it loses to a variant with every seed).
"""
import json
import math

import pandas as pd
import pytest

from lossbench import config as lbconfig
from lossbench.report import selection
from lossbench.report.build import build_report, load_results

TRACK, DATASET = "clf", "digits_lt10"
AXIS = {"methods": ["erm"], "baseline": "adamw",
        "optimizers": {"adamw": {"name": "adamw", "lr": 0.001}, "sgd": {"name": "sgd", "lr": 0.1}}}
SPEC = {"track": TRACK, "methods": ["erm", "logit_adjust"], "optimizer_axis": AXIS,
        "sweep": {"erm": {"lr": [0.1, 0.01]}, "logit_adjust": {"tau": [0.5, 1.0]}}}
# (method, variant) -> (val, test) balanced accuracy at seed 0 (+0.001 per seed); None val = diverged on seed 1
VALUES = {("erm", "lr0.1"): (0.70, 0.501), ("erm", "lr0.01"): (0.60, 0.901),
          ("logit_adjust", "tau0.5"): (0.95, 0.951), ("logit_adjust", "tau1.0"): (0.65, 0.611),
          ("erm", "lr0.1-optimizeradamw"): (0.80, 0.721), ("erm", "lr0.01-optimizeradamw"): (0.50, 0.331),
          ("erm", "lr0.1-optimizersgd"): (0.40, 0.441), ("erm", "lr0.01-optimizersgd"): (0.75, 0.811)}
DIVERGES = ("logit_adjust", "tau0.5", 1)


def write_swept(d, description="digits, long-tailed", budget=None):
    summary, curves, per_class, runs = [], [], [], []
    for method in SPEC["methods"]:
        for variant in lbconfig.variants(SPEC, method, DATASET):  # the slugs the DAG names runs by
            val, test = VALUES[(method, variant)]
            for seed in range(3):
                key = {"track": TRACK, "dataset": DATASET, "method": method, "variant": variant, "seed": seed}
                bad = (method, variant, seed) == DIVERGES
                status = "diverged" if bad else "ok"
                for metric, v in {"val/balanced_accuracy": val, "test/balanced_accuracy": test,
                                  "test/accuracy": test, "train/wall_seconds": 1.0}.items():
                    summary.append({**key, "metric": metric, "value": math.nan if bad else v + 0.001 * seed,
                                    "status": status, "track_version": 1, "method_version": 1,
                                    "run_id": f"r{len(runs)}"})
                for step in (0, 10):
                    curves.append({**key, "step": step, "epoch": 0, "metric": "train/loss", "value": 1.0 / (1 + step)})
                for cls, count in enumerate([50, 10]):
                    per_class.append({**key, "class": cls, "train_count": count, "test_recall": test})
                runs.append({**key, "status": status, "hparams": {"tau": 1.0} if method != "erm" else {},
                             "run_id": f"r{len(runs)}", "device": "cpu", "protocol_name": "p"})
    d.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(summary).to_csv(d / "summary.csv", index=False)
    pd.DataFrame(curves).to_csv(d / "curves.csv", index=False)
    pd.DataFrame(per_class).to_csv(d / "per_class.csv", index=False)
    (d / "runs.json").write_text(json.dumps(runs))
    (d / "provenance.json").write_text(json.dumps({
        "profile": "fixture", "git_commit": "0" * 40,
        "tracks": {TRACK: {"task": "classification", "version": 1, "baseline": "erm", "seeds": [0, 1, 2],
                           "datasets": {DATASET: description}, "budget": budget or {"steps": 10},
                           "optimizer_axis": AXIS}}}))
    (d / "methods.json").write_text(json.dumps({m: {"kind": "loss", "paper": m, "url": "", "version": 1}
                                                for m in SPEC["methods"]}))
    return d


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One report build for every test here (figures cost seconds): config text with HTML in it."""
    root = tmp_path_factory.mktemp("swept")
    results = write_swept(root / "results", description="<b>digits</b> | <script>x</script>",
                          budget={"note": "<i>steps</i>"})
    out = root / "site"
    html = build_report(results, out).read_text()
    return results, out, html


def test_choose_is_on_validation_seeds_first_then_mean(swept):
    rows = pd.read_csv(swept[0] / "summary.csv")
    rows = rows[~rows["variant"].str.contains("optimizer")]
    picks = selection.choose(rows, "val/balanced_accuracy", True)
    assert dict(zip(picks["method"], picks["variant"])) == {"erm": "lr0.1", "logit_adjust": "tau1.0"}
    assert picks.set_index("method").loc["logit_adjust", "n"] == 3  # tau0.5 has 2 finite seeds
    low = selection.choose(rows, "val/balanced_accuracy", False)  # lower is better: the other erm variant
    assert dict(zip(low["method"], low["variant"]))["erm"] == "lr0.01"


def test_leaderboard_has_one_row_per_method_at_the_validation_choice(swept):
    _, out, html = swept
    board = pd.read_csv(out / "tables" / f"{TRACK}.csv")
    assert not board.duplicated(["dataset", "method", "metric"]).any()
    test = board[board.metric == "test/balanced_accuracy"].set_index("method")["mean"]
    assert set(test.index) == {"erm", "logit_adjust"}
    assert test["erm"] == pytest.approx(0.502)  # lr0.1: best on validation, worst on test
    assert test["logit_adjust"] == pytest.approx(0.612)  # tau1.0: the diverged tau0.5 loses
    md = (out / "tables" / f"{TRACK}.md").read_text()
    assert "### Variant selection" in md
    assert "| erm | lr0.1 | val/balanced_accuracy (max) | 0.701 (3) |" in md
    assert "| logit_adjust | tau1.0 | val/balanced_accuracy (max) | 0.651 (3) |" in md
    assert "Variant selection" in html and "lr0.1" in html


def test_optimizer_axis_selects_per_optimizer_over_the_grid(swept):
    _, out, html = swept
    md = (out / "tables" / f"{TRACK}.md").read_text()
    assert "| erm × adamw | lr0.1 |" in md and "| erm × sgd | lr0.01 |" in md
    axis = md[md.index("### Optimizers × erm"):]
    assert "| adamw (baseline) | 72.2" in axis and "| sgd | 81.2" in axis  # the selected variants' test means
    assert "Optimizers × erm" in html


def test_curves_per_class_and_runs_keep_the_selected_variants(swept):
    results, out, _ = swept
    from lossbench.report import optimizers

    data = load_results(results)
    optimizers.split(data)
    picks = selection.apply(data, TRACK)
    chosen = set(zip(picks["method"], picks["variant"]))
    assert chosen == {("erm", "lr0.1"), ("logit_adjust", "tau1.0")}
    for name in ("summary", "curves", "per_class"):
        assert set(zip(data[name]["method"], data[name]["variant"])) == chosen, name
    assert {(r["method"], r["variant"]) for r in data["runs"]} == chosen
    for kind in ("bar", "per_class", "curves"):
        assert (out / "figures" / f"{TRACK}__{DATASET}__{kind}.png").exists()


def test_axis_variant_slugs_parse_back():
    from lossbench.report.optimizers import axis_variant

    names = ["sgd", "sgdp", "adamw"]
    assert axis_variant("optimizersgd", names) == ("sgd", "default")
    assert axis_variant("optimizersgdp", names) == ("sgdp", "default")
    assert axis_variant("lr0.01-optimizersgdp", names) == ("sgdp", "lr0.01")
    assert axis_variant("lr0.01-optimizersgd-tau1.0", names) == ("sgd", "lr0.01-tau1.0")
    assert axis_variant("lr0.01", names) is None and axis_variant("default", names) is None


def test_no_sweep_no_selection(tmp_path):
    """One variant per method: nothing selected, nothing dropped (the golden table of test_build holds)."""
    from tests.report.test_build import write_fixture

    data = load_results(write_fixture(tmp_path / "results"))
    data["summary"]["variant"] = "default"
    before = {k: len(data[k]) for k in ("summary", "curves", "per_class", "runs")}
    assert selection.apply(data, "clf_fixture") is None and "selection" not in data
    assert {k: len(data[k]) for k in before} == before


def test_markdown_escapes_html_from_config(swept):
    _, out, html = swept
    md = (out / "tables" / f"{TRACK}.md").read_text()
    assert "<b>" not in md and "<script>" not in md and "<i>" not in md
    assert "&lt;b>digits&lt;/b> | &lt;script>" in md and "&lt;i>steps&lt;/i>" in md
    assert "<script>x" not in html  # the HTML escapes as before


def test_a_task_without_a_selection_metric_says_so():
    data = {"provenance": {"tracks": {"t": {"task": None}}}}
    with pytest.raises(ValueError, match="selection metric"):
        selection.criterion(data, "t")
    off_val = selection.Criterion("train/loss", False, "train")  # a task without validation data says so
    assert off_val.text == "train/loss (min, train data)"


def test_grokking_variants_are_chosen_on_validation_accuracy():
    """The grokking task selects on its validation slice (val/max_accuracy, max), not on the final
    training loss: here the variant with the lower training loss is the worse on val, and the
    test-best one is the worse on val too, so neither train nor test data decide."""
    provenance = {"tracks": {"g": {"task": "grokking"}}}
    crit = selection.criterion({"provenance": provenance}, "g")
    assert crit == selection.Criterion("val/max_accuracy", True, "validation")
    assert crit.text == "val/max_accuracy (max)"
    numbers = {"lr0.01": {"val/max_accuracy": 0.40, "train/loss": 0.01, "test/accuracy": 0.90},
               "lr0.003": {"val/max_accuracy": 0.85, "train/loss": 0.50, "test/accuracy": 0.30}}
    rows = pd.DataFrame([{"track": "g", "dataset": "mod113_add_f40", "method": "erm", "variant": variant,
                          "seed": seed, "metric": metric, "value": v + 0.001 * seed}
                         for variant, values in numbers.items() for metric, v in values.items() for seed in (0, 1)])
    data = {"provenance": provenance, "summary": rows, "runs": []}
    picks = selection.apply(data, "g", tables=("summary",))
    assert picks[["method", "variant", "metric", "split"]].values.tolist() == [
        ["erm", "lr0.003", "val/max_accuracy", "validation"]]
    assert picks["value"].item() == pytest.approx(0.8505)
    assert set(data["summary"]["variant"]) == {"lr0.003"}
    caption = selection.table(picks, "mod113_add_f40", ["erm"])["caption"]
    assert "chosen without test data" in caption and "no validation split" not in caption
