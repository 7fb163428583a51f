"""The per-class recall figure draws classes in order of training count (issue 18)."""
import pandas as pd
import pytest

from lossbench.report import plots

# training counts not sorted by class id, as on a noisy dataset (and one long-tailed set)
COUNTS = {"noisy": {0: 91, 1: 88, 2: 95, 3: 86, 4: 90},
          "long_tail": {0: 12, 1: 120, 2: 25, 3: 60}}


def _rows(counts):
    return pd.DataFrame([{"method": m, "seed": s, "class": c, "train_count": n,
                          "test_recall": 0.5 + 0.001 * n + (0.05 if m == "gce" else 0.0)}
                         for m in ("erm", "gce") for s in range(2) for c, n in counts.items()])


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_per_class_lines_follow_the_sorted_training_counts(tmp_path, monkeypatch, name):
    figs = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figs.append(fig) or path)
    counts = COUNTS[name]
    colors = plots.method_colors(["erm", "gce"], "erm")
    assert plots.per_class(_rows(counts), "erm", colors, tmp_path / "f.png") is not None
    ax = figs[0].axes[0]
    order = sorted(counts, key=lambda c: (counts[c], c))  # class ids, fewest training examples first
    labels = [t.get_text().split("\n")[0] for t in ax.get_xticklabels()]
    ticks = list(ax.get_xticks())
    assert labels == [str(c) for c in order] and ticks == list(range(len(order)))
    lines = [ln for ln in ax.get_lines() if ln.get_label() in ("erm (baseline)", "gce")]
    assert len(lines) == 2
    for line in lines:
        x = list(line.get_xdata())
        assert x == sorted(x) == list(range(len(order)))  # drawn left to right, one point per class
        drawn = [counts[order[int(i)]] for i in x]  # training count of the class at each drawn x
        assert drawn == sorted(counts.values())
        # the y values belong to the class at that x (recall rises with the count in the fixture)
        assert list(line.get_ydata()) == sorted(line.get_ydata())
    if name == "long_tail":  # counts shown under the class ids
        assert ax.get_xticklabels()[0].get_text() == "0\n(12)"


# ---------------------------------------------------------------- plots people can read (issue 18)
from pathlib import Path  # noqa: E402

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lossbench.report import build, grokking, lm_pretraining, preference  # noqa: E402
from lossbench.report.tables import load_layout  # noqa: E402

METHODS = ["erm"] + [f"m{i:02d}" for i in range(19)]  # 20 methods, registry order
ORDER = [f"m{i:02d}" for i in range(0, 19, 2)] + ["erm"] + [f"m{i:02d}" for i in range(1, 19, 2)]  # table order
SEEDS, STEPS, CLASSES = (0, 1, 2), (10, 20, 30, 40), {0: 10, 1: 80, 2: 40}


def _first_loss(m):  # losses of very different scales and signs, as in the smoke report
    return {"m00": 22.0, "m02": -2.0, "m04": 0.3}.get(m, 2.3)


def _series(ax):
    """(label, rgba) of each legend-able artist of `ax`: lines, bar groups, error-bar lines, markers."""
    out = []
    handles, labels = ax.get_legend_handles_labels()
    for h, label in zip(handles, labels):
        if hasattr(h, "get_color") and not hasattr(h, "patches"):
            color = h.get_color()
        elif hasattr(h, "patches"):  # BarContainer
            color = h.patches[0].get_facecolor()
        elif hasattr(h, "lines"):  # ErrorbarContainer
            color = h.lines[0].get_color()
        else:  # a scatter marker
            color = h.get_facecolor()[0]
        out.append((label, mcolors.to_rgba(color)))
    return out


@pytest.fixture
def recorded(monkeypatch):
    """Every figure saved: {file stem: figure}; figures are closed after the test."""
    figs = {}

    def save(fig, path):
        figs[path.stem] = fig
        return path

    for module in (plots, preference, lm_pretraining):
        monkeypatch.setattr(module, "save_figure", save)
    yield figs
    for fig in figs.values():
        plt.close(fig)


def _check_readable(fig, limit=plots.MAX_SERIES):
    for ax in fig.axes:
        series = _series(ax)
        assert len(series) <= limit, [s[0] for s in series]
        colors = [c for _, c in series]
        assert len(set(colors)) == len(colors), series  # no colour twice within one axes


def _classification_inputs():
    curves, per_class, summary, board = [], [], [], []
    for m in METHODS:
        rank = ORDER.index(m)
        for s in SEEDS:
            for i, step in enumerate(STEPS):
                loss = _first_loss(m) * (1 - 0.1 * i) if _first_loss(m) > 0 else _first_loss(m) - i
                curves += [{"method": m, "seed": s, "step": step, "metric": "train/loss", "value": loss + 0.01 * s},
                           {"method": m, "seed": s, "step": step, "metric": "val/balanced_accuracy",
                            "value": 0.2 + 0.1 * i - 0.005 * rank + 0.01 * s}]
            per_class += [{"method": m, "seed": s, "class": c, "train_count": n,
                           "test_recall": 0.3 + n / 200 - rank / 100} for c, n in CLASSES.items()]
            summary.append({"method": m, "seed": s, "metric": "test/balanced_accuracy", "value": 0.5 - rank / 100,
                            "status": "ok"})
        board.append({"method": m, "metric": "test/balanced_accuracy", "mean": 0.5 - rank / 100,
                      "half_width": 0.01, "n": len(SEEDS)})
    frame = lambda rows: pd.DataFrame(rows).assign(track="classification", dataset="d", variant="")  # noqa: E731
    data = {"summary": frame(summary), "curves": frame(curves), "per_class": frame(per_class),
            "provenance": {"tracks": {}}, "methods": {m: {} for m in METHODS}}
    return frame(board), data


def _ctx(tmp_path, track="classification", baseline="erm", **layout):
    layout = {"main_metric": "test/balanced_accuracy", "curves": ["train/loss", "val/balanced_accuracy"], **layout}
    return build.TrackContext(info={"name": track, "baseline": baseline}, layout=layout,
                              metrics=load_layout()["metrics"], colors=plots.method_colors(METHODS, baseline),
                              level=0.95, out_dir=tmp_path)


def test_method_colors_never_repeat_and_keep_the_top_of_the_table():
    colors = plots.method_colors(ORDER, "erm")
    top = [m for m in ORDER if m != "erm"][:plots.MAX_SERIES - 1]
    assert list(colors) == [m for m in ORDER if m in top or m == "erm"]  # table order, baseline included
    assert colors["erm"] == plots.BASELINE_COLOR
    rgba = [mcolors.to_rgba(c) for c in colors.values()]
    assert len(set(rgba)) == len(rgba) == plots.MAX_SERIES
    assert mcolors.to_rgba(plots.NEUTRAL_COLOR) not in rgba  # tab10's grey is no method's colour
    # a baseline ranked last is still drawn; no baseline in the table: 8 others
    assert "erm" in plots.method_colors(METHODS[1:] + ["erm"], "erm")
    assert len(plots.method_colors(METHODS[1:], "erm")) == plots.MAX_SERIES


def test_classification_figures_draw_at_most_eight_distinct_methods(tmp_path, recorded):
    board, data = _classification_inputs()
    figures = build._figures(_ctx(tmp_path), "d", ORDER, board, data)
    captions = {Path(p).stem.split("__")[-1]: cap for cap, p in figures}
    assert set(captions) == {"bar", "per_class", "curves"}
    drawn = [m for m in ORDER if m != "erm"][:7] + ["erm"]
    colors_seen = {}
    for kind in ("per_class", "curves"):
        fig = recorded[f"classification__d__{kind}"]
        _check_readable(fig)
        for ax in fig.axes:
            for label, color in _series(ax):
                method = label.replace(" (baseline)", "")
                assert method in drawn
                assert colors_seen.setdefault(method, color) == color  # one colour per method in all figures
        assert "12 other methods are in the table, not drawn" in captions[kind]
    assert set(colors_seen) == set(drawn)
    # the per-class figure is still ordered by training count
    ax = recorded["classification__d__per_class"].axes[0]
    assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == ["0", "2", "1"]
    # every caption names the seed count of the rows drawn
    for cap in captions.values():
        assert "3 seeds" in cap, cap
    assert "95% CI" in captions["bar"] and "95% CI" in captions["curves"]
    # the bar chart keeps every method, in one neutral colour with the baseline black
    bars = recorded["classification__d__bar"].axes[0].patches
    assert len(bars) == len(METHODS)
    face = {mcolors.to_rgba(b.get_facecolor()) for b in bars}
    assert face == {mcolors.to_rgba(plots.BAR_COLOR), mcolors.to_rgba(plots.BASELINE_COLOR)}


def test_train_loss_panel_is_relative_to_each_runs_start(tmp_path, recorded):
    board, data = _classification_inputs()
    figures = build._figures(_ctx(tmp_path), "d", ORDER, board, data)
    loss_ax, acc_ax = recorded["classification__d__curves"].axes[:2]
    assert "start" in loss_ax.get_title() and "first" in loss_ax.get_ylabel()
    lines = {ln.get_label(): ln for ln in loss_ax.get_lines() if not ln.get_label().startswith("_")}
    for label, line in lines.items():
        y = np.asarray(line.get_ydata())
        assert y[0] == pytest.approx(0.0)  # every method starts at 0% change
    # m00 starts at 22 and falls 10% per log; m02 starts at −2 and falls by 1 per log (−50% of |−2|)
    assert np.asarray(lines["m00"].get_ydata())[-1] == pytest.approx(-30.0, abs=0.5)
    assert np.asarray(lines["m02"].get_ydata())[-1] == pytest.approx(-150.0, abs=1.0)
    assert max(abs(np.asarray(ln.get_ydata())).max() for ln in lines.values()) < 200  # not 22 vs −5 absolute
    assert "first logged value" in dict((Path(p).stem, c) for c, p in figures)["classification__d__curves"]
    # the accuracy panel stays absolute (in %)
    acc = [ln for ln in acc_ax.get_lines() if ln.get_label() == "erm (baseline)"][0]
    assert np.asarray(acc.get_ydata())[0] > 10


def test_relative_to_start_has_one_rule_for_any_sign():
    rows = pd.DataFrame({"method": ["a"] * 3 + ["b"] * 3, "seed": 0, "step": [3, 1, 2] * 2,
                         "value": [1.0, 4.0, 2.0, -6.0, -3.0, -4.5]})
    rel = plots.relative_to_start(rows).set_index(["method", "step"])["value"]
    assert rel[("a", 1)] == 0 and rel[("a", 3)] == pytest.approx(-75.0)
    assert rel[("b", 1)] == 0 and rel[("b", 3)] == pytest.approx(-100.0)  # lower loss reads lower


def test_seeds_text_counts_the_drawn_rows():
    rows = pd.DataFrame({"method": ["a", "a", "a", "b", "b"], "seed": [0, 1, 2, 0, 1]})
    assert plots.seeds_text(rows) == "2–3 seeds (per method)"
    assert plots.seeds_text(rows, ["a"]) == "3 seeds"


def test_grokking_and_lm_figures_obey_the_limit(tmp_path, recorded):
    rng = np.random.default_rng(0)
    curves = pd.DataFrame([{"method": m, "seed": s, "step": step, "metric": metric, "value": rng.random()}
                           for m in METHODS for s in SEEDS for step in STEPS for metric in grokking.DIAGNOSTICS])
    ctx = _ctx(tmp_path, track="grokking")
    ctx.colors = plots.method_colors(ORDER, "erm")
    (cap, _), = grokking.figures(ctx, curves, lambda kind: tmp_path / kind, note=" N not drawn.")
    _check_readable(recorded["diagnostics"])
    assert "3 seeds" in cap and cap.endswith("N not drawn.")
    summary = pd.DataFrame([{"method": m, "seed": s, "metric": f"test/loss/{d}", "value": 5 + rng.random()}
                            for m in METHODS for s in SEEDS for d in ("poems", "comedies")])
    figs = lm_pretraining.figures(ctx, summary, curves.iloc[:0].assign(tokens=[]), lambda kind: tmp_path / kind)
    _check_readable(recorded["domains"])
    assert len(_series(recorded["domains"].axes[0])) == plots.MAX_SERIES
    assert "3 seeds" in figs[0][0]


def test_preference_figures_obey_the_limit(tmp_path, recorded):
    rng = np.random.default_rng(1)
    colors = plots.method_colors(ORDER, "erm")
    raw = pd.DataFrame([{"method": m, "variant": f"b{b}", "seed": s, "metric": metric, "value": rng.random()}
                        for m in METHODS for b in range(2) for s in SEEDS
                        for metric in ("test/gold_reward", "test/sqrt_kl", "test/sft_gold_reward")])
    preference.frontier(raw, "erm", colors, 0.5, 0.95, tmp_path / "frontier")
    curves = pd.DataFrame([{"method": m, "variant": "b0", "seed": s, "step": step, "metric": metric,
                            "value": rng.random()}
                           for m in METHODS for s in SEEDS for step in STEPS for metric in preference.DYNAMICS])
    preference.dynamics(curves, {m: "b0" for m in METHODS}, "erm", colors, tmp_path / "dynamics")
    _check_readable(recorded["frontier"], limit=plots.MAX_SERIES + 1)  # + the π_ref star
    _check_readable(recorded["dynamics"])
    assert sum(1 for label, _ in _series(recorded["frontier"].axes[0]) if label != "π_ref (sft)") == plots.MAX_SERIES


def test_revision_figure_draws_the_revising_method_and_the_rounds(tmp_path, recorded):
    """SRPO (a method that trains to revise) is drawn even from the bottom of the table; x = 0..N rounds;
    the limit and distinct colours hold."""
    names = METHODS[:-1] + ["srpo"]
    metrics = ["test/gold_reward", "test/gold_reward_rev1", "test/gold_reward_rev2"]
    raw = pd.DataFrame([{"method": m, "variant": "b0", "seed": s, "metric": metric, "value": 0.1 * k + 0.01 * s}
                        for m in names for s in SEEDS for k, metric in enumerate(metrics)]
                       + [{"method": "bon", "variant": "b0", "seed": s, "metric": "test/gold_reward", "value": 1.0}
                          for s in SEEDS])  # a method without revisions (best-of-n) is left out
    order = ["bon"] + ORDER[:-1] + ["srpo"]  # srpo last in the table
    assert preference.revisions(raw, {m: "b0" for m in names}, "erm", order, 0.95, tmp_path / "rev") is not None
    fig = recorded["rev"]
    _check_readable(fig)
    labels = [label for label, _ in _series(fig.axes[0])]
    assert "srpo" in labels and "erm (baseline)" in labels and "bon" not in labels
    assert len(labels) == plots.MAX_SERIES
    line = fig.axes[0].get_legend_handles_labels()[0][labels.index("srpo")].lines[0]
    assert list(line.get_xdata()) == [0, 1, 2] and np.allclose(line.get_ydata(), [0.01, 0.11, 0.21])
    assert preference.revisions(raw[raw["metric"] == "test/gold_reward"], {}, "erm", order, 0.95,
                                tmp_path / "none") is None  # no revision rounds: no figure
