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
